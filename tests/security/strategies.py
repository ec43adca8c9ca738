"""Hypothesis strategies for malformed requests: bodies that are nearly right, which reach
deeper into the decoders than random bytes do."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "UINT64", "FP16", "FP32",
             "FP64", "BF16", "BYTES", "fp32", "FLOAT", "", "INT128"]  # fmt: skip
NAMES = ["input", "INPUT0", "INPUT1", "X", "", "../input", "input\0"]

dims = st.one_of(st.integers(-3, 70), st.integers(2**31 - 2, 2**63 - 1), st.just(-(2**63)))
shapes = st.lists(dims, max_size=4)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False), st.text(max_size=5))  # fmt: skip
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


@st.composite
def http_input(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": draw(st.one_of(st.sampled_from(NAMES), st.integers())),
        "datatype": draw(st.one_of(st.sampled_from(DATATYPES), st.none(), st.integers())),
        "shape": draw(st.one_of(shapes, json_values)),
    }
    choice = draw(st.integers(0, 3))
    if choice == 0:
        item["data"] = draw(json_values)
    elif choice == 1:
        size = draw(st.one_of(st.integers(-4, 600), st.booleans(), st.text(max_size=3)))
        item["parameters"] = {"binary_data_size": size}
    elif choice == 2:
        item["parameters"] = draw(st.one_of(json_values, st.just({"shared_memory_region": "r",
                                                                   "shared_memory_byte_size": 8})))
    return item


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None): JSON, binary tail, lies, truncation."""
    header: Any = {"inputs": draw(st.lists(http_input(), max_size=3))}
    if draw(st.booleans()):
        header["outputs"] = draw(st.one_of(
            json_values, st.lists(st.fixed_dictionaries({"name": st.sampled_from(NAMES)}))))
    if draw(st.booleans()):
        header["parameters"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        header = draw(json_values)
    head = json.dumps(header).encode()  # stdlib: big ints too, which orjson refuses to write
    tail = draw(st.binary(max_size=600))
    body = head + tail
    length = draw(st.one_of(st.none(), st.just(len(head)), st.integers(-8, len(body) + 8)))
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return body, length


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=draw(st.sampled_from(["mlp", "simple", "nope", ""])),
                               model_version=draw(st.sampled_from(["", "1", "7", "x"])))
    for _ in range(draw(st.integers(0, 3))):
        t = req.inputs.add(name=draw(st.sampled_from(NAMES)),
                           datatype=draw(st.sampled_from(DATATYPES)),
                           shape=draw(shapes))  # fmt: skip
        kind = draw(st.integers(0, 3))
        if kind == 0:
            t.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=70)))
        elif kind == 1:
            t.contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1),
                                                         max_size=40)))  # fmt: skip
        elif kind == 2:
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=8)))
        if draw(st.integers(0, 4)) == 0:
            t.parameters["shared_memory_region"].string_param = "nowhere"
            t.parameters["shared_memory_byte_size"].int64_param = draw(st.integers(-9, 99))
    for raw in draw(st.lists(st.binary(max_size=300), max_size=3)):
        req.raw_input_contents.append(raw)
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=2)):
        req.outputs.add(name=name)
    if draw(st.booleans()):
        req.parameters["priority"].int64_param = draw(st.integers(-5, 5))
    if draw(st.booleans()):
        req.parameters["timeout"].int64_param = draw(st.integers(-5, 10**12))
    return req


CONFIG_LINES = [
    'name: "m"', 'platform: "onnxruntime_onnx"', 'backend: "python"', "max_batch_size: 8",
    "max_batch_size: -1", "max_batch_size: 99999999999999999999",
    'input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]',
    'input [ { name: "x", data_type: TYPE_FP32, dims: [ -2 ] } ]',
    'output [ { name: "y", data_type: TYPE_STRING, dims: [ 1 ], reshape: { shape: [ ] } } ]',
    'input [ { name: "x", data_type: TYPE_BOGUS, dims: [ 4 ] } ]',
    "dynamic_batching { preferred_batch_size: [ 4, 2 ] max_queue_delay_microseconds: 100 }",
    "dynamic_batching { priority_levels: 2 default_priority_level: 7 }",
    "instance_group [ { count: 0, kind: KIND_GPU, gpus: [ 9 ] } ]",
    "instance_group [ { count: 2, kind: KIND_CPU } ]", "version_policy: { specific: { versions: "
    "[ -1 ] } }", "sequence_batching { }", "ensemble_scheduling { step [ { model_name: \"m\" } ] }",
    "{", "}", "[", "]", ":", '"', "\\", "\0", "max_batch_size: 8 max_batch_size: 9",
]  # fmt: skip

config_texts = st.one_of(
    st.lists(st.sampled_from(CONFIG_LINES), max_size=8).map("\n".join),
    st.text(max_size=200),
)
