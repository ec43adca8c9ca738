"""gRPC at the message level: typed contents, raw-content rules, streaming, health.

These use the generated stubs that tritonclient ships over a real channel, to
send what tritonclient itself never sends (typed contents, malformed raw data).
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

TYPED = {
    "BOOL": ("bool_contents", [True, False, True, True]),
    "INT8": ("int_contents", [-128, 0, 5, 127]),
    "INT16": ("int_contents", [-300, 0, 5, 300]),
    "INT32": ("int_contents", [-(2**31), 0, 5, 2**31 - 1]),
    "INT64": ("int64_contents", [-(2**63), 0, 5, 2**63 - 1]),
    "UINT8": ("uint_contents", [0, 1, 200, 255]),
    "UINT16": ("uint_contents", [0, 1, 60000, 65535]),
    "UINT32": ("uint_contents", [0, 1, 5, 2**32 - 1]),
    "UINT64": ("uint64_contents", [0, 1, 5, 2**64 - 1]),
    "FP32": ("fp32_contents", [0.5, -1.25, 3.0, 1e30]),
    "FP64": ("fp64_contents", [0.5, -1.25, 3.0, 1e300]),
    "BYTES": ("bytes_contents", [b"a", b"", b"hello", "é".encode()]),
}


@pytest.fixture
def stub(server: Any) -> Any:
    channel = grpc.insecure_channel(server.grpc_url)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _request(model: str, datatype: str, shape: list[int]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, id="typed")
    req.inputs.add(name="INPUT0", datatype=datatype, shape=shape)
    return req


@pytest.mark.parametrize("datatype", sorted(TYPED))
def test_typed_contents(stub: Any, datatype: str) -> None:
    field, values = TYPED[datatype]
    req = _request(f"identity_{datatype.lower()}", datatype, [1, 4])
    getattr(req.inputs[0].contents, field).extend(values)
    resp = stub.ModelInfer(req)
    assert resp.id == "typed"
    # Triton always answers with raw output contents, never typed ones.
    assert len(resp.raw_output_contents) == 1
    assert not resp.outputs[0].HasField("contents")
    from sonic.protocol.tensors import from_raw

    out = from_raw("OUTPUT0", datatype, (1, 4), resp.raw_output_contents[0]).reshape(-1)
    if datatype == "FP32":
        np.testing.assert_array_equal(out, np.array(values, dtype=np.float32))
    else:
        assert list(out) == values


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_raw_contents_rules(stub: Any) -> None:
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    # Mixing raw and typed contents is refused, naming the input.
    req = _request("identity_fp32", "FP32", [1, 4])
    req.inputs[0].contents.fp32_contents.extend([1, 2, 3, 4])
    req.raw_input_contents.append(x.tobytes())
    err = _error(lambda: stub.ModelInfer(req))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in err.details() and "INPUT0" in err.details()
    # A byte size that does not match shape and datatype.
    req = _request("identity_fp32", "FP32", [1, 4])
    req.raw_input_contents.append(x.tobytes()[:-2])
    err = _error(lambda: stub.ModelInfer(req))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "14" in err.details() and "16" in err.details() and "INPUT0" in err.details()
    # Too many raw entries, and none at all.
    req = _request("identity_fp32", "FP32", [1, 4])
    req.raw_input_contents.extend([x.tobytes(), x.tobytes()])
    assert _error(lambda: stub.ModelInfer(req)).code() == grpc.StatusCode.INVALID_ARGUMENT
    req = _request("identity_fp32", "FP32", [1, 4])
    err = _error(lambda: stub.ModelInfer(req))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "INPUT0" in err.details()
    # FP16 has no typed field.
    req = _request("identity_fp16", "FP16", [1, 1])
    req.inputs[0].contents.fp32_contents.append(1.0)
    err = _error(lambda: stub.ModelInfer(req))
    assert "raw_input_contents" in err.details()
    # Negative and unknown-datatype inputs.
    req = _request("identity_fp32", "FP32", [1, -4])
    req.raw_input_contents.append(b"")
    assert _error(lambda: stub.ModelInfer(req)).code() == grpc.StatusCode.INVALID_ARGUMENT
    req = _request("identity_fp32", "FLOAT", [1, 1])
    req.raw_input_contents.append(b"1234")
    err = _error(lambda: stub.ModelInfer(req))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "FLOAT" in err.details()


def test_stream_infer(stub: Any) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    def requests() -> Any:
        for i in range(20):
            req = _request("identity_fp32", "FP32", [2, 4])
            req.id = str(i)
            req.raw_input_contents.append(x.tobytes())
            yield req
        bad = _request("no_such_model", "FP32", [2, 4])
        bad.id = "bad"
        bad.raw_input_contents.append(x.tobytes())
        yield bad

    responses = list(stub.ModelStreamInfer(requests()))
    assert len(responses) == 21
    ok = [r for r in responses if not r.error_message]
    assert sorted(int(r.infer_response.id) for r in ok) == list(range(20))
    for r in ok:
        assert r.infer_response.raw_output_contents[0] == x.tobytes()
    (err,) = [r for r in responses if r.error_message]
    assert "no_such_model" in err.error_message and err.infer_response.id == "bad"


def test_grpc_health_service(server: Any) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
