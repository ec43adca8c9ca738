"""Helpers that tests and benchmarks share: :mod:`~sonic.testing.triton` runs real NVIDIA Triton."""
