"""SONIC in Python: inference as a service for particle-physics computing.

Packages, in the one direction their imports go:

- :mod:`sonic.protocol`: Triton's wire protocol (datatypes, tensors, codecs).
- :mod:`sonic.repository`: model repositories (``config.pbtxt``, versions, layout).
- :mod:`sonic.backends`: model runtimes behind one interface (ONNX Runtime, ...).
- :mod:`sonic.server`: the data plane, scheduler, statistics and gRPC/HTTP front ends.
- :mod:`sonic.cli`: the ``sonic`` command.

:mod:`sonic.errors` holds the transport-free exception tree used throughout.
"""

__version__ = "0.1.0"
