"""``sonic serve --grpc-frontends N``: gRPC served by front-end processes relaying to the server.

Real processes and clients throughout: the front ends must be indistinguishable from the
in-process gRPC server for tritonclient, grpc stubs and perf_analyzer, survive their own
crash, and not outlive the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from tests.fixtures.perf_analyzer import perf_analyzer_path


def frontends(server: LocalServer) -> list[psutil.Process]:
    """The server's live front-end processes."""
    assert server.proc is not None
    found = []
    for proc in psutil.Process(server.proc.pid).children():
        try:
            if "sonic.server.relay.frontend" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # gone, or a zombie not yet reaped
            pass
    return found


@pytest.fixture(scope="module")
def relayed(model_repo: Path) -> Iterator[LocalServer]:
    with LocalServer(model_repo, "--grpc-frontends=1", "--allow-client-shm=true") as srv:
        yield srv


def _infer(url: str, model: str, x: np.ndarray, dtype: str) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp]).as_numpy("OUTPUT0")


def test_a_front_end_process_serves_grpc(relayed: LocalServer) -> None:
    (front,) = frontends(relayed)
    ports = {c.laddr.port for c in front.net_connections("tcp") if c.status == "LISTEN"}
    assert relayed.grpc_port in ports
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(_infer(relayed.grpc_url, "identity_fp32", x, "FP32"), x)
    client = grpcclient.InferenceServerClient(relayed.grpc_url)
    assert client.is_server_ready()
    assert client.get_model_config("mlp").config.max_batch_size == 256
    assert client.get_inference_statistics("identity_fp32").model_stats[0].inference_count >= 3


def test_errors_match_the_in_process_server(relayed: LocalServer, server: LocalServer) -> None:
    def failure(url: str, call: Any) -> tuple[str, str]:
        client = grpcclient.InferenceServerClient(url)
        with pytest.raises(InferenceServerException) as info:
            call(client)
        return info.value.status(), info.value.message()

    calls = [
        lambda c: c.get_model_metadata("no_such_model"),
        lambda c: c.infer("mlp", [grpcclient.InferInput("wrong", [1, 64], "FP32")
                                  .set_data_from_numpy(np.ones((1, 64), np.float32))]),
        lambda c: c.load_model("mlp"),  # model control is off
    ]
    for call in calls:
        relay_error = failure(relayed.grpc_url, call)
        assert relay_error == failure(server.grpc_url, call)
        assert relay_error[0] != "StatusCode.INTERNAL"


def test_large_messages_pass_both_ways(relayed: LocalServer) -> None:
    x = np.random.default_rng(1).standard_normal((2, 4 << 20), dtype=np.float32)  # 32 MiB
    np.testing.assert_array_equal(_infer(relayed.grpc_url, "identity_fp32", x, "FP32"), x)


