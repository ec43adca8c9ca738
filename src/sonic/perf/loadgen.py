"""A fixed window of closed-loop load, summed up: what the benchmarks use where perf_analyzer
cannot drive a peer (MLServer serves no model config, which perf_analyzer reads first).

It is :mod:`sonic.perf.engine`, the load generator behind ``sonic perf``, run for a warm-up
and one window: ``concurrency`` pre-encoded ``ModelInfer`` requests kept in flight over gRPC,
against any server that speaks ``inference.GRPCInferenceService`` (this server, NVIDIA
Triton, MLServer), so every server in a comparison pays the same client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sonic.perf.engine import Load, LoadSpec
from sonic.perf.inputs import ModelSpec, TensorSpec
from sonic.perf.target import Target, grpc_request
from sonic.protocol.datatypes import from_numpy_dtype


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    batch_size: int
    latencies_us: np.ndarray

    @property
    def throughput(self) -> float:
        """Inferences (batch rows) per second, perf_analyzer's unit."""
        return self.requests * self.batch_size / self.seconds

    def percentile(self, p: float) -> float:
        return float(np.percentile(self.latencies_us, p)) if len(self.latencies_us) else 0.0


def run_load(
    url: str, model: str, inputs: dict[str, np.ndarray], *, concurrency: int = 1,
    warmup_s: float = 1.0, window_s: float = 5.0,
) -> LoadResult:  # fmt: skip
    """Keep ``concurrency`` requests in flight for ``window_s`` seconds after a warm-up; the
    requests that started and ended inside the window count."""
    batch = next(iter(inputs.values())).shape[0]
    spec = ModelSpec(model, "", batch, tuple(
        TensorSpec(name, from_numpy_dtype(a.dtype), tuple(a.shape[1:]))
        for name, a in inputs.items()), ())  # fmt: skip
    payload = grpc_request(spec, inputs)
    load = Load(LoadSpec(Target(url, "grpc", model), (payload,), "concurrency", concurrency))
    try:
        time.sleep(warmup_s)
        load.flush()
        start = time.monotonic_ns()
        time.sleep(window_s)
        end = time.monotonic_ns()
        rows = load.flush()
    finally:
        load.stop()
    if load.first_error:
        raise RuntimeError(f"{url}: {load.first_error}")
    inside = rows[(rows[:, 4] == 1) & (rows[:, 0] >= start) & (rows[:, 1] <= end)]
    return LoadResult(len(inside), window_s, batch, (inside[:, 1] - inside[:, 0]) / 1000)
