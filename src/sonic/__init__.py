"""SONIC in Python: inference as a service for particle-physics computing.

Packages, in the one direction their imports go (the request path first):

- :mod:`sonic.protocol`: Triton's wire protocol (datatypes, tensors, codecs, parameter keys).
- :mod:`sonic.repository`: model repositories (``config.pbtxt``, versions, layout, checksums).
- :mod:`sonic.backends`: model runtimes behind one interface (ONNX Runtime, TensorFlow, ...).
- :mod:`sonic.server`: the data plane, its front ends, scheduling and shared memory.

Beside the server, depending on :mod:`sonic.protocol` and never on server internals:

- :mod:`sonic.client`: the client for event-processing jobs (retries, fallback, coffea's shape).
- :mod:`sonic.perf`: ``sonic perf`` (perf_analyzer's command line), sweeps, reports, planning.

Above them:

- :mod:`sonic.workflow`: the physics job (Pythia events, DeepMET), direct or as a service.
- :mod:`sonic.tools`: ``sonic repo`` (convert, import, check, configure).
- :mod:`sonic.zoo`: the example and CMS-style model builders.
- :mod:`sonic.testing`: real NVIDIA Triton for tests and benchmarks.
- :mod:`sonic.cli`: the ``sonic`` command.

:mod:`sonic.errors` holds the transport-free exception tree used throughout;
:mod:`sonic.launcher` starts ``sonic serve`` on free ports, :mod:`sonic.gateway` runs the
L7 gateway on one machine.
"""

__version__ = "0.1.0"
