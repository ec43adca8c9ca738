"""The ``sonic serve`` process: tritonserver's flag forms, SIGTERM drain, reload in flight."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer, free_ports


def _slow_requests(url: str, n: int, results: list[Any]) -> list[threading.Thread]:
    def one() -> None:
        client = grpcclient.InferenceServerClient(url)
        x = np.ones((512, 1024), dtype=np.float32)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            results.append(client.infer("slow", [inp]).as_numpy("OUTPUT0").shape)
        except InferenceServerException as err:
            results.append(err)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def _wait_inflight(client: grpcclient.InferenceServerClient, model: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        if int(stats.get("execution_count", 0)) >= 1:
            return
        time.sleep(0.02)
    raise AssertionError("no execution started")


def test_sigterm_drains_requests_in_flight(model_repo: Path) -> None:
    srv = LocalServer(model_repo).start()
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    results: list[Any] = []
    threads = _slow_requests(srv.grpc_url, 4, results)
    _wait_inflight(client, "slow")
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert srv.proc.wait(60) == 0, srv.log()
    assert results == [(512, 1024)] * 4, results


def test_flag_forms_and_disabled_endpoints(model_repo: Path) -> None:
    """``--flag value`` and ``--flag=value`` both work; --allow-http=false closes HTTP."""
    http, grpc_port, metrics = free_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonic.cli", "serve", "--model-repository", str(model_repo),
         "--grpc-port", str(grpc_port), f"--http-port={http}", f"--metrics-port={metrics}",
         "--allow-http=false", "--allow-metrics", "false", "--grpc-address=127.0.0.1",
         "--exit-timeout-secs", "5", "--log-verbose=1", "--model-control-mode", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_server_ready():
                    break
            except InferenceServerException:
                time.sleep(0.1)
        assert client.is_model_ready("mlp")
        for port in (http, metrics):
            with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_bad_flags_are_refused(model_repo: Path) -> None:
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "sonic.cli", "serve", *a], capture_output=True, text=True
    )
    bad = run(f"--model-repository={model_repo}", "--allow-http=maybe")
    assert bad.returncode != 0 and "maybe" in bad.stderr
    missing = run("--model-repository=/no/such/dir")
    assert missing.returncode != 0 and "/no/such/dir" in missing.stderr
    mode = run(f"--model-repository={model_repo}", "--model-control-mode=sometimes")
    assert mode.returncode != 0 and "sometimes" in mode.stderr


def test_reload_under_load_loses_nothing(fresh_repo: Path) -> None:
    """Explicit reloads and a poll of a changed model while requests are in flight."""
    with LocalServer(fresh_repo, "--model-control-mode=explicit", "--load-model=*") as srv:
        control = grpcclient.InferenceServerClient(srv.grpc_url)
        stop = threading.Event()
        failures: list[str] = []
        done = [0]

        def load() -> None:
            client = grpcclient.InferenceServerClient(srv.grpc_url)
            x = np.ones((4, 64), dtype=np.float32)
            inp = grpcclient.InferInput("input", [4, 64], "FP32")
            inp.set_data_from_numpy(x)
            while not stop.is_set():
                try:
                    client.infer("mlp", [inp])
                    done[0] += 1
                except InferenceServerException as err:
                    failures.append(err.message())

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        for i in range(5):
            time.sleep(0.2)
            control.load_model("mlp", config=json.dumps({"max_batch_size": 64 + i}))
        stop.set()
        for w in workers:
            w.join(30)
        assert failures == []
        assert done[0] > 50
