"""Model repositories in Triton's layout.

- :mod:`~sonic.repository.config`: ``config.pbtxt`` parsing, JSON form, structural checks.
- :mod:`~sonic.repository.versions`: version directories and version policies.
- :mod:`~sonic.repository.layout`: finding model directories under repository roots.
- :mod:`~sonic.repository.autocomplete`: completing a config from the model file.
- :mod:`~sonic.repository.checksums`: the MD5 checksums Triton's checksum agent and CMSSW keep.
"""
