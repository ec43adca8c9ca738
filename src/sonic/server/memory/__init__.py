"""Shared memory that clients register: the system (POSIX) and CUDA regions of Triton's extensions.

- :mod:`~sonic.server.memory.system`: ``/dev/shm`` regions, their owners and bounds checks.
- :mod:`~sonic.server.memory.cuda`: CUDA IPC regions (``cudaIpcOpenMemHandle`` through the
  CUDA runtime, loaded lazily).
"""
