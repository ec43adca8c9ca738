"""The dynamic batcher's rules, observed from outside through real requests and statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as aioclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.server.scheduling.delay import FUTILE_TO_SKIP, PROBE_EVERY
from sonic.zoo.examples import IR_VERSION, OPSET, mlp_model, write_model
from tests.conftest import slow_model
from tests.fixtures.metrics import metric
from tests.fixtures.waiting import wall_clock

MLP_IO = """
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
SLOW_IO = """
max_batch_size: 512
instance_group [ { count: 1, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""

CONFIGS = {
    "pref": ("mlp", "max_batch_size: 8\ndynamic_batching { preferred_batch_size: [ 4 ] "
             "max_queue_delay_microseconds: 5000000 }" + MLP_IO),
    "delay": ("mlp", "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 400000 }"
              + MLP_IO),
    "lone": ("mlp", "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }"
             + MLP_IO),
    "shared": ("mlp", "max_batch_size: 64\ndynamic_batching { max_queue_delay_microseconds: 20000 }"
               + MLP_IO.replace(
        "count: 1", "count: 2")),
    "ordered": ("mlp", "max_batch_size: 16\ndynamic_batching { preserve_ordering: true "
                "max_queue_delay_microseconds: 20000 }"
                + MLP_IO.replace("count: 1", "count: 2")),
    "timeout": ("slow", SLOW_IO + "dynamic_batching { default_queue_policy { timeout_action: "
                "REJECT default_timeout_microseconds: 100000 max_queue_size: 2 } }"),
    "timeout_delay": ("slow", SLOW_IO + "dynamic_batching { default_queue_policy { "
                      "timeout_action: DELAY default_timeout_microseconds: 100000 } }"),
    "prio": ("slow", SLOW_IO + "dynamic_batching { priority_levels: 2 default_priority_level: 2 }"),
}  # fmt: skip

RAGGED_CONFIG = """
max_batch_size: 16
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ], allow_ragged_batch: true } ]
batch_input [ { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO, target_name: "INDEX",
                data_type: TYPE_INT32, source_input: "INPUT" } ]
output [ { name: "SUM", data_type: TYPE_FP32, dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500000 }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""


def ragged_sum_model() -> Any:
    """Per-request sums of a ragged input, from the accumulated element counts."""
    i64 = lambda name, vals: helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)  # noqa: E731
    nodes = [
        helper.make_node("CumSum", ["INPUT", "axis0"], ["cs"]),
        helper.make_node("Concat", ["zero", "cs"], ["cs0"], axis=0),
        helper.make_node("Slice", ["INDEX", "one", "big"], ["ends_idx"]),
        helper.make_node("Slice", ["INDEX", "zero_i", "minus_one"], ["starts_idx"]),
        helper.make_node("Gather", ["cs0", "ends_idx"], ["ends"], axis=0),
        helper.make_node("Gather", ["cs0", "starts_idx"], ["starts"], axis=0),
        helper.make_node("Sub", ["ends", "starts"], ["diff"]),
        helper.make_node("Unsqueeze", ["diff", "axis1"], ["SUM"]),
    ]
    inits = [
        helper.make_tensor("axis0", TensorProto.INT32, [], [0]),
        helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        i64("one", [1]), i64("big", [2**62]), i64("zero_i", [0]), i64("minus_one", [-1]),
        i64("axis1", [1]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "ragged_sum",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("INDEX", TensorProto.INT32, ["b1"])],
        [helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["b", 1])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("batching")
    models = {"mlp": mlp_model(), "slow": slow_model()}
    for name, (base, config) in CONFIGS.items():
        write_model(models[base], repo, name, config=config)
    write_model(ragged_sum_model(), repo, "ragged", config=RAGGED_CONFIG)
    with LocalServer(repo) as srv:
        yield srv


def _mlp_input(x: np.ndarray) -> Any:
    inp = aioclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _slow_input(rows: int) -> Any:
    inp = aioclient.InferInput("INPUT0", [rows, 1024], "FP32")
    inp.set_data_from_numpy(np.full((rows, 1024), 1e-3, dtype=np.float32))
    return inp


async def _batch_sizes(client: Any, model: str) -> dict[int, int]:
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    return {
        int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])
    }


