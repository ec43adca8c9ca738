"""The CMS example models serve with their CMSSW interfaces and match direct onnxruntime."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from sonic.launcher import LocalServer
from sonic.zoo.examples import write_example_repository

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "model_repository"


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("examples") / "repo"
    shutil.copytree(EXAMPLES, repo)
    write_example_repository(repo)
    with LocalServer(repo) as srv:
        yield srv


def _event_inputs(model: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if model == "deepmet":
        n = 1200  # real candidates, zero-padded to 4500 as the producer does
        x = np.zeros((1, 4500, 8), dtype=np.float32)
        x[0, :n] = rng.standard_normal((n, 8))
        cats = {f"input_cat{i}": np.zeros((1, 4500, 1), dtype=np.float32) for i in range(3)}
        for i, size in enumerate((3, 11, 4)):
            cats[f"input_cat{i}"][0, :n, 0] = rng.integers(0, size, n)
        return {"input": x, **cats}
    if model == "facile":
        n = 16000
        return {
            "continuousinputs": rng.standard_normal((n, 10)).astype(np.float32),
            "depth": rng.integers(1, 8, (n, 1)).astype(np.int32),
            "ieta": rng.integers(-29, 30, (n, 1)).astype(np.int32),
        }
    jets, n_pf, n_sv = 3, 37, 4
    return {
        "pf_points": rng.standard_normal((jets, 2, n_pf)).astype(np.float32),
        "pf_features": rng.standard_normal((jets, 25, n_pf)).astype(np.float32),
        "pf_mask": np.ones((jets, 1, n_pf), dtype=np.float32),
        "sv_points": rng.standard_normal((jets, 2, n_sv)).astype(np.float32),
        "sv_features": rng.standard_normal((jets, 11, n_sv)).astype(np.float32),
        "sv_mask": np.ones((jets, 1, n_sv), dtype=np.float32),
    }


@pytest.mark.parametrize(
    ("model", "output", "shape"),
    [("deepmet", "output/BiasAdd", (1, 2)), ("facile", "output/BiasAdd", (16000, 1)),
     ("particlenet", "softmax", (3, 17))],
)  # fmt: skip
def test_cms_model_served_equals_direct(
    example_server: LocalServer, model: str, output: str, shape: tuple[int, ...]
) -> None:
    client = grpcclient.InferenceServerClient(example_server.grpc_url)
    feeds = _event_inputs(model, np.random.default_rng(5))
    inputs = []
    for name, array in feeds.items():
        t = grpcclient.InferInput(name, list(array.shape), "INT32" if array.dtype == np.int32
                                  else "FP32")  # fmt: skip
        t.set_data_from_numpy(array)
        inputs.append(t)
    # Version 1 by name: deepmet holds two (its resolution and response tunes, as CMS's does).
    got = client.infer(model, inputs, model_version="1").as_numpy(output)
    session = ort.InferenceSession(str(EXAMPLES / model / "1" / "model.onnx"))
    want = session.run([output], feeds)[0]
    assert got.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
