"""A real Prometheus scraping a loaded sonic serve: the autoscaling query and the dashboard."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sonic.gateway import QUEUE_PER_EXEC, Gateway, Prometheus
from sonic.launcher import LocalServer, free_ports
from tests.conftest import write_mlp

DASHBOARD = (Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "monitoring"
             / "sonic-dashboard.json")  # fmt: skip


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalServer, Prometheus, Gateway]]:
    repo = tmp_path_factory.mktemp("repo")
    write_mlp(repo)
    with LocalServer(repo) as server:
        port, grpc_port, http_port, stats_port = free_ports(4)
        gateway = Gateway([("127.0.0.1", server.grpc_port, server.http_port)], grpc_port,
                          http_port, stats_port).start()  # fmt: skip
        prom = Prometheus([f"127.0.0.1:{server.metrics_port}", f"127.0.0.1:{stats_port}"], port,
                          interval_s=0.5).start()  # fmt: skip
        try:
            yield server, prom, gateway
        finally:
            prom.stop()
            gateway.stop()


def value(prom: Prometheus, query: str) -> float:
    result = prom.query(query)
    assert result, f"no data for {query}"
    return float(result[0]["value"][1])


def _callers(url: str, seconds: float, threads: int) -> None:
    stop = time.monotonic() + seconds

    def work() -> None:
        c = grpcclient.InferenceServerClient(url)
        x = grpcclient.InferInput("input", [64, 64], "FP32")
        x.set_data_from_numpy(np.ones((64, 64), np.float32))
        while time.monotonic() < stop:
            c.infer("mlp", [x])
        c.close()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def saturate(url: str, seconds: float, concurrency: int = 32, processes: int = 4) -> None:
    """Many callers at once, 64 rows each: requests wait in the queue.

    From several processes: the callers of one Python process are bound by its
    GIL and could not keep the server busy enough for its queue to fill.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_callers, args=(url, seconds, concurrency // processes))
             for _ in range(processes)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(seconds + 60)
        assert p.exitcode == 0, f"a load process failed (exit code {p.exitcode})"


def test_autoscaling_query_rises_under_saturation(
    monitored: tuple[LocalServer, Prometheus, Gateway],
) -> None:
    server, prom, _ = monitored
    # Idle: a trickle of single requests, each alone in the queue.
    c = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    for _ in range(20):
        c.infer("mlp", [x])
        time.sleep(0.1)
    time.sleep(1.5)
    idle = value(prom, QUEUE_PER_EXEC.replace("30s", "3s"))
    saturate(server.grpc_url, 4.0)
    busy = value(prom, QUEUE_PER_EXEC.replace("30s", "3s"))
    assert busy > 2 * idle, (idle, busy)


def test_every_dashboard_query_returns_data(
    monitored: tuple[LocalServer, Prometheus, Gateway],
) -> None:
    """Server and gateway panels alike, with the dashboard's variables at "All"."""
    server, prom, gateway = monitored
    saturate(server.grpc_url, 2.0, concurrency=4)
    through = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    for _ in range(20):
        through.infer("mlp", [x])
    time.sleep(2.0)
    dash = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} >= {"namespace", "sonic", "instance"}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 16
    for e in exprs:
        q = (e.replace("$__rate_interval", "30s").replace("$namespace", ".*")
             .replace("$sonic", ".*").replace("$instance", ".*"))  # fmt: skip
        assert prom.query(q), f"dashboard query returned no data: {q}"
