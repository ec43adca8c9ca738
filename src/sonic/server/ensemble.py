"""Ensembles (``platform: "ensemble"``): a dataflow of other models, as in Triton.

An ensemble is not a model of its own: each step names a composing model
and maps its inputs and outputs to ensemble tensors; a step runs as soon as
all the tensors it consumes exist, steps that do not depend on each other
run concurrently, and each composing model keeps its own scheduler (so its
dynamic batcher batches across ensembles and direct clients alike).
Composing models are looked up at request time, so they may be loaded,
reloaded or unloaded independently, as Triton allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import InvalidArgument, ModelConfigError
from sonic.protocol.params import SCHEDULE_PARAMETERS
from sonic.protocol.tensors import InferRequest, InferResponse, RequestedOutput, Tensor
from sonic.server.model import LoadedModel, Pending
from sonic.server.statistics import ModelStatistics, RequestTiming

Resolver = Callable[[str, str], LoadedModel]


@dataclass(frozen=True, slots=True)
class Step:
    model: str
    version: str
    inputs: dict[str, str]  # composing model input -> ensemble tensor
    outputs: dict[str, str]  # composing model output -> ensemble tensor


def parse_steps(config: mc.ModelConfig, name: str) -> list[Step]:
    """Steps of ``ensemble_scheduling``, checked so that the dataflow can complete."""
    steps = [
        Step(s.model_name, "" if s.model_version in (-1, 0) else str(s.model_version),
             dict(s.input_map), dict(s.output_map))
        for s in config.ensemble_scheduling.step
    ]  # fmt: skip
    if not steps:
        raise ModelConfigError(name, "ensemble_scheduling.step", "an ensemble needs steps")
    available = {t.name for t in config.input}
    produced_by: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not step.model:
            raise ModelConfigError(name, f"ensemble_scheduling.step[{i}].model_name", "is empty")
        for tensor in step.outputs.values():
            if tensor in produced_by or tensor in available:
                raise ModelConfigError(
                    name, f"ensemble_scheduling.step[{i}].output_map",
                    f"ensemble tensor '{tensor}' is written twice",
                )  # fmt: skip
            produced_by[tensor] = i
    for i, step in enumerate(steps):
        for tensor in step.inputs.values():
            if tensor not in available and tensor not in produced_by:
                raise ModelConfigError(
                    name, f"ensemble_scheduling.step[{i}].input_map",
                    f"ensemble tensor '{tensor}' is neither an ensemble input nor any step's "
                    "output",
                )  # fmt: skip
    for out in config.output:
        if out.name not in produced_by:
            raise ModelConfigError(
                name, f"output[{out.name}]", "is not produced by any ensemble step"
            )
    return steps


class _NoScheduler:
    """Ensembles queue nothing themselves; their steps queue in the composing models."""

    pending = 0

    def close(self) -> None:
        pass


class EnsembleModel(LoadedModel):
    def __init__(
        self, name: str, version: int, config: mc.ModelConfig, resolve: Resolver
    ) -> None:  # fmt: skip
        self.steps = parse_steps(config, name)
        self.resolve = resolve
        super().__init__(name, version, config, _NoScheduler(), ModelStatistics(name, str(version)))
        self.plannable = False  # its steps are requests of their own
        self._running: set[asyncio.Task[dict[str, Tensor]]] = set()

    def submit(self, req: InferRequest, start_ns: int, plan_key: Hashable = None) -> Pending:
        """Validate, then run the steps in a task (``pending.future``)."""
        self.inflight.begin()
        try:
            feed, batch = self._validate(req)
            requested = self._requested_outputs(req)
        except BaseException as err:
            self._failed(start_ns, err)
            raise
        tensors = {name: Tensor(name, self.inputs[name].datatype, a.shape, a)
                   for name, a in feed.items()}  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._run_steps(tensors, req))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return Pending(req.id, requested, batch, start_ns, task)

    def complete(self, pending: Pending) -> InferResponse:
        try:
            tensors = pending.future.result()
            results = {n: tensors[n].data for n, _ in pending.requested}
            outputs = self._build_outputs(pending.requested, results)
        except BaseException as err:
            self._failed(pending.start_ns, err)
            raise
        self.inflight.end()
        elapsed = time.perf_counter_ns() - pending.start_ns
        self.stats.record_success(RequestTiming(elapsed, 0, 0, 0, 0), pending.rows)
        self.stats.record_execution(pending.rows, 0, 0, 0)
        return InferResponse(self.name, self.version_str, pending.id, outputs=outputs)

    def withdraw(self, pending: Pending, why: BaseException) -> None:
        pending.future.cancel()
        self._failed(pending.start_ns, why)

    async def _run_steps(
        self, tensors: dict[str, Tensor], req: InferRequest
    ) -> dict[str, Tensor]:
        remaining = list(self.steps)
        while remaining:
            ready = [s for s in remaining if all(t in tensors for t in s.inputs.values())]
            if not ready:  # pragma: no cover - parse_steps rules this out
                raise InvalidArgument(f"ensemble '{self.name}' cannot make progress")
            results = await asyncio.gather(*(self._run_step(s, tensors, req) for s in ready))
            for step, produced in zip(ready, results, strict=True):
                tensors.update(produced)
                remaining.remove(step)
        return tensors

    async def _run_step(
        self, step: Step, tensors: dict[str, Tensor], req: InferRequest
    ) -> dict[str, Tensor]:
        model = self.resolve(step.model, step.version)
        sub = InferRequest(
            model_name=step.model,
            model_version=step.version,
            id=req.id,
            parameters={k: v for k, v in req.parameters.items() if k in SCHEDULE_PARAMETERS},
            inputs=[
                Tensor(model_input, tensors[t].datatype, tensors[t].shape, tensors[t].data)
                for model_input, t in step.inputs.items()
            ],
            outputs=[RequestedOutput(o) for o in step.outputs],
        )
        resp = await model.infer(sub, time.perf_counter_ns())
        return {step.outputs[t.name]: t for t in resp.outputs}
