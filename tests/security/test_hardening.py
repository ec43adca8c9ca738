"""What a security review broke, each against a real ``sonic serve``: a request that killed the
server, requests that stalled every client, and client input that gave a 500.  Each attack
runs while a probe checks that other clients are still served (tests.security.attacks)."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.zoo.examples import identity_model, mlp_model, write_model
from tests.fixtures.waiting import wall_clock
from tests.security.attacks import assert_unharmed, under_attack

MLP = ('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
       'input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]\n'
       'output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]\n')  # fmt: skip
HOLD_MODEL = textwrap.dedent("""
    import time
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            time.sleep(0.5)
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy()[:1])])
                for r in requests]
""")
HOLD_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_UINT8, dims: [ -1 ] } ]
output [ { name: "Y", data_type: TYPE_UINT8, dims: [ -1 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
QUEUE_BYTES = 48 << 20


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    write_model(mlp_model(), root, "mlp", config=MLP)
    write_model(identity_model("BYTES"), root, "identity_bytes")
    (root / "hold" / "1").mkdir(parents=True)
    (root / "hold" / "1" / "model.py").write_text(HOLD_MODEL)
    (root / "hold" / "config.pbtxt").write_text(HOLD_CONFIG)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[LocalServer]:
    with LocalServer(repo, "--allow-client-shm=true", "--model-control-mode=explicit",
                     "--load-model=*", f"--max-queue-bytes={QUEUE_BYTES}") as s:  # fmt: skip
        yield s


def _post(server: LocalServer, path: str, body: bytes, headers: dict[str, str] | None = None,
          timeout: float = 120) -> tuple[int, bytes]:  # fmt: skip
    host, port = server.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _no_traceback(server: LocalServer) -> None:
    assert "Traceback" not in server.log(), server.log()[-4000:]


# -- 1. a truncated shared-memory region ------------------------------------------


@pytest.mark.parametrize("mod", [grpcclient, httpclient], ids=["grpc", "http"])
def test_truncated_region_is_an_error_not_a_crash(server: LocalServer, mod: Any) -> None:
    """Was: SIGBUS, the server died with every request in flight."""
    client = mod.InferenceServerClient(server.grpc_url if mod is grpcclient else server.http_url)
    tag = f"trunc_{mod.__name__.split('.')[-1]}_{os.getpid()}"
    key = f"/sonic_{tag}"
    region = shm.create_shared_memory_region(tag, key, 1 << 20)
    try:
        x = np.ones((1, 64), np.float32)
        shm.set_shared_memory_region(region, [x])
        client.register_system_shared_memory(tag, key, 1 << 20)
        inp = mod.InferInput("input", [1, 64], "FP32")
        inp.set_shared_memory(tag, x.nbytes)
        out = mod.InferRequestedOutput("output")
        out.set_shared_memory(tag, 8, offset=4096)
        client.infer("mlp", [inp], outputs=[out])  # 200 while the region is whole
        os.truncate(f"/dev/shm{key}", 0)
        for outputs in (None, [out]):
            with pytest.raises(InferenceServerException) as info:
                client.infer("mlp", [inp], outputs=outputs)
            assert f"shared memory region '{tag}'" in info.value.message()
            assert "truncated" in info.value.message()
        # Inputs still whole, the output's bytes cut off: the write is refused, not faulted.
        os.truncate(f"/dev/shm{key}", 1024)
        with pytest.raises(InferenceServerException) as info:
            client.infer("mlp", [inp], outputs=[out])
        assert "truncated" in info.value.message()
        assert server.proc is not None and server.proc.poll() is None
        assert client.is_server_ready()
        client.unregister_system_shared_memory(tag)
    finally:
        shm.destroy_shared_memory_region(region)


# -- 2. a long model name -----------------------------------------------------------


@wall_clock
def test_long_model_name_costs_nothing(server: LocalServer) -> None:
    """Was: 16 MiB name -> every client stalled 2 s, +730 MB (difflib on the loop)."""
    name = "m" * (16 << 20)

    def attack() -> Any:
        with grpc.insecure_channel(server.grpc_url, options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:  # fmt: skip
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            ready = stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=30)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=30)
            return ready, info.value

    felt = under_attack(server, attack)
    assert_unharmed(felt)
    ready, err = felt.result
    assert not ready.ready
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than the 255 characters" in err.details() and len(err.details()) < 1000


# -- 3. a gzip body that inflates to millions of lists ----------------------------


@wall_clock
def test_gzip_json_bomb_is_refused_cheaply(server: LocalServer) -> None:
    """Was: 64 KiB of gzip -> 64 MiB of '[],' -> 21 million lists, 10 s and 2 GB; three at
    once stalled the server for 25 s."""
    text = (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":['
            + b"[]," * 22_000_000 + b'[]]}]}')  # fmt: skip
    bomb = gzip.compress(text, 9)
    assert len(bomb) < 200_000 and len(text) < 1 << 26

    def attack() -> list[tuple[int, bytes]]:
        with ThreadPoolExecutor(3) as pool:
            return list(pool.map(lambda _: _post(server, "/v2/models/mlp/infer", bomb,
                                                 {"Content-Encoding": "gzip"}), range(3)))

    felt = under_attack(server, attack)
    assert_unharmed(felt)
    for status, body in felt.result:
        assert status == 400, body
        assert b"lists nested" in body and b"the shape allows" in body
    # The three were inflated and scanned one at a time, on the server's one thread for large
    # decodes: with a thread each, their 64 MiB apiece grew the server by 270-350 MB (against
    # about 120) and a health check waited up to 0.65 s for the GIL.
    assert felt.memory_growth_mb < 200, felt


def test_large_nested_json_still_works(server: LocalServer) -> None:
    """The scan (for headers over 64 KiB) refuses only what the shape cannot need."""
    x = np.arange(8 * 64, dtype=np.float32).reshape(8, 64) / 100
    body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 64],
                                     "data": [[float(v) for v in row] for row in x]}]})
    padded = body[:-3] + b', "parameters": {"pad": "' + b"x" * 200_000 + b'"}}]}'
    for payload in (body, padded):
        status, answer = _post(server, "/v2/models/mlp/infer", payload)
        assert status == 200, answer
    direct = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("input", [8, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    expected = direct.infer("mlp", [inp]).as_numpy("output")
    got = np.array(orjson.loads(answer)["outputs"][0]["data"], np.float32).reshape(8, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# -- 5. decoding before the model lookup --------------------------------------------


def _bytes_payload(total: int) -> np.ndarray:
    return np.array([b"x" * 8] * (total // 12), dtype=object)


@wall_clock
def test_tensors_to_no_model_are_not_decoded(server: LocalServer) -> None:
    """Was: 64 MiB of BYTES to a model that does not exist stalled every client for 11 s."""
    data = _bytes_payload(60 << 20)

    def attack() -> tuple[Any, Any]:
        errors = []
        for mod, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
            client = mod.InferenceServerClient(url)
            inp = mod.InferInput("INPUT0", [1, data.size], "BYTES")
            inp.set_data_from_numpy(data.reshape(1, -1))
            with pytest.raises(InferenceServerException) as info:
                client.infer("no_such_model", [inp])
            errors.append(info.value)
        return tuple(errors)

    felt = under_attack(server, attack)
    assert_unharmed(felt)
    for err in felt.result:
        assert "unknown model: 'no_such_model'" in err.message()


@wall_clock
def test_big_bytes_tensors_are_decoded_off_the_loop(server: LocalServer) -> None:
    """A 60 MiB BYTES tensor (5 million elements) is decoded in full before the model refuses
    its input name; meanwhile other clients are served."""
    data = _bytes_payload(60 << 20).reshape(1, -1)

    def attack() -> Any:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("NOT_AN_INPUT", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity_bytes", [inp])
        return info.value

    felt = under_attack(server, attack)
    assert felt.slowest_probe_s < 0.5, felt
    assert "unexpected inference input 'NOT_AN_INPUT'" in felt.result.message()


# -- 7. files a config names stay inside the model directory ---------------------


@pytest.mark.parametrize("override", [
    {"output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [2],
                 "label_filename": "/etc/hostname"}]},
    {"output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [2],
                 "label_filename": "../../../../../etc/hostname"}]},
    {"default_model_filename": "/etc/hostname"},
], ids=["absolute-labels", "dotdot-labels", "absolute-model-file"])  # fmt: skip
def test_config_files_stay_inside_the_model(server: LocalServer, override: dict[str, Any]) -> None:
    """Was: an admin's label_filename '/etc/hostname' came back to callers in classification."""
    config = {"name": "mlp", "platform": "onnxruntime_onnx", "max_batch_size": 8,
              "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}],
              "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [2]}],
              **override}  # fmt: skip
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("mlp", config=json.dumps(config))
    assert "inside the model directory" in info.value.message()
    client.load_model("mlp")  # the original config serves again


