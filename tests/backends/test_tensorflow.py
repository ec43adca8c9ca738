"""TensorFlow graphdef and SavedModel models, served as Triton's tensorflow backend serves them,
in a repository laid out as CMS keeps DeepMET: three versions, named symlinks, MD5 agents."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from sonic.launcher import LocalServer
from tests.conftest import random_tensor
from tests.fixtures.tf_models import (
    N_PF,
    NAMED_VERSIONS,
    TF_TYPES,
    deepmet_like_graphdef,
    identity_graphdef,
    run_graphdef,
    write_deepmet,
    write_savedmodel,
)

TYPES = "\n".join([
    'platform: "tensorflow_graphdef"', "max_batch_size: 4",
    "optimization { graph { level: -1 } }",
    'parameters { key: "TF_NUM_INTRA_THREADS" value: { string_value: "1" } }',
    *(f'input {{ name: "in_{t}" data_type: TYPE_{"STRING" if t == "BYTES" else t} dims: [-1] }}'
      for t in TF_TYPES),
    *(f'output {{ name: "out_{t}" data_type: TYPE_{"STRING" if t == "BYTES" else t} dims: [-1] }}'
      for t in TF_TYPES),
])  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes]]:
    root = tmp_path_factory.mktemp("tf") / "repo"
    graphs = write_deepmet(root / "deepmet")
    (root / "types" / "1").mkdir(parents=True)
    (root / "types" / "1" / "model.graphdef").write_bytes(identity_graphdef())
    (root / "types" / "config.pbtxt").write_text(TYPES)
    (root / "scorer" / "1").mkdir(parents=True)
    write_savedmodel(root / "scorer" / "1" / "model.savedmodel")
    (root / "scorer" / "config.pbtxt").write_text(
        'platform: "tensorflow_savedmodel"\nmax_batch_size: 8\n'
    )
    return root, graphs


@pytest.fixture(scope="module")
def server(repo: tuple[Path, dict[int, bytes]]) -> Iterator[LocalServer]:
    with LocalServer(repo[0]) as srv:
        yield srv


def _event(rng: np.random.Generator, batch: int = 1) -> dict[str, np.ndarray]:
    x = np.zeros((batch, N_PF, 8), dtype=np.float32)
    x[:, :900] = rng.standard_normal((batch, 900, 8))
    cats = {f"input_cat{i}": np.zeros((batch, N_PF, 1), dtype=np.float32) for i in range(3)}
    for i, size in enumerate((3, 11, 4)):  # charge, pdgId and fromPV classes, as FP32
        cats[f"input_cat{i}"][:, :900, 0] = rng.integers(0, size, (batch, 900))
    return {"input": x, **cats}


def _infer(client: object, module: object, model: str, feeds: dict[str, np.ndarray],
           version: str = "") -> object:  # fmt: skip
    inputs = []
    for name, value in feeds.items():
        datatype = "BYTES" if value.dtype == object else module.np_to_triton_dtype(value.dtype)  # type: ignore[attr-defined]
        t = module.InferInput(name, list(value.shape), datatype)  # type: ignore[attr-defined]
        t.set_data_from_numpy(value)
        inputs.append(t)
    return client.infer(model, inputs, model_version=version)  # type: ignore[attr-defined]


def test_every_version_is_ready_and_answers_with_its_own_graph(
    server: LocalServer, repo: tuple[Path, dict[int, bytes]]
) -> None:
    """version_policy all: 1, 2 and 3 each READY and addressable; the named symlinks beside
    them are not versions; each output equals TensorFlow run directly on that version's graph."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
    assert {index[("deepmet", v)] for v in ("1", "2", "3")} == {"READY"}
    assert not any(name in NAMED_VERSIONS or v in NAMED_VERSIONS for name, v in index)
    feeds = _event(np.random.default_rng(1), batch=2)
    outputs = {}
    for v, graph in repo[1].items():
        got = _infer(client, grpcclient, "deepmet", feeds, str(v)).as_numpy("output/BiasAdd")
        (want,) = run_graphdef(graph, feeds, ["output/BiasAdd"])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        outputs[v] = got
    assert not np.allclose(outputs[1], outputs[2]) and not np.allclose(outputs[2], outputs[3])
    http = httpclient.InferenceServerClient(server.http_url)
    got = _infer(http, httpclient, "deepmet", feeds).as_numpy("output/BiasAdd")  # latest
    np.testing.assert_array_equal(got, outputs[3])


