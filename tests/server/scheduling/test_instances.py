"""Instance groups: ``count: N`` executes N requests at once, off the GIL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient

from sonic.launcher import LocalServer
from sonic.zoo.examples import write_model
from tests.conftest import slow_model

# max_batch_size 0: no dynamic batching, so each request is its own execution.
CONFIG = """
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, 1024 ] } ]
instance_group [ { count: %d, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


TF_CONFIG = """
platform: "tensorflow_graphdef"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, 1024 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1, 1024 ] } ]
instance_group [ { count: %d, kind: KIND_CPU } ]
parameters { key: "TF_NUM_INTRA_THREADS" value: { string_value: "1" } }
parameters { key: "TF_NUM_INTER_THREADS" value: { string_value: "1" } }
parameters { key: "TF_USE_PER_SESSION_THREADS" value: { string_value: "true" } }
"""


def _write_tf(repo: Path, name: str, config: str) -> None:
    from tests.fixtures.tf_models import slow_graphdef

    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.graphdef").write_bytes(slow_graphdef())
    (repo / name / "config.pbtxt").write_text(config)


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorflow"])
def test_two_instances_run_in_parallel(tmp_path: Path, runtime: str) -> None:
    """Each instance is its own session on its own thread, and the runtime releases the GIL."""
    for name, count in (("one", 1), ("two", 2)):
        if runtime == "onnxruntime":
            write_model(slow_model(), tmp_path, name, config=CONFIG % count)
        else:
            _write_tf(tmp_path, name, TF_CONFIG % count)
    x = np.full((256, 1024), 1e-3, dtype=np.float32)

    async def overlap(c: aioclient.InferenceServerClient, model: str, n: int) -> float:
        """The model's compute time over the wall time of n calls at once: about 1 where
        executions run one after another, about the instance count where they overlap."""
        inp = aioclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        await c.infer(model, [inp])  # warm up
        before = await compute_ns(c, model)
        t0 = time.perf_counter()
        await asyncio.gather(*(c.infer(model, [inp]) for _ in range(n)))
        wall = time.perf_counter() - t0
        return (await compute_ns(c, model) - before) / 1e9 / wall

    async def compute_ns(c: aioclient.InferenceServerClient, model: str) -> int:
        stats = await c.get_inference_statistics(model, as_json=True)
        return int(stats["model_stats"][0]["inference_stats"]["compute_infer"]["ns"])

    async def main(url: str) -> tuple[float, float]:
        c = aioclient.InferenceServerClient(url)
        try:
            return await overlap(c, "one", 8), await overlap(c, "two", 8)
        finally:
            await c.close()

    # Overlap in time, not speed, is what shows the instances run at once with the GIL
    # released: it holds however busy the machine's cores are (one held GIL would serialize
    # the two sessions' runs to no overlap, as one instance does).
    with LocalServer(tmp_path) as srv:
        one, two = asyncio.run(main(srv.grpc_url))
    assert one < 1.1, one
    assert two > 1.3, two
