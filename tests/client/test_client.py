"""The SONIC client against real servers: `sonic serve` and NVIDIA Triton, the same tests for both.

Real Triton (tritonserver 2.51 from nvidia-pytriton, set up by scripts/setup_triton.sh) has only
the python backend here, so it serves the same ONNX file through a python-backend model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sonic.client import Client, InferenceError, InputError, NoServerError, load_servers
from sonic.launcher import LocalServer, free_ports
from sonic.testing.triton import TritonServer, write_triton_onnx_model
from sonic.zoo.examples import mlp_model, write_model

CONFIG = """
max_batch_size: 64
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def sonic_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client_repo")
    write_model(mlp_model(), root, "mlp", config=CONFIG)
    return root


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton_repo")
    write_triton_onnx_model(root, "mlp", mlp_model().SerializeToString(), CONFIG)
    return root


@pytest.fixture(scope="module", params=["sonic", "triton"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def repo(kind: str, sonic_repo: Path, triton_repo: Path) -> Path:
    return sonic_repo if kind == "sonic" else triton_repo


def serve(kind: str, repo: Path) -> LocalServer:
    return LocalServer(repo) if kind == "sonic" else TritonServer(repo)


@pytest.fixture(scope="module")
def direct(sonic_repo: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(sonic_repo / "mlp" / "1" / "model.onnx"))


@pytest.fixture(scope="module")
def one_server(kind: str, repo: Path) -> Iterator[LocalServer]:
    with serve(kind, repo) as srv:
        yield srv


def _data(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_splits_at_max_batch_size(one_server: LocalServer, direct: ort.InferenceSession,
                                        protocol: str) -> None:  # fmt: skip
    url = one_server.grpc_url if protocol == "grpc" else one_server.http_url
    with Client("mlp", [url], protocol=protocol, verbose=True) as client:
        assert client.info().max_batch_size == 64
        x = _data(150)
        out = client.infer({"input": x})["output"]
        np.testing.assert_array_equal(out, direct.run(["output"], {"input": x})[0])
        assert [t.rows for t in client.timings] == [64, 64, 22]
        t = client.timings[-1]
        assert t.wait_s > 0 and t.server_queue_s is not None and t.server_compute_s > 0


def test_inputs_are_checked_before_sending(one_server: LocalServer) -> None:
    with Client("mlp", [one_server.grpc_url]) as client:
        with pytest.raises(InputError, match=r"has no input\(s\) \['inputs'\]"):
            client.infer({"inputs": _data(2)})
        with pytest.raises(InputError, match="must be FP32, got FP64"):
            client.infer({"input": _data(2).astype(np.float64)})
        with pytest.raises(InputError, match=r"shape \[2, 63\], expected \[-1, 64\]"):
            client.infer({"input": _data(2)[:, :63]})
        assert client.timings == []


def test_async_pseudo_async_and_ragged_agree(one_server: LocalServer,
                                            direct: ort.InferenceSession) -> None:  # fmt: skip
    x = _data(130, seed=3)
    want = direct.run(["output"], {"input": x})[0]
    with Client("mlp", [one_server.grpc_url]) as client:
        got_async = asyncio.run(client.infer_async({"input": x}))["output"]
        got_future = client.infer_future({"input": x}).result()["output"]
        ragged = client.infer_ragged([{"input": x[i : i + 1]} for i in range(20)])
    np.testing.assert_array_equal(got_async, want)
    np.testing.assert_array_equal(got_future, want)
    np.testing.assert_array_equal(np.concatenate([r["output"] for r in ragged]), want[:20])


def test_server_file_and_selection(one_server: LocalServer, tmp_path: Path, caplog) -> None:
    (dead,) = free_ports(1)
    host, port = one_server.grpc_url.split(":")
    path = tmp_path / "servers.json"
    path.write_text(json.dumps({"servers": [
        {"name": "dead", "address": "127.0.0.1", "port": dead},
        {"name": "alive", "address": host, "port": int(port)},
    ]}))  # fmt: skip
    assert [s.name for s in load_servers(path)] == ["dead", "alive"]
    with caplog.at_level(logging.WARNING, logger="sonic.client"):
        client = Client("mlp", server_file=path)
    assert "server dead skipped" in caplog.text
    assert client.best_server().server.name == "alive"
    client.close()
    with pytest.raises(NoServerError, match="fallback_repository"):
        Client("mlp", [f"127.0.0.1:{dead}"]).infer({"input": _data(1)})


def test_failover_loses_and_duplicates_nothing(
    kind: str, repo: Path, direct: ort.InferenceSession
) -> None:
    """Two servers; one is killed while requests are in flight, in a run of 10,000 entries."""
    entries = _data(10_000, seed=7)
    want = direct.run(["output"], {"input": entries})[0]
    with serve(kind, repo) as a, serve(kind, repo) as b:
        client = Client("mlp", [a.grpc_url, b.grpc_url], preferred_server=a.grpc_url,
                        retries=[("same", 1), ("diff", 2)])  # fmt: skip
        done = threading.Semaphore(0)

        def killer() -> None:
            for _ in range(30):
                done.acquire()
            a.kill()

        threading.Thread(target=killer, daemon=True).start()
        futures = []
        for start in range(0, 10_000, 100):
            f = client.infer_future({"input": entries[start : start + 100]})
            f.add_done_callback(lambda _: done.release())
            futures.append(f)
        results = [f.result()["output"] for f in futures]
        client.close()
    got = np.concatenate(results)
    np.testing.assert_array_equal(got, want)
    used = {t.server for t in client.timings}
    assert used == {a.grpc_url, b.grpc_url}
    assert sum(t.rows for t in client.timings) == 10_000  # every entry answered exactly once
    assert any(ep.failures for ep in client.endpoints)  # requests in flight did fail over


def test_local_fallback_when_no_server_is_reachable(
    repo: Path, direct: ort.InferenceSession
) -> None:
    (dead,) = free_ports(1)
    x = _data(70, seed=9)
    with Client("mlp", [f"127.0.0.1:{dead}"], fallback_repository=repo) as client:
        out = client.infer({"input": x})["output"]
        assert {t.server for t in client.timings} == {"fallback"}
    np.testing.assert_array_equal(out, direct.run(["output"], {"input": x})[0])


def test_servers_dying_without_fallback_is_a_clear_error(kind: str, repo: Path) -> None:
    with serve(kind, repo) as srv:
        client = Client("mlp", [srv.grpc_url], retries=[("same", 2)])
        client.info()
        srv.kill()
        with pytest.raises((NoServerError, InferenceError), match="mlp"):
            client.infer({"input": _data(1)})
        client.close()


def test_checksum_verification(sonic_repo: Path, tmp_path: Path) -> None:
    import shutil

    from sonic.client import ModelVersionError
    from sonic.repository.checksums import update_checksums

    repo = tmp_path / "repo"
    shutil.copytree(sonic_repo, repo)
    update_checksums(repo / "mlp")
    with LocalServer(repo) as srv:
        # The job's model directory, as CMSSW's jobs have it: checked at construction.
        with Client("mlp", [srv.grpc_url], model_config_path=repo / "mlp") as c:
            assert c.model_config_path == repo / "mlp" / "config.pbtxt"
            c.verify_checksum()  # the job's config and the server's agree
        stale = tmp_path / "job_config.pbtxt"
        text = (repo / "mlp" / "config.pbtxt").read_text()
        digest = text.split('value: "')[1].split('"')[0]
        stale.write_text(text.replace(digest, "0" * 32))
        with pytest.raises(ModelVersionError, match=r"MD5:1/model\.onnx: local 0000"):
            Client("mlp", [srv.grpc_url], model_config_path=stale)
        with Client("mlp", [srv.grpc_url], model_config_path=stale, verify_checksums=False) as c:
            assert c.infer({"input": _data(1)})["output"].shape == (1, 2)  # skipped on request
            with pytest.raises(ModelVersionError):
                c.verify_checksum()


def _regions(url: str) -> list[str]:
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url)
    try:
        return [r["name"] for r in c.get_system_shared_memory_status(as_json=True)
                .get("regions", {}).values()]  # fmt: skip
    finally:
        c.close()


def test_shared_memory_auto_on_the_same_host(kind: str, repo: Path,
                                             direct: ort.InferenceSession) -> None:  # fmt: skip
    x = _data(300, seed=4)
    want = direct.run(["output"], {"input": x})[0]
    extra = ("--allow-client-shm=true",) if kind == "sonic" else ()
    server = LocalServer(repo, *extra) if kind == "sonic" else TritonServer(repo)
    with server as srv:
        with Client("mlp", [srv.grpc_url]) as client:  # auto: loopback and allowed
            np.testing.assert_array_equal(client.infer({"input": x})["output"], want)
            regions = _regions(srv.grpc_url)
            assert regions and all(r.startswith("sonic_client_") for r in regions)
            got = asyncio.run(client.infer_async({"input": x}))["output"]
            np.testing.assert_array_equal(got, want)
        assert _regions(srv.grpc_url) == []  # unregistered on close
        with Client("mlp", [srv.grpc_url], shared_memory="off") as client:
            client.infer({"input": x})
            assert _regions(srv.grpc_url) == []


def test_shared_memory_refused_falls_back_or_fails_clearly(sonic_repo: Path) -> None:
    x = _data(5)
    with LocalServer(sonic_repo) as srv:  # --allow-client-shm defaults to false
        with Client("mlp", [srv.grpc_url]) as client:
            assert client.infer({"input": x})["output"].shape == (5, 2)
        with Client("mlp", [srv.grpc_url], shared_memory="on", retries=[]) as client, \
                pytest.raises(InferenceError, match="--allow-client-shm=true"):  # fmt: skip
            client.infer({"input": x})
