"""The native gRPC transport (sonic.server.frontends.grpc_native): selection, the start-up log,
and what an operator sees where it is not built."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sonic.launcher import LocalServer
from sonic.zoo.examples import mlp_model, write_model
from tests.fixtures.metrics import metric
from tests.fixtures.statistics import queue_ms
from tests.fixtures.waiting import wait_until

MISSING = "import sys; sys.modules['sonic.server.frontends._grpc_native'] = None; "


def _sleeping_model(seconds: float) -> str:
    """A python-backend identity model that sleeps ``seconds`` per execution, after touching
    ``started`` beside its file (so a test can queue a call behind one known to be running)."""
    return f"""
import time
from pathlib import Path
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        (Path(__file__).parent / "started").touch()
        time.sleep({seconds})
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]) for r in requests]
"""


SLEEPY = _sleeping_model(0.05)
DROWSY = _sleeping_model(1.0)  # long enough to see a request wait behind it
SLEEPY_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""


#: Four 512x512 dense layers over any number of rows, without batching: one request of many
#: rows is a long call, and a model whose calls are short on average runs them on the event
#: loop's thread (sonic.server.scheduling.instances), holding the loop for that long.
WIDE_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "input", data_type: TYPE_FP32, dims: [ -1, 512 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ -1, 512 ] } ]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("native")
    write_model(mlp_model(), root, "mlp")
    write_model(mlp_model((512,) * 5), root, "wide", config=WIDE_CONFIG)
    for name, code in (("sleepy", SLEEPY), ("drowsy", DROWSY)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(code)
        (root / name / "config.pbtxt").write_text(SLEEPY_CONFIG)
    return root


@pytest.mark.parametrize("transport", ["native", "python"])
def test_the_log_says_which_transport_serves(repo: Path, transport: str) -> None:
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()
        words = "native transport, grpc++" if transport == "native" else "python transport"
        assert words in server.log()
        assert "Unknown experiment" not in server.log()  # grpcio's setting kept from grpc++


def test_native_is_the_default_where_it_is_built(repo: Path) -> None:
    with LocalServer(repo, env={"PATH": "/usr/bin:/bin"}) as server:
        assert "(native transport, grpc++)" in server.log()


def test_grpc_threads_are_named(repo: Path) -> None:
    """top -H (and benchmarks/dataplane_cost.py) tell grpc++'s completion-queue thread from
    Python's by its name."""
    with LocalServer(repo) as server:
        assert server.proc is not None
        names = [Path(f"/proc/{server.proc.pid}/task/{t.id}/comm").read_text().strip()
                 for t in psutil.Process(server.proc.pid).threads()]  # fmt: skip
        assert names.count("sonic-grpc-cq") == 1, names


