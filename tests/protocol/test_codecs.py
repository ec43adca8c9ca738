"""Protocol codecs without a server: raw bytes, BYTES layout, JSON and binary bodies."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from sonic.errors import InvalidArgument
from sonic.protocol import datatypes
from sonic.protocol.http_codec import binary_outputs, decode_request, encode_response
from sonic.protocol.tensors import (
    InferResponse,
    Tensor,
    deserialize_bytes,
    from_raw,
    serialize_bytes,
    to_raw,
)


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [("FP32", np.float32), ("BF16", ml_dtypes.bfloat16), ("BOOL", np.bool_), ("UINT64", np.uint64)],
)
def test_datatype_table_round_trips(datatype: str, dtype: type) -> None:
    assert datatypes.to_numpy_dtype(datatype) == np.dtype(dtype)
    assert datatypes.from_numpy_dtype(np.dtype(dtype)) == datatype
    cfg = datatypes.to_config_type(datatype)
    assert datatypes.from_config_type(cfg) == datatype


def test_unknown_datatypes_are_named() -> None:
    with pytest.raises(InvalidArgument, match=r"'FLOAT32'.*FP32"):
        datatypes.check_datatype("FLOAT32")
    with pytest.raises(InvalidArgument, match="TYPE_FLOAT"):
        datatypes.from_config_type("TYPE_FLOAT")
    assert datatypes.to_config_type("BYTES") == "TYPE_STRING"


def test_bytes_layout_is_length_prefixed_little_endian() -> None:
    arr = np.array([b"ab", b"", "é"], dtype=object)
    raw = serialize_bytes(arr)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
    back = deserialize_bytes(raw, 3, "x")
    assert list(back) == [b"ab", b"", "é".encode()]


@pytest.mark.parametrize(
    ("raw", "count", "words"),
    [
        (b"\x05\x00\x00\x00ab", 1, "claims 5 bytes"),
        (b"\x01\x00", 1, "2 bytes cannot hold 1 elements"),
        (b"\x01\x00\x00\x00a\x05\x00\x00", 2, "ends after 1 of 2"),
        (b"\x01\x00\x00\x00ab", 1, "unexpected bytes"),
    ],
)
def test_bad_bytes_tensors(raw: bytes, count: int, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        deserialize_bytes(raw, count, "x")


def test_raw_fixed_size() -> None:
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    assert np.array_equal(from_raw("x", "FP16", (2, 3), to_raw(x, "FP16")), x)
    with pytest.raises(InvalidArgument, match="unexpected total byte size 10 for input 'x'"):
        from_raw("x", "FP16", (2, 3), b"\0" * 10)
    with pytest.raises(InvalidArgument, match="dims must be >= 0"):
        from_raw("x", "FP32", (2, -3), b"")


def test_json_nested_and_flat_data_agree() -> None:
    base = {"name": "x", "datatype": "INT32", "shape": [2, 2]}
    nested = json.dumps({"inputs": [{**base, "data": [[1, 2], [3, 4]]}]}).encode()
    flat = json.dumps({"inputs": [{**base, "data": [1, 2, 3, 4]}]}).encode()
    a = decode_request(nested, None, "m", "").inputs[0].data
    b = decode_request(flat, None, "m", "").inputs[0].data
    assert np.array_equal(a, b) and a.dtype == np.int32


def test_binary_output_precedence() -> None:
    body = json.dumps(
        {"inputs": [], "parameters": {"binary_data_output": True},
         "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}]}
    ).encode()  # fmt: skip
    req = decode_request(body, None, "m", "")
    assert binary_outputs(req, ["a", "b"]) == {"a"}
    plain = decode_request(b'{"inputs": []}', None, "m", "")
    assert binary_outputs(plain, ["a", "b"]) == set()


def test_encode_response_json_and_binary() -> None:
    resp = InferResponse(
        "m", "1", "id7",
        outputs=[
            Tensor("a", "FP32", (2,), np.array([1.5, 2.5], dtype=np.float32)),
            Tensor("b", "BF16", (1,), np.array([1.5], dtype=ml_dtypes.bfloat16)),
            Tensor("c", "BYTES", (1,), np.array([b"hi"], dtype=object)),
        ],
    )  # fmt: skip
    body, n = encode_response(resp, {"a"})
    assert n is not None
    header = json.loads(body[:n])
    assert header["id"] == "id7"
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert header["outputs"][1]["data"] == [1.5]
    assert header["outputs"][2]["data"] == ["hi"]
    assert body[n:] == np.array([1.5, 2.5], dtype=np.float32).tobytes()


def test_typed_contents_out_of_range_are_invalid_argument() -> None:
    """Found by the property tests: 128 in int_contents of an INT8 input was a 500."""
    from tritonclient.grpc import service_pb2 as pb

    from sonic.protocol.grpc_codec import decode_request

    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype="INT8", shape=[1])
    t.contents.int_contents.append(128)
    with pytest.raises(InvalidArgument, match="int_contents holds a value that is not INT8"):
        decode_request(req)


def test_a_response_from_its_plan_head_parses_as_the_whole() -> None:
    """A planned request's response is its plan's serialized head followed by its own fields;
    clients parse the two as one message, equal to the one built field by field."""
    from tritonclient.grpc import service_pb2 as pb

    from sonic.protocol.grpc_codec import response_from, response_head

    out = np.arange(6, dtype=np.float32).reshape(3, 2)
    head = response_head("mlp", "1", [("output", "FP32", (3, 2)), ("n", "INT64", (3,))])
    raws = [out.tobytes(), np.arange(3).tobytes()]
    whole = pb.ModelInferResponse(model_name="mlp", model_version="1", id="r-9",
                                  raw_output_contents=raws)  # fmt: skip
    whole.outputs.add(name="output", datatype="FP32", shape=[3, 2])
    whole.outputs.add(name="n", datatype="INT64", shape=[3])
    assert pb.ModelInferResponse.FromString(response_from(head, "r-9", raws)) == whole


def test_decode_cost_counts_elements_not_raw_bytes() -> None:
    """What decides whether a request is decoded off the event loop: 8 per element for BYTES
    and typed contents, from the shape (reading a raw tensor's length copies it out of the
    message), nothing for raw fixed-size tensors, and no error for a shape that decoding will
    refuse."""
    from tritonclient.grpc import service_pb2 as pb

    from sonic.protocol.grpc_codec import decode_cost

    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="s", datatype="BYTES", shape=[2, 1000])
    req.inputs.add(name="f", datatype="FP32", shape=[4096])
    req.inputs.add(name="t", datatype="INT32", shape=[3]).contents.int_contents.extend([1, 2, 3])
    req.inputs.add(name="bad", datatype="BYTES", shape=[-1, 5])
    req.raw_input_contents.extend([b"\0" * 4, np.zeros(4096, np.float32).tobytes(), b""])
    assert decode_cost(req) == 8 * 2000 + 8 * 3
