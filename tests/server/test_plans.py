"""Plans (sonic.server.model.Plan): a request of a layout the model validated before skips
decoding and validation on the frame transports, and must answer exactly as the full path does.

Each case goes to a server on the native transport, where plans serve, and one on the Python
transport, where they never do, twice each (the first of a layout teaches the plan, the second
takes it); statuses, messages, outputs and statistics must be the same on both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sonic.launcher import LocalServer
from sonic.server.app import Server
from sonic.server.frontends.grpc_frames import CALL, CANCEL, ERROR, REPLY, Dispatch, relay_methods
from sonic.server.frontends.grpc_native import NativeSide
from sonic.server.frontends.grpc_servicers import INFERENCE_SERVICE, servicers
from sonic.server.settings import ServerSettings
from sonic.zoo.examples import MLP_BENCHMARK_CONFIG


def _mlp(rows: int, *, seed: int = 0, **fields: Any) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="mlp", **fields)
    req.inputs.add(name="input", datatype="FP32", shape=[rows, 64])
    x = np.random.default_rng(seed).random((rows, 64), np.float32)
    req.raw_input_contents.append(x.tobytes())
    return req


def _cases() -> dict[str, pb.ModelInferRequest]:
    """Plain requests (which get plans) and near misses of their layouts (which must not)."""
    cases = {"one row": _mlp(1), "three rows, an id": _mlp(3, seed=1, id="req-7")}
    with_output = _mlp(2, seed=2)
    with_output.outputs.add(name="output")
    cases["asks for its output"] = with_output
    # perf_analyzer sets this on every request; it changes nothing for a model that is not
    # decoupled, so such requests get plans too.
    flagged = _mlp(1, seed=3)
    flagged.parameters["triton_enable_empty_final_response"].bool_param = True
    cases["perf_analyzer's parameter"] = flagged
    short = _mlp(1, seed=4)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    cases["the one-row layout, 4 bytes short"] = short
    extra = _mlp(1, seed=5)
    extra.raw_input_contents.append(b"\0" * 4)
    cases["the one-row layout, a second raw entry"] = extra
    classified = _mlp(2, seed=6)
    classified.outputs.add(name="output").parameters["classification"].int64_param = 1
    cases["classification"] = classified
    prioritized = _mlp(1, seed=7)
    prioritized.parameters["priority"].int64_param = 3
    cases["a priority the model does not have"] = prioritized
    unknown = _mlp(1, seed=8)
    unknown.outputs.add(name="nope")
    cases["an unknown output"] = unknown
    too_many = _mlp(257, seed=9)
    cases["past max_batch_size"] = too_many
    return cases


def _outcome(stub: Any, req: pb.ModelInferRequest) -> tuple[Any, ...]:
    try:
        resp = stub.ModelInfer(req)
    except grpc.RpcError as err:
        return ("error", err.code(), err.details())
    return ("ok", resp.model_name, resp.model_version, resp.id,
            [(o.name, o.datatype, list(o.shape)) for o in resp.outputs],
            list(resp.raw_output_contents))  # fmt: skip


def _statistics(stub: Any) -> tuple[int, ...]:
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp")).model_stats[0]
    infer = stats.inference_stats
    return (infer.success.count, infer.fail.count, stats.inference_count, stats.execution_count)


@pytest.fixture(scope="module")
def outcomes(model_repo: Path) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    results: dict[str, list[tuple[Any, ...]]] = {}
    for transport in ("native", "python"):
        with (LocalServer(model_repo, f"--grpc-transport={transport}") as server,
              grpc.insecure_channel(server.grpc_url) as channel):  # fmt: skip
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            out = [(name, _outcome(stub, req)) for _ in range(2)
                   for name, req in _cases().items()]  # fmt: skip
            results[transport] = [*out, ("statistics", _statistics(stub))]
    yield results


def test_planned_requests_answer_as_the_full_path(
    outcomes: dict[str, list[tuple[Any, ...]]],
) -> None:
    for native, python in zip(outcomes["native"], outcomes["python"], strict=True):
        assert native == python


def test_the_cases_cover_answers_and_refusals(outcomes: dict[str, list[tuple[Any, ...]]]) -> None:
    """The comparison above means something: plain requests are answered, their near misses
    refused with the full path's messages."""
    seen = dict(outcomes["native"])
    assert seen["one row"][0] == "ok" and seen["three rows, an id"][3] == "req-7"
    assert seen["perf_analyzer's parameter"][0] == "ok"
    short = seen["the one-row layout, 4 bytes short"]
    assert short[:2] == ("error", grpc.StatusCode.INVALID_ARGUMENT) and "252" in short[2]
    assert seen["classification"][4] == [("output", "BYTES", [2, 1])]  # "value:index" strings
    assert seen["a priority the model does not have"][0] == "error"