def test_every_tensorflow_datatype_round_trips(server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    rng = np.random.default_rng(2)
    feeds = {f"in_{t}": random_tensor(t, (2, 5), rng) for t in TF_TYPES}
    inputs = []
    for t in TF_TYPES:
        i = grpcclient.InferInput(f"in_{t}", [2, 5], t)
        i.set_data_from_numpy(feeds[f"in_{t}"])
        inputs.append(i)
    result = client.infer("types", inputs)
    for t in TF_TYPES:
        got = result.as_numpy(f"out_{t}")
        want = feeds[f"in_{t}"]
        assert got.shape == (2, 5), t
        np.testing.assert_array_equal(got, want, err_msg=t)


def test_savedmodel_config_is_completed_from_its_signature(server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    meta = client.get_model_metadata("scorer")
    assert meta.platform == "tensorflow_savedmodel"
    assert {(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs} == {
        ("x", "FP32", (-1, 4)), ("ids", "INT64", (-1, -1))}  # fmt: skip
    assert {(t.name, t.datatype, tuple(t.shape)) for t in meta.outputs} == {
        ("score", "FP32", (-1, 2)), ("count", "INT64", (-1, 1))}  # fmt: skip
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.arange(15, dtype=np.int64).reshape(3, 5)
    result = _infer(client, grpcclient, "scorer", {"x": x, "ids": ids})
    w = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_allclose(result.as_numpy("score"), x @ w, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("count"), ids.sum(axis=1, keepdims=True))


def test_a_checksum_mismatch_makes_only_that_model_unavailable(tmp_path: Path) -> None:
    write_deepmet(tmp_path / "deepmet")
    (tmp_path / "deepmet" / "2" / "model.graphdef").write_bytes(deepmet_like_graphdef(seed=9))
    (tmp_path / "types" / "1").mkdir(parents=True)
    (tmp_path / "types" / "1" / "model.graphdef").write_bytes(identity_graphdef())
    (tmp_path / "types" / "config.pbtxt").write_text(TYPES)
    with LocalServer(tmp_path) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        models = {m.name: m for m in client.get_model_repository_index().models}
        assert models["types"].state == "READY"
        assert models["deepmet"].state == "UNAVAILABLE"
        assert "2/model.graphdef" in models["deepmet"].reason


def test_repo_check_passes_on_the_tensorflow_repository(
    repo: tuple[Path, dict[int, bytes]],
) -> None:
    proc = subprocess.run([sys.executable, "-m", "sonic.cli", "repo", "check", str(repo[0])],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for model in ("deepmet", "types", "scorer"):
        assert model in proc.stdout


def test_without_tensorflow_the_model_names_the_extra(tmp_path: Path) -> None:
    """A server where tensorflow cannot be imported serves everything else and says what to
    install for the TF model."""
    hide = tmp_path / "hide" / "tensorflow"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
    )
    repo = tmp_path / "repo"
    (repo / "types" / "1").mkdir(parents=True)
    (repo / "types" / "1" / "model.graphdef").write_bytes(b"\n\x00")  # never parsed here
    (repo / "types" / "config.pbtxt").write_text(TYPES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide.parent), *sys.path])}
    with LocalServer(repo, env=env) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        (model,) = client.get_model_repository_index().models
        assert model.state == "UNAVAILABLE"
        assert "pip install 'sonic-inference[tensorflow]'" in model.reason
