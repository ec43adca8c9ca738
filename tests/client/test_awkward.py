"""The coffea-style wrapper: eager awkward and dask-awkward give the same results."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import awkward as ak
import dask_awkward as dak
import numpy as np
import onnxruntime as ort
import pytest

from sonic.client.awkward_wrapper import TritonWrapper, parse_model_url
from sonic.launcher import LocalServer
from sonic.zoo.examples import mlp_model, write_model

CONFIG = """
max_batch_size: 32
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
dynamic_batching { }
"""


class JetScorer(TritonWrapper):
    """Scores every jet of every event: flatten the jets, infer, unflatten per event."""

    def prepare_awkward(self, jets):
        return {"input": ak.to_numpy(ak.flatten(jets, axis=1)).astype(np.float32)}

    def postprocess_awkward(self, outputs, jets):
        return ak.unflatten(outputs["output"], ak.num(jets, axis=1))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("awk")
    write_model(mlp_model(), repo, "mlp", config=CONFIG)
    with LocalServer(repo) as srv:
        yield srv


def _events(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, n)
    flat = rng.standard_normal((int(counts.sum()), 64)).astype(np.float32)
    return ak.unflatten(ak.from_numpy(flat), counts)


def test_model_urls_are_parsed_not_split() -> None:
    assert parse_model_url("triton+grpc://host:8001/deepmet/2") == (
        "grpc",
        "host:8001",
        "deepmet",
        "2",
    )
    assert parse_model_url("triton+http://h:8000/mlp") == ("http", "h:8000", "mlp", "")
    with pytest.raises(ValueError, match="triton\\+grpc://"):
        parse_model_url("grpc://host/model")


def test_eager_matches_direct_and_splits_batches(server: LocalServer) -> None:
    events = _events(60)
    wrapper = JetScorer(f"triton+grpc://{server.grpc_url}/mlp")
    got = wrapper(events)
    session = ort.InferenceSession(mlp_model().SerializeToString())
    want = session.run(["output"], {"input": ak.to_numpy(ak.flatten(events, axis=1))})[0]
    assert ak.all(ak.num(got, axis=1) == ak.num(events, axis=1))
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(got, axis=1)), want)
    # More jets than max_batch_size 32: several requests, no padding.
    assert len(ak.flatten(events, axis=1)) > 32
    assert all(t.rows <= 32 for t in wrapper.client.timings)
    assert sum(t.rows for t in wrapper.client.timings) == len(want)


def test_dask_equals_eager_including_empty_chunks(server: LocalServer) -> None:
    events = _events(45, seed=4)
    wrapper = JetScorer(f"triton+http://{server.http_url}/mlp")
    eager = wrapper(events)
    lazy = dak.from_awkward(events, npartitions=3)
    result = wrapper(lazy).compute()
    assert ak.to_list(result) == ak.to_list(eager)
    empty = wrapper(events[:0])
    assert len(empty) == 0


def test_wrapper_pickles_without_its_client(server: LocalServer) -> None:
    wrapper = JetScorer(f"triton+grpc://{server.grpc_url}/mlp")
    wrapper(_events(3))
    assert wrapper._client is not None
    clone = pickle.loads(pickle.dumps(wrapper))
    assert clone._client is None
    assert ak.to_list(clone(_events(3))) == ak.to_list(wrapper(_events(3)))