class Harness:
    """The server's own objects in this process, fed frames as the native transport feeds
    them: what each hand-over became (plans, groups) is visible here, not over the wire."""

    def __init__(self, repo: Path, config: str, request_timeout_ms: int = 0) -> None:
        self.repo, self.config, self.timeout_ms = repo, config, request_timeout_ms
        self.waiting: list[tuple[Any, ...]] = []
        self.answers: dict[int, tuple[int, int, bytes]] = {}
        self.calls = 0
        self.infer = next(i for i, m in enumerate(relay_methods()) if m.name == "ModelInfer")

    # What NativeSide calls on the compiled module.
    def drain(self) -> list[tuple[Any, ...]]:
        calls, self.waiting = self.waiting, []
        return calls

    def send(self, answers: list[tuple[int, int, int, bytes]]) -> None:
        for kind, call, arg, body in answers:
            self.answers[call] = (kind, arg, body)

    async def __aenter__(self) -> Harness:
        from sonic.zoo.examples import mlp_model, write_model

        write_model(mlp_model(), self.repo, "mlp",
                    config='name: "mlp"\nplatform: "onnxruntime_onnx"\n' + self.config)  # fmt: skip
        settings = ServerSettings(model_repositories=[self.repo])
        settings.limits.request_timeout_ms = self.timeout_ms
        self.server = Server(settings)
        await self.server.manager.startup()
        self.server.dataplane.accepting = True
        self.model = self.server.manager.get("mlp")
        self.side = NativeSide(Dispatch(servicers(self.server.dataplane, self.server.auth)),
                               self, self.server.auth)  # fmt: skip
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.model.close()

    def hand_over(self, *requests: pb.ModelInferRequest) -> list[int]:
        """One hand-over of these requests; their call numbers."""
        calls = []
        for req in requests:
            self.calls += 1
            calls.append(self.calls)
            self.waiting.append((CALL, self.calls, self.infer, req.SerializeToString(), None, None,
                                 time.perf_counter_ns()))  # fmt: skip
        self.side.pump()
        return calls

    def cancel(self, call: int) -> None:
        self.waiting.append((CANCEL, call, 0, b"", None, None, time.perf_counter_ns()))
        self.side.pump()

    async def answered(self, calls: list[int]) -> list[tuple[int, int, bytes]]:
        for _ in range(400):
            if all(c in self.answers for c in calls):
                break
            await asyncio.sleep(0.005)
        return [self.answers[c] for c in calls]

    def statistics(self) -> tuple[int, int, int, int]:
        s = self.model.stats
        return (s.success.count, s.fail.count, s.inference_count, s.execution_count)


def _ids(answers: list[tuple[int, int, bytes]]) -> list[str]:
    return [pb.ModelInferResponse.FromString(body).id for kind, _, body in answers
            if kind == REPLY]  # fmt: skip


def test_a_repeated_layout_takes_the_plan(tmp_path: Path) -> None:
    """The second request of a layout is served by the plan the first left; the first, and a
    request of another layout, by the full path."""

    async def scenario() -> None:
        async with Harness(tmp_path, MLP_BENCHMARK_CONFIG) as h:
            planned: list[str] = []
            original = h.model.submit_planned

            def spy(plan: Any, raws: Any, request_id: str, start_ns: int) -> Any:
                planned.append(request_id)
                return original(plan, raws, request_id, start_ns)

            h.model.submit_planned = spy  # type: ignore[method-assign]
            calls = []
            for req in [_mlp(1, id="a"), _mlp(1, id="b", seed=1), _mlp(2, id="c"),
                        _mlp(1, id="d", seed=2)]:  # fmt: skip
                calls += h.hand_over(req)
                await h.answered(calls)
            assert _ids(await h.answered(calls)) == list("abcd")
            assert planned == ["b", "d"]
            assert len(h.model.plans) == 2

    asyncio.run(scenario())


HELD = MLP_BENCHMARK_CONFIG.replace("max_queue_delay_microseconds: 100",
                                    "max_queue_delay_microseconds: 300000")  # fmt: skip


