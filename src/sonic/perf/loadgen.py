"""A closed-loop asynchronous load generator over the Triton gRPC protocol.

It keeps ``concurrency`` requests outstanding for a fixed window, like
``perf_analyzer``'s concurrency mode, and works against any server that speaks
``inference.GRPCInferenceService`` (this server, NVIDIA Triton, MLServer),
which is why the benchmarks use it where ``perf_analyzer`` cannot drive a peer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as aioclient


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


async def _run(
    url: str, model: str, inputs: dict[str, np.ndarray], concurrency: int,
    warmup_s: float, window_s: float,
) -> LoadResult:  # fmt: skip
    client = aioclient.InferenceServerClient(url)
    batch = next(iter(inputs.values())).shape[0]
    tensors = []
    for name, array in inputs.items():
        t = aioclient.InferInput(name, list(array.shape), _datatype(array))
        t.set_data_from_numpy(array)
        tensors.append(t)
    latencies: list[float] = []
    start_window = time.perf_counter() + warmup_s
    end_window = start_window + window_s

    async def worker() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= end_window:
                return
            await client.infer(model, tensors)
            t1 = time.perf_counter()
            if t0 >= start_window and t1 <= end_window:
                latencies.append((t1 - t0) * 1e6)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return LoadResult(len(latencies), window_s, batch, np.array(latencies))


def _datatype(array: np.ndarray) -> str:
    from sonic.protocol.datatypes import from_numpy_dtype

    return from_numpy_dtype(array.dtype)


def run_load(
    url: str, model: str, inputs: dict[str, np.ndarray], *, concurrency: int = 1,
    warmup_s: float = 1.0, window_s: float = 5.0,
) -> LoadResult:  # fmt: skip
    """Keep ``concurrency`` requests in flight for ``window_s`` seconds after a warm-up."""
    return asyncio.run(_run(url, model, inputs, concurrency, warmup_s, window_s))
