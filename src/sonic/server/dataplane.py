"""The data plane: every protocol operation, once, for all front ends.

The gRPC and HTTP front ends only translate the wire format and call these
methods; they never reach into models or the manager.  The data plane also
owns the server-wide state the protocol exposes: liveness, readiness, and the
drain on shutdown (new requests are refused with UNAVAILABLE while accepted
ones finish).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic import __version__
from sonic.errors import InvalidArgument, Unavailable
from sonic.protocol.params import CLASSIFICATION, SHM_BYTE_SIZE, SHM_REGION
from sonic.protocol.tensors import InferRequest, InferResponse, Tensor
from sonic.server.frontends.busypoll import BusyPoll
from sonic.server.grouped import AcceptedGroup, GroupMember
from sonic.server.inflight import InFlight
from sonic.server.logsettings import LogSettings
from sonic.server.loops import RunningLoop
from sonic.server.manager import ControlMode, ModelManager
from sonic.server.memory.system import SharedMemoryManager
from sonic.server.metrics import WORKER_SECRET_ENV, WORKER_SECRET_HEADER
from sonic.server.model import LoadedModel, Pending, Plan
from sonic.server.statistics import ModelStatistics

EXTENSIONS = [
    CLASSIFICATION,
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "system_shared_memory",
    "logging",
]


def _peer_statistics(port: int, name: str, version: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"name": name, "version": version})
    try:
        url = f"http://127.0.0.1:{port}/worker/statistics?{query}"
        secret = {WORKER_SECRET_HEADER: os.environ.get(WORKER_SECRET_ENV, "")}
        with urllib.request.urlopen(urllib.request.Request(url, headers=secret), timeout=2) as r:
            return list(json.loads(r.read())["model_stats"])
    except (OSError, ValueError, KeyError):
        return []


T = TypeVar("T")

#: Requests and responses whose tensors take more than this to decode or encode (in bytes
#: walked element by element in Python, or a body's bytes over HTTP) are handled on a worker
#: thread by the front ends, so that the event loop serves other clients meanwhile.
OFF_LOOP_BYTES = 1 << 20
#: ... and one at a time, on this thread: the work holds the GIL in short turns, and each
#: worker thread doing it is one more that the event loop waits behind for the GIL.  With
#: asyncio's default pool, three 64 MiB gzip JSON bodies at once (refused after the scan) held
#: a health check up for 0.65 s on 2 cores and grew the server by 350 MB; one at a time, the
#: loop waits behind one thread, and one body is inflated at once.
_BULK = ThreadPoolExecutor(1, thread_name_prefix="sonic-bulk")


async def run_by_cost(cost: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a decode or encode that walks ``cost`` bytes: inline, or on the thread
    above when ``cost`` is over :data:`OFF_LOOP_BYTES`."""
    if cost > OFF_LOOP_BYTES:
        return await asyncio.get_running_loop().run_in_executor(_BULK, fn, *args)
    return fn(*args)


#: What one BYTES element costs in memory, counted without walking the elements: a Python
#: bytes object of a short string, and its slot in the array.
BYTES_ELEMENT_COST = 64


def _input_bytes(t: Tensor) -> int:
    """Memory an input holds while its request is in flight."""
    if SHM_REGION in t.parameters:
        n = t.parameters.get(SHM_BYTE_SIZE, 0)
        return n if isinstance(n, int) and not isinstance(n, bool) else 0
    if t.data.dtype == object:
        return BYTES_ELEMENT_COST * t.data.size
    return int(t.data.nbytes)


#: Where a request's outcome goes: its response, or the error that ends it.  A request that
#: came through a model's plan (:meth:`DataPlane.start_planned`) is answered with its outputs
#: as its execution gave them (a dict of arrays), which its front end encodes as the plan says.
Answer = Callable[[InferResponse | dict[str, np.ndarray] | BaseException], None]


