"""What CMSSW's SonicTriton does that the client now does too (issue #21, parity): outputs
checked at construction, verbose server timings in async mode, ragged batches on asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from sonic.client import Client, InputError
from sonic.launcher import LocalServer
from sonic.zoo.examples import identity_model, write_model

CONFIG = """
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("parity")
    write_model(identity_model("FP32"), repo, "identity", config=CONFIG)
    with LocalServer(repo) as srv:
        yield srv


def test_an_unknown_output_is_refused_at_construction(server: LocalServer) -> None:
    with pytest.raises(InputError, match=r"no output\(s\) \['OUTPUT9'\]; it has \['OUTPUT0'\]"):
        Client("identity", [server.grpc_url], outputs=["OUTPUT9"])


def test_async_ragged_and_verbose_timings(server: LocalServer) -> None:
    entries = [{"INPUT0": np.full((1, n), n, np.float32)} for n in (1, 5, 3)]
    client = Client("identity", [server.grpc_url], verbose=True, shared_memory="off")

    async def run() -> list[dict[str, np.ndarray]]:
        try:
            return await client.infer_ragged_async(entries)
        finally:
            await client.close_async()

    try:
        results = asyncio.run(run())
    finally:
        client.close()
    for entry, result in zip(entries, results, strict=True):
        np.testing.assert_array_equal(result["OUTPUT0"], entry["INPUT0"])
    assert len(client.timings) == 3
    # verbose: the server's queue and compute split, in async mode too
    assert all(t.server_compute_s is not None and t.server_compute_s > 0 for t in client.timings)
