"""Run requests on a model's instances: Triton's default scheduler and dynamic batcher.

Each instance owns one worker thread, so ``count: N`` gives N concurrent
executions, and a runtime that releases the GIL (onnxruntime does) runs them
in parallel.  Merging inputs, the model call and splitting outputs all run on
that thread, keeping the event loop free for protocol work.

:class:`DirectScheduler` runs every request as its own execution on the first
idle instance.  :class:`DynamicBatcher` implements ``dynamic_batching`` with
Triton's semantics: when an instance is free it gathers queued requests in
priority then arrival order into the largest batch up to ``max_batch_size``;
it prefers the largest ``preferred_batch_size`` it can form; it holds a
partial batch until the oldest request has waited ``max_queue_delay_
microseconds`` unless a preferred or full batch forms first (and stops holding
it while such waits gather nothing: :mod:`~sonic.server.scheduling.delay`); it applies the
queue policy (``max_queue_size``, timeouts with REJECT or DELAY, per-priority
overrides) and can preserve response order across instances.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance
from sonic.errors import InvalidArgument, Unavailable
from sonic.server.loops import RunningLoop
from sonic.server.scheduling.batching import BatchInputSpec, merge, split
from sonic.server.scheduling.delay import DelayWatch
from sonic.server.scheduling.instances import InstancePool
from sonic.server.scheduling.timer import PreciseTimer
from sonic.server.statistics import ModelStatistics


@dataclass(slots=True)
class Execution:
    """What one request got from its execution, with Triton's timing stages in ns."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int


@dataclass(slots=True, eq=False)
class WorkItem:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    rows: int
    enqueued_ns: int
    future: asyncio.Future[Execution]
    priority: int = 1
    deadline_ns: int = 0
    key: tuple[Any, ...] = ()
    #: Requests the item carries: 1, or a group of requests of one layout that arrived
    #: together, their rows in order (:meth:`DynamicBatcher.groupable`).
    requests: int = 1
    #: A done callback of ``future`` (:meth:`then`) that runs as soon as the execution is
    #: delivered, rather than on the loop's next pass.
    eager: Callable[[asyncio.Future[Execution]], None] | None = None

    def then(self, callback: Callable[[asyncio.Future[Execution]], None]) -> None:
        """``future.add_done_callback(callback)``, run at once when the item's execution is
        delivered (:func:`_deliver`).  A future's callbacks run on the loop's next pass, and
        uvloop polls for I/O before it: every answer waited behind the decoding of the
        requests read meanwhile (run at once: 1.09x the throughput at batch 1 concurrency 8,
        benchmarks/commits_ab.py; docs/tuning.md).  Any other outcome (a timeout, a
        cancellation, an unload) still runs it as a done callback."""
        self.future.add_done_callback(callback)
        self.eager = callback


@dataclass(slots=True)
class BatchShape:
    """What merging needs to know about the model (from its config and file)."""

    ragged: frozenset[str] = frozenset()
    batch_inputs: tuple[BatchInputSpec, ...] = ()
    model_ranks: dict[str, int] = field(default_factory=dict)