def _serve(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = (MISSING + "from sonic.cli import main; "
            f"main(['serve', '--model-repository={repo}', '--http-port=0', '--grpc-port=0', "
            f"'--metrics-port=0', '--allow-http=false', '--allow-metrics=false', "
            + "".join(f"'{a}', " for a in args) + "])")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_asking_for_native_where_it_is_not_built_fails_clearly(repo: Path) -> None:
    run = _serve(repo, "--grpc-transport=native")
    assert run.returncode == 2, run.stderr
    assert "the native gRPC transport is not built: run 'make setup'" in run.stderr
    assert "--grpc-transport python" in run.stderr


def test_without_the_extension_the_default_is_python() -> None:
    code = MISSING + (
        "from sonic.server.frontends.grpc_native import default_transport as d; print(d())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "python", out.stderr


def _sockets(pid: int) -> int:
    fds = os.listdir(f"/proc/{pid}/fd")
    return sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def test_streams_and_calls_cut_off_leak_nothing(repo: Path) -> None:
    """Clients that go away mid-call and mid-stream, 300 times: the server's sockets and
    memory come back to where they were, and it still answers."""
    request = pb.ModelInferRequest(model_name="sleepy")
    request.inputs.add(name="X", datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    with LocalServer(repo, "--grpc-transport=native") as server:
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)

        def cycles(n: int) -> None:
            with grpc.insecure_channel(server.grpc_url) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for i in range(n):
                    if i % 2:
                        call = stub.ModelStreamInfer(iter([request, request]))
                    else:
                        call = stub.ModelInfer.future(request)
                    time.sleep(0.005)
                    call.cancel()

        cycles(50)
        time.sleep(1.0)
        sockets, rss = _sockets(proc.pid), proc.memory_info().rss
        cycles(300)
        time.sleep(1.5)  # the executions already started finish
        assert _sockets(proc.pid) <= sockets + 2
        assert proc.memory_info().rss - rss < 20 << 20
        with grpc.insecure_channel(server.grpc_url) as channel:
            answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert np.frombuffer(answer.raw_output_contents[0], np.float32)[0] == 1.0
        assert "Traceback" not in server.log()


@pytest.mark.parametrize("transport", ["native", "python"])
def test_gzip_requests_and_deadlines(repo: Path, transport: str) -> None:
    """grpc's request compression and a client deadline, on both transports."""
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        plain = client.infer("mlp", [inp]).as_numpy("output")
        zipped = client.infer("mlp", [inp], compression_algorithm="gzip").as_numpy("output")
        np.testing.assert_array_equal(plain, zipped)
        request = pb.ModelInferRequest(model_name="sleepy")
        request.inputs.add(name="X", datatype="FP32", shape=[1])
        request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=0.01)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t0 < 1.0


def _pending(server: LocalServer, model: str) -> float:
    return metric(server, "nv_inference_pending_request_count", model=model, version="1")


@pytest.mark.parametrize("transport", ["native", "python"])
def test_a_call_cancelled_while_queued_is_withdrawn(repo: Path, transport: str) -> None:
    """A ModelInfer whose client goes away while it waits for the instance never runs: it
    counts as a failure, the pending gauge comes back to 0, and the server answers on."""
    request = pb.ModelInferRequest(model_name="drowsy")
    request.inputs.add(name="X", datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # Steps wait on the server, not on fixed sleeps: on a loaded machine a sleep can
            # cancel the second call before it arrives, or let it overtake the first.
            started = repo / "drowsy" / "1" / "started"
            started.unlink(missing_ok=True)
            running = stub.ModelInfer.future(request)
            wait_until(started.exists, 5, poll_s=0.01)
            queued = stub.ModelInfer.future(request)
            wait_until(lambda: _pending(server, "drowsy") >= 1, 5, poll_s=0.01)
            assert not running.done(), "the first call ended before the second was queued"
            queued.cancel()
            assert running.result(timeout=10).model_name == "drowsy"
        time.sleep(0.2)
        stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
            "drowsy", as_json=True)["model_stats"][0]  # fmt: skip
        assert stats["inference_stats"]["success"]["count"] == "1"
        assert stats["inference_stats"]["fail"]["count"] == "1"
        assert stats["execution_count"] == "1"  # the withdrawn call never reached the model
        assert _pending(server, "drowsy") == 0.0
        assert "Traceback" not in server.log()


def _loop_answers(server: LocalServer) -> bool:
    """Whether the server's event loop answers HTTP at once (it serves HTTP too)."""
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/live", timeout=0.05):
            return True
    except (TimeoutError, urllib.error.URLError):
        return False


def test_a_wait_for_the_event_loop_is_queue_time(repo: Path) -> None:
    """grpc++ reads calls while the event loop is busy (here: running a long call inline), and
    stamps each one; a request's queue time counts from there, so the autoscaling signal (queue
    time per execution) sees a loop that cannot keep up, not only a full model queue."""
    with LocalServer(repo, "--grpc-transport=native") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        small = grpcclient.InferInput("input", [1, 64], "FP32")
        small.set_data_from_numpy(np.ones((1, 64), np.float32))
        row = grpcclient.InferInput("input", [1, 512], "FP32")
        row.set_data_from_numpy(np.ones((1, 512), np.float32))
        big = grpcclient.InferInput("input", [8192, 512], "FP32")
        big.set_data_from_numpy(np.ones((8192, 512), np.float32))
        for _ in range(3):  # the second on takes mlp's plan, the frame path's fast one
            client.infer("mlp", [small])
        for _ in range(3):
            for _ in range(40):  # wide's calls are short on average again: they run inline
                client.infer("wide", [row])
            q0, n0 = queue_ms(server, "mlp")
            held = threading.Thread(target=client.infer, args=("wide", [big]))
            held.start()
            # The long call holds the loop once the loop stops answering HTTP.
            wait_until(lambda: not _loop_answers(server), 10, poll_s=0.01)
            t0 = time.perf_counter()
            client.infer("mlp", [small])
            waited_ms = (time.perf_counter() - t0) * 1000
            held.join()
            q1, n1 = queue_ms(server, "mlp")
            if waited_ms > 20:
                break
        else:
            pytest.fail(f"the long call never held the loop ({waited_ms:.0f} ms)")
        assert n1 - n0 == 1
        # The round trip was the wait for the loop and little else; most of it is queue time.
        assert q1 - q0 > 0.5 * waited_ms, (q1 - q0, waited_ms)
