"""The trained DeepMET exported as CMS serves it (TensorFlow graphdef) equals its ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2 as mc

from sonic.repository.config import load_config
from sonic.workflow.deepmet_tf import write_graphdef_model
from tests.fixtures.tf_models import run_graphdef

ONNX = Path(__file__).resolve().parents[2] / "examples/model_repository/deepmet/1/model.onnx"


def test_graphdef_export_gives_the_onnx_outputs(tmp_path: Path) -> None:
    model_dir = write_graphdef_model(ONNX, tmp_path)
    config = load_config(model_dir, required=True)
    assert config.platform == "tensorflow_graphdef"
    assert [t.name for t in config.input] == ["input", "input_cat0", "input_cat1", "input_cat2"]
    assert {mc.DataType.Name(t.data_type) for t in config.input} == {"TYPE_FP32"}  # as CMS's
    rng = np.random.default_rng(5)
    n = 1500
    x = np.zeros((3, 4500, 8), np.float32)
    x[:, :n] = rng.standard_normal((3, n, 8)) * 0.3
    feeds = {"input": x}
    for i, classes in enumerate((3, 11, 4)):
        cat = np.zeros((3, 4500, 1), np.float32)
        cat[:, :n, 0] = rng.integers(0, classes + 2, (3, n))  # some outside the table: clamped
        feeds[f"input_cat{i}"] = cat
    want = ort.InferenceSession(str(ONNX)).run(["output/BiasAdd"], feeds)[0]
    (got,) = run_graphdef((model_dir / "1" / "model.graphdef").read_bytes(), feeds,
                          ["output/BiasAdd"])  # fmt: skip
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
