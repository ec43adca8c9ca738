"""One loaded model version: request validation, execution and response building.

Validation is done here, against the (completed) config, before anything
reaches a backend, so every client mistake becomes INVALID_ARGUMENT with a
message naming the tensor and the expected and given values, never a backend
crash.  The version counts its in-flight requests so that an unload or reload
can wait for them and no accepted request is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import InvalidArgument, UnknownTensor
from sonic.protocol.datatypes import from_config_type
from sonic.protocol.params import (
    CLASSIFICATION,
    PRIORITY,
    SCHEDULE_PARAMETERS,
    SHM_KEYS,
    TIMEOUT,
)
from sonic.protocol.tensors import InferRequest, InferResponse, Tensor, dims_match
from sonic.repository.layout import file_inside
from sonic.server import tracing
from sonic.server.inflight import InFlight
from sonic.server.scheduling.batching import split
from sonic.server.scheduling.scheduler import Execution, Scheduler, WorkItem
from sonic.server.statistics import ModelStatistics, RequestTiming, failure_reason


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    dims: tuple[int, ...]  # as in config.pbtxt: without the batch dim
    reshape: tuple[int, ...] | None = None
    optional: bool = False
    ragged: bool = False
    labels: tuple[str, ...] = ()

    def shape_with_batch(self, batching: bool) -> list[int]:
        return ([-1] if batching else []) + list(self.dims)


def _specs(tensors: Any, model_dir: Path | None = None) -> dict[str, TensorSpec]:
    out: dict[str, TensorSpec] = {}
    for t in tensors:
        labels: tuple[str, ...] = ()
        label_file = getattr(t, "label_filename", "")
        if label_file and model_dir is not None:
            path = file_inside(model_dir, label_file, model_dir.name,
                               f"label_filename of '{t.name}'")  # fmt: skip
            if path.is_file():
                labels = tuple(path.read_text().splitlines())
        out[t.name] = TensorSpec(
            name=t.name,
            datatype=from_config_type(mc.DataType.Name(t.data_type)),
            dims=tuple(t.dims),
            reshape=tuple(t.reshape.shape) if t.HasField("reshape") else None,
            optional=getattr(t, "optional", False),
            ragged=getattr(t, "allow_ragged_batch", False),
            labels=labels,
        )
    return out


def _classify(array: np.ndarray, k: int, batching: bool, labels: tuple[str, ...]) -> np.ndarray:
    """Triton's classification extension: top-k "value:index[:label]" per batch row."""
    rows = array.reshape(array.shape[0], -1) if batching else array.reshape(1, -1)
    k = min(k, rows.shape[1])
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, row in enumerate(rows):
        order = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        for j, idx in enumerate(order):
            text = f"{float(row[idx]):f}:{int(idx)}"
            if idx < len(labels):
                text += f":{labels[idx]}"
            out[r, j] = text.encode()
    return out if batching else out.reshape(k)


def _int_param(req: InferRequest, key: str) -> int:
    """A schedule-policy parameter (``priority``, ``timeout``) as an integer, or a 400."""
    value = req.parameters.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidArgument(f"request parameter '{key}' must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(
            f"request parameter '{key}' must be an integer, got {value!r}"
        ) from None


#: Most plans a version keeps.  Clients sending every batch size up to a large
#: max_batch_size make as many request layouts; past this many, the plans start over.
MAX_PLANS = 256


