"""HTTP/REST codec: JSON tensors and Triton's binary tensor data extension.

A body is a JSON header, optionally followed by raw tensors concatenated in
input order; ``Inference-Header-Content-Length`` says where the JSON ends.
Each binary input carries ``parameters.binary_data_size``.  Outputs travel as
binary when the request asks for it per output (``binary_data``) or for all
(``binary_data_output``).  Every malformed body raises
:class:`~sonic.errors.InvalidArgument` that says what was wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from sonic.errors import InvalidArgument
from sonic.protocol.datatypes import check_datatype, to_numpy_dtype
from sonic.protocol.tensors import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    element_count,
    from_raw,
    to_raw,
)

HEADER_LENGTH = "inference-header-content-length"
SHM_REGION = "shared_memory_region"


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise InvalidArgument(f"input '{name}': 'shape' must be a list of integers, got {value!r}")
    return tuple(value)


def _flatten(data: Any) -> list[Any]:
    """Flatten nested JSON lists; the protocol allows nested or flat data."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item))
    return out


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    count = element_count(shape, name)
    flat = _flatten(data)
    if len(flat) != count:
        raise InvalidArgument(
            f"unexpected number of elements {len(flat)} in the JSON data of input '{name}', "
            f"expecting {count} (shape {list(shape)})"
        )
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise InvalidArgument(
                    f"input '{name}': BYTES elements in JSON must be strings, got {v!r}"
                )
            arr[i] = v.encode("utf-8")
        return arr.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise InvalidArgument(f"input '{name}': BOOL elements in JSON must be true or false")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise InvalidArgument(f"input '{name}': {datatype} elements in JSON must be numbers")
    try:
        return np.asarray(flat, dtype=to_numpy_dtype(datatype)).reshape(shape)
    except (OverflowError, ValueError) as err:
        raise InvalidArgument(f"input '{name}': JSON data is not valid {datatype}: {err}") from None


def decode_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str
) -> InferRequest:
    """Decode an inference request body (JSON, or JSON plus binary tensors)."""
    if header_length is None:
        header_length = len(body)
    if header_length < 0 or header_length > len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length {header_length} is outside the body of "
            f"{len(body)} bytes"
        )
    try:
        header = orjson.loads(body[:header_length])
    except orjson.JSONDecodeError as err:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {err}") from None
    if not isinstance(header, dict):
        raise InvalidArgument("the inference request JSON must be an object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidArgument("the inference request JSON must have an 'inputs' list")

    binary = memoryview(body)[header_length:]
    offset = 0
    inputs: list[Tensor] = []
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument("each input must be a JSON object with a string 'name'")
        name = item["name"]
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidArgument(f"input '{name}' has no 'datatype' string")
        check_datatype(datatype)
        shape = _shape(item.get("shape"), name)
        params = dict(_as_dict(item.get("parameters"), f"parameters of input '{name}'"))
        size = params.pop("binary_data_size", None)
        if SHM_REGION in params:
            element_count(shape, name)
            data = np.empty(0)
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(
                    f"input '{name}': binary_data_size must be a non-negative integer"
                )
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input '{name}': binary_data_size {size} exceeds the {len(binary) - offset}"
                    " bytes of binary data left in the body"
                )
            data = from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            data = _from_json(name, datatype, shape, item["data"])
        else:
            raise InvalidArgument(
                f"input '{name}' has neither 'data' nor a 'binary_data_size' parameter"
            )
        inputs.append(Tensor(name, datatype, shape, data, params))
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )

    request_params = _as_dict(header.get("parameters"), "request 'parameters'")
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise InvalidArgument("'outputs' must be a list")
        outputs = []
        for o in header["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidArgument("each requested output must be an object with a 'name'")
            outputs.append(
                RequestedOutput(o["name"], dict(_as_dict(o.get("parameters"), "output parameters")))
            )
    req_id = header.get("id", "")
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=req_id if isinstance(req_id, str) else str(req_id),
        parameters=dict(request_params),
        inputs=inputs,
        outputs=outputs,
    )


def decode_raw_binary(
    body: bytes,
    model_name: str,
    model_version: str,
    name: str,
    datatype: str,
    shape: tuple[int, ...],
) -> InferRequest:
    """A body that is only the tensor of a one-input model (header length 0).

    ``shape`` is the model's input shape with a batch of one; a single
    variable dim takes whatever the body length gives.
    """
    size = to_numpy_dtype(datatype).itemsize if datatype != "BYTES" else None
    dims = list(shape)
    if size is not None and dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1])) * size
        dims[dims.index(-1)] = len(body) // known if known else 0
    if any(d < 0 for d in dims):
        raise InvalidArgument(
            f"a raw binary request needs a fixed input shape, input '{name}' has {list(shape)}"
        )
    data = from_raw(name, datatype, tuple(dims), body)
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=[Tensor(name, datatype, tuple(dims), data)],
        parameters={"binary_data_output": True},
    )


def _json_data(t: Tensor) -> Any:
    flat = t.data.reshape(-1)
    if t.datatype == "BYTES":
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat
        ]
    if t.datatype == "BF16":
        flat = flat.astype(np.float32)
    return np.ascontiguousarray(flat)


def encode_response(resp: InferResponse, binary: set[str]) -> tuple[bytes, int | None]:
    """Encode a response; outputs named in ``binary`` go after the JSON header.

    Returns the body and the JSON header length (None when all is JSON).
    """
    outs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for t in resp.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = dict(t.parameters)
        if SHM_REGION in params:
            # Data went to the client's region; Triton sends only name, datatype, shape.
            outs.append(entry)
            continue
        if t.name in binary:
            raw = to_raw(t.data, t.datatype)
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _json_data(t)
        if params:
            entry["parameters"] = params
        outs.append(entry)
    header: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if resp.id:
        header["id"] = resp.id
    if resp.parameters:
        header["parameters"] = resp.parameters
    header["outputs"] = outs
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def binary_outputs(req: InferRequest, all_names: list[str]) -> set[str]:
    """Names of the outputs to send as binary, following Triton's precedence."""
    default = bool(req.parameters.get("binary_data_output", False))
    if req.outputs is None:
        return set(all_names) if default else set()
    return {o.name for o in req.outputs if bool(o.parameters.get("binary_data", default))}
