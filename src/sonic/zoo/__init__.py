"""Model builders: the example repository and models shaped like CMS's, made by this project.

- :mod:`~sonic.zoo.examples`: the example repository ``sonic repo examples`` writes (the MLP,
  FACILE, identity models of every datatype, slow and failing models for tests).
- :mod:`~sonic.zoo.cms_models`: CMS-style models (DeepMET, FACILE) trained or built here.
- :mod:`~sonic.zoo.particlenet`: a ParticleNet-style jet tagger (PyTorch, exported to ONNX).

They sit above the server (a builder may load what it wrote the way the server does),
so nothing under :mod:`sonic.repository` imports them.
"""
