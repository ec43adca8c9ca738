"""TorchScript (``platform: "pytorch_libtorch"``, ``model.pt``), as Triton's pytorch backend.

Tensors are matched to ``forward()`` as Triton does: names ending in
``__<index>`` (``INPUT__0``, ``OUTPUT__1``) give positions; otherwise the
order of the config's ``input`` and ``output`` lists does.  KIND_GPU instances
run on ``cuda:<gpu>`` when PyTorch sees a GPU and fail to load with a clear
message otherwise.  ``INTRA_OP_THREAD_COUNT`` / ``INTER_OP_THREAD_COUNT``
parameters set PyTorch's thread pools (process-wide, as in Triton).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement
from sonic.errors import Internal, ModelConfigError, Unavailable
from sonic.repository.autocomplete import IOSpec

_INDEXED = re.compile(r"__(\d+)$")


def _positions(names: list[str]) -> list[int]:
    """Position of each tensor in forward()'s arguments or results."""
    indexed = [_INDEXED.search(n) for n in names]
    if all(indexed):
        return [int(m.group(1)) for m in indexed if m]
    return list(range(len(names)))


def _set_threads(config: mc.ModelConfig) -> None:
    for key, setter in (("INTRA_OP_THREAD_COUNT", torch.set_num_threads),
                        ("INTER_OP_THREAD_COUNT", torch.set_num_interop_threads)):  # fmt: skip
        if key in config.parameters:
            # Interop threads can be set only once per process; later calls raise.
            with contextlib.suppress(RuntimeError):
                setter(int(config.parameters[key].string_value))


class TorchScriptInstance(BackendInstance):
    backend_name = "pytorch"
    platforms = ("pytorch_libtorch",)
    default_filename = "model.pt"
    platform = "pytorch_libtorch"

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        super().__init__(model, config, version_dir, placement)
        path = self.require_model_file()
        if not config.input or not config.output:
            raise ModelConfigError(
                model, "input" if not config.input else "output",
                "TorchScript models carry no tensor signature: config.pbtxt must list every "
                "input and output (names like INPUT__0 / OUTPUT__0, or forward() order)",
            )  # fmt: skip
        for t in list(config.input) + list(config.output):
            if t.data_type == mc.TYPE_STRING:
                raise ModelConfigError(
                    model, f"{t.name}.data_type", "TYPE_STRING has no torch dtype"
                )
        if placement.kind == "GPU":
            if not torch.cuda.is_available():
                raise Unavailable(
                    f"model '{model}': instance group '{placement.name}' is KIND_GPU, but PyTorch "
                    "sees no CUDA device here; use KIND_CPU"
                )
            self.device = torch.device(f"cuda:{placement.device}")
        else:
            self.device = torch.device("cpu")
        _set_threads(config)
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as err:
            raise ModelConfigError(model, path.name, f"torch.jit.load failed: {err}") from err
        self._inputs = [t.name for t in config.input]
        self._in_pos = _positions(self._inputs)
        names = [t.name for t in config.output]
        self._out_pos = dict(zip(names, _positions(names), strict=True))

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        """This model's files carry no tensor signature; the config declares it."""
        return self.config_signature()

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        args: list[Any] = [None] * len(self._inputs)
        for name, pos in zip(self._inputs, self._in_pos, strict=True):
            if name in inputs:
                args[pos] = torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device)
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result.values())
        out: dict[str, np.ndarray] = {}
        for name in outputs:
            pos = self._out_pos[name]
            if pos >= len(result):
                raise Internal(
                    f"model '{self.model}': output '{name}' is result {pos} of forward(), "
                    f"which returned {len(result)}"
                )
            out[name] = result[pos].detach().cpu().numpy()
        return out
