"""A repository laid out as CMS keeps its SONIC models serves unchanged.

DeepMET as a TensorFlow graphdef in three versions with named symlinks; a ParticleNet-style
tagger as ONNX (``dims: [2, -1]`` inputs sharing one variable length, ``max_batch_size: 500``
with ``preferred_batch_size: [200]``, ``optimization { graph { level: -1 } }``) and as
TorchScript (``name__index`` tensors); labels for the classification extension and MD5 agents
on all of them.  Every model READY, outputs equal to the framework's, ``sonic repo check`` passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient

from sonic.launcher import LocalServer
from sonic.repository.checksums import update_checksums
from sonic.zoo.particlenet import INPUT_NAMES, N_CLASSES
from tests.fixtures.tf_models import write_deepmet
from tests.fixtures.torch_models import PointTagger

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "model_repository"
LABELS = [f"class_{i}" for i in range(N_CLASSES)]
PARTICLENET = f"""
name: "particlenet"
platform: "onnxruntime_onnx"
max_batch_size: 500
input [
  {{ name: "pf_points" data_type: TYPE_FP32 dims: [ 2, -1 ] }},
  {{ name: "pf_features" data_type: TYPE_FP32 dims: [ 25, -1 ] }},
  {{ name: "pf_mask" data_type: TYPE_FP32 dims: [ 1, -1 ] }},
  {{ name: "sv_points" data_type: TYPE_FP32 dims: [ 2, -1 ] }},
  {{ name: "sv_features" data_type: TYPE_FP32 dims: [ 11, -1 ] }},
  {{ name: "sv_mask" data_type: TYPE_FP32 dims: [ 1, -1 ] }}
]
output [ {{ name: "softmax" data_type: TYPE_FP32 dims: [ {N_CLASSES} ]
           label_filename: "labels.txt" }} ]
dynamic_batching {{ preferred_batch_size: [ 200 ] }}
optimization {{ graph {{ level: -1 }} }}
"""
TAGGER = """
name: "tagger"
platform: "pytorch_libtorch"
max_batch_size: 500
input [
  { name: "points__0" data_type: TYPE_FP32 dims: [ 2, -1 ] },
  { name: "features__1" data_type: TYPE_FP32 dims: [ 5, -1 ] }
]
output [
  { name: "softmax__0" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" },
  { name: "per_point__1" data_type: TYPE_FP32 dims: [ 4, -1 ] }
]
dynamic_batching { preferred_batch_size: [ 200 ] }
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cms") / "models"
    write_deepmet(root / "deepmet")
    pn = root / "particlenet"
    shutil.copytree(EXAMPLES / "particlenet" / "1", pn / "1")
    (pn / "config.pbtxt").write_text(PARTICLENET)
    (pn / "labels.txt").write_text("\n".join(LABELS) + "\n")
    tagger = root / "tagger"
    (tagger / "1").mkdir(parents=True)
    torch.jit.script(PointTagger().eval()).save(str(tagger / "1" / "model.pt"))
    (tagger / "config.pbtxt").write_text(TAGGER)
    (tagger / "labels.txt").write_text("light\ncharm\nbottom\n")
    for model in (pn, tagger):
        update_checksums(model)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[LocalServer]:
    with LocalServer(repo) as srv:
        yield srv


def _inputs(feeds: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    out = []
    for name, value in feeds.items():
        t = grpcclient.InferInput(name, list(value.shape), "FP32")
        t.set_data_from_numpy(value)
        out.append(t)
    return out


def _jets(rng: np.random.Generator, n_jets: int, n_pf: int, n_sv: int) -> dict[str, np.ndarray]:
    sizes = {"pf_points": (2, n_pf), "pf_features": (25, n_pf), "pf_mask": (1, n_pf),
             "sv_points": (2, n_sv), "sv_features": (11, n_sv), "sv_mask": (1, n_sv)}  # fmt: skip
    feeds = {k: rng.standard_normal((n_jets, *sizes[k])).astype(np.float32) for k in INPUT_NAMES}
    for mask in ("pf_mask", "sv_mask"):
        feeds[mask] = (feeds[mask] > -0.5).astype(np.float32)
    return feeds


def test_every_model_is_ready(server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    states = {(m.name, m.version): (m.state, m.reason)
              for m in client.get_model_repository_index().models}  # fmt: skip
    assert states == {("deepmet", v): ("READY", "") for v in ("1", "2", "3")} | {
        ("particlenet", "1"): ("READY", ""), ("tagger", "1"): ("READY", "")}  # fmt: skip


@pytest.mark.parametrize(("n_pf", "n_sv"), [(37, 4), (100, 9)])
def test_particlenet_onnx_variable_lengths_and_labels(server: LocalServer, n_pf: int,
                                                      n_sv: int) -> None:  # fmt: skip
    """The inputs sharing a variable length take a different length per request; outputs equal
    onnxruntime's; a classification request names the labels from labels.txt."""
    feeds = _jets(np.random.default_rng(n_pf), 3, n_pf, n_sv)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    got = client.infer("particlenet", _inputs(feeds)).as_numpy("softmax")
    session = ort.InferenceSession(str(EXAMPLES / "particlenet" / "1" / "model.onnx"))
    (want,) = session.run(["softmax"], feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    requested = [grpcclient.InferRequestedOutput("softmax", class_count=2)]
    top = client.infer("particlenet", _inputs(feeds), outputs=requested)
    for row, scores in zip(top.as_numpy("softmax"), want, strict=True):
        best = int(np.argmax(scores))
        value, index, label = row[0].decode().split(":")
        assert (int(index), label) == (best, LABELS[best])
        assert float(value) == pytest.approx(float(scores[best]), rel=1e-5)


def test_torchscript_name_index_tensors(server: LocalServer) -> None:
    rng = np.random.default_rng(3)
    points = rng.standard_normal((2, 2, 13)).astype(np.float32)
    features = rng.standard_normal((2, 5, 13)).astype(np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    result = client.infer("tagger", _inputs({"points__0": points, "features__1": features}))
    want = PointTagger().eval()(torch.from_numpy(points), torch.from_numpy(features))
    np.testing.assert_allclose(result.as_numpy("softmax__0"), want[0].detach().numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(result.as_numpy("per_point__1"), want[1].detach().numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_repo_check_passes(repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sonic.cli", "repo", "check", str(repo)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(m in proc.stdout for m in ("deepmet", "particlenet", "tagger"))