class _Scheduler:
    """Shared by both schedulers: running one batch and recording it."""

    def __init__(
        self, pool: InstancePool, stats: ModelStatistics, shape: BatchShape,
        max_queue_size: int = 0,
    ) -> None:  # fmt: skip
        self.pool = pool
        self.stats = stats
        self.shape = shape
        #: Server-wide queue bound (``--max-queue-size``) where the config sets none.
        self.max_queue_size = max_queue_size
        #: Requests accepted and not yet executing (nv_inference_pending_request_count).
        self.pending = 0
        self._running_loop = RunningLoop()
        #: Executions in progress (tasks are kept referenced until done).
        self._running: set[asyncio.Task[None]] = set()

    async def _run_batch(
        self, inst: BackendInstance, items: list[WorkItem], alone: bool
    ) -> list[Execution | BaseException]:
        """``alone``: no other request was waiting when this batch was taken (then a short
        execution may run inline: :meth:`InstancePool.run`).  Judged when the batch is taken,
        not when its task starts: where ModelInfer is queued without a task, the requests read
        in between already count as pending, and judging then sent most batches to the
        instance thread at batch 64, concurrency 4 (-35% requests/s, perf_analyzer)."""
        t_start = time.perf_counter_ns()
        names = list(dict.fromkeys(n for it in items for n in it.outputs))
        shape = self.shape

        def merged(instance: BackendInstance) -> tuple[list[Any], int, int, int]:
            t0 = time.perf_counter_ns()
            feed = merge([it.inputs for it in items], shape.ragged, shape.batch_inputs,
                         shape.model_ranks)  # fmt: skip
            feed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
            t1 = time.perf_counter_ns()
            out = instance.execute(feed, names)
            t2 = time.perf_counter_ns()
            parts = split(out, [it.rows for it in items], [it.outputs for it in items])
            return parts, t1 - t0, t2 - t1, time.perf_counter_ns() - t2

        def one_by_one(instance: BackendInstance) -> tuple[list[Any], int, int, int]:
            t0 = time.perf_counter_ns()
            parts = instance.execute_requests([(it.inputs, it.outputs) for it in items])
            return parts, 0, time.perf_counter_ns() - t0, 0

        work = one_by_one if inst.per_request else merged
        parts, input_ns, infer_ns, output_ns = await self.pool.run(inst, work, alone)
        self.stats.record_execution(sum(it.rows for it in items), input_ns, infer_ns, output_ns)
        return [
            p if isinstance(p, BaseException)
            else Execution(p, t_start - it.enqueued_ns, input_ns, infer_ns, output_ns)
            for p, it in zip(parts, items, strict=True)
        ]  # fmt: skip

    def submit(
        self, inputs: dict[str, np.ndarray], outputs: list[str], rows: int,
        priority: int = 0, timeout_us: int = 0, key: tuple[Any, ...] | None = None,
        requests: int = 1, since: int = 0,
    ) -> WorkItem:  # fmt: skip
        """Queue one request; its ``future`` resolves once its execution ran (the model
        version awaits it, or calls back: :meth:`sonic.server.model.LoadedModel.submit`).
        Refusals (a full queue, a bad priority) raise here, before anything was queued.
        ``key``: :meth:`batch_key` of ``inputs``, where the caller knows it already;
        ``requests``: how many requests the item carries, where :meth:`groupable`;
        ``since``: when the request(s) reached the server, where a transport stamped it (on
        this clock): queue time, the batch delay and queue timeouts count from there, so that
        a wait for the event loop before the request was queued is queue time too."""
        raise NotImplementedError

    def groupable(self, requests: int) -> bool:
        """Whether ``requests`` requests of one layout that arrived together may be queued as
        one item (their rows together, in order) and batch exactly as they would one by one.
        Only the dynamic batcher, without preferred batch sizes (a batch could end inside the
        group), ragged or batch inputs (counted per request), and with room for all of them in
        its queue."""
        return False

    def batch_key(self, inputs: dict[str, np.ndarray]) -> tuple[Any, ...]:
        """What requests must share to be batched together: each input's shape past the
        batch dimension (ragged inputs aside)."""
        return tuple((n, a.shape[1:]) for n, a in inputs.items() if n not in self.shape.ragged)

    def withdraw(self, item: WorkItem) -> None:
        """The client went away (or the request timed out): cancel the request, and drop it
        from the queue if it is still there; an execution already running is not stopped,
        its result is dropped."""
        item.future.cancel()

    def close(self) -> None:
        self.pool.close()


