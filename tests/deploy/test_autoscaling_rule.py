"""The autoscaling rule the manifests give KEDA, simulated against queue times measured from a
real ``sonic serve`` under load (issue #22, bug 1).

KEDA hands the HPA the trigger's query value.  With ``metricType: Value`` the HPA scales the
current replica count by value / threshold; with ``AverageValue`` (KEDA's default) it divides
the value by the replica count first, so a fleet-wide average such as queue time per execution
gives ceil(queue / threshold) whatever runs now.  The measured curve -- queue time against the
requests in flight on one server -- drives both rules through a load step.
"""

from __future__ import annotations

import asyncio
import math
import textwrap
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from sonic.launcher import LocalServer
from tests.conftest import write_python_model
from tests.fixtures.kustomize import by_kind, render

#: 4 ms of work per request, one instance, no batching: a server whose queue grows with load.
WORK = textwrap.dedent("""
    import time

    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                time.sleep(0.004)
                out.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())]))
            return out
""")
TOLERANCE = 0.1  # the HPA's --horizontal-pod-autoscaler-tolerance default


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("work")
    write_python_model(repo, "work", WORK)  # one instance, no batching
    with LocalServer(repo) as srv:
        yield srv


def _queue_ms_per_execution(server: LocalServer) -> tuple[float, int]:
    s = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
        "work", as_json=True)["model_stats"][0]  # fmt: skip
    return int(s["inference_stats"]["queue"].get("ns", 0)) / 1e6, int(s.get("execution_count", 0))


def measure(server: LocalServer, in_flight: int, seconds: float = 1.0) -> float:
    """Queue ms per execution (the trigger's query, on one server) with ``in_flight`` clients."""

    async def load() -> None:
        client = aioclient.InferenceServerClient(server.grpc_url)
        x = aioclient.InferInput("X", [1], "FP32")
        x.set_data_from_numpy(np.ones(1, np.float32))
        stop = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < stop:
                await client.infer("work", [x])

        try:
            await asyncio.gather(*(loop() for _ in range(in_flight)))
        finally:
            await client.close()

    (q0, n0) = _queue_ms_per_execution(server)
    asyncio.run(load())
    (q1, n1) = _queue_ms_per_execution(server)
    return (q1 - q0) / max(n1 - n0, 1)


def simulate(curve: dict[int, float], metric_type: str, threshold: float, clients: int,
             steps: int = 12, max_replicas: int = 10) -> list[int]:  # fmt: skip
    """Replica counts after a step to ``clients`` in flight, spread evenly over the replicas."""
    levels = sorted(curve)
    replicas, history = 1, []
    for _ in range(steps):
        per_replica = clients / replicas
        queue = float(np.interp(per_replica, levels, [curve[c] for c in levels]))
        if per_replica > levels[-1]:  # beyond the measurements: the last slope
            slope = (curve[levels[-1]] - curve[levels[-2]]) / (levels[-1] - levels[-2])
            queue = curve[levels[-1]] + slope * (per_replica - levels[-1])
        if metric_type == "Value":  # the HPA: current x value / target, outside the tolerance
            ratio = queue / threshold
            desired = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(replicas * ratio)
        else:  # AverageValue: the value is divided by the replicas, then by the target
            desired = math.ceil(queue / threshold)
        replicas = min(max(desired, 1), max_replicas)
        history.append(replicas)
    return history


def test_the_rendered_rule_converges_on_a_load_step(server: LocalServer) -> None:
    curve = {c: measure(server, c) for c in (1, 2, 4, 8)}
    # The server queues: each request in flight beyond the first waits about one execution.
    assert curve[8] > curve[4] > curve[1] and curve[8] > 10, curve
    (so,) = by_kind(render("base"), "ScaledObject")
    trigger = so["spec"]["triggers"][0]
    threshold = float(trigger["metadata"]["threshold"])
    clients = 24  # a step from a few in flight to 24: one server's queue far above threshold
    rendered = simulate(curve, trigger["metricType"], threshold, clients)
    settled = rendered[-4:]
    assert len(set(settled)) == 1, rendered  # it converged and stays
    per_replica = clients / settled[0]
    assert 1 < settled[0] < 10, (rendered, curve)
    queue = float(np.interp(per_replica, sorted(curve), [curve[c] for c in sorted(curve)]))
    assert queue <= threshold * (1 + TOLERANCE), (rendered, queue, curve)
    # KEDA's default would not: it jumps between ceil(queue / threshold) at one size and 1.
    jumping = simulate(curve, "AverageValue", threshold, clients)
    assert len(set(jumping[-4:])) > 1, jumping
    print({"curve_ms": curve, "Value": rendered, "AverageValue": jumping})