@dataclass(frozen=True, slots=True)
class Plan:
    """What a request layout this version validated once becomes: its feed and its answer.

    :meth:`LoadedModel.submit` checks names, datatypes, shapes, the batch size and the outputs
    asked for.  A later request of the same layout (the same key, which the codec derives from
    the wire: :func:`sonic.protocol.grpc_codec.take_plan_key`) needs only its raw bytes' lengths
    checked, so the gRPC front ends serve those with :meth:`LoadedModel.submit_planned`
    (decoding and validating were a third of the event loop's time per request, py-spy).
    Only requests without parameters that change their handling (shared memory,
    classification, priorities, timeouts) and of fixed-size datatypes get plans.
    """

    #: Each input's name, dtype and the shape it is fed with, in the request's order.
    inputs: tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]
    #: Each input's raw bytes.
    sizes: list[int]
    requested: list[tuple[str, dict[str, Any]]]
    names: list[str]
    #: Each requested output's name and datatype.
    outputs: tuple[tuple[str, str], ...]
    rows: int
    nbytes: int
    #: The scheduler's :meth:`~sonic.server.scheduling.scheduler.DynamicBatcher.batch_key`.
    batch_key: tuple[Any, ...]
    #: What the front ends derive from the plan to encode its answers, by their own keys.
    encodings: dict[Any, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pending:
    """A request a model version accepted and queued (:meth:`LoadedModel.submit`)."""

    id: str
    requested: list[tuple[str, dict[str, Any]]]
    rows: int
    start_ns: int
    #: Done once the request ran: its scheduler work item's future (an ensemble: its steps' task).
    future: asyncio.Future[Any]
    item: WorkItem | None = None
    #: Where the request came through a plan (:meth:`LoadedModel.submit_planned`).
    plan: Plan | None = None


class LoadedModel:
    """A servable model version and everything needed to answer requests for it."""

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        scheduler: Scheduler,
        stats: ModelStatistics,
        model_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.scheduler = scheduler
        self.stats = stats
        self.max_batch_size = config.max_batch_size
        self.batching = config.max_batch_size > 0
        self.inputs = _specs(config.input, model_dir)
        self.outputs = _specs(config.output, model_dir)
        self.required = [n for n, s in self.inputs.items() if not s.optional]
        self.inflight = InFlight()
        #: What :meth:`submit` learned of the request layouts it validated, by the codec's key.
        self.plans: dict[Hashable, Plan] = {}
        #: False where no request can have a plan, so that the transports skip looking for
        #: one (a copy of the raw bytes off the message and back): models with BYTES inputs.
        self.plannable = all(s.datatype != "BYTES" for s in self.inputs.values())

    # -- metadata -----------------------------------------------------------
    def metadata_tensors(self, kind: str) -> list[dict[str, Any]]:
        specs = self.inputs if kind == "inputs" else self.outputs
        return [
            {"name": s.name, "datatype": s.datatype, "shape": s.shape_with_batch(self.batching)}
            for s in specs.values()
        ]

    # -- inference ----------------------------------------------------------
    def _validate(self, req: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        feed: dict[str, np.ndarray] = {}
        batch = 0
        for t in req.inputs:
            spec = self.inputs.get(t.name)
            if spec is None:
                raise UnknownTensor("input", t.name, self.name, self.inputs)
            if t.name in feed:
                raise InvalidArgument(f"input '{t.name}' is given more than once")
            if t.datatype != spec.datatype:
                raise InvalidArgument(
                    f"inference input '{t.name}' data-type is '{t.datatype}', but model "
                    f"'{self.name}' expects '{spec.datatype}'"
                )
            shape = t.shape
            if self.batching:
                if not shape:
                    raise InvalidArgument(
                        f"input '{t.name}' for model '{self.name}' needs a batch dim: expected "
                        f"shape {spec.shape_with_batch(True)}, got []"
                    )
                if batch and shape[0] != batch and not spec.ragged:
                    raise InvalidArgument(
                        f"input '{t.name}' has batch size {shape[0]}, but other inputs of the "
                        f"request have batch size {batch}"
                    )
                batch = batch or shape[0]
                dims = shape[1:]
            else:
                dims = shape
            if not dims_match(dims, spec.dims):
                raise InvalidArgument(
                    f"unexpected shape for input '{t.name}' for model '{self.name}'. Expected "
                    f"{spec.shape_with_batch(self.batching)}, got {list(shape)}"
                )
            data = t.data
            if spec.reshape is not None:
                data = data.reshape(((shape[0],) if self.batching else ()) + spec.reshape)
            feed[t.name] = data
        missing = [n for n in self.required if n not in feed]
        if missing:
            raise InvalidArgument(
                f"expected {len(self.required)} inputs but got {len(feed)} inputs for model "
                f"'{self.name}'. Got input(s) {sorted(feed)}, but missing required input(s) "
                f"{missing}. Please provide all required input(s)."
            )
        if self.batching and (batch < 1 or batch > self.max_batch_size):
            raise InvalidArgument(
                f"inference request batch-size must be <= {self.max_batch_size} for "
                f"'{self.name}', got {batch}"
                if batch > 0
                else f"inference request batch-size must be >= 1 for '{self.name}', got {batch}"
            )
        return feed, max(batch, 1)

    def _requested_outputs(self, req: InferRequest) -> list[tuple[str, dict[str, Any]]]:
        if req.outputs is None:
            return [(n, {}) for n in self.outputs]
        seen = set()
        out = []
        for o in req.outputs:
            if o.name not in self.outputs:
                raise UnknownTensor("output", o.name, self.name, self.outputs)
            if o.name in seen:
                raise InvalidArgument(f"output '{o.name}' is requested more than once")
            seen.add(o.name)
            k = o.parameters.get(CLASSIFICATION)
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
                raise InvalidArgument(f"output '{o.name}': 'classification' must be a "
                                      f"non-negative integer (the top k), got {k!r}")  # fmt: skip
            out.append((o.name, o.parameters))
        return out

    def submit(self, req: InferRequest, start_ns: int, plan_key: Hashable = None) -> Pending:
        """Validate and queue the request; :meth:`complete` answers it once
        ``pending.future`` is done, :meth:`withdraw` gives it up.  Refusals raise here,
        with the failure recorded.  ``plan_key``: the codec's key of the request's layout,
        where a :class:`Plan` might serve it; the plan is kept once the request validates."""
        self.inflight.begin()
        try:
            feed, batch = self._validate(req)
            requested = self._requested_outputs(req)
            priority, timeout = ((_int_param(req, PRIORITY), _int_param(req, TIMEOUT))
                                 if req.parameters else (0, 0))  # fmt: skip
            item = self.scheduler.submit(feed, [n for n, _ in requested], batch, priority, timeout)
        except BaseException as err:
            self._failed(start_ns, err)
            raise
        if plan_key is not None and plan_key not in self.plans:
            self._learn(plan_key, req, feed, requested, batch)
        return Pending(req.id, requested, batch, start_ns, item.future, item)

    def _learn(self, key: Hashable, req: InferRequest, feed: dict[str, np.ndarray],
               requested: list[tuple[str, dict[str, Any]]], rows: int) -> None:  # fmt: skip
        """Keep a :class:`Plan` for a validated request's layout, where one can serve it
        (BYTES tensors cannot: their lengths vary from request to request)."""
        if any(k in req.parameters for k in SCHEDULE_PARAMETERS):
            return
        if any(t.parameters or t.data.dtype == object for t in req.inputs):
            return
        if any(params or self.outputs[n].datatype == "BYTES" for n, params in requested):
            return
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        self.plans[key] = Plan(
            inputs=tuple((n, a.dtype, a.shape) for n, a in feed.items()),
            sizes=[t.data.nbytes for t in req.inputs],
            requested=requested,
            names=[n for n, _ in requested],
            outputs=tuple((n, self.outputs[n].datatype) for n, _ in requested),
            rows=rows,
            nbytes=sum(t.data.nbytes for t in req.inputs),
            batch_key=self.scheduler.batch_key(feed),
        )

    def submit_planned(self, plan: Plan, raws: Any, request_id: str, start_ns: int) -> Pending:
        """:meth:`submit` for a request of a planned layout: ``raws``, its inputs' bytes in
        order, have the plan's lengths (the caller checked).  Only the frame transports plan,
        and their ``start_ns`` is when the request reached the server: its queue time counts
        from there (the scheduler's ``since``), the wait for the event loop included."""
        self.inflight.begin()
        try:
            feed = {name: np.frombuffer(raw, dtype).reshape(shape)
                    for (name, dtype, shape), raw in zip(plan.inputs, raws,
                                                         strict=True)}  # fmt: skip
            item = self.scheduler.submit(feed, plan.names, plan.rows, key=plan.batch_key,
                                         since=start_ns)  # fmt: skip
        except BaseException as err:
            self._failed(start_ns, err)
            raise
        return Pending(request_id, plan.requested, plan.rows, start_ns, item.future, item, plan)

    def submit_group(self, plan: Plan, raws: list[list[bytes]], start_ns: int) -> WorkItem:
        """:meth:`submit_planned` for requests of one plan that arrived together, queued as
        one item where the scheduler allows it (:meth:`~sonic.server.scheduling.scheduler.
        DynamicBatcher.groupable`): their rows in arrival order.  ``raws``: each request's
        inputs' bytes, of the plan's lengths."""
        n = len(raws)
        self.inflight.begin(n)
        try:
            feed = {name: np.frombuffer(b"".join([r[i] for r in raws]), dtype)
                    .reshape((n * shape[0], *shape[1:]))
                    for i, (name, dtype, shape) in enumerate(plan.inputs)}  # fmt: skip
            return self.scheduler.submit(feed, plan.names, n * plan.rows, key=plan.batch_key,
                                         requests=n, since=start_ns)  # fmt: skip
        except BaseException as err:
            self._failed(start_ns, err, n)
            raise

    def finish_group(self, item: WorkItem, start_ns: int,
                     ids: list[str | None]) -> list[dict[str, np.ndarray]]:  # fmt: skip
        """Record the requests of a group (:meth:`submit_group`) whose execution is done: each
        request's outputs, or the error, raised and recorded for each.  ``ids``: each request's
        id, None for one given up since (:meth:`withdraw_from_group` recorded it)."""
        answered = [rid for rid in ids if rid is not None]
        n = item.requests
        try:
            execution: Execution = item.future.result()
            parts = split(execution.outputs, [item.rows // n] * n, [item.outputs] * n)
        except BaseException as err:
            self._failed(start_ns, err, len(answered))
            raise
        if answered:
            self._succeeded(item.rows // n, start_ns, execution, 0, time.perf_counter_ns(),
                            answered)  # fmt: skip
        return parts

    def withdraw_from_group(self, item: WorkItem, start_ns: int, why: BaseException,
                            last: bool) -> None:  # fmt: skip
        """Give up one request of a group (its client went away, or it timed out); the group's
        item leaves the queue with its ``last`` request."""
        if last:
            self.scheduler.withdraw(item)
        self._failed(start_ns, why)

    def complete(self, pending: Pending) -> InferResponse:
        """The response of a request whose execution is done (or its error, raised)."""
        try:
            execution = pending.future.result()
            t_out = time.perf_counter_ns()
            outputs = self._build_outputs(pending.requested, execution.outputs)
            end = time.perf_counter_ns()
        except BaseException as err:
            self._failed(pending.start_ns, err)
            raise
        self._succeeded(pending.rows, pending.start_ns, execution, end - t_out, end, [pending.id])
        return InferResponse(model_name=self.name, model_version=self.version_str,
                             id=pending.id, outputs=outputs)  # fmt: skip

    def finish_planned(self, pending: Pending) -> dict[str, np.ndarray]:
        """:meth:`complete` for a request that came through a plan: the outputs as its
        execution gave them, which the front end encodes as the plan says (no classification,
        nothing in shared memory to write)."""
        try:
            execution = pending.future.result()
        except BaseException as err:
            self._failed(pending.start_ns, err)
            raise
        self._succeeded(pending.rows, pending.start_ns, execution, 0, time.perf_counter_ns(),
                        [pending.id])  # fmt: skip
        return execution.outputs

    def _succeeded(self, rows: int, start_ns: int, execution: Execution, output_ns: int,
                   end: int, ids: list[str]) -> None:  # fmt: skip
        """Record requests (by their ``ids``) of ``rows`` rows each, answered alike."""
        self.inflight.end(len(ids))
        timing = RequestTiming(
            request_ns=end - start_ns,
            queue_ns=execution.queue_ns,
            compute_input_ns=execution.compute_input_ns,
            compute_infer_ns=execution.compute_infer_ns,
            compute_output_ns=execution.compute_output_ns + output_ns,
        )
        self.stats.record_success(timing, rows, len(ids))
        for request_id in ids:
            tracing.record(self.name, self.version_str, request_id, start_ns, timing, end)

    def withdraw(self, pending: Pending, why: BaseException) -> None:
        """Give up a request not yet answered (its client went away, or it timed out)."""
        assert pending.item is not None
        self.scheduler.withdraw(pending.item)
        self._failed(pending.start_ns, why)

    def _failed(self, start_ns: int, err: BaseException, requests: int = 1) -> None:
        elapsed, reason = time.perf_counter_ns() - start_ns, failure_reason(err)
        for _ in range(requests):
            self.stats.record_failure(elapsed, reason)
        self.inflight.end(requests)

    async def infer(self, req: InferRequest, start_ns: int) -> InferResponse:
        """Validate, execute and build the response; record statistics either way."""
        pending = self.submit(req, start_ns)
        try:
            await pending.future
        except asyncio.CancelledError as err:
            self.withdraw(pending, err)
            raise
        except BaseException:
            pass  # complete() raises it and records the failure
        return self.complete(pending)

    def _build_outputs(
        self, requested: list[tuple[str, dict[str, Any]]], results: dict[str, np.ndarray]
    ) -> list[Tensor]:
        outputs = []
        for name, params in requested:
            spec = self.outputs[name]
            array = results[name]
            datatype = spec.datatype
            k = params.get(CLASSIFICATION)
            if k:
                array = _classify(array, k, self.batching, spec.labels)
                datatype = "BYTES"
            out_params = {key: v for key, v in params.items() if key in SHM_KEYS}
            outputs.append(Tensor(name, datatype, tuple(array.shape), array, out_params))
        return outputs

    async def drain(self) -> None:
        """Wait until no request is in flight on this version."""
        await self.inflight.idle()

    def close(self) -> None:
        self.scheduler.close()