class DirectScheduler(_Scheduler):
    """One execution per request, on the first idle instance (Triton's default)."""

    def submit(
        self, inputs: dict[str, np.ndarray], outputs: list[str], rows: int,
        priority: int = 0, timeout_us: int = 0, key: tuple[Any, ...] | None = None,
        requests: int = 1, since: int = 0,
    ) -> WorkItem:  # fmt: skip
        if self.max_queue_size and self.pending >= self.max_queue_size:
            raise Unavailable(
                f"Exceeds maximum queue size: model '{self.pool.model}' already has "
                f"{self.pending} request(s) waiting for an instance (--max-queue-size "
                f"{self.max_queue_size})"
            )
        loop = self._running_loop()
        item = WorkItem(inputs, outputs, rows, since or time.perf_counter_ns(),
                        loop.create_future())  # fmt: skip
        self.pending += 1
        task = loop.create_task(self._run(item))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return item

    async def _run(self, item: WorkItem) -> None:
        try:
            inst = await self.pool.acquire()
        except BaseException:
            item.future.cancel()
            raise
        finally:
            self.pending -= 1
        alone = self.pending == 0
        try:
            if not item.future.done():  # else withdrawn while it waited
                results = await self._run_batch(inst, [item], alone)
                _deliver(list(zip([item], results, strict=True)))
        except BaseException as err:
            _deliver([(item, err)])
        finally:
            self.pool.release(inst)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    max_queue_size: int = 0
    timeout_ns: int = 0
    delay_on_timeout: bool = False
    allow_override: bool = False

    @classmethod
    def from_proto(cls, p: mc.ModelQueuePolicy, default_max_queue_size: int = 0) -> QueuePolicy:
        return cls(
            max_queue_size=p.max_queue_size or default_max_queue_size,
            timeout_ns=p.default_timeout_microseconds * 1000,
            delay_on_timeout=p.timeout_action == mc.ModelQueuePolicy.DELAY,
            allow_override=p.allow_timeout_override,
        )


