"""gRPC codec: ``inference.ModelInferRequest``/``Response`` <-> protocol types.

Uses the generated messages that ``tritonclient`` ships, so field numbers are
Triton's by construction.  Decoding follows Triton's ``infer_handler.cc``: raw
contents are consumed in input order by the inputs that have neither typed
``contents`` nor a shared-memory region, and mixing raw with typed contents is
an error.  Responses always carry raw output bytes, as Triton's do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from sonic.errors import InvalidArgument
from sonic.protocol.datatypes import check_datatype, to_numpy_dtype
from sonic.protocol.params import SHM_REGION
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

# Typed ``InferTensorContents`` field that carries each datatype.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

def params_from_proto(params: Any) -> dict[str, Any]:
    """``map<string, InferParameter>`` -> plain dict of Python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, kind) if kind else None
    return out


def params_to_proto(values: dict[str, Any], target: Any) -> None:
    """Plain dict -> ``map<string, InferParameter>`` (bool before int: bool is an int)."""
    for key, v in values.items():
        p = target[key]
        if isinstance(v, bool):
            p.bool_param = v
        elif isinstance(v, int):
            p.int64_param = v
        elif isinstance(v, float):
            p.double_param = v
        else:
            p.string_param = str(v)


def _from_contents(inp: Any, shape: tuple[int, ...], model: str) -> np.ndarray:
    field = _CONTENTS_FIELD.get(inp.datatype)
    if field is None:
        raise InvalidArgument(
            f"input '{inp.name}' for model '{model}': {inp.datatype} data must be sent "
            "in raw_input_contents, there is no typed contents field for it"
        )
    values = getattr(inp.contents, field)
    count = element_count(shape, inp.name)
    if len(values) != count:
        raise InvalidArgument(
            f"unexpected number of elements {len(values)} in {field} for input "
            f"'{inp.name}' for model '{model}', expecting {count} (shape {list(shape)})"
        )
    if inp.datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.asarray(values, dtype=to_numpy_dtype(inp.datatype)).reshape(shape)
    except (OverflowError, ValueError) as err:  # e.g. 128 in int_contents of an INT8 input
        raise InvalidArgument(
            f"input '{inp.name}' for model '{model}': {field} holds a value that is not "
            f"{inp.datatype}: {err}"
        ) from None


def decode_cost(msg: pb.ModelInferRequest) -> int:
    """About how many bytes decoding walks element by element in Python: BYTES tensors and
    typed contents (raw fixed-size tensors are wrapped without a copy and cost nothing).

    A raw BYTES tensor counts 8 bytes for each element its shape claims.  Its length would
    need ``raw_input_contents[i]``, which copies the whole tensor out of the message with the
    GIL held: twice over 60 MiB, that held the event loop for 150 ms on 2 cores."""
    cost, raw_index = 0, 0
    raws = len(msg.raw_input_contents)
    for inp in msg.inputs:
        if inp.HasField("contents"):
            field = _CONTENTS_FIELD.get(inp.datatype)
            cost += 8 * len(getattr(inp.contents, field)) if field else 0
        elif raw_index < raws:
            if inp.datatype == "BYTES":
                cost += 8 * math.prod(max(d, 0) for d in inp.shape)
            raw_index += 1
    return cost


def take_plan_key(msg: pb.ModelInferRequest) -> tuple[bytes, list[bytes], str]:
    """Take the raw input contents and the id off ``msg``; what is left, serialized, is the key
    a model version's plans are found by (:class:`sonic.server.model.Plan`): model, inputs
    (names, datatypes, shapes, their parameters), outputs and parameters.  A request that
    misses the plans gets its contents back with :func:`restore_plan_key`.  One serialization
    costs a fifth of reading those fields one by one through the message's Python objects.
    """
    raws, request_id = list(msg.raw_input_contents), msg.id
    msg.ClearField("raw_input_contents")
    if request_id:
        msg.ClearField("id")
    return msg.SerializeToString(), raws, request_id


def restore_plan_key(msg: pb.ModelInferRequest, raws: list[bytes], request_id: str) -> None:
    """Undo :func:`take_plan_key`."""
    msg.raw_input_contents.extend(raws)
    msg.id = request_id


