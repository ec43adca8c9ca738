"""TorchScript and FIL-layout tree models (XGBoost, LightGBM) served vs direct execution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightgbm
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import xgboost

from sonic.launcher import LocalServer

TORCH_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 16
input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] },
        { name: "INPUT__1", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] },
         { name: "OUTPUT__1", data_type: TYPE_FP32, dims: [ 1 ] } ]
parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }
"""
NAMED_CONFIG = """
backend: "pytorch"
max_batch_size: 16
input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] },
        { name: "y", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "prod", data_type: TYPE_FP32, dims: [ 4 ] },
         { name: "norm", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.linear(x) * y
        return z, (z * z).sum(dim=1, keepdim=True)


def fil_config(model_type: str, n_features: int, width: int, output_class: bool,
               proba: bool) -> str:  # fmt: skip
    return f"""
backend: "fil"
max_batch_size: 64
input [ {{ name: "input__0", data_type: TYPE_FP32, dims: [ {n_features} ] }} ]
output [ {{ name: "output__0", data_type: TYPE_FP32, dims: [ {width} ] }} ]
parameters [
  {{ key: "model_type" value: {{ string_value: "{model_type}" }} }},
  {{ key: "output_class" value: {{ string_value: "{str(output_class).lower()}" }} }},
  {{ key: "predict_proba" value: {{ string_value: "{str(proba).lower()}" }} }}
]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch_trees")
    torch.manual_seed(0)
    scripted = torch.jit.script(TwoHeads().eval())
    for name, config in (("heads", TORCH_CONFIG), ("named", NAMED_CONFIG)):
        (root / name / "1").mkdir(parents=True)
        scripted.save(str(root / name / "1" / "model.pt"))
        (root / name / "config.pbtxt").write_text(config)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    y_reg = x[:, 0] * 2 + x[:, 1]
    y_bin = (x[:, 2] > 0).astype(int)
    y_multi = np.digitize(x[:, 3], [-0.5, 0.5])
    models = {
        "xgb_reg": (xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(x, y_reg),
                    "xgboost_json", "xgboost.json", 1, False, False),
        "xgb_bin": (xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y_bin),
                    "xgboost", "xgboost.model", 2, True, True),
        "lgb_multi": (lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y_multi),
                      "lightgbm", "model.txt", 3, True, True),
        "lgb_class": (lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y_multi),
                      "lightgbm", "model.txt", 1, True, False),
    }  # fmt: skip
    for name, (est, kind, filename, width, output_class, proba) in models.items():
        vdir = root / name / "1"
        vdir.mkdir(parents=True)
        if kind == "lightgbm":
            est.booster_.save_model(str(vdir / filename))
        elif filename.endswith(".json"):
            est.get_booster().save_model(str(vdir / filename))
        else:  # xgboost.model: XGBoost >= 2 writes UBJSON; loading detects the format
            est.get_booster().save_model(str(vdir / "model.ubj"))
            (vdir / "model.ubj").rename(vdir / filename)
        (root / name / "config.pbtxt").write_text(fil_config(kind, 6, width, output_class, proba))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[LocalServer]:
    with LocalServer(repo) as srv:
        yield srv


def _infer(server: LocalServer, model: str, feeds: dict[str, np.ndarray]) -> grpcclient.InferResult:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, array in feeds.items():
        t = grpcclient.InferInput(name, list(array.shape), "FP32")
        t.set_data_from_numpy(array)
        inputs.append(t)
    return client.infer(model, inputs)


@pytest.mark.parametrize(("model", "names"), [("heads", ("INPUT__0", "INPUT__1", "OUTPUT__0",
                                                         "OUTPUT__1")),
                                              ("named", ("x", "y", "prod", "norm"))])  # fmt: skip
def test_torchscript_matches_direct(server: LocalServer, repo: Path, model: str,
                                    names: tuple[str, ...]) -> None:  # fmt: skip
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.standard_normal((5, 4)).astype(np.float32)
    result = _infer(server, model, {names[0]: x, names[1]: y})
    module = torch.jit.load(str(repo / model / "1" / "model.pt"))
    with torch.inference_mode():
        want = [t.numpy() for t in module(torch.from_numpy(x), torch.from_numpy(y))]
    np.testing.assert_allclose(result.as_numpy(names[2]), want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy(names[3]), want[1], rtol=1e-6, atol=1e-6)


def test_tree_models_match_direct(server: LocalServer, repo: Path) -> None:
    x = np.random.default_rng(2).standard_normal((17, 6)).astype(np.float32)
    reg = xgboost.Booster(model_file=str(repo / "xgb_reg" / "1" / "xgboost.json"))
    got = _infer(server, "xgb_reg", {"input__0": x}).as_numpy("output__0")
    np.testing.assert_allclose(got[:, 0], reg.inplace_predict(x), rtol=1e-6)

    binary = xgboost.Booster()
    binary.load_model(bytearray((repo / "xgb_bin" / "1" / "xgboost.model").read_bytes()))
    p1 = binary.inplace_predict(x)
    got = _infer(server, "xgb_bin", {"input__0": x}).as_numpy("output__0")
    np.testing.assert_allclose(got, np.stack([1 - p1, p1], axis=1), rtol=1e-6)

    multi = lightgbm.Booster(model_file=str(repo / "lgb_multi" / "1" / "model.txt"))
    probs = multi.predict(x)
    got = _infer(server, "lgb_multi", {"input__0": x}).as_numpy("output__0")
    np.testing.assert_allclose(got, probs, rtol=1e-5)
    got = _infer(server, "lgb_class", {"input__0": x}).as_numpy("output__0")
    np.testing.assert_array_equal(got[:, 0], np.argmax(probs, axis=1))
