"""`sonic repo convert` round trips: a PyTorch model and an XGBoost model, served vs direct."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import xgboost

from sonic.launcher import LocalServer

ROOT = Path(__file__).resolve().parents[2]


def sonic(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def served(repo: Path, model: str, name: str, x: np.ndarray, out: str) -> np.ndarray:
    with LocalServer(repo) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        t = grpcclient.InferInput(name, list(x.shape), "FP32")
        t.set_data_from_numpy(x)
        return client.infer(model, [t]).as_numpy(out)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_pytorch_round_trip(tmp_path: Path, fmt: str) -> None:
    result = sonic("repo", "convert", "tests.fixtures.torch_models:TinyNet", "-r", tmp_path,
                   "--name", "tiny", "--format", fmt, "--example-shape", "x:2,6",
                   "--max-batch-size", "32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max_batch_size: 32" in result.stdout
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    from tests.fixtures.torch_models import TinyNet

    with torch.inference_mode():
        want = TinyNet().eval()(torch.from_numpy(x)).numpy()
    got = served(tmp_path, "tiny", "x", x, "output__0")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_xgboost_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y)
    source = tmp_path / "trained.json"
    model.get_booster().save_model(str(source))
    repo = tmp_path / "repo"
    result = sonic("repo", "convert", source, "-r", repo, "--name", "bdt")
    assert result.returncode == 0, result.stderr
    assert 'backend: "fil"' in result.stdout
    probe = x[:7]
    got = served(repo, "bdt", "input__0", probe, "output__0")
    np.testing.assert_allclose(got, model.predict_proba(probe), rtol=1e-6)


def test_unknown_source_is_explained(tmp_path: Path) -> None:
    result = sonic("repo", "convert", tmp_path / "model.h5", "-r", tmp_path, "--name", "x")
    assert result.returncode != 0 and "cannot tell what" in result.stderr


def test_sklearn_round_trip(tmp_path: Path) -> None:
    import pickle

    import skl2onnx  # noqa: F401
    import sklearn.ensemble as sklearn
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    model = sklearn.GradientBoostingRegressor(n_estimators=10).fit(x, x[:, 0] - x[:, 2])
    source = tmp_path / "gbr.pkl"
    source.write_bytes(pickle.dumps(model))
    repo = tmp_path / "repo"
    result = sonic("repo", "convert", source, "-r", repo, "--name", "gbr", "--n-features", "4")
    assert result.returncode == 0, result.stderr
    got = served(repo, "gbr", "input", x[:6], "variable")
    np.testing.assert_allclose(got.reshape(-1), model.predict(x[:6]), rtol=1e-4, atol=1e-4)
