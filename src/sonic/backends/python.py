"""Triton python-backend models (``backend: "python"``, ``model.py``), run in-process.

The model's ``TritonPythonModel`` gets Triton's ``initialize(args)``,
``execute(requests)`` and ``finalize()`` calls, and its optional
``auto_complete_config``.  ``triton_python_backend_utils`` is this project's
:mod:`sonic.backends.pb_utils`.  As in Triton, ``execute`` receives the
requests of a dynamic batch one by one (not merged) and returns one response
per request.  Unlike Triton, there is no stub process and no shared-memory
copy between server and model: tensors are passed as numpy arrays.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends import pb_utils
from sonic.backends.base import BackendInstance, InstancePlacement
from sonic.errors import (
    AlreadyExists,
    Internal,
    InvalidArgument,
    ModelConfigError,
    NotFound,
    SonicError,
    Unavailable,
    Unsupported,
)
from sonic.repository.autocomplete import IOSpec
from sonic.repository.config import config_to_dict

_ERRORS: dict[int, type[SonicError]] = {
    pb_utils.TritonError.INVALID_ARG: InvalidArgument,
    pb_utils.TritonError.NOT_FOUND: NotFound,
    pb_utils.TritonError.UNAVAILABLE: Unavailable,
    pb_utils.TritonError.UNSUPPORTED: Unsupported,
    pb_utils.TritonError.ALREADY_EXISTS: AlreadyExists,
}
_IMPORT_LOCK = threading.Lock()


def _load_module(path: Path, model: str) -> ModuleType:
    # Models import "triton_python_backend_utils"; give them ours.
    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    name = f"sonic_python_model_{model}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelConfigError(model, "model.py", f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    with _IMPORT_LOCK:
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise ModelConfigError(
                model, path.name, f"importing it raised {type(err).__name__}: {err}"
            ) from err
    if not hasattr(module, "TritonPythonModel"):
        raise ModelConfigError(model, path.name, "defines no class TritonPythonModel")
    return module


class PythonInstance(BackendInstance):
    backend_name = "python"
    platforms = ()
    default_filename = "model.py"
    platform = ""
    per_request = True

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        super().__init__(model, config, version_dir, placement)
        path = self.require_model_file()
        module = _load_module(path, model)
        cls = module.TritonPythonModel
        if hasattr(cls, "auto_complete_config"):
            self._auto_complete(cls)
        self.impl = cls()
        self._config_json = json.dumps(config_to_dict(config))
        if hasattr(self.impl, "initialize"):
            args = {
                "model_config": self._config_json,
                "model_instance_kind": placement.kind,
                "model_instance_name": placement.name,
                "model_instance_device_id": str(placement.device),
                "model_repository": str(version_dir.parent),
                "model_version": version_dir.name,
                "model_name": model,
            }
            try:
                self.impl.initialize(args)
            except Exception as err:
                raise ModelConfigError(
                    model, "model.py", f"initialize() raised {type(err).__name__}: {err}"
                ) from err

    def _auto_complete(self, cls: Any) -> None:
        wrapper = pb_utils.ModelConfig(config_to_dict(self.config))
        try:
            result = cls.auto_complete_config(wrapper)
        except Exception as err:
            raise ModelConfigError(
                self.model, "model.py", f"auto_complete_config() raised {type(err).__name__}: {err}"
            ) from err
        completed = (result or wrapper).as_dict()
        json_format.ParseDict(completed, self.config, ignore_unknown_fields=True)

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        """This model's files carry no tensor signature; the config declares it."""
        return self.config_signature()

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        (result,) = self.execute_requests([(inputs, outputs)])
        if isinstance(result, BaseException):
            raise result
        return result

    def execute_requests(
        self, requests: list[tuple[dict[str, np.ndarray], list[str]]]
    ) -> list[dict[str, np.ndarray] | BaseException]:
        reqs = [
            pb_utils.InferenceRequest(
                inputs=[pb_utils.Tensor(n, a) for n, a in inputs.items()],
                requested_output_names=outputs,
                model_name=self.model,
            )
            for inputs, outputs in requests
        ]
        try:
            responses = self.impl.execute(reqs)
        except Exception as err:
            failure = Internal(
                f"Failed to process the request(s) for model '{self.model}', message: "
                f"{type(err).__name__}: {err}"
            )
            return [failure] * len(requests)
        if not isinstance(responses, list | tuple) or len(responses) != len(requests):
            got = len(responses) if isinstance(responses, list | tuple) else type(responses)
            failure = Internal(
                f"model '{self.model}': execute() must return one InferenceResponse per "
                f"request ({len(requests)}), got {got}"
            )
            return [failure] * len(requests)
        results: list[dict[str, np.ndarray] | BaseException] = []
        for (_, wanted), resp in zip(requests, responses, strict=True):
            if resp.has_error():
                error = resp.error()
                cls = _ERRORS.get(error.code(), Internal)
                results.append(cls(error.message()))
                continue
            produced = {t.name(): t.as_numpy() for t in resp.output_tensors()}
            missing = [n for n in wanted if n not in produced]
            if missing:
                results.append(Internal(
                    f"model '{self.model}' did not produce requested output(s) {missing}"
                ))  # fmt: skip
                continue
            results.append({n: produced[n] for n in wanted})
        return results

    def close(self) -> None:
        if hasattr(self.impl, "finalize"):
            self.impl.finalize()
