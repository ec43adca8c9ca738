"""Limits and faults against a real ``sonic serve``: every refusal is a clear error, the
server stays up, and no accepted request is lost."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import socket
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.zoo.examples import mlp_model, write_model

PYTHON_MODEL = textwrap.dedent("""
    import time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            if "{kind}" == "broken":
                raise RuntimeError("calibration file /cvmfs/calib.db is missing")

        def execute(self, requests):
            out = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                if "{kind}" == "raises" and (x < 0).any():
                    raise ValueError(f"negative input {{x.min()}} reached the model")
                if "{kind}" == "sleepy":
                    time.sleep(float(x.reshape(-1)[0]))
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x.copy())]))
            return out
""")
PYTHON_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
TIMEOUT_MS = 1500
LIMITS = ["--max-batch-size=4", "--max-queue-size=2", f"--request-timeout-ms={TIMEOUT_MS}",
          "--max-tensor-elements=100000", "--grpc-max-message-size=1000000",
          "--http-max-input-size=1000000"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("faults")
    write_model(mlp_model(), repo, "mlp", config=(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]\n'
        'output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]\n'))  # fmt: skip
    for kind in ("sleepy", "raises", "broken"):
        (repo / kind / "1").mkdir(parents=True)
        (repo / kind / "1" / "model.py").write_text(PYTHON_MODEL.replace("{kind}", kind)
                                                    .replace("{{", "{").replace("}}", "}"))
        (repo / kind / "config.pbtxt").write_text(PYTHON_CONFIG)
    with LocalServer(repo, "--model-control-mode=explicit", "--load-model=*", *LIMITS) as s:
        yield s


def x_input(mod: Any, value: float) -> Any:
    x = mod.InferInput("X", [1], "FP32")
    x.set_data_from_numpy(np.array([value], np.float32))
    return x


def sleep_call(server: LocalServer, seconds: float, **kw: Any) -> Any:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    return client.infer("sleepy", [x_input(grpcclient, seconds)], **kw)


def status_of(fn: Any) -> str:
    try:
        fn()
    except InferenceServerException as err:
        return f"{err.status()} {err.message()}"
    return "ok"


def test_a_backend_that_raises_fails_only_that_request(server: LocalServer) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    h = httpclient.InferenceServerClient(server.http_url)
    for client, mod, code in ((g, grpcclient, "StatusCode.INTERNAL"), (h, httpclient, "500")):
        with pytest.raises(InferenceServerException) as info:
            client.infer("raises", [x_input(mod, -2.0)])
        assert info.value.status() == code
        message = info.value.message()
        assert "ValueError" in message and "negative input -2.0" in message
        assert client.infer("raises", [x_input(mod, 3.0)]).as_numpy("Y")[0] == 3.0
    assert g.is_server_live() and g.is_server_ready()


def test_a_model_that_fails_to_load_is_unavailable_with_its_reason(server: LocalServer) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    row = {m["name"]: m for m in g.get_model_repository_index(as_json=True)["models"]}["broken"]
    assert row["state"] == "UNAVAILABLE" and "calibration file" in row["reason"]
    assert not g.is_model_ready("broken")
    with pytest.raises(InferenceServerException) as info:
        g.infer("broken", [x_input(grpcclient, 1.0)])
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert "calibration file" in info.value.message()
    assert g.infer("raises", [x_input(grpcclient, 1.0)]).as_numpy("Y")[0] == 1.0


def test_unloading_completes_the_requests_in_flight(server: LocalServer) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(sleep_call, server, 0.5) for _ in range(2)]
        time.sleep(0.2)  # one executing, one waiting for the instance
        g.unload_model("sleepy")  # returns once both have finished
        assert [f.result().as_numpy("Y")[0] for f in running] == [0.5, 0.5]
    assert status_of(lambda: sleep_call(server, 0.0)).startswith("StatusCode.UNAVAILABLE")
    g.load_model("sleepy")
    assert sleep_call(server, 0.0).as_numpy("Y")[0] == 0.0


def test_queue_and_timeout_limits(server: LocalServer) -> None:
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: status_of(lambda: sleep_call(server, 0.3)), range(6)))
    refused = [o for o in outcomes if o != "ok"]
    assert refused and len(refused) <= 3, outcomes
    assert all("Exceeds maximum queue size" in o and "--max-queue-size 2" in o for o in refused)
    # A request still running at --request-timeout-ms is answered UNAVAILABLE at that moment.
    t0 = time.perf_counter()
    outcome = status_of(lambda: sleep_call(server, 2.5))
    assert outcome.startswith("StatusCode.UNAVAILABLE Request timeout expired")
    assert TIMEOUT_MS / 1000 <= time.perf_counter() - t0 < 2.4
    time.sleep(1.2)  # let the instance finish the abandoned call
    assert sleep_call(server, 0.0).as_numpy("Y")[0] == 0.0


def test_size_limits_are_clear_errors(server: LocalServer) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    # The server's cap lowers the model's max_batch_size, so clients split at 4.
    assert g.get_model_config("mlp", as_json=True)["config"]["max_batch_size"] == 4
    x = grpcclient.InferInput("input", [5, 64], "FP32")
    x.set_data_from_numpy(np.zeros((5, 64), np.float32))
    assert "batch-size must be <= 4" in status_of(lambda: g.infer("mlp", [x]))

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))
    for shape in ([0, 2**62], [400, 400], [-1, 64]):
        req = pb.ModelInferRequest(model_name="mlp")
        req.inputs.add(name="input", datatype="FP32", shape=shape)
        req.raw_input_contents.append(b"")
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, shape
        assert "shape" in info.value.details()
    big = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\0" * 1_100_000])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    url = f"http://{server.http_url}/v2/models/mlp/infer"
    huge = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": [1, 10**12], "data": [0]}]})  # fmt: skip
    bomb = gzip.compress(b"{" + b" " * 20_000_000 + b"}")
    liar = orjson.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [99_999],
                                     "parameters": {"binary_data_size": 8}}]})  # fmt: skip
    for label, body, headers, words in (
        ("elements", huge, {}, "--max-tensor-elements"),
        ("body", b"x" * 1_100_000, {}, "--http-max-input-size"),
        ("zip bomb", bomb, {"Content-Encoding": "gzip"}, "inflates"),
        ("BYTES count", liar + b"\0" * 8, {"Inference-Header-Content-Length": str(len(liar))},
         "cannot hold 99999 elements"),
    ):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 400 and words in err.value.read().decode(), label
    # A chunked body has no length to check up front: it is cut off at the limit.
    conn = http.client.HTTPConnection(server.http_url)
    conn.request("POST", "/v2/models/mlp/infer", body=iter([b"y" * 500_000] * 3),
                 encode_chunked=True)  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 400 and b"--http-max-input-size" in resp.read()


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _pending(server: LocalServer, model: str) -> float:
    text = urllib.request.urlopen(server.metrics_url).read().decode()
    m = re.search(rf'nv_inference_pending_request_count{{model="{model}",version="1"}} (\S+)', text)
    return float(m.group(1)) if m else -1.0


def test_clients_that_go_away_leak_nothing(server: LocalServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    sleep_call(server, 0.0)
    before = _fds(pid)

    def impatient_grpc() -> None:
        with pytest.raises(InferenceServerException):
            sleep_call(server, 0.2, client_timeout=0.05)

    def vanishing_http() -> None:
        body = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1],
                                         "data": [0.2]}]})  # fmt: skip
        with socket.create_connection(("127.0.0.1", server.http_port)) as s:
            s.sendall(b"POST /v2/models/sleepy/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
            time.sleep(0.02)

    threads = [threading.Thread(target=f) for _ in range(15) for f in (impatient_grpc,
                                                                      vanishing_http)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 15
    while _pending(server, "sleepy") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pending(server, "sleepy") == 0
    time.sleep(1.0)  # the calls that were already executing finish
    assert sleep_call(server, 0.0).as_numpy("Y")[0] == 0.0
    assert _fds(pid) <= before + 4, (before, _fds(pid))