class DynamicBatcher(_Scheduler):
    """Triton's dynamic batcher for one model version."""

    def __init__(
        self, pool: InstancePool, stats: ModelStatistics, shape: BatchShape,
        config: mc.ModelConfig, max_queue_size: int = 0, adaptive_delay: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(pool, stats, shape, max_queue_size)
        db = config.dynamic_batching
        self.model = config.name
        self.max_batch = max(config.max_batch_size, 1)
        self.preferred = sorted(s for s in db.preferred_batch_size if s <= self.max_batch)
        self.delay_ns = db.max_queue_delay_microseconds * 1000
        self.delay_watch = DelayWatch(adaptive_delay)
        self.preserve_ordering = db.preserve_ordering
        self.levels = max(int(db.priority_levels), 1)
        self.default_level = int(db.default_priority_level) or self.levels
        base = QueuePolicy.from_proto(db.default_queue_policy, max_queue_size)
        self.policies = {
            level: QueuePolicy.from_proto(db.priority_queue_policy[level], max_queue_size)
            if level in db.priority_queue_policy else base
            for level in range(1, self.levels + 1)
        }  # fmt: skip
        self.queues: dict[int, collections.deque[WorkItem]] = {
            level: collections.deque() for level in range(1, self.levels + 1)
        }
        #: Requests in each level's queue (an item may carry several: WorkItem.requests).
        self.queued = dict.fromkeys(self.queues, 0)
        self._groupable = not (self.preferred or shape.ragged or shape.batch_inputs
                               or any(inst.per_request for inst in pool.instances))  # fmt: skip
        self._wake: asyncio.Event | None = None
        # Only timeouts and cancelled clients remove requests from the queue.
        self._may_expire = any(p.timeout_ns for p in self.policies.values())
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False
        self._executing = False  # the loop task is running an execution itself
        self._timer: PreciseTimer | None = None
        self._next_seq = 0
        self._done_seq = 0
        self._finished: dict[int, list[tuple[WorkItem, Execution | BaseException]]] = {}
        #: Nanoseconds on a monotonic clock; the batching rules read time only from here, so
        #: the unit tests can drive them with a fake clock.
        self.clock: Callable[[], int] = time.perf_counter_ns

    # -- admission ---------------------------------------------------------------
    def submit(
        self, inputs: dict[str, np.ndarray], outputs: list[str], rows: int,
        priority: int = 0, timeout_us: int = 0, key: tuple[Any, ...] | None = None,
        requests: int = 1, since: int = 0,
    ) -> WorkItem:  # fmt: skip
        level = priority or self.default_level
        if not 1 <= level <= self.levels:
            raise InvalidArgument(
                f"priority {priority} is out of range for model '{self.model}': it has "
                f"priority_levels {self.levels} (1 is the highest; 0 means the default)"
            )
        policy = self.policies[level]
        queued = self.queued[level]
        if policy.max_queue_size and queued + requests > policy.max_queue_size:
            raise Unavailable(
                f"Exceeds maximum queue size: model '{self.model}' already has "
                f"{queued} request(s) queued at priority {level} (max_queue_size "
                f"{policy.max_queue_size})"
            )
        timeout_ns = policy.timeout_ns
        if timeout_us and (policy.allow_override or not timeout_ns):
            timeout_ns = timeout_us * 1000 if not timeout_ns else min(timeout_ns, timeout_us * 1000)
        if timeout_ns:
            self._may_expire = True
        now = since or self.clock()
        loop = self._running_loop()
        if key is None:
            key = self.batch_key(inputs)
        item = WorkItem(inputs, outputs, rows, now, loop.create_future(), level,
                        now + timeout_ns if timeout_ns else 0, key, requests)  # fmt: skip
        self.queues[level].append(item)
        self.queued[level] = queued + requests
        self.pending += requests
        self._ensure_loop().set()
        return item

    def groupable(self, requests: int) -> bool:
        if not self._groupable:
            return False
        policy = self.policies[self.default_level]
        return not policy.max_queue_size or (
            self.queued[self.default_level] + requests <= policy.max_queue_size
        )

    def withdraw(self, item: WorkItem) -> None:
        super().withdraw(item)
        queue = self.queues[item.priority]
        if item in queue:
            self._dequeue(item)

    def _dequeue(self, item: WorkItem) -> None:
        self.queues[item.priority].remove(item)
        self.queued[item.priority] -= item.requests
        self.pending -= item.requests

    def _ensure_loop(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = self._running_loop().create_task(self._loop())
        return self._wake

    # -- batch formation ----------------------------------------------------------
    def _expire(self, now: int) -> None:
        if not self._may_expire:
            return
        for queue in self.queues.values():
            for item in [it for it in queue if it.deadline_ns and it.deadline_ns <= now]:
                if self.policies[item.priority].delay_on_timeout:
                    queue.remove(item)
                    item.deadline_ns = 0
                    queue.append(item)  # DELAY: behind everything queued at its level
                    continue
                self._dequeue(item)
                if not item.future.done():
                    waited = (now - item.enqueued_ns) / 1000
                    item.future.set_exception(
                        Unavailable(
                            f"Request timeout expired: the request waited {waited:.0f} us in the "
                            f"queue of model '{self.model}'"
                        )
                    )

    def _candidates(self) -> list[WorkItem]:
        """The longest compatible prefix, in priority then arrival order."""
        batch: list[WorkItem] = []
        rows = 0
        for level in range(1, self.levels + 1):
            for item in self.queues[level]:
                if item.future.done():
                    continue
                if batch and (item.key != batch[0].key or rows + item.rows > self.max_batch):
                    return batch
                batch.append(item)
                rows += item.rows
        return batch

    def _cut(self, batch: list[WorkItem], hold: bool = True) -> list[WorkItem] | None:
        """The batch to send now, or None to keep waiting for more requests (``hold``
        False: the delay is not worth waiting, :class:`DelayWatch`)."""
        rows = sum(it.rows for it in batch)
        now = self.clock()
        oldest = min(it.enqueued_ns for it in batch)
        delay_over = not hold or self.delay_ns == 0 or now - oldest >= self.delay_ns
        if self.preferred:
            best: list[WorkItem] | None = None
            total = 0
            for i, it in enumerate(batch):
                total += it.rows
                if total in self.preferred:
                    best = batch[: i + 1]
            if best is not None and (sum(x.rows for x in best) == self.preferred[-1]
                                     or rows >= self.max_batch or delay_over):  # fmt: skip
                return best
        if rows >= self.max_batch or delay_over:
            return batch
        return None

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            if not any(self.queues.values()):
                self._wake.clear()
                await self._wake.wait()
                continue
            inst = await self.pool.acquire()
            try:
                batch = await self._form()
            except BaseException:
                self.pool.release(inst)
                raise
            if not batch:
                self.pool.release(inst)
                continue
            for it in batch:
                self._dequeue(it)
            alone = self.pending == 0
            if len(self.pool.instances) == 1:
                # One instance: nothing else could be formed while it runs, so run it here
                # and save the event-loop pass that starting a task of its own costs.
                self._executing = True
                try:
                    await self._execute(inst, batch, alone)
                finally:
                    self._executing = False
                if self._closed:
                    return
                continue
            task = self._running_loop().create_task(self._execute(inst, batch, alone))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form(self) -> list[WorkItem]:
        assert self._wake is not None
        waited_with = 0  # requests in the batch when it started to wait (0: has not waited)
        while True:
            self._expire(self.clock())
            batch = self._candidates()
            if not batch:
                return []
            cut = self._cut(batch)
            requests = sum(it.requests for it in batch)
            if not waited_with:
                self.delay_watch.looked(requests)
                if cut is None and not self.delay_watch.worth_waiting():
                    cut = self._cut(batch, hold=False)
            if cut is not None:
                if waited_with:
                    self.delay_watch.waited(gathered=requests > waited_with)
                return cut
            waited_with = waited_with or requests
            oldest = min(it.enqueued_ns for it in batch)
            wait_s = max(0.0, (oldest + self.delay_ns - self.clock()) / 1e9)
            deadlines = [it.deadline_ns for q in self.queues.values() for it in q if it.deadline_ns]
            if deadlines:
                wait_s = min(wait_s, max(0.0, (min(deadlines) - self.clock()) / 1e9))
            self._wake.clear()
            # A timer that sets the event is far cheaper than wait_for's extra task; a precise
            # one, as the loop's own count whole milliseconds (sonic.server.scheduling.timer).
            if self._timer is None:
                self._timer = PreciseTimer(self._running_loop(), self._wake.set)
            self._timer.arm(wait_s)
            try:
                await self._wake.wait()
            finally:
                self._timer.cancel()

    async def _execute(self, inst: BackendInstance, batch: list[WorkItem], alone: bool) -> None:
        seq = self._next_seq
        self._next_seq += 1
        results: list[tuple[WorkItem, Execution | BaseException]]
        try:
            executions = await self._run_batch(inst, batch, alone)
            results = list(zip(batch, executions, strict=True))
        except BaseException as err:  # every request of a failed batch gets the error
            results = [(it, err) for it in batch]
        finally:
            self.pool.release(inst)
            self._wake_loop()
        if not self.preserve_ordering:
            _deliver(results)
            return
        self._finished[seq] = results
        while self._done_seq in self._finished:
            _deliver(self._finished.pop(self._done_seq))
            self._done_seq += 1

    def _wake_loop(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        if self._loop_task is not None and not self._executing:
            # A running execution is not cancelled (its requests get their answers, as
            # on a task of its own); the loop ends after it.
            self._loop_task.cancel()
        if self._timer is not None:
            self._timer.close()
        for queue in self.queues.values():
            for item in queue:
                if not item.future.done():
                    item.future.set_exception(Unavailable(f"model '{self.model}' was unloaded"))
            queue.clear()
        self.queued = dict.fromkeys(self.queues, 0)
        super().close()


def _deliver(results: list[tuple[WorkItem, Execution | BaseException]]) -> None:
    """Resolve each item's future and run its eager callback (:meth:`WorkItem.then`) now."""
    for item, outcome in results:
        future = item.future
        if future.done():
            continue
        eager = item.eager
        if eager is not None and not future.remove_done_callback(eager):
            eager = None
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        if eager is not None:
            try:
                eager(future)
            except Exception as err:  # as the loop treats a failing done callback
                future.get_loop().call_exception_handler(
                    {"message": "exception in an answer callback", "exception": err,
                     "future": future})  # fmt: skip


Scheduler = DirectScheduler | DynamicBatcher
