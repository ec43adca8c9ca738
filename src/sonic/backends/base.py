"""The one interface every backend implements.

A backend class loads one *instance* of one model version.  The scheduler
calls :meth:`BackendInstance.execute` from a worker thread with a whole batch,
so a backend whose runtime releases the GIL (onnxruntime does) runs instances
truly in parallel.  Adding a backend means one module and one line in
:mod:`sonic.backends.registry`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError
from sonic.protocol.datatypes import from_config_type
from sonic.repository.autocomplete import IOSpec
from sonic.repository.layout import file_inside


def version_file(config: mc.ModelConfig, version_dir: Path, name: str) -> Path:
    """The model file ``name`` of a version, which must stay inside the model's directory."""
    model_dir = version_dir.parent
    return file_inside(model_dir, name, config.name or model_dir.name,
                       "default_model_filename", base=version_dir)  # fmt: skip


def int_parameter(config: mc.ModelConfig, key: str, model: str) -> int | None:
    """An integer from the config's ``parameters`` (thread counts, as the backends read them),
    None where absent; an error naming the key where it is not an integer."""
    if key not in config.parameters:
        return None
    text = config.parameters[key].string_value
    try:
        return int(text)
    except ValueError:
        raise ModelConfigError(
            model, f"parameters[{key}]", f"string_value must be an integer, got {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class InstancePlacement:
    """Where one instance runs: ``kind`` is ``"CPU"`` or ``"GPU"``, ``device`` the GPU id."""

    name: str
    kind: str = "CPU"
    device: int = 0


class BackendInstance(abc.ABC):
    """One loaded copy of a model version, able to run one batch at a time."""

    #: Names this backend answers to in ``config.pbtxt`` ``backend``.
    backend_name: ClassVar[str]
    #: ``platform`` values that select this backend.
    platforms: ClassVar[tuple[str, ...]] = ()
    #: The file Triton looks for in a version directory.
    default_filename: ClassVar[str]
    #: The ``platform`` string reported in model metadata.
    platform: ClassVar[str]
    #: Default count of a KIND_CPU instance group that states none.
    default_cpu_instance_count: ClassVar[int] = 1
    #: True for backends that take the requests of a batch one by one
    #: (:meth:`execute_requests`), as Triton's python backend does.
    per_request: ClassVar[bool] = False
    #: True where every call is bounded native work (no user Python that could
    #: block), so a call measured to be short may run on the event-loop thread.
    inline_ok: ClassVar[bool] = False

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        self.model = model
        self.config = config
        self.version_dir = version_dir
        self.placement = placement

    @classmethod
    def model_path(cls, config: mc.ModelConfig, version_dir: Path) -> Path:
        return version_file(config, version_dir,
                            config.default_model_filename or cls.default_filename)  # fmt: skip

    def require_model_file(self) -> Path:
        """The model file of this version, or an error naming the config field."""
        path = self.model_path(self.config, self.version_dir)
        if not path.is_file():
            raise ModelConfigError(
                self.model, "default_model_filename", f"model file {path} does not exist"
            )
        return path

    def config_signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        """The config's own tensors, for backends whose files carry no signature."""
        batch = (-1,) if self.config.max_batch_size > 0 else ()

        def specs(tensors: Any) -> list[IOSpec]:
            return [
                IOSpec(t.name, from_config_type(mc.DataType.Name(t.data_type)),
                       (*batch, *t.dims))
                for t in tensors
            ]  # fmt: skip

        return specs(self.config.input), specs(self.config.output)

    @abc.abstractmethod
    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        """Inputs and outputs as the model file declares them (dims include batch)."""

    @abc.abstractmethod
    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run one batch; called from the instance's thread, or inline when short."""

    def execute_requests(
        self, requests: list[tuple[dict[str, np.ndarray], list[str]]]
    ) -> list[dict[str, np.ndarray] | BaseException]:
        """Run a batch of separate requests; one result or error each (``per_request``)."""
        raise NotImplementedError(f"{type(self).__name__} executes merged batches")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources; the default has none to release."""
