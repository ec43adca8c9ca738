"""Which backend serves a model: ``platform``, ``backend`` or the files present.

Backends are imported only when a model needs them, so PyTorch, TensorFlow,
XGBoost and LightGBM stay optional: a server without them serves every other model, and
a model that needs a missing one fails to load with the install command.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance
from sonic.errors import ModelConfigError


@dataclass(frozen=True, slots=True)
class BackendEntry:
    name: str
    platforms: tuple[str, ...]
    filenames: tuple[str, ...]  # files that identify the backend when nothing is set
    module: str
    cls: str
    extra: str = ""  # the pip extra that provides its runtime

    def load(self, model: str) -> type[BackendInstance]:
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            hint = f": pip install 'sonic-inference[{self.extra}]'" if self.extra else ""
            raise ModelConfigError(
                model, "backend", f"the {self.name} backend needs {err.name}{hint}"
            ) from err
        return getattr(module, self.cls)  # type: ignore[no-any-return]


BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("onnxruntime", ("onnxruntime_onnx",), ("model.onnx",),
                 "sonic.backends.onnxruntime", "OnnxRuntimeInstance"),
    BackendEntry("python", (), ("model.py",), "sonic.backends.python", "PythonInstance"),
    BackendEntry("pytorch", ("pytorch_libtorch",), ("model.pt",),
                 "sonic.backends.torchscript", "TorchScriptInstance", "torch"),
    BackendEntry("tensorflow", ("tensorflow_graphdef",), ("model.graphdef",),
                 "sonic.backends.tensorflow", "TensorFlowInstance", "tensorflow"),
    BackendEntry("tensorflow", ("tensorflow_savedmodel",), ("model.savedmodel",),
                 "sonic.backends.tensorflow", "SavedModelInstance", "tensorflow"),
    BackendEntry("fil", (), ("xgboost.json", "xgboost.model", "model.txt"),
                 "sonic.backends.trees", "TreeInstance", "trees"),
)  # fmt: skip


def _find(config: mc.ModelConfig, version_dir: Path, model: str) -> BackendEntry:
    for entry in BACKENDS:
        if config.platform in entry.platforms:
            return entry
    # A backend with several formats (tensorflow: graphdef, SavedModel) picks by the files.
    named = [e for e in BACKENDS if e.name == config.backend]
    present = [e for e in named if any((version_dir / f).exists() for f in e.filenames)]
    if present or named:
        return (present or named)[0]
    if config.platform or config.backend:
        known = sorted({p for e in BACKENDS for p in e.platforms} | {e.name for e in BACKENDS})
        raise ModelConfigError(
            model, "platform" if config.platform else "backend",
            f"'{config.platform or config.backend}' is not supported; this server has "
            f"{', '.join(known)}",
        )  # fmt: skip
    names = (config.default_model_filename,) if config.default_model_filename else ()
    for entry in BACKENDS:
        if any((version_dir / f).exists() for f in names or entry.filenames):
            return entry
    raise ModelConfigError(
        model, "platform",
        f"not set, and {version_dir} holds no file a backend recognises "
        f"({', '.join(f for e in BACKENDS for f in e.filenames)})",
    )  # fmt: skip


def select_backend(model: str, config: mc.ModelConfig, version_dir: Path) -> type[BackendInstance]:
    """The backend class for ``config``; fills ``platform``/``backend`` when absent."""
    entry = _find(config, version_dir, model)
    cls = entry.load(model)
    if not config.backend:
        config.backend = entry.name
    if not config.platform and cls.platform:
        config.platform = cls.platform
    return cls
