"""Per model-version statistics with the exact semantics of Triton's extension.

``perf_analyzer`` and the CMSSW client subtract two snapshots of these
cumulative counters, so the bookkeeping must match Triton's:

- ``success``/``fail``: one count per *request*, ``ns`` its whole server time.
- ``queue``, ``compute_input``, ``compute_infer``, ``compute_output``: one count
  per successful request; a request that shared a batch adds the batch's
  compute time (every request in a batch waited for all of it).
- ``inference_count`` adds each request's batch size (rows); ``execution_count``
  adds one per model execution, so dynamic batching shows up as their ratio.
- ``batch_stats``: per executed batch size, one count per execution.

All updates happen on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from sonic.errors import InvalidArgument, NotFound, Unavailable


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class RequestTiming:
    """Nanosecond durations of one request, as the scheduler measured them."""

    request_ns: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def failure_reason(err: BaseException) -> str:
    """Triton's ``reason`` label of nv_inference_request_failure for an error."""
    if isinstance(err, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(err, Unavailable):
        return "REJECTED"  # queue full, queue timeout, model unloading
    if isinstance(err, InvalidArgument | NotFound):
        return "OTHER"  # the request itself was wrong
    return "BACKEND"


_STAGES = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


@dataclass(slots=True)
class ModelStatistics:
    name: str
    version: str
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)
    #: Failed requests by Triton's metric reason: REJECTED, CANCELED, BACKEND, OTHER.
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def record_success(self, timing: RequestTiming, batch_size: int, requests: int = 1) -> None:
        """``requests`` requests of ``batch_size`` rows each, all with ``timing``."""
        self.success.add(timing.request_ns * requests, requests)
        self.queue.add(timing.queue_ns * requests, requests)
        self.compute_input.add(timing.compute_input_ns * requests, requests)
        self.compute_infer.add(timing.compute_infer_ns * requests, requests)
        self.compute_output.add(timing.compute_output_ns * requests, requests)
        self.inference_count += batch_size * requests
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, request_ns: int, reason: str = "OTHER") -> None:
        self.fail.add(request_ns)
        self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        self.execution_count += 1
        stats = self.batches.get(batch_size)
        if stats is None:
            stats = self.batches[batch_size] = BatchStats()
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)

    def add(self, other: dict[str, Any]) -> None:
        """Add another process's statistics of this version (its :meth:`to_dict` form).

        ``--workers N`` runs N processes; each adds its peers' numbers so that the
        statistics extension answers for the whole server, whichever worker a
        client's connection landed on.
        """
        for stage in _STAGES:
            d = other.get("inference_stats", {}).get(stage, {})
            getattr(self, stage).add(int(d.get("ns", 0)), int(d.get("count", 0)))
        self.inference_count += int(other.get("inference_count", 0))
        self.execution_count += int(other.get("execution_count", 0))
        self.last_inference_ms = max(self.last_inference_ms, int(other.get("last_inference", 0)))
        for b in other.get("batch_stats", []):
            mine = self.batches.setdefault(int(b["batch_size"]), BatchStats())
            for stage in ("compute_input", "compute_infer", "compute_output"):
                getattr(mine, stage).add(int(b[stage]["ns"]), int(b[stage]["count"]))

    def copy(self) -> ModelStatistics:
        out = ModelStatistics(self.name, self.version)
        out.add(self.to_dict())
        out.failure_reasons = dict(self.failure_reasons)
        return out

    def to_proto(self) -> pb.ModelStatistics:
        msg = pb.ModelStatistics(
            name=self.name,
            version=self.version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
        )
        for stage in _STAGES:
            d: Duration = getattr(self, stage)
            target = getattr(msg.inference_stats, stage)
            target.count = d.count
            target.ns = d.ns
        for size in sorted(self.batches):
            b = self.batches[size]
            entry = msg.batch_stats.add(batch_size=size)
            for stage in ("compute_input", "compute_infer", "compute_output"):
                d = getattr(b, stage)
                getattr(entry, stage).count = d.count
                getattr(entry, stage).ns = d.ns
        return msg

    def to_dict(self) -> dict[str, object]:
        """The JSON object of Triton's HTTP ``/stats`` endpoint for this version."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {s: getattr(self, s).to_dict() for s in _STAGES},
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.to_dict(),
                    "compute_infer": b.compute_infer.to_dict(),
                    "compute_output": b.compute_output.to_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
