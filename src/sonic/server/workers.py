"""``sonic serve --workers N``: N server processes on the same ports, for big nodes.

One Python process is bounded by its GIL in protocol handling, so a node
with many cores runs N worker processes that bind the gRPC and HTTP ports
with ``SO_REUSEPORT``; the kernel spreads incoming *connections* over them
(each CMSSW job or client keeps its own connection).  This supervisor:

- starts the workers, each a normal ``sonic serve`` with ``--reuse-port``,
  its metrics on a private loopback port;
- serves ``/metrics`` on the public metrics port by summing the workers'
  series (host-level CPU and memory gauges are taken once), so dashboards and
  autoscalers see one server;
- restarts a worker that dies, and on SIGTERM/SIGINT drains them all and
  exits 0 when they did;
- makes each worker's statistics extension answer for the whole server: a
  worker adds its peers' statistics (served as JSON on their private metrics
  ports) to its own.

Limit, by design: explicit model control would reach one worker only, so
``--workers`` requires ``--model-control-mode`` none or poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable

from prometheus_client.utils import floatToGoString
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sonic.launcher import free_ports
from sonic.server import flags
from sonic.server.metrics import CONTENT_TYPE, WORKER_SECRET_ENV
from sonic.server.settings import ServerSettings

log = logging.getLogger("sonic.server.workers")

# Machine-wide values every worker reports identically: take one, do not sum.
HOST_METRICS = {"nv_cpu_utilization", "nv_cpu_memory_total_bytes", "nv_cpu_memory_used_bytes",
                "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
                "nv_gpu_power_usage", "nv_gpu_power_limit"}


def worker_args(s: ServerSettings, metrics_port: int, peers: list[int] | None = None) -> list[str]:
    """The command line of one worker: the same server, reuse-port, private metrics."""
    own = {"--metrics-address": "127.0.0.1", "--metrics-port": metrics_port,
           "--allow-metrics": True, "--workers": 1, "--reuse-port": True,
           "--worker-peers": peers or []}  # fmt: skip
    return [sys.executable, "-m", "sonic.cli", "serve", *flags.worker_args(s, own)]


def merge_metrics(texts: Iterable[str]) -> bytes:
    """Sum the workers' series by name and labels; host-level gauges are taken once.

    The workers' exposition is this project's own (:func:`sonic.server.metrics.exposition`),
    so it is read line by line; prometheus_client's parser would rename counters to
    ``*_total``, which Triton's names are not.
    """
    headers: dict[str, list[str]] = {}
    values: dict[str, dict[str, float]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP "):
                family = line.split()[2]
                headers.setdefault(family, [line])
                values.setdefault(family, {})
            elif line.startswith("# TYPE "):
                if len(headers.get(family, [])) == 1:
                    headers[family].append(line)
            elif line and not line.startswith("#") and family:
                series, _, raw = line.rpartition(" ")
                bucket = values[family]
                if series in bucket and series.split("{")[0] in HOST_METRICS:
                    continue
                bucket[series] = bucket.get(series, 0.0) + float(raw)
    out: list[str] = []
    for family, lines in headers.items():
        out += lines
        out += [f"{series} {floatToGoString(v)}" for series, v in values[family].items()]
    return ("\n".join(out) + "\n").encode()


class Supervisor:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.ports = free_ports(settings.workers)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self.stopping = False
        self.env = {**os.environ, WORKER_SECRET_ENV: secrets.token_hex(16)}

    def _spawn(self, i: int) -> None:
        peers = [p for j, p in enumerate(self.ports) if j != i]
        self.procs[i] = subprocess.Popen(worker_args(self.settings, self.ports[i], peers),
                                         env=self.env)  # fmt: skip
        log.info("started worker %d (pid %d)", i, self.procs[i].pid)  # type: ignore[union-attr]

    def _scrape(self, port: int) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""  # a worker starting or restarting contributes nothing this time

    async def metrics(self, request: Request) -> Response:
        texts = await asyncio.gather(*(asyncio.to_thread(self._scrape, p) for p in self.ports))
        return Response(merge_metrics(texts), media_type=CONTENT_TYPE)

    async def run(self) -> int:
        import uvicorn

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        for i in range(self.settings.workers):
            self._spawn(i)
        server = None
        if self.settings.allow_metrics:
            app = Starlette(routes=[Route("/metrics", self.metrics, methods=["GET"])])
            server = uvicorn.Server(uvicorn.Config(
                app, host=self.settings.metrics_address, port=self.settings.metrics_port,
                loop="none", lifespan="off", log_level="warning", access_log=False,
            ))  # fmt: skip
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            metrics_task = asyncio.create_task(server.serve())
        while not stop.is_set():
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    log.error("worker %d exited with %s; restarting it", i, proc.returncode)
                    self._spawn(i)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(p.wait) for p in self.procs if p is not None]
        if server is not None:
            server.should_exit = True
            await metrics_task
        return 0 if all(c == 0 for c in codes) else 1


def supervise(settings: ServerSettings) -> int:
    return asyncio.run(Supervisor(settings).run())
