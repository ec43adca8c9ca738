"""A model version's instances, each on its own thread, and when a call runs inline instead.

Each instance owns one worker thread, so ``count: N`` gives N concurrent
executions, and a runtime that releases the GIL (onnxruntime does) runs them
in parallel; the schedulers (:mod:`~sonic.server.scheduling.scheduler`) take an
idle instance from the pool for each execution.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sonic.backends.base import BackendInstance
from sonic.server.loops import RunningLoop

#: A call shorter than this (moving average) runs inline on a single-instance
#: model: handing it to the instance thread and back costs two thread wake-ups and
#: their CPU, 100-300 us on a busy node, while one instance runs one call at a time
#: anyway, so inline only holds the loop's protocol work back by the call (and only
#: when no other request waits: see :meth:`InstancePool.run`).  Measured with
#: perf_analyzer on the benchmark MLP at batch 64, concurrency 4 (~350 us calls): 1 ms
#: instead of 150 us gave +5% requests/s and 9% less server CPU per request.
INLINE_BELOW_NS = 1_000_000


class InstancePool:
    """Idle instances of one model version, each bound to its own thread.

    A model with one instance whose backend allows it (``inline_ok``) and whose
    calls average under :data:`INLINE_BELOW_NS` runs them on the event-loop
    thread instead: there is no parallelism to lose, and small models (the
    common case for per-event HEP inference) save most of their serving
    latency.  The average is of the call itself, so a model that turns slow
    moves back to its thread at once.
    """

    def __init__(self, instances: Sequence[BackendInstance], model: str,
                 inline_under_load: bool = False) -> None:  # fmt: skip
        """``inline_under_load``: requests waiting for the loop are stamped on arrival and
        counted in queue time (the native transport: sonic.server.frontends.grpc_native), so
        short calls run inline whether or not other requests wait (:meth:`run`)."""
        self.model = model
        self.instances = list(instances)
        self._may_inline = len(self.instances) == 1 and self.instances[0].inline_ok
        self._inline_under_load = inline_under_load
        # Start on the thread: the first calls (allocation, warm-up) are the slow ones.
        self._call_ns = float(INLINE_BELOW_NS * 10)
        self._executors = {
            id(inst): ThreadPoolExecutor(1, thread_name_prefix=f"{model}-{i}")
            for i, inst in enumerate(self.instances)
        }
        self._idle: asyncio.Queue[BackendInstance] | None = None
        self._running_loop = RunningLoop()

    def _queue(self) -> asyncio.Queue[BackendInstance]:
        # Created lazily: the pool is built in a loader thread, the queue must
        # belong to the running event loop.
        if self._idle is None:
            self._idle = asyncio.Queue()
            for inst in self.instances:
                self._idle.put_nowait(inst)
        return self._idle

    async def acquire(self) -> BackendInstance:
        return await self._queue().get()

    def idle(self) -> bool:
        return not self._queue().empty()

    def release(self, inst: BackendInstance) -> None:
        self._queue().put_nowait(inst)

    async def run(self, inst: BackendInstance, fn: Callable[[BackendInstance], Any],
                  alone: bool = True) -> Any:  # fmt: skip
        """Run ``fn`` on ``inst``: inline when allowed, short, and ``alone`` (no other request
        waits); under load the loop must keep reading requests while the model runs, so that
        they wait in the server's queue, where queue time (the autoscaling signal) sees them,
        and not unread in socket buffers.  Where the transport reads and stamps requests while
        the loop is busy (``inline_under_load``), their wait is queue time anyway, and short
        calls run inline under load too: two thread hand-offs and a GIL transfer per execution
        cost more than the overlap buys on a loaded node (perf_analyzer, batch 1 concurrency 8
        and batch 64 concurrency 4, alternating: inline won every pair, 2026-12-03)."""
        if (alone or self._inline_under_load) and self._may_inline \
                and self._call_ns < INLINE_BELOW_NS:  # fmt: skip
            return self._timed(fn, inst)
        loop = self._running_loop()
        return await loop.run_in_executor(self._executors[id(inst)], self._timed, fn, inst)

    def _timed(self, fn: Callable[[BackendInstance], Any], inst: BackendInstance) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return fn(inst)
        finally:
            self._call_ns = 0.8 * self._call_ns + 0.2 * (time.perf_counter_ns() - t0)

    def close(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=True)
        for inst in self.instances:
            inst.close()