def _settle(future: asyncio.Future[InferResponse], outcome: InferResponse | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Accepted:
    """A request the data plane accepted and has not answered yet (:meth:`DataPlane.start`)."""

    __slots__ = ("answer", "dp", "model", "open", "pending", "size")

    def __init__(self, dp: DataPlane, model: LoadedModel, pending: Pending, size: int,
                 answer: Answer) -> None:  # fmt: skip
        self.dp = dp
        self.model = model
        self.pending = pending
        self.size = size
        self.answer = answer
        self.open = True

    def ran(self, _: Any) -> None:
        """The request's execution is over: answer it (unless it was given up meanwhile)."""
        if not self._close():
            return
        pending = self.pending
        try:
            if pending.plan is not None:
                outcome: Any = self.model.finish_planned(pending)
            else:
                outcome = self.model.complete(pending)
                for t in outcome.outputs:
                    if SHM_REGION in t.parameters:
                        self.dp.shm.write_output(t)
        except BaseException as err:
            self.answer(err)
            return
        self.answer(outcome)

    def expire(self, why: BaseException) -> None:
        """Past ``--request-timeout-ms``: answered with ``why`` unless answered already."""
        if self.cancel(why):
            self.answer(why)

    def cancel(self, why: BaseException) -> bool:
        """Give the request up (its client went away, or it timed out); False if it was
        answered already."""
        if not self._close():
            return False
        self.model.withdraw(self.pending, why)
        return True

    def _close(self) -> bool:
        """Release the request's share of the data plane, once: False if it was released."""
        if not self.open:
            return False
        self.open = False
        self.dp._release(self.size, self)
        return True


class DataPlane:
    def __init__(
        self, manager: ModelManager, *, strict_readiness: bool = False,
        allow_client_shm: bool = False, request_timeout_s: float = 0.0, shm_key_prefix: str = "",
        logs: LogSettings | None = None, busy_poll_s: float = 0.0,
        max_queue_bytes: int = 2 << 30,
    ) -> None:  # fmt: skip
        self.manager = manager
        #: Keeps the loop awake between requests (``--busy-poll-us``; see
        #: sonic.server.frontends.busypoll).
        self.busy_poll = BusyPoll(busy_poll_s, crowded=lambda: self.inflight.count > 1)
        #: Longest time a request may spend in the server (``--request-timeout-ms``; 0: none).
        self.request_timeout_s = request_timeout_s
        self._sweep_period = min(max(request_timeout_s / 20, 0.001), 0.1)
        self._sweep: asyncio.TimerHandle | None = None
        #: Requests under the timeout, and when it expires (on the loop's clock).
        self._deadlines: dict[Accepted | AcceptedGroup, float] = {}
        #: Private metrics ports of the other workers of ``--workers N`` (none otherwise).
        self.peers: list[int] = []
        self.shm = SharedMemoryManager(allow_client_shm, shm_key_prefix)
        self.strict_readiness = strict_readiness
        #: Protocol extensions in server metadata (the app adds cuda_shared_memory with GPUs).
        self.extensions = list(EXTENSIONS)
        self.logs = logs or LogSettings()
        self.accepting = False
        self.inflight = InFlight()
        self._running_loop = RunningLoop()
        #: Bytes of input tensors of the requests in flight, bounded by ``--max-queue-bytes``.
        self.inflight_bytes = 0
        self.max_queue_bytes = max_queue_bytes

    # -- health and metadata -----------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self.accepting:
            return False
        if self.strict_readiness:
            return all(e.versions for e in self.manager.models.values())
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "triton", "version": __version__, "extensions": self.extensions}

    def check_model(self, name: str, version: str = "") -> LoadedModel:
        """The version that serves ``name``, or NOT_FOUND or UNAVAILABLE: front ends ask
        before they decode a request's tensors, so a request to no model costs no decoding
        (and hand the version to :meth:`start` when nothing was awaited in between)."""
        return self.manager.get(name, version)

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.manager.ready(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.manager.get(name, version)
        entry = self.manager.models[name]
        return {
            "name": name,
            "versions": [str(v) for v in sorted(entry.versions)],
            "platform": model.config.platform or model.config.backend,
            "inputs": model.metadata_tensors("inputs"),
            "outputs": model.metadata_tensors("outputs"),
        }

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.manager.get(name, version).config

    # -- inference -----------------------------------------------------------
    def start(
        self, request: InferRequest, start_ns: int, answer: Answer,
        model: LoadedModel | None = None, plan_key: Hashable = None,
    ) -> Accepted:  # fmt: skip
        """Accept and queue a request; ``answer`` gets its response or error once it ran.

        No task and no coroutine per request: the scheduler's future calls back when the
        request's batch ran.  This is the gRPC front ends' path for ModelInfer (the loop thread
        limits the server under load, and a task's steps through the servicer's, the data
        plane's and the model's coroutines cost a quarter of that thread's time per request);
        :meth:`infer` wraps it for the front ends that await.  Refusals raise here, before
        anything was queued.  ``model``: the version :meth:`check_model` gave for this request
        in the same step of the loop (found again if None); ``plan_key``: the codec's key of the
        request's layout, for the model to keep a plan of (:meth:`LoadedModel.submit`).
        """
        self._check_accepting()
        if model is None:
            model = self.manager.get(request.model_name, request.model_version)
        size = self._admit_bytes(sum(_input_bytes(t) for t in request.inputs))
        try:
            for t in request.inputs:
                if SHM_REGION in t.parameters:
                    t.data = self.shm.read_input(t)
            pending = model.submit(request, start_ns, plan_key)
        except BaseException:
            self._release(size)
            raise
        return self._accepted(model, pending, size, answer)

    def start_planned(self, model: LoadedModel, plan: Plan, raws: Any, request_id: str,
                      start_ns: int, answer: Answer) -> Accepted:  # fmt: skip
        """:meth:`start` for a request that ``plan`` of ``model`` serves (its inputs' bytes
        ``raws`` have the plan's lengths): the same admission, without decoding or validating
        the request again."""
        self._check_accepting()
        size = self._admit_bytes(plan.nbytes)
        try:
            pending = model.submit_planned(plan, raws, request_id, start_ns)
        except BaseException:
            self._release(size)
            raise
        return self._accepted(model, pending, size, answer)

    def start_group(self, model: LoadedModel, plan: Plan, raws: list[list[bytes]],
                    ids: list[str], start_ns: int,
                    answers: list[Answer]) -> list[GroupMember | None]:  # fmt: skip
        """:meth:`start_planned` for requests of one plan that arrived together, queued as one
        item (where ``model.scheduler.groupable(len(raws))``: :mod:`sonic.server.grouped`).
        Each request is admitted on its own: one refused is answered with its error at once.
        Each request's handle to cancel it, None for those refused."""
        self._check_accepting()
        taken: list[int] = []
        for i, answer in enumerate(answers):
            try:
                self._admit_bytes(plan.nbytes)
            except Unavailable as err:
                answer(err)
                continue
            taken.append(i)
        handles: list[GroupMember | None] = [None] * len(answers)
        if not taken:
            return handles
        try:
            item = model.submit_group(plan, [raws[i] for i in taken], start_ns)
        except BaseException as err:
            self._release(plan.nbytes * len(taken), None, len(taken))
            for i in taken:
                answers[i](err)
            return handles
        group = AcceptedGroup(self, model, plan, item, start_ns, [ids[i] for i in taken],
                              [answers[i] for i in taken])  # fmt: skip
        item.then(group.ran)
        self._watch(group)
        for i, member in zip(taken, group.members(), strict=True):
            handles[i] = member
        return handles

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise Unavailable("the server is shutting down and accepts no new requests")

    def _accepted(self, model: LoadedModel, pending: Pending, size: int,
                  answer: Answer) -> Accepted:  # fmt: skip
        """A queued request, answered once its execution is over (or at its timeout)."""
        accepted = Accepted(self, model, pending, size, answer)
        if pending.item is not None:
            pending.item.then(accepted.ran)
        else:  # an ensemble's steps
            pending.future.add_done_callback(accepted.ran)
        self._watch(accepted)
        return accepted

    def _watch(self, accepted: Accepted | AcceptedGroup) -> None:
        """Time ``accepted`` out after ``--request-timeout-ms``, where it is set."""
        if self.request_timeout_s:
            loop = self._running_loop()
            self._deadlines[accepted] = loop.time() + self.request_timeout_s
            if self._sweep is None:
                self._sweep = loop.call_later(self._sweep_period, self._expire)

    async def infer(self, request: InferRequest, start_ns: int | None = None) -> InferResponse:
        """:meth:`start`, awaited; cancelling the caller gives the request up."""
        start = time.perf_counter_ns() if start_ns is None else start_ns
        future: asyncio.Future[InferResponse] = self._running_loop().create_future()
        accepted = self.start(request, start, functools.partial(_settle, future))
        try:
            return await future
        except asyncio.CancelledError as err:
            accepted.cancel(err)
            raise

    def _release(self, size: int, accepted: Accepted | AcceptedGroup | None = None,
                 requests: int = 1) -> None:  # fmt: skip
        """Release ``requests`` requests' ``size`` bytes; ``accepted`` is done with its deadline."""
        if accepted is not None:
            self._deadlines.pop(accepted, None)
        self.inflight.end(requests)
        self.inflight_bytes -= size
        self.busy_poll.touch()

    def _expire(self) -> None:
        """UNAVAILABLE for the requests past ``--request-timeout-ms``.

        One sweep for all requests (every twentieth of the timeout, 1 to 100 ms): arming and
        cancelling a timer per request (``asyncio.timeout``) cost as much of the loop thread
        as decoding the request (py-spy, concurrency 8).
        """
        loop = self._running_loop()
        now = loop.time()
        for accepted in [a for a, deadline in self._deadlines.items() if deadline <= now]:
            why = Unavailable(
                f"Request timeout expired: model '{accepted.model.name}' did not answer "
                f"within {self.request_timeout_s * 1000:.0f} ms (--request-timeout-ms)"
            )
            accepted.expire(why)
        self._sweep = loop.call_later(self._sweep_period, self._expire) if self._deadlines else None

    def _admit_bytes(self, size: int) -> int:
        """Count a request's ``size`` bytes of inputs against ``--max-queue-bytes``, or refuse
        it; once admitted, the request is in flight until :meth:`_release`.

        Shared-memory inputs count at their declared size (they are read into memory); a
        request is admitted whatever its size while nothing else is in flight, so a single
        large request the other limits allow is never refused here.
        """
        if self.inflight_bytes and self.inflight_bytes + size > self.max_queue_bytes:
            raise Unavailable(
                f"the server holds {self.inflight_bytes} bytes of requests in flight; this "
                f"request's {size} bytes would pass the limit of {self.max_queue_bytes} "
                "(--max-queue-bytes)"
            )
        self.inflight_bytes += size
        if self.inflight.count:
            self.busy_poll.company()
        self.inflight.begin()
        self.busy_poll.touch()
        return size

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting, then wait for accepted requests; False if time ran out."""
        self.accepting = False
        try:
            await asyncio.wait_for(self.inflight.idle(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- statistics -------------------------------------------------------------
    async def statistics_all(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        """:meth:`statistics` with the numbers of the other workers of ``--workers N`` added.

        Each worker serves its own statistics as JSON on its private metrics
        port (``/worker/statistics``); a peer that does not answer (restarting)
        is left out of this answer.
        """
        local = self.statistics(name, version)
        if not self.peers:
            return local
        merged = {(s.name, s.version): s.copy() for s in local}
        answers = await asyncio.gather(*(asyncio.to_thread(_peer_statistics, p, name, version)
                                         for p in self.peers))  # fmt: skip
        for rows in answers:
            for row in rows:
                key = (row["name"], row["version"])
                if key in merged:
                    merged[key].add(row)
        return list(merged.values())

    def statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        if not name:
            return sorted(
                (m.stats for m in self.manager.serving()), key=lambda s: (s.name, int(s.version))
            )
        if version:
            return [self.manager.get(name, version).stats]
        self.manager.get(name)  # NOT_FOUND / UNAVAILABLE for a model not serving
        entry = self.manager.models[name]
        return [entry.versions[v].stats for v in sorted(entry.versions)]

    # -- model repository ------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return self.manager.index(ready_only)

    def _check_control(self) -> None:
        if self.manager.mode is not ControlMode.EXPLICIT:
            raise Unavailable(
                "explicit model load / unload is not allowed: start the server with "
                f"--model-control-mode=explicit (it runs in '{self.manager.mode.value}' mode)"
            )

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        self._check_control()
        params = parameters or {}
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgument("load parameter 'config' must be a JSON string")
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if key.startswith("file:"):
                if not isinstance(value, bytes | bytearray):
                    raise InvalidArgument(f"load parameter '{key}' must carry bytes")
                files[key[len("file:") :]] = bytes(value)
        await self.manager.load(name, config, files or None)

    async def unload(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        self._check_control()
        await self.manager.unload(name)