def decode_request(msg: pb.ModelInferRequest) -> InferRequest:
    """Decode a ``ModelInferRequest``; tensors in shared memory keep ``data`` empty."""
    model = msg.model_name
    raw = msg.raw_input_contents
    raw_index = 0
    inputs: list[Tensor] = []
    for inp in msg.inputs:
        checked_name(inp.name, "input")
        check_datatype(inp.datatype)
        shape = tuple(inp.shape)
        params = params_from_proto(inp.parameters) if inp.parameters else {}
        has_contents = inp.HasField("contents")
        if has_contents and len(raw) > 0:
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{inp.name}' for model '{model}'"
            )
        if SHM_REGION in params:
            element_count(shape, inp.name)
            data = np.empty(0)
        elif has_contents:
            data = _from_contents(inp, shape, model)
        else:
            if raw_index >= len(raw):
                raise InvalidArgument(
                    f"expected {raw_index + 1} or more raw_input_contents for model "
                    f"'{model}', got {len(raw)}: input '{inp.name}' has no data"
                )
            data = from_raw(inp.name, inp.datatype, shape, raw[raw_index])
            raw_index += 1
        inputs.append(Tensor(inp.name, inp.datatype, shape, data, params))
    if raw_index != len(raw):
        raise InvalidArgument(
            f"expected {raw_index} raw_input_contents for model '{model}', got {len(raw)}"
        )
    outputs = (
        [
            RequestedOutput(checked_name(o.name, "output"),
                            params_from_proto(o.parameters) if o.parameters else {})
            for o in msg.outputs
        ]
        if len(msg.outputs) > 0
        else None
    )
    return InferRequest(
        model_name=model,
        model_version=msg.model_version,
        id=msg.id,
        parameters=params_from_proto(msg.parameters) if msg.parameters else {},
        inputs=inputs,
        outputs=outputs,
    )


def encode_response(resp: InferResponse) -> pb.ModelInferResponse:
    """Encode a response with raw output bytes (empty for outputs in shared memory)."""
    msg = pb.ModelInferResponse(
        model_name=resp.model_name, model_version=resp.model_version, id=resp.id
    )
    if resp.parameters:
        params_to_proto(resp.parameters, msg.parameters)
    raw = msg.raw_output_contents
    for t in resp.outputs:
        out = msg.outputs.add()
        out.name = t.name
        out.datatype = t.datatype
        out.shape.extend(t.shape)
        if SHM_REGION in t.parameters:
            raw.append(b"")  # the data went to the client's shared-memory region
            continue
        if t.parameters:
            params_to_proto(t.parameters, out.parameters)
        raw.append(to_raw(t.data, t.datatype))
    return msg


def response_head(model_name: str, model_version: str,
                  outputs: list[tuple[str, str, tuple[int, ...]]]) -> bytes:  # fmt: skip
    """The part of a ModelInferResponse that all requests of one plan share (model, version,
    each output's name, datatype and shape), serialized once for :func:`response_from`."""
    msg = pb.ModelInferResponse(model_name=model_name, model_version=model_version)
    for name, datatype, shape in outputs:
        msg.outputs.add(name=name, datatype=datatype, shape=shape)
    return msg.SerializeToString()


def response_from(head: bytes, request_id: str, raws: list[bytes]) -> bytes:
    """A serialized ModelInferResponse: a plan's :func:`response_head` followed by the
    request's own fields (its id, its outputs' raw bytes), serialized on their own.  Protobuf
    messages serialized one after the other parse as one message with the fields of both
    (repeated fields keep their order), so every client reads the same response as one
    serialized whole, at half the cost of building it field by field."""
    return head + pb.ModelInferResponse(id=request_id, raw_output_contents=raws).SerializeToString()


def encode_request(req: InferRequest) -> pb.ModelInferRequest:
    """The client's direction: a request with raw input bytes (none for inputs in shared
    memory); ``outputs`` None asks for every output, as the protocol does."""
    msg = pb.ModelInferRequest(model_name=req.model_name, model_version=req.model_version,
                               id=req.id)  # fmt: skip
    if req.parameters:
        params_to_proto(req.parameters, msg.parameters)
    for t in req.inputs:
        inp = msg.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        if t.parameters:
            params_to_proto(t.parameters, inp.parameters)
        if SHM_REGION not in t.parameters:
            msg.raw_input_contents.append(to_raw(t.data, t.datatype))
    for o in req.outputs or ():
        out = msg.outputs.add(name=o.name)
        if o.parameters:
            params_to_proto(o.parameters, out.parameters)
    return msg