def run(server: LocalServer, scenario: Any) -> Any:
    async def main() -> Any:
        client = aioclient.InferenceServerClient(server.grpc_url)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


@wall_clock
def test_preferred_batch_size_is_formed(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        x = np.ones((1, 64), dtype=np.float32)
        t0 = time.perf_counter()
        await asyncio.gather(*(c.infer("pref", [_mlp_input(x)]) for _ in range(4)))
        # The 5 s delay is not waited out: 4 rows form the preferred batch at once.
        assert time.perf_counter() - t0 < 2.0
        assert await _batch_sizes(c, "pref") == {4: 1}

    run(batching_server, scenario)


@wall_clock
def test_queue_delay_is_honoured(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        x = np.ones((1, 64), dtype=np.float32)
        t0 = time.perf_counter()
        await c.infer("delay", [_mlp_input(x)])
        waited = time.perf_counter() - t0
        assert 0.4 <= waited < 3.0, waited
        # A full batch does not wait for the delay.
        t0 = time.perf_counter()
        await asyncio.gather(*(c.infer("delay", [_mlp_input(x)]) for _ in range(8)))
        assert time.perf_counter() - t0 < 0.4
        assert await _batch_sizes(c, "delay") == {1: 1, 8: 1}

    run(batching_server, scenario)


async def _queued_ms(client: Any, model: str) -> float:
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    return int(stats["inference_stats"]["queue"].get("ns", 0)) / 1e6


async def _one_after_another(client: Any, model: str, n: int) -> float:
    """Milliseconds that ``n`` requests sent one at a time spent in the queue."""
    x = np.ones((1, 64), dtype=np.float32)
    before = await _queued_ms(client, model)
    for _ in range(n):
        await client.infer(model, [_mlp_input(x)])
    return await _queued_ms(client, model) - before


def test_a_delay_that_gathers_nothing_stops_being_held(batching_server: LocalServer) -> None:
    """One request at a time never gets company: after FUTILE_TO_SKIP futile 20 ms waits only
    the probes wait, and requests arriving together bring the delay back."""

    async def scenario(c: Any) -> None:
        assert await _one_after_another(c, "lone", FUTILE_TO_SKIP) >= FUTILE_TO_SKIP * 20
        skipping = await _one_after_another(c, "lone", 2 * PROBE_EVERY)
        assert 2 * 20 <= skipping < 2 * PROBE_EVERY * 20 / 4, skipping  # two probes waited
        x = np.ones((1, 64), dtype=np.float32)
        # A burst of 8: a loaded machine can spread 3 out so that none finds another queued.
        await asyncio.gather(*(c.infer("lone", [_mlp_input(x)]) for _ in range(8)))
        assert await _one_after_another(c, "lone", 1) >= 20

    run(batching_server, scenario)


def test_a_fixed_delay_is_always_held(tmp_path: Any) -> None:
    write_model(mlp_model(), tmp_path, "lone", config=CONFIGS["lone"][1])
    with LocalServer(tmp_path, "--adaptive-batch-delay=false") as srv:
        n = FUTILE_TO_SKIP + PROBE_EVERY
        assert run(srv, lambda c: _one_after_another(c, "lone", n)) >= n * 20


def test_requests_split_back_without_cross_talk(batching_server: LocalServer) -> None:
    """Many clients, different row counts, batched together: each gets its own rows."""
    session = ort.InferenceSession(mlp_model().SerializeToString())
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((int(rng.integers(1, 6)), 64)).astype(np.float32) for _ in range(64)]

    async def scenario(c: Any) -> None:
        for model in ("shared", "ordered"):
            results = await asyncio.gather(*(c.infer(model, [_mlp_input(x)]) for x in xs))
            for x, r in zip(xs, results, strict=True):
                want = session.run(["output"], {"input": x})[0]
                np.testing.assert_allclose(r.as_numpy("output"), want, rtol=1e-5, atol=1e-6)
            sizes = await _batch_sizes(c, model)
            assert sum(n * s for s, n in sizes.items()) == sum(len(x) for x in xs)
            assert max(sizes) > 5, sizes  # requests really shared batches

    run(batching_server, scenario)


def test_queue_timeout_rejects_and_queue_size_bounds(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        first = asyncio.create_task(c.infer("timeout", [_slow_input(512)]))
        await asyncio.sleep(0.2)  # the instance is now busy for ~0.7 s
        queued = [asyncio.create_task(c.infer("timeout", [_slow_input(1)])) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(InferenceServerException) as full:
            await c.infer("timeout", [_slow_input(1)])
        assert "maximum queue size" in full.value.message()
        assert full.value.status() == "StatusCode.UNAVAILABLE"
        await first
        for task in queued:
            with pytest.raises(InferenceServerException) as late:
                await task
            assert "timeout" in late.value.message().lower()
            assert late.value.status() == "StatusCode.UNAVAILABLE"

        rejected = metric(batching_server, "nv_inference_request_failure", model="timeout",
                          reason="REJECTED")  # fmt: skip
        assert rejected == 3

    run(batching_server, scenario)


def test_timeout_action_delay_keeps_requests(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        first = asyncio.create_task(c.infer("timeout_delay", [_slow_input(512)]))
        await asyncio.sleep(0.2)
        late = await c.infer("timeout_delay", [_slow_input(2)])
        assert late.as_numpy("OUTPUT0").shape == (2, 1024)
        await first

    run(batching_server, scenario)


def test_priorities_order_the_queue(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        done: list[str] = []

        async def call(tag: str, rows: int, priority: int) -> None:
            await c.infer("prio", [_slow_input(rows)], priority=priority)
            done.append(tag)

        first = asyncio.create_task(call("first", 512, 0))
        await asyncio.sleep(0.2)
        low = asyncio.create_task(call("low", 300, 2))
        await asyncio.sleep(0.05)
        high = asyncio.create_task(call("high", 300, 1))
        await asyncio.gather(first, low, high)
        assert done == ["first", "high", "low"]
        with pytest.raises(InferenceServerException) as bad:
            await c.infer("prio", [_slow_input(1)], priority=3)
        assert "priority" in bad.value.message()

    run(batching_server, scenario)


def test_ragged_inputs_batch_without_padding(batching_server: LocalServer) -> None:
    async def scenario(c: Any) -> None:
        lengths = [3, 4, 5, 1]
        arrays = [np.arange(1, n + 1, dtype=np.float32).reshape(1, n) * (i + 1)
                  for i, n in enumerate(lengths)]  # fmt: skip

        async def one(a: np.ndarray) -> float:
            inp = aioclient.InferInput("INPUT", list(a.shape), "FP32")
            inp.set_data_from_numpy(a)
            r = await c.infer("ragged", [inp])
            out = r.as_numpy("SUM")
            assert out.shape == (1, 1)
            return float(out[0, 0])

        sums = await asyncio.gather(*(one(a) for a in arrays))
        assert sums == [float(a.sum()) for a in arrays]
        assert await _batch_sizes(c, "ragged") == {4: 1}

    run(batching_server, scenario)


def test_pending_gauge_and_batch_metrics(batching_server: LocalServer) -> None:
    import urllib.request

    def metrics() -> dict[str, float]:
        with urllib.request.urlopen(batching_server.metrics_url) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("nv_") and 'model="delay"' in line:
                key, value = line.rsplit(" ", 1)
                out[key.split("{")[0]] = float(value)
        return out

    before = metrics()

    async def scenario(c: Any) -> None:
        x = np.ones((1, 64), dtype=np.float32)
        calls = [asyncio.create_task(c.infer("delay", [_mlp_input(x)])) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert metrics()["nv_inference_pending_request_count"] == 3
        await asyncio.gather(*calls)

    run(batching_server, scenario)
    after = metrics()
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 3
    assert after["nv_inference_count"] - before["nv_inference_count"] == 3
    assert after["nv_inference_exec_count"] - before["nv_inference_exec_count"] == 1
    assert after["nv_inference_pending_request_count"] == 0
    queued_us = after["nv_inference_queue_duration_us"] - before["nv_inference_queue_duration_us"]
    assert queued_us >= 3 * 350_000  # each waited out most of the 400 ms delay
