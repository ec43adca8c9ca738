"""Which backend serves a model: ``platform``, ``backend`` or the files present."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance
from sonic.backends.onnxruntime import OnnxRuntimeInstance
from sonic.backends.python import PythonInstance
from sonic.errors import ModelConfigError

BACKENDS: tuple[type[BackendInstance], ...] = (OnnxRuntimeInstance, PythonInstance)


def select_backend(model: str, config: mc.ModelConfig, version_dir: Path) -> type[BackendInstance]:
    """The backend class for ``config``; fills ``platform``/``backend`` when absent."""
    for cls in BACKENDS:
        if config.platform in cls.platforms or config.backend == cls.backend_name:
            break
    else:
        if config.platform or config.backend:
            known = sorted(
                {p for c in BACKENDS for p in c.platforms} | {c.backend_name for c in BACKENDS}
            )
            raise ModelConfigError(
                model,
                "platform" if config.platform else "backend",
                f"'{config.platform or config.backend}' is not supported; "
                f"this server has {', '.join(known)}",
            )
        for cls in BACKENDS:
            if (version_dir / (config.default_model_filename or cls.default_filename)).exists():
                break
        else:
            raise ModelConfigError(
                model,
                "platform",
                f"not set, and {version_dir} holds no file a backend recognises "
                f"({', '.join(c.default_filename for c in BACKENDS)})",
            )
    if not config.backend:
        config.backend = cls.backend_name
    if not config.platform and cls.platform:
        config.platform = cls.platform
    return cls