def test_streams_are_relayed_message_by_message(relayed: LocalServer) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    def requests() -> Iterator[Any]:
        for i in range(20):
            req = pb.ModelInferRequest(model_name="identity_fp32" if i != 7 else "nope", id=str(i))
            req.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 4])
            req.raw_input_contents.append(x.tobytes())
            yield req

    with grpc.insecure_channel(relayed.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = list(stub.ModelStreamInfer(requests(), timeout=30))
    assert len(responses) == 20
    ok = {r.infer_response.id: r for r in responses if not r.error_message}
    assert sorted(ok, key=int) == [str(i) for i in range(20) if i != 7]
    assert all(r.infer_response.raw_output_contents[0] == x.tobytes() for r in ok.values())
    (bad,) = [r for r in responses if r.error_message]
    assert bad.infer_response.id == "7" and "nope" in bad.error_message


def test_a_cancelled_watch_ends_on_the_server(relayed: LocalServer) -> None:
    with grpc.insecure_channel(relayed.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        # The server's side of the stream was cancelled and the link still serves calls.
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )


def test_system_shared_memory_through_the_relay(relayed: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(relayed.grpc_url)
    tag = f"relay_{os.getpid()}"
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    region = shm.create_shared_memory_region(tag, f"/sonic_{tag}", 3 * a.nbytes)
    try:
        shm.set_shared_memory_region(region, [a, a])
        client.register_system_shared_memory(tag, f"/sonic_{tag}", 3 * a.nbytes)
        inputs = []
        for i, name in enumerate(("INPUT0", "INPUT1")):
            inp = grpcclient.InferInput(name, [2, 16], "INT32")
            inp.set_shared_memory(tag, a.nbytes, offset=i * a.nbytes)
            inputs.append(inp)
        out = grpcclient.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory(tag, a.nbytes, offset=2 * a.nbytes)
        client.infer("simple", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT1"), out])
        result = shm.get_contents_as_numpy(region, np.int32, [2, 16], offset=2 * a.nbytes)
        np.testing.assert_array_equal(result, a + a)
        assert tag in {r.name for r in client.get_system_shared_memory_status().regions.values()}
        client.unregister_system_shared_memory(tag)
    finally:
        shm.destroy_shared_memory_region(region)


def test_perf_analyzer_through_the_relay(relayed: LocalServer) -> None:
    proc = subprocess.run(
        [perf_analyzer_path(), "-m", "mlp", "-u", relayed.grpc_url, "-i", "grpc", "-b", "4",
         "--concurrency-range", "4", "--measurement-interval", "500", "-s", "50", "-r", "20"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Server:" in proc.stdout and "compute infer" in proc.stdout, proc.stdout


def test_credentials_reach_the_server_through_the_relay(model_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("inference tok-relay-0123456789\n")
    x = np.ones((1, 4), np.float32)
    inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    with LocalServer(model_repo, "--grpc-frontends=1",
                     f"--auth-token-file={tmp_path / 'tokens'}") as srv:  # fmt: skip
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        with pytest.raises(InferenceServerException) as info:
            client.infer("identity_fp32", [inp])
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        good = {"authorization": "Bearer tok-relay-0123456789"}
        out = client.infer("identity_fp32", [inp], headers=good).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, x)
        with pytest.raises(InferenceServerException) as info:  # inference may not load models
            client.load_model("identity_fp32", headers=good)
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"


def test_a_dead_front_end_is_replaced(model_repo: Path) -> None:
    with LocalServer(model_repo, "--grpc-frontends=1") as srv:
        (front,) = frontends(srv)
        front.kill()
        x = np.ones((1, 4), np.float32)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = frontends(srv)
            if new and new[0].pid != front.pid:
                try:
                    np.testing.assert_array_equal(_infer(srv.grpc_url, "identity_fp32", x,
                                                         "FP32"), x)  # fmt: skip
                    break
                except InferenceServerException:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("no working front end 30 s after the first was killed")


def test_front_ends_do_not_outlive_the_server(model_repo: Path) -> None:
    with LocalServer(model_repo, "--grpc-frontends=2") as srv:
        fronts = frontends(srv)
        assert len(fronts) == 2
        for _ in range(8):  # either front end may take a connection; both answer
            assert grpcclient.InferenceServerClient(srv.grpc_url).is_server_live()
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs(fronts, timeout=15)
        assert not alive, "front ends kept running after their server was killed"


def test_grpc_frontends_and_workers_are_exclusive(model_repo: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sonic.cli", "serve", f"--model-repository={model_repo}",
         "--workers=2", "--grpc-frontends=1"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--grpc-frontends" in proc.stderr and "choose one" in proc.stderr


def test_a_port_in_use_fails_the_start_with_the_reason(model_repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "sonic.cli", "serve", f"--model-repository={model_repo}",
             "--grpc-frontends=1", f"--grpc-port={port}", "--grpc-address=127.0.0.1",
             "--http-port=0", "--metrics-port=0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr and "did not start" in proc.stderr