def test_label_symlink_out_of_the_model_is_refused(server: LocalServer, repo: Path) -> None:
    link = repo / "mlp" / "labels.txt"
    link.symlink_to("/etc/hostname")
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        config = MLP.replace('dims: [ 2 ] }', 'dims: [ 2 ] label_filename: "labels.txt" }')
        (repo / "mlp" / "config.pbtxt").write_text(config)
        with pytest.raises(InferenceServerException) as info:
            client.load_model("mlp")
        assert "leads outside the model directory" in info.value.message()
    finally:
        link.unlink()
        (repo / "mlp" / "config.pbtxt").write_text(MLP)
        httpclient.InferenceServerClient(server.http_url).load_model("mlp")


# -- 9. client input that gave a 500 --------------------------------------------------


def _infer_json(server: LocalServer, inputs: list[dict[str, Any]],
                outputs: list[dict[str, Any]] | None = None) -> tuple[int, bytes]:  # fmt: skip
    body: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    return _post(server, "/v2/models/mlp/infer", orjson.dumps(body))


MLP_INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}


@pytest.mark.parametrize("params", [
    {"shared_memory_region": "r", "shared_memory_byte_size": 256, "shared_memory_offset": "abc"},
    {"shared_memory_region": "r", "shared_memory_byte_size": [256]},
    {"shared_memory_region": ["r"], "shared_memory_byte_size": 256},
], ids=["offset-string", "size-list", "region-list"])  # fmt: skip
def test_bad_shared_memory_parameters_are_400(server: LocalServer, params: dict[str, Any]) -> None:
    region = shm.create_shared_memory_region("r", f"/sonic_params_{os.getpid()}", 4096)
    client = httpclient.InferenceServerClient(server.http_url)
    client.register_system_shared_memory("r", f"/sonic_params_{os.getpid()}", 4096)
    try:
        status, body = _infer_json(server, [{"name": "input", "datatype": "FP32",
                                             "shape": [1, 64], "parameters": params}])
        assert status == 400, body
        assert b"must be" in body
    finally:
        client.unregister_system_shared_memory("r")
        shm.destroy_shared_memory_region(region)
    _no_traceback(server)


