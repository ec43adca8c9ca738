"""Run requests on a model's instances.

Each instance owns one worker thread, so ``count: N`` in an instance group
gives N concurrent executions and a runtime that releases the GIL (onnxruntime
does) runs them in parallel.  :class:`InstancePool` hands out idle instances;
:class:`DirectScheduler` runs each request as its own execution (Triton's
default scheduler).  Timing is measured here, where Triton's core measures it,
and returned to the caller, which owns the statistics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sonic.backends.base import BackendInstance
from sonic.server.statistics import ModelStatistics


@dataclass(slots=True)
class Execution:
    """The outcome of one model execution, with Triton's timing stages in ns."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


class InstancePool:
    """Idle instances of one model version, each bound to its own thread."""

    def __init__(self, instances: Sequence[BackendInstance], model: str) -> None:
        self.instances = list(instances)
        self._executors = {
            id(inst): ThreadPoolExecutor(1, thread_name_prefix=f"{model}-{i}")
            for i, inst in enumerate(self.instances)
        }
        self._idle: asyncio.Queue[BackendInstance] | None = None

    def _queue(self) -> asyncio.Queue[BackendInstance]:
        # Created lazily: the pool may be built in a thread, the queue must
        # belong to the running event loop.
        if self._idle is None:
            self._idle = asyncio.Queue()
            for inst in self.instances:
                self._idle.put_nowait(inst)
        return self._idle

    async def acquire(self) -> BackendInstance:
        return await self._queue().get()

    def release(self, inst: BackendInstance) -> None:
        self._queue().put_nowait(inst)

    async def run(
        self, inst: BackendInstance, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> tuple[dict[str, np.ndarray], int, int]:
        """Execute on ``inst``'s thread; returns outputs, input and infer ns."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executors[id(inst)], _timed_execute, inst, inputs, outputs
        )

    def close(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=True)
        for inst in self.instances:
            inst.close()


def _timed_execute(
    inst: BackendInstance, inputs: dict[str, np.ndarray], outputs: list[str]
) -> tuple[dict[str, np.ndarray], int, int]:
    t0 = time.perf_counter_ns()
    feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
    t1 = time.perf_counter_ns()
    result = inst.execute(feed, outputs)
    t2 = time.perf_counter_ns()
    return result, t1 - t0, t2 - t1


class DirectScheduler:
    """One execution per request, on the first idle instance (Triton's default)."""

    def __init__(self, pool: InstancePool, stats: ModelStatistics) -> None:
        self.pool = pool
        self.stats = stats
        #: Requests waiting for an instance (nv_inference_pending_request_count).
        self.pending = 0

    async def execute(
        self,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        batch_size: int,
        priority: int = 0,
        timeout_us: int = 0,
    ) -> Execution:
        t_queue = time.perf_counter_ns()
        self.pending += 1
        try:
            inst = await self.pool.acquire()
        finally:
            self.pending -= 1
        t_start = time.perf_counter_ns()
        try:
            result, input_ns, infer_ns = await self.pool.run(inst, inputs, outputs)
        finally:
            self.pool.release(inst)
        self.stats.record_execution(batch_size, input_ns, infer_ns, 0)
        return Execution(result, t_start - t_queue, input_ns, infer_ns, 0)

    def close(self) -> None:
        self.pool.close()
