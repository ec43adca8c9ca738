"""``triton_python_backend_utils`` for Triton python-backend models run in-process.

A Triton ``model.py`` does ``import triton_python_backend_utils as pb_utils``;
the python backend registers this module under that name, so an existing
model runs unchanged, with no stub process and no shared-memory IPC.  It
provides the parts of the API that models use: tensors, requests and
responses, errors, config helpers, the auto-complete config object and the
logger.  Decoupled response senders and BLS requests are not provided; using
them raises :class:`TritonModelException` naming what is missing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from sonic.protocol.datatypes import from_config_type, from_numpy_dtype, to_numpy_dtype

_log = logging.getLogger("sonic.backends.python")

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2


class TritonModelException(Exception):
    """Raised by the utilities, as Triton's python backend raises it."""


class TritonError:
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code={self._code})"


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TritonModelException(
                f"pb_utils.Tensor '{name}' needs a numpy array, got {type(array).__name__}"
            )
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> str:
        return from_numpy_dtype(self._array.dtype)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        return Tensor(name, np.from_dlpack(capsule))


class InferenceRequest:
    """One request as ``execute()`` sees it."""

    def __init__(
        self,
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        request_id: str = "",
        parameters: dict[str, Any] | str | None = None,
        model_name: str = "",
        **_: Any,
    ) -> None:
        self._inputs = inputs or []
        self._outputs = requested_output_names or []
        self._id = request_id
        self._params = parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        self._model_name = model_name

    def inputs(self) -> list[Tensor]:
        return list(self._inputs)

    def requested_output_names(self) -> list[str]:
        return list(self._outputs)

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int:
        return 0

    def parameters(self) -> str:
        return self._params

    def flags(self) -> int:
        return 0

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self) -> Any:
        raise TritonModelException(
            "decoupled models (get_response_sender) are not supported by this server"
        )

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise TritonModelException("BLS requests (InferenceRequest.exec) are not supported yet")

    async def async_exec(self, *args: Any, **kwargs: Any) -> Any:
        raise TritonModelException(
            "BLS requests (InferenceRequest.async_exec) are not supported yet"
        )


class InferenceResponse:
    def __init__(
        self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None,
        **_: Any,
    ) -> None:  # fmt: skip
        self._tensors = output_tensors or []
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return list(self._tensors)

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in model_config.get("input", []) if t.get("name") == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in model_config.get("output", []) if t.get("name") == name), None)


def triton_string_to_numpy(triton_type: str) -> type:
    """``"TYPE_FP32"`` -> ``numpy.float32`` (``TYPE_STRING`` -> ``numpy.object_``)."""
    return to_numpy_dtype(from_config_type(triton_type)).type


def numpy_to_triton_type(dtype: Any) -> str:
    return "TYPE_" + from_numpy_dtype(np.dtype(dtype)).replace("BYTES", "STRING")


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class ModelConfig:
    """The object a model's ``auto_complete_config`` receives and returns."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config

    def as_dict(self) -> dict[str, Any]:
        return self._config

    def set_max_batch_size(self, size: int) -> None:
        self._config["max_batch_size"] = int(size)

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def add_input(self, tensor: dict[str, Any]) -> None:
        self._add("input", tensor)

    def add_output(self, tensor: dict[str, Any]) -> None:
        self._add("output", tensor)

    def set_model_transaction_policy(self, policy: dict[str, Any]) -> None:
        self._config["model_transaction_policy"] = policy

    def _add(self, kind: str, tensor: dict[str, Any]) -> None:
        for key in ("name", "data_type", "dims"):
            if key not in tensor:
                raise TritonModelException(f"auto_complete_config: {kind} needs '{key}': {tensor}")
        existing = self._config.setdefault(kind, [])
        if any(t.get("name") == tensor["name"] for t in existing):
            return
        entry = dict(tensor)
        if not str(entry["data_type"]).startswith("TYPE_"):
            entry["data_type"] = "TYPE_" + str(entry["data_type"])
        existing.append(entry)


class Logger:
    @staticmethod
    def log(message: str, level: int = logging.INFO) -> None:
        _log.log(level, "%s", message)

    @staticmethod
    def log_info(message: str) -> None:
        _log.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        _log.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        _log.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log.debug("%s", message)