@pytest.mark.parametrize("k", [-1, "abc", 1.5, True])
def test_bad_classification_is_400(server: LocalServer, k: Any) -> None:
    status, body = _infer_json(server, [MLP_INPUT],
                               [{"name": "output", "parameters": {"classification": k}}])
    assert status == 400, body
    assert b"'classification' must be a non-negative integer" in body
    _no_traceback(server)


def test_deeply_nested_json_is_400(server: LocalServer) -> None:
    deep = b"[" * 1000 + b"0.5" + b"]" * 1000
    body = (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":' + deep
            + b"}]}")  # fmt: skip
    status, answer = _post(server, "/v2/models/mlp/infer", body)
    assert status == 400, answer
    assert b"nests deeper" in answer
    _no_traceback(server)


# -- 10. the queue is bounded in bytes -------------------------------------------------


@wall_clock
def test_queue_is_bounded_in_bytes(server: LocalServer) -> None:
    """Was: 40 queued 16 MiB requests peaked at 1.9 GB.  Each request here holds 8 MiB for
    0.5 s; the server takes what fits in --max-queue-bytes and refuses the rest by name."""
    x = np.zeros((8 << 20,), np.uint8)

    def one(_: int) -> str:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("X", [x.size], "UINT8")
        inp.set_data_from_numpy(x)
        try:
            client.infer("hold", [inp], client_timeout=120)
            return "ok"
        except InferenceServerException as err:
            return err.message()

    def attack() -> list[str]:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(16)))

    felt = under_attack(server, attack)
    assert_unharmed(felt)
    refused = [r for r in felt.result if r != "ok"]
    # At most 6 are held at once; how many get in later depends on when the rest arrive.
    assert refused and felt.result.count("ok") >= QUEUE_BYTES // x.nbytes, felt.result
    assert all("--max-queue-bytes" in r for r in refused), refused
