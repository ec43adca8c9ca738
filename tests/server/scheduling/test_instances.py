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

    async def timed(c: aioclient.InferenceServerClient, model: str, n: int) -> float:
        inp = aioclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        await c.infer(model, [inp])  # warm up
        t0 = time.perf_counter()
        await asyncio.gather(*(c.infer(model, [inp]) for _ in range(n)))
        return time.perf_counter() - t0

    async def main(url: str) -> tuple[float, float]:
        c = aioclient.InferenceServerClient(url)
        try:
            return await timed(c, "one", 4), await timed(c, "two", 4)
        finally:
            await c.close()

    # Two single-threaded instances on two cores: close to twice as fast.  A
    # shared machine can steal a core for a moment, so the best of 3 counts.
    with LocalServer(tmp_path) as srv:
        runs = [asyncio.run(main(srv.grpc_url)) for _ in range(3)]
    assert min(parallel / serial for serial, parallel in runs) < 0.75, runs
