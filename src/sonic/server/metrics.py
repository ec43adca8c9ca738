"""Prometheus metrics with Triton's names, units and labels.

Values are read at scrape time from the same cumulative statistics the
statistics extension serves, so the hot path pays nothing for metrics and the
two can never disagree.  prometheus_client's collectors build the families;
the exposition is written here because prometheus_client appends ``_total``
to counter names, and dashboards and autoscalers written for Triton query
``nv_inference_request_success``, not ``nv_inference_request_success_total``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sonic.server.gpus import Gpu, readings
from sonic.server.manager import ModelManager
from sonic.server.statistics import FAILURE_REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric, help, statistic attribute, field): counters derived from statistics.
_COUNTERS = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        "success",
        "count",
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        "success",
        "us",
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        "queue",
        "us",
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        "compute_input",
        "us",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        "compute_infer",
        "us",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration "
        "in microseconds (does not include cached requests)",
        "compute_output",
        "us",
    ),
]


class _CpuSampler:
    """CPU utilisation between two scrapes, from /proc/stat, as Triton reports it."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def utilization(self) -> float:
        total, idle = self._read()
        last_total, last_idle = self._last
        self._last = (total, idle)
        dt = total - last_total
        return 0.0 if dt <= 0 else max(0.0, min(1.0, 1.0 - (idle - last_idle) / dt))


def _memory() -> tuple[int, int]:
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return 0, 0
    total = info.get("MemTotal", 0)
    return total, total - info.get("MemAvailable", 0)


class TritonCollector:
    """Collects model and process metrics from the model manager at scrape time."""

    def __init__(self, manager: ModelManager, gpus: list[Gpu] | None = None) -> None:
        self.manager = manager
        self.cpu = _CpuSampler()
        self.gpus = list(gpus or [])

    def collect(self) -> Iterator[Metric]:
        models = self.manager.serving()
        for name, doc, attr, unit in _COUNTERS:
            m = Metric(name, doc, "counter")
            for model in models:
                d = getattr(model.stats, attr)
                value = d.count if unit == "count" else d.ns // 1000
                m.add_sample(name, {"model": model.name, "version": model.version_str}, value)
            yield m
        failure = Metric(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            "counter",
        )
        for model in models:
            for reason in FAILURE_REASONS:
                labels = {"model": model.name, "reason": reason, "version": model.version_str}
                count = model.stats.failure_reasons.get(reason, 0)
                failure.add_sample("nv_inference_request_failure", labels, count)
        yield failure
        for name, doc, attr in (
            (
                "nv_inference_count",
                "Number of inferences performed (does not include cached requests)",
                "inference_count",
            ),
            (
                "nv_inference_exec_count",
                "Number of model executions performed (does not include cached requests)",
                "execution_count",
            ),
        ):
            m = Metric(name, doc, "counter")
            for model in models:
                m.add_sample(
                    name,
                    {"model": model.name, "version": model.version_str},
                    getattr(model.stats, attr),
                )
            yield m
        pending = Metric(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            "gauge",
        )
        for model in models:
            pending.add_sample(
                "nv_inference_pending_request_count",
                {"model": model.name, "version": model.version_str},
                model.scheduler.pending,
            )
        yield pending
        cpu = Metric("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", "gauge")
        cpu.add_sample("nv_cpu_utilization", {}, self.cpu.utilization())
        yield cpu
        total, used = _memory()
        for name, doc, value in (
            ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", total),
            ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", used),
        ):
            m = Metric(name, doc, "gauge")
            m.add_sample(name, {}, value)
            yield m
        rss = Metric("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
        rss.add_sample("process_resident_memory_bytes", {}, _rss())
        yield rss
        yield from self._gpu_metrics()

    def _gpu_metrics(self) -> Iterator[Metric]:
        """Triton's nv_gpu_* gauges, labelled by gpu_uuid; none on a server without GPUs."""
        rows = readings(self.gpus)
        if not rows:
            return
        for name, doc, key in GPU_GAUGES:
            m = Metric(name, doc, "gauge")
            for row in rows:
                m.add_sample(name, {"gpu_uuid": row["uuid"]}, row[key])
            yield m


GPU_GAUGES = [
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "utilization"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "memory_total"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "memory_used"),
    ("nv_gpu_power_usage", "GPU power usage in watts", "power"),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "power_limit"),
]


def _rss() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(metrics: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4 with the metric names exactly as given."""
    lines: list[str] = []
    for m in metrics:
        name = m.samples[0].name if m.samples else m.name
        lines.append(f"# HELP {name} {m.documentation}")
        lines.append(f"# TYPE {name} {m.type}")
        for s in m.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            lines.append(
                f"{s.name}{{{labels}}} {floatToGoString(s.value)}"
                if labels
                else f"{s.name} {floatToGoString(s.value)}"
            )
    return ("\n".join(lines) + "\n").encode()


#: The workers of ``--workers N`` share a secret, made by their supervisor and passed in the
#: environment (not on the command line, which other users can read), that a peer must send
#: to read a worker's ``/worker/statistics``.
WORKER_SECRET_ENV = "SONIC_WORKER_SECRET"
WORKER_SECRET_HEADER = "x-sonic-worker-secret"


def metrics_app(
    manager: ModelManager, *, worker: bool = False, gpus: list[Gpu] | None = None
) -> Starlette:
    """``/metrics``; for a worker of ``--workers N`` (on its private loopback port) also
    ``/worker/statistics``, its own statistics as JSON, which its peers add to theirs."""
    collector = TritonCollector(manager, gpus)

    async def metrics(request: Request) -> Response:
        return Response(exposition(collector.collect()), media_type=CONTENT_TYPE)

    secret = os.environ.get(WORKER_SECRET_ENV, "")

    async def statistics(request: Request) -> Response:
        given = request.headers.get(WORKER_SECRET_HEADER, "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return Response("this port is for the other workers of this server", 403)
        name = request.query_params.get("name", "")
        version = request.query_params.get("version", "")
        rows = [m.stats.to_dict() for m in manager.serving()
                if name in ("", m.stats.name) and version in ("", m.stats.version)]  # fmt: skip
        return Response(json.dumps({"model_stats": rows}), media_type="application/json")

    routes = [Route("/metrics", metrics, methods=["GET"])]
    if worker:
        routes.append(Route("/worker/statistics", statistics, methods=["GET"]))
    return Starlette(routes=routes)


__all__ = ["TritonCollector", "exposition", "metrics_app"]
