"""Training the taggers, and the shipped ones on generated jets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sonic.repository.checksums import checksum_mismatches
from sonic.repository.config import load_config
from sonic.workflow import particlenet
from tests.workflow.conftest import EXAMPLES


@pytest.fixture(scope="module")
def ak4_jets(samples: list[Path]) -> particlenet.JetSample:
    return particlenet.load_jets(samples)


def test_training_writes_a_model_cmssw_can_point_at(ak4_jets: particlenet.JetSample,
                                                    tmp_path: Path) -> None:  # fmt: skip
    tagger = particlenet.TAGGERS["ak4"]
    assert ak4_jets.tensors["pf_features"].shape == (len(ak4_jets), 20, 50)
    assert ak4_jets.tensors["sv_features"].shape == (len(ak4_jets), 11, 5)
    net, result = particlenet.train(ak4_jets, tagger, epochs=2, seed=1)
    assert result.epochs == 2 and all(np.isfinite(result.val_loss))
    model_dir = particlenet.write_model(net, tmp_path, tagger)
    assert checksum_mismatches(model_dir) == []
    config = load_config(model_dir, required=True)
    assert config.name == "particlenet_AK4" and config.max_batch_size == 500
    assert config.output[0].label_filename == "particlenet_AK4_labels.txt"
    labels = (model_dir / config.output[0].label_filename).read_text().split()
    assert labels == [f"prob{k}" for k in tagger.inputs.labels]
    softmax = particlenet.scores(model_dir / "1" / "model.onnx", ak4_jets)
    assert softmax.shape == (len(ak4_jets), 8)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-5)


def test_the_shipped_ak4_tagger_tells_b_from_light(ak4_jets: particlenet.JetSample) -> None:
    """A guard on the physics: on these events (never trained on) b jets score far above
    light ones."""
    softmax = particlenet.scores(EXAMPLES / "particlenet_AK4" / "1" / "model.onnx", ak4_jets)
    perf = particlenet.performance(softmax, ak4_jets.truth)
    assert perf.n_jets["b"] >= 20 and perf.n_jets["uds"] + perf.n_jets.get("g", 0) >= 20
    assert perf.auc > 0.85
    assert perf.roc_other is not None


def test_roc_and_auc_on_known_scores() -> None:
    eff, mistag = particlenet.roc_curve(np.array([0.9, 0.8, 0.3]), np.array([0.5, 0.1]))
    assert list(eff) == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert list(mistag) == pytest.approx([0, 0, 0, 0.5, 0.5, 1])
    assert particlenet.auc(np.array([0.9, 0.8, 0.3]), np.array([0.5, 0.1])) == pytest.approx(5 / 6)
