"""Model runtimes behind one interface (:class:`~sonic.backends.base.BackendInstance`).

- :mod:`~sonic.backends.onnxruntime`: ONNX Runtime on CPU or CUDA.
- :mod:`~sonic.backends.registry`: choosing the backend from a model config.
"""
