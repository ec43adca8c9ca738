"""HTTP/REST codec: JSON tensors and Triton's binary tensor data extension.

A body is a JSON header, optionally followed by raw tensors concatenated in
input order; ``Inference-Header-Content-Length`` says where the JSON ends.
Each binary input carries ``parameters.binary_data_size``.  Outputs travel as
binary when the request asks for it per output (``binary_data``) or for all
(``binary_data_output``).  Every malformed body raises
:class:`~sonic.errors.InvalidArgument` that says what was wrong.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from sonic.errors import InvalidArgument
from sonic.protocol.datatypes import check_datatype, to_numpy_dtype
from sonic.protocol.json_scan import MAX_SKELETON_BYTES, Span, scan
from sonic.protocol.params import BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, SHM_REGION
from sonic.protocol.tensors import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    checked_name,
    element_count,
    from_raw,
    to_raw,
)

HEADER_LENGTH = "inference-header-content-length"
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


def _flatten(data: Any, rank: int, name: str) -> list[Any]:
    """Flatten nested JSON lists (the protocol allows nested or flat data), at most ``rank``
    levels deep: a list nested deeper than the shape is refused, not recursed into."""
    if not isinstance(data, list):
        return [data]
    level = data
    for _ in range(max(rank, 1)):
        if not level or not isinstance(level[0], list):
            return level
        flat: list[Any] = []
        for item in level:
            if not isinstance(item, list):
                raise InvalidArgument(f"input '{name}': the JSON data mixes lists and values "
                                      "at one level")  # fmt: skip
            flat.extend(item)
        level = flat
    if level and isinstance(level[0], list):
        raise InvalidArgument(
            f"input '{name}': the JSON data nests deeper than its shape's {rank} dims"
        )
    return level


def _check_span(name: str, datatype: str, shape: tuple[int, ...], span: Span) -> None:
    """Refuse tensor data whose text holds more than its declared shape needs, before it is
    parsed (see sonic.protocol.json_scan): the cost of a request follows its tensors."""
    count = element_count(shape, name)
    lists = max(1, sum(math.prod(shape[:k]) for k in range(len(shape))))
    what = f"input '{name}' (shape {list(shape)}, {datatype})"
    if span.depth > max(len(shape), 1) or span.lists > lists:
        raise InvalidArgument(f"{what}: the JSON data has {span.lists} lists nested "
                              f"{span.depth} deep; the shape allows at most {lists}, "
                              f"{max(len(shape), 1)} deep")  # fmt: skip
    if datatype == "BYTES" and span.quotes > 2 * count:
        raise InvalidArgument(f"{what}: the JSON data has more than the {count} strings "
                              "of its shape")  # fmt: skip
    if datatype != "BYTES" and span.commas > count + span.lists:
        raise InvalidArgument(f"{what}: the JSON data has more than the {count} values "
                              "of its shape")  # fmt: skip


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    count = element_count(shape, name)
    flat = _flatten(data, len(shape), name)
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


#: Headers up to this size are parsed as they are: at worst (lists of nothing) that costs a
#: few MB.  Larger ones are split first (sonic.protocol.json_scan).
SCAN_MIN_BYTES = 64 << 10
_PLACEHOLDER = "\0"


class _Spans:
    """The tensor arrays cut out of a large header, each standing in the skeleton as
    ``{"\\u0000": k}`` until its field is read."""

    def __init__(self, text: memoryview, spans: list[Span]) -> None:
        self.text = text
        self.spans = spans
        self.used: set[int] = set()

    def span(self, value: Any) -> Span | None:
        if not (isinstance(value, dict) and len(value) == 1 and _PLACEHOLDER in value):
            return None
        k = value[_PLACEHOLDER]
        if not isinstance(k, int) or not 0 <= k < len(self.spans) or k in self.used:
            raise InvalidArgument("the request JSON has an object where a tensor field belongs")
        self.used.add(k)
        return self.spans[k]

    def load(self, span: Span) -> Any:
        return _loads(self.text[span.start : span.end], "a tensor field of the request JSON")

    def resolve(self, value: Any) -> Any:
        span = self.span(value)
        return value if span is None else self.load(span)

    def check_all_used(self) -> None:
        if len(self.used) != len(self.spans):
            raise InvalidArgument(
                "the request JSON has arrays where the protocol has none (an input's "
                "'shape' and 'data' are its only arrays)"
            )


def _loads(text: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise InvalidArgument(f"failed to parse {what}: {err}") from None


def _parse_header(text: memoryview) -> tuple[Any, _Spans]:
    """The header with its large tensor arrays left unparsed (see _Spans)."""
    if len(text) < SCAN_MIN_BYTES:
        return _loads(text, "the request JSON buffer"), _Spans(text, [])
    found = scan(text)
    if found.skeleton_bytes > MAX_SKELETON_BYTES:
        raise InvalidArgument(
            f"the request JSON has {found.skeleton_bytes} bytes outside its tensors' data; "
            f"the limit is {MAX_SKELETON_BYTES} (send large tensors as binary data)"
        )
    pieces, last = [], 0
    for k, span in enumerate(found.spans):
        pieces += [text[last : span.start], b'{"\\u0000":%d}' % k]
        last = span.end
    pieces.append(text[last:])
    return _loads(b"".join(pieces), "the request JSON buffer"), _Spans(text, found.spans)


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
    text = memoryview(body)[:header_length]
    header, spans = _parse_header(text)
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
        checked_name(name, "input")
        shape = _shape(spans.resolve(item.get("shape")), name)
        params = dict(_as_dict(item.get("parameters"), f"parameters of input '{name}'"))
        size = params.pop(BINARY_DATA_SIZE, None)
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
            values, span = item["data"], spans.span(item["data"])
            if span is not None:
                _check_span(name, datatype, shape, span)
                values = spans.load(span)
            data = _from_json(name, datatype, shape, values)
        else:
            raise InvalidArgument(
                f"input '{name}' has neither 'data' nor a 'binary_data_size' parameter"
            )
        inputs.append(Tensor(name, datatype, shape, data, params))
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )

    spans.check_all_used()
    request_params = _as_dict(header.get("parameters"), "request 'parameters'")
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise InvalidArgument("'outputs' must be a list")
        outputs = []
        for o in header["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidArgument("each requested output must be an object with a 'name'")
            outputs.append(RequestedOutput(checked_name(o["name"], "output"),
                                           dict(_as_dict(o.get("parameters"),
                                                         "output parameters"))))  # fmt: skip
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
        parameters={BINARY_DATA_OUTPUT: True},
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
            params[BINARY_DATA_SIZE] = len(raw)
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
    default = bool(req.parameters.get(BINARY_DATA_OUTPUT, False))
    if req.outputs is None:
        return set(all_names) if default else set()
    return {o.name for o in req.outputs if bool(o.parameters.get(BINARY_DATA, default))}


def encode_request(req: InferRequest) -> tuple[bytes, int]:
    """The client's direction, with the binary-tensor extension: inputs not in shared memory
    as bytes after the JSON header, outputs asked for as binary unless placed in a region;
    returns the body and the header's length (``Inference-Header-Content-Length``)."""
    inputs, blobs = [], []
    for t in req.inputs:
        params = dict(t.parameters)
        if SHM_REGION not in params:
            blobs.append(to_raw(t.data, t.datatype))
            params[BINARY_DATA_SIZE] = len(blobs[-1])
        inputs.append({"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
                       "parameters": params})  # fmt: skip
    header: dict[str, Any] = {"inputs": inputs}
    header |= {k: v for k, v in (("id", req.id), ("parameters", req.parameters)) if v}
    if req.outputs is not None:
        header["outputs"] = [{"name": o.name, "parameters": o.parameters if SHM_REGION in
                              o.parameters else {**o.parameters, BINARY_DATA: True}}
                             for o in req.outputs]  # fmt: skip
    text = orjson.dumps(header)
    return text + b"".join(blobs), len(text)
