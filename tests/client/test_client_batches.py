"""Batches of 0 rows cost no call and answer with typed, shaped empty outputs (issue #21,
defect 3), in every mode of the client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sonic.client import Client
from sonic.launcher import LocalServer
from sonic.zoo.examples import identity_model, write_model

CONFIG = """
max_batch_size: 16
input [ { name: "INPUT0", data_type: TYPE_%s, dims: [ 3, -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_%s, dims: [ 3, -1 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("batches")
    for t in ("INT64", "FP16"):
        write_model(identity_model(t, ("batch", 3, -1)), repo, f"id_{t.lower()}",
                    config=CONFIG % (t, t))  # fmt: skip
    with LocalServer(repo) as srv:
        yield srv


def _executions(server: LocalServer, model: str) -> int:
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
        model, as_json=True
    )
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


@pytest.mark.parametrize("mode", ["sync", "async", "ragged"])
@pytest.mark.parametrize(("datatype", "dtype"), [("INT64", np.int64), ("FP16", np.float16)])
def test_an_empty_batch_makes_no_call(server: LocalServer, mode: str, datatype: str,
                                      dtype: type) -> None:  # fmt: skip
    model = f"id_{datatype.lower()}"
    client = Client(model, [server.grpc_url], shared_memory="off")
    before = _executions(server, model)
    empty = {"INPUT0": np.zeros((0, 3, 5), dtype)}
    try:
        if mode == "sync":
            out = client.infer(empty)
        elif mode == "async":

            async def call() -> dict[str, np.ndarray]:
                try:
                    return await client.infer_async(empty)
                finally:
                    await client.close_async()

            out = asyncio.run(call())
        else:
            (out,) = client.infer_ragged([empty])
        full = client.infer({"INPUT0": np.ones((2, 3, 5), dtype)})
    finally:
        client.close()
    assert out["OUTPUT0"].shape == (0, 3, 0)  # the variable dim is 0 too
    assert out["OUTPUT0"].dtype == dtype
    assert full["OUTPUT0"].shape == (2, 3, 5)
    assert _executions(server, model) == before + 1  # only the full batch was sent
    assert [t.rows for t in client.timings] == [2]
