"""Repository tools behind ``sonic repo``: they write or rewrite Triton model directories.

- :mod:`~sonic.tools.convert`: ``sonic repo convert``, a trained model to a model directory.
- :mod:`~sonic.tools.importer`: ``sonic repo import``, a CMS model file as the next version.
- :mod:`~sonic.tools.check`: ``sonic repo config`` and ``sonic repo check``, loading models
  exactly as the server does.
- :mod:`~sonic.tools.configure`: ``sonic repo threadcontrol``, CMSSW's config-tool edit.

Checksums, which the server verifies too, live in :mod:`sonic.repository.checksums`.
"""
