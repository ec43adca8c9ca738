"""Plans (sonic.server.model.Plan): a request of a layout the model validated before skips
decoding and validation on the frame transports, and must answer exactly as the full path does.

Each case goes to a server on the native transport, where plans serve, and one on the Python
transport, where they never do, twice each (the first of a layout teaches the plan, the second
takes it); statuses, messages, outputs and statistics must be the same on both.
"""

from __future__ import annotations

import asyncio
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
from sonic.server.frontends.grpc_frames import CALL, REPLY, Dispatch, relay_methods
from sonic.server.frontends.grpc_native import NativeSide
from sonic.server.frontends.grpc_servicers import servicers
from sonic.server.settings import ServerSettings


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


def test_a_repeated_layout_takes_the_plan() -> None:
    """In the server's own process: the second request of a layout is served by the plan the
    first left, the first and a request of another layout by the full path."""
    asyncio.run(_take_plans())


async def _take_plans() -> None:
    from sonic.zoo.examples import MLP_BENCHMARK_CONFIG, mlp_model, write_model

    class Transport:
        def __init__(self) -> None:
            self.waiting: list[tuple[Any, ...]] = []
            self.answers: list[tuple[int, int, int, bytes]] = []

        def drain(self) -> list[tuple[Any, ...]]:
            calls, self.waiting = self.waiting, []
            return calls

        def send(self, answers: list[tuple[int, int, int, bytes]]) -> None:
            self.answers += answers

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_model(mlp_model(), repo, "mlp", config='name: "mlp"\nplatform: "onnxruntime_onnx"\n'
                    + MLP_BENCHMARK_CONFIG)  # fmt: skip
        server = Server(ServerSettings(model_repositories=[repo]))
        await server.manager.startup()
        server.dataplane.accepting = True
        model = server.manager.get("mlp")
        planned: list[str] = []
        original = model.submit_planned

        def spy(plan: Any, raws: Any, request_id: str, start_ns: int) -> Any:
            planned.append(request_id)
            return original(plan, raws, request_id, start_ns)

        model.submit_planned = spy  # type: ignore[method-assign]
        transport = Transport()
        side = NativeSide(Dispatch(servicers(server.dataplane, server.auth)), transport,
                          server.auth)  # fmt: skip
        infer = next(i for i, m in enumerate(relay_methods()) if m.name == "ModelInfer")
        for call, req in enumerate([_mlp(1, id="a"), _mlp(1, id="b", seed=1), _mlp(2, id="c"),
                                    _mlp(1, id="d", seed=2)]):  # fmt: skip
            transport.waiting.append((CALL, call, infer, req.SerializeToString(), None, None))
            side.pump()
            for _ in range(200):
                if len(transport.answers) > call:
                    break
                await asyncio.sleep(0.005)
        model.close()
    assert [a[0] for a in transport.answers] == [REPLY] * 4
    assert [pb.ModelInferResponse.FromString(a[3]).id for a in transport.answers] == list("abcd")
    assert planned == ["b", "d"]
    assert len(model.plans) == 2
