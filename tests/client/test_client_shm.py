"""Shared memory as CMSSW uses it (issue #21, defect 4): outputs of a fixed size come back
through the region, a server that forgot a region (restarted) gets it registered again, and
the local fallback server takes shared memory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from sonic.client import Client, InferenceError
from sonic.launcher import LocalServer, free_ports
from sonic.zoo.examples import identity_model, mlp_model, write_model

MLP = """
max_batch_size: 16
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
"""
VARIABLE = """
max_batch_size: 16
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_model(mlp_model(), tmp_path, "mlp", config=MLP)
    write_model(identity_model("FP32"), tmp_path, "identity", config=VARIABLE)
    return tmp_path


def _x(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, 64)).astype(np.float32)


def _server(repo: Path, ports: LocalServer | None = None) -> LocalServer:
    srv = LocalServer(repo, "--allow-client-shm=true")
    if ports is not None:  # the same ports: the same server, restarted
        srv.http_port, srv.grpc_port, srv.metrics_port = (ports.http_port, ports.grpc_port,
                                                          ports.metrics_port)  # fmt: skip
    return srv.start()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_restarted_server_gets_the_region_again(repo: Path, mode: str) -> None:
    first = _server(repo)
    client = Client("mlp", [first.grpc_url], shared_memory="on", retries=[])
    try:

        def infer(x: np.ndarray) -> np.ndarray:
            if mode == "sync":
                return client.infer({"input": x})["output"]

            async def call() -> np.ndarray:
                try:
                    return (await client.infer_async({"input": x}))["output"]
                finally:
                    await client.close_async()

            return asyncio.run(call())

        before = infer(_x(3))
        first.stop()
        second = _server(repo, ports=first)  # knows no region of this client
        try:
            again = infer(_x(3))  # no retries allowed: only the re-registration can save it
        finally:
            second.stop()
    finally:
        client.close()
    np.testing.assert_array_equal(again, before)
    assert [t.shared_memory for t in client.timings] == ["inputs+outputs"] * 2


def test_outputs_of_a_variable_size_come_on_the_wire(repo: Path) -> None:
    srv = _server(repo)
    try:
        with Client("identity", [srv.grpc_url], shared_memory="on") as client:
            x = np.arange(10, dtype=np.float32).reshape(2, 5)
            np.testing.assert_array_equal(client.infer({"INPUT0": x})["OUTPUT0"], x)
        with Client("mlp", [srv.grpc_url], shared_memory="on") as fixed:
            out = fixed.infer({"input": _x(4)})["output"]
    finally:
        srv.stop()
    assert out.shape == (4, 2)
    assert [t.shared_memory for t in client.timings] == ["inputs"]
    assert [t.shared_memory for t in fixed.timings] == ["inputs+outputs"]


def test_the_fallback_server_takes_shared_memory(repo: Path) -> None:
    (dead,) = free_ports(1)
    with Client("mlp", [f"127.0.0.1:{dead}"], fallback_repository=repo) as client:
        out = client.infer({"input": _x(2)})["output"]
    assert out.shape == (2, 2)
    assert [(t.server, t.shared_memory) for t in client.timings] == [
        ("fallback", "inputs+outputs")]  # fmt: skip


def _gpu() -> bool:
    try:
        import tritonclient.utils.cuda_shared_memory as cudashm

        cudashm.destroy_shared_memory_region(cudashm.create_shared_memory_region("probe", 8, 0))
    except Exception:
        return False
    return True


def test_cuda_shared_memory_without_a_gpu_says_why(repo: Path) -> None:
    """CUDA shared memory needs a GPU on this node; without one the call fails at once, with
    CUDA's own reason, and sends nothing."""
    if _gpu():
        pytest.skip("a GPU is here: test_cuda_shared_memory_round_trip covers it")
    srv = _server(repo)
    try:
        with Client("mlp", [srv.grpc_url], shared_memory="cuda", retries=[]) as client:
            with pytest.raises(InferenceError, match=r"no CUDA shared memory with .* GPU 0: "):
                client.infer({"input": _x(2)})
            assert client.timings == []
    finally:
        srv.stop()


@pytest.mark.skipif(not _gpu(), reason="needs a GPU on this node (run on a lent device)")
def test_cuda_shared_memory_round_trip(repo: Path) -> None:
    srv = _server(repo)
    try:
        with Client("mlp", [srv.grpc_url], shared_memory="cuda") as client:
            cuda = client.infer({"input": _x(3)})["output"]
        with Client("mlp", [srv.grpc_url], shared_memory="off") as wire:
            plain = wire.infer({"input": _x(3)})["output"]
    finally:
        srv.stop()
    np.testing.assert_array_equal(cuda, plain)
    assert [t.shared_memory for t in client.timings] == ["inputs"]


def test_concurrent_first_requests_leave_no_region_behind(repo: Path) -> None:
    """Many requests start at once on a new client (one per event, as the jet-tagging job
    sends them): every region they made is freed when the client closes."""
    import os

    mine = f"sonic_client_{os.getpid()}_"
    before = {f for f in os.listdir("/dev/shm") if f.startswith(mine)}
    srv = _server(repo)  # started already: not a `with`, which would start a second one
    try:
        for _ in range(5):  # the race needs the first requests to overlap; try a few clients
            # outputs: the model is looked up here, so the first requests start together
            client = Client("mlp", [srv.grpc_url], shared_memory="auto", outputs=["output"])
            futures = [client.infer_future({"input": _x(16)}) for _ in range(64)]
            assert all(f.result()["output"].shape == (16, 2) for f in futures)
            client.close()
    finally:
        srv.stop()
    left = {f for f in os.listdir("/dev/shm") if f.startswith(mine)} - before
    assert not left, f"regions never freed: {sorted(left)}"


#: Holds a request (and so the region its input is in) for HOLD_S.
HOLD_S = 0.5
HOLDING = f"""
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({HOLD_S})
        return [pb_utils.InferenceResponse(
            [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
            for r in requests]
"""


def test_closing_while_triton_holds_the_region_still_unregisters_it(tmp_path: Path) -> None:
    """Real Triton refuses to unregister a region a request still holds, and lets go of it only
    after the response is sent, so a close right after the last answer could leave the region
    registered for good (a flaky CI failure). Here the request is still running when the pool
    closes: the close waits for it and the region goes."""
    import tritonclient.grpc as grpcclient

    from sonic.client.shm import ShmPool
    from sonic.testing.triton import TritonServer, triton_home
    from tests.conftest import write_python_model

    # Triton's python stub does not inherit PYTHONPATH: numpy comes from its site-packages.
    prologue = f"import sys\nsys.path.insert(0, {str(triton_home()[1])!r})\n"
    write_python_model(tmp_path, "holding", prologue + HOLDING)
    with TritonServer(tmp_path) as srv:
        triton = grpcclient.InferenceServerClient(srv.grpc_url)
        pool = ShmPool(lambda: triton, None)
        try:
            region = pool.acquire(4)
            [(offset, size)] = pool.write(region, [np.ones(1, np.float32)])
            x = grpcclient.InferInput("X", [1], "FP32")
            x.set_shared_memory(region.name, size, offset=offset)
            answers: list[object] = []
            triton.async_infer("holding", [x], lambda result, error: answers.append(error))
            time.sleep(HOLD_S / 2)  # the request is in the model, holding the region
            assert not answers
            pool.close()
            assert answers == [None]
            assert triton.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
        finally:
            triton.close()
