"""Ensembles chain composing models; a broken ensemble config names the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from sonic.launcher import LocalServer
from sonic.zoo.examples import identity_model, simple_model, write_model
from tests.conftest import ENSEMBLE, SIMPLE_CONFIG


@pytest.fixture
def ensemble_repo(tmp_path: Path) -> Path:
    write_model(simple_model(), tmp_path, "simple", config=SIMPLE_CONFIG)
    write_model(identity_model("INT32"), tmp_path, "identity_int32")
    (tmp_path / "chain" / "1").mkdir(parents=True)
    (tmp_path / "chain" / "config.pbtxt").write_text(ENSEMBLE)
    return tmp_path


@pytest.mark.parametrize("mod", [grpcclient, httpclient], ids=["grpc", "http"])
def test_ensemble_chains_steps(ensemble_repo: Path, mod: object) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 5, dtype=np.int32)
    with LocalServer(ensemble_repo) as srv:
        url = srv.grpc_url if mod is grpcclient else srv.http_url
        client = mod.InferenceServerClient(url)  # type: ignore[attr-defined]
        inputs = []
        for name, x in (("A", a), ("B", b)):
            t = mod.InferInput(name, list(x.shape), "INT32")  # type: ignore[attr-defined]
            t.set_data_from_numpy(x)
            inputs.append(t)
        result = client.infer("chain", inputs)
        np.testing.assert_array_equal(result.as_numpy("TWICE_A"), 2 * a)
        np.testing.assert_array_equal(result.as_numpy("TWICE_B"), 2 * b)
        np.testing.assert_array_equal(result.as_numpy("DIFF"), a - b)
        stats = client.get_inference_statistics("simple")
        if isinstance(stats, dict):
            assert int(stats["model_stats"][0]["inference_count"]) == 4


def test_explicit_load_of_an_ensemble_loads_its_steps(ensemble_repo: Path) -> None:
    with LocalServer(ensemble_repo, "--model-control-mode=explicit") as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        assert not client.is_model_ready("simple")
        client.load_model("chain")
        assert client.is_model_ready("chain")
        assert client.is_model_ready("simple") and client.is_model_ready("identity_int32")


def test_broken_ensemble_names_the_field(ensemble_repo: Path) -> None:
    (ensemble_repo / "chain" / "config.pbtxt").write_text(
        ENSEMBLE.replace('value: "diff" } output_map { key: "OUTPUT0" value: "DIFF" }',
                         'value: "nowhere" } output_map { key: "OUTPUT0" value: "DIFF" }')
    )  # fmt: skip
    with LocalServer(ensemble_repo) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        rows = client.get_model_repository_index(as_json=True)["models"]
        chain = next(r for r in rows if r["name"] == "chain")
        assert chain["state"] == "UNAVAILABLE"
        assert "ensemble_scheduling.step[2].input_map" in chain["reason"]
        assert "nowhere" in chain["reason"]