def test_requests_that_arrive_together_run_as_one_group(tmp_path: Path) -> None:
    """Four requests of a planned layout in one hand-over are one queue item and one
    execution; each is answered with its own rows, and counted as a request."""

    async def scenario() -> None:
        async with Harness(tmp_path, MLP_BENCHMARK_CONFIG) as h:
            await h.answered(h.hand_over(_mlp(2, id="learn")))
            groups: list[int] = []
            original = h.model.submit_group

            def spy(plan: Any, raws: list[list[bytes]], start_ns: int) -> Any:
                groups.append(len(raws))
                return original(plan, raws, start_ns)

            h.model.submit_group = spy  # type: ignore[method-assign]
            requests = [_mlp(2, id=f"r{i}", seed=10 + i) for i in range(4)]
            answers = await h.answered(h.hand_over(*requests))
            assert groups == [4]
            assert _ids(answers) == ["r0", "r1", "r2", "r3"]
            assert h.statistics() == (5, 0, 10, 2)
            # Each got the rows its own inputs give, as alone (the full path's answer).
            await h.answered(h.hand_over(*[_mlp(2, id="alone", seed=12)]))
            alone = pb.ModelInferResponse.FromString(h.answers[h.calls][2])
            assert (
                pb.ModelInferResponse.FromString(answers[2][2]).raw_output_contents
                == alone.raw_output_contents
            )

    asyncio.run(scenario())


def test_a_group_member_cancelled_while_queued(tmp_path: Path) -> None:
    """One request of a queued group is cancelled: it is counted as cancelled, the others are
    answered; all of a group cancelled leaves the queue."""

    async def scenario() -> None:
        async with Harness(tmp_path, HELD) as h:
            await h.answered(h.hand_over(_mlp(1, id="learn")))
            calls = h.hand_over(*[_mlp(1, id=f"r{i}", seed=i) for i in range(3)])
            h.cancel(calls[1])
            answers = await h.answered([calls[0], calls[2]])
            assert _ids(answers) == ["r0", "r2"]
            assert calls[1] not in h.answers
            assert h.model.stats.failure_reasons == {"CANCELED": 1}
            everyone = h.hand_over(*[_mlp(1, id=f"s{i}", seed=i) for i in range(2)])
            for call in everyone:
                h.cancel(call)
            assert h.model.scheduler.pending == 0 and not any(h.model.scheduler.queues.values())
            assert h.model.stats.failure_reasons == {"CANCELED": 3}
            assert h.server.dataplane.inflight.count == 0
            assert h.server.dataplane.inflight_bytes == 0

    asyncio.run(scenario())


def test_a_group_past_the_request_timeout(tmp_path: Path) -> None:
    """--request-timeout-ms answers each request of a group that waits too long."""

    async def scenario() -> None:
        async with Harness(tmp_path, HELD, request_timeout_ms=50) as h:
            await h.answered(h.hand_over(_mlp(1, id="learn")))
            answers = await h.answered(h.hand_over(*[_mlp(1, seed=i) for i in range(3)]))
            assert [(kind, code) for kind, code, _ in answers] == [
                (ERROR, grpc.StatusCode.UNAVAILABLE.value[0])
            ] * 3
            assert all(b"--request-timeout-ms" in body for _, _, body in answers)
            assert h.server.dataplane.inflight.count == 0

    asyncio.run(scenario())


def test_a_full_queue_refuses_a_group_request_by_request(tmp_path: Path) -> None:
    """With room for two requests in the queue, two of four that arrive together are queued
    and two refused, as one by one."""
    config = HELD.replace("max_queue_delay_microseconds: 300000",
                          "max_queue_delay_microseconds: 300000\n"
                          "  default_queue_policy { max_queue_size: 2 }")  # fmt: skip
    assert "max_queue_size: 2" in config

    async def scenario() -> None:
        async with Harness(tmp_path, config) as h:
            await h.answered(h.hand_over(_mlp(1, id="learn")))
            answers = await h.answered(h.hand_over(*[_mlp(1, id=f"r{i}", seed=i)
                                                     for i in range(4)]))  # fmt: skip
            assert [kind for kind, _, _ in answers] == [REPLY, REPLY, ERROR, ERROR]
            assert b"Exceeds maximum queue size" in answers[3][2]

    asyncio.run(scenario())


def test_models_that_never_plan_are_not_looked_up(model_repo: Path) -> None:
    """A model with BYTES inputs never gets a plan (each request's lengths vary), so its
    requests take no plan key (a copy of their bytes off the message and back); the MLP's do."""

    async def scenario() -> None:
        server = Server(ServerSettings(model_repositories=[model_repo]))
        await server.manager.startup()
        try:
            infer = servicers(server.dataplane, server.auth)[INFERENCE_SERVICE]
            words = pb.ModelInferRequest(model_name="identity_bytes")
            words.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 1])
            words.raw_input_contents.append(b"\x05\x00\x00\x00words")
            found = infer.find_plan(words, None, words.ByteSize())
            assert not found.model.plannable and found.key is None
            assert words.raw_input_contents[0].endswith(b"words")  # left on the message
            found = infer.find_plan(_mlp(1), None, 300)
            assert found.model.plannable and found.key is not None
        finally:
            await server.manager.close()

    asyncio.run(scenario())
