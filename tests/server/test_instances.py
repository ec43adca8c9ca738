"""Instance groups: ``count: N`` executes N requests at once, off the GIL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as aioclient

from sonic.launcher import LocalServer
from sonic.repository.examples import write_model
from tests.conftest import slow_model

# max_batch_size 0: no dynamic batching, so each request is its own execution.
CONFIG = """
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1, 1024 ] } ]
instance_group [ { count: %d, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def test_two_instances_run_in_parallel(tmp_path: Path) -> None:
    write_model(slow_model(), tmp_path, "one", config=CONFIG % 1)
    write_model(slow_model(), tmp_path, "two", config=CONFIG % 2)
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
