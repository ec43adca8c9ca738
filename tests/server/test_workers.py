"""`sonic serve --workers N`: processes share the ports; metrics add up; SIGTERM drains all."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from sonic.launcher import LocalServer


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _sockets_on(port: int, state: str) -> dict[str, str]:
    """inode -> remote address of TCP sockets on local ``port`` in ``state`` (IPv4)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, st, inode = parts[1], parts[2], parts[3], parts[9]
        if st == state and int(local.split(":")[1], 16) == port:
            out[inode] = remote
    return out


def _wait_all_listening(workers: list[int], port: int) -> None:
    """The readiness probe hits one worker; wait until every worker owns a listener."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listening = set(_sockets_on(port, "0A"))
        if all(_socket_inodes(w) & listening for w in workers):
            return
        time.sleep(0.05)
    raise AssertionError("not every worker is listening")


def test_workers_share_ports_and_aggregate_metrics(model_repo: Path) -> None:
    n = 24
    with LocalServer(model_repo, "--workers=2") as srv:
        assert srv.proc is not None
        children_file = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children")
        workers = [int(p) for p in children_file.read_text().split()]
        assert len(workers) == 2
        _wait_all_listening(workers, srv.http_port)
        body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3],
                                       "data": [1, 2, 3]}]}).encode()  # fmt: skip
        conns = []
        for _ in range(n):
            conn = http.client.HTTPConnection(srv.host, srv.http_port, timeout=30)
            conn.request("POST", "/v2/models/identity_fp32/infer", body)
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["outputs"][0]["data"] == [1, 2, 3]
            conns.append(conn)
        established = _sockets_on(srv.http_port, "01")
        served_by = [len(_socket_inodes(w) & set(established)) for w in workers]
        for conn in conns:
            conn.close()
        assert sum(served_by) == n and all(c > 0 for c in served_by), served_by

        with urllib.request.urlopen(srv.metrics_url) as r:
            text = r.read().decode()
        prefix = 'nv_inference_request_success{model="identity_fp32"'
        line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
        assert float(line.rsplit(" ", 1)[1]) == n
        assert text.count("\nnv_cpu_utilization ") <= 1
        # Whichever worker a new connection lands on, statistics count the whole server.
        for _ in range(6):
            url = f"http://{srv.http_url}/v2/models/identity_fp32/stats"
            with urllib.request.urlopen(url) as r:
                stats = json.loads(r.read())["model_stats"][0]
            assert stats["inference_stats"]["success"]["count"] == n
            assert stats["inference_count"] == n
        # gRPC on the shared port works too.
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(srv.grpc_url)
        x = np.ones((1, 3), dtype=np.float32)
        t = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        t.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("identity_fp32", [t]).as_numpy("OUTPUT0"), x)
    assert srv.proc.returncode == 0


def test_workers_refuse_explicit_model_control(model_repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sonic.cli", "serve", f"--model-repository={model_repo}",
         "--workers=2", "--model-control-mode=explicit"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "one worker only" in result.stderr
