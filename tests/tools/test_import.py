"""``sonic repo import``: model files as CMSSW ships them become Triton model directories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sonic.repository.checksums import checksum_mismatches
from sonic.repository.config import load_config
from sonic.server.loader import LoadOptions, load_model
from sonic.tools.importer import ImportOptions, NotImportable, TensorArg, import_model
from sonic.zoo.examples import mlp_model
from tests.fixtures.tf_models import deepmet_like_graphdef, run_graphdef, write_savedmodel
from tests.fixtures.torch_models import PointTagger

N_PF = 16


def _load(model_dir: Path) -> dict:
    return load_model(model_dir.name, model_dir, LoadOptions())[1]


def _dims(tensors: object) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in tensors}  # type: ignore[attr-defined]


def test_frozen_graphs_become_a_versioned_model_directory_as_cms_keeps_it(tmp_path: Path) -> None:
    """Two .pb files, as CMSSW ships DeepMET, imported one after the other: versions 1 and 2
    with CMS's symlink names, the config completed from the graph, MD5 agents over both, every
    version served; each version's output equals TensorFlow's on its own graph."""
    graphs = {}
    for v, name in ((1, "deepmet_v1_2018"), (2, "deepmet_resp_v1_2018")):
        graphs[v] = deepmet_like_graphdef(seed=v, n_pf=N_PF)
        (tmp_path / f"{name}.pb").write_bytes(graphs[v])
        import_model(tmp_path / f"{name}.pb", tmp_path / "repo",
                     ImportOptions("deepmet", version_name=name, max_batch_size=100))  # fmt: skip
    model_dir = tmp_path / "repo" / "deepmet"
    assert (model_dir / "deepmet_v1_2018").resolve() == (model_dir / "1").resolve()
    assert (model_dir / "deepmet_resp_v1_2018").resolve() == (model_dir / "2").resolve()
    config = load_config(model_dir, required=True)
    assert config.platform == "tensorflow_graphdef" and config.max_batch_size == 100
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert _dims(config.input) == {"input": [N_PF, 8], **{f"input_cat{i}": [N_PF, 1]
                                                           for i in range(3)}}  # fmt: skip
    assert _dims(config.output) == {"output/BiasAdd": [2]}
    assert set(config.model_repository_agents.agents[0].parameters) == {
        "MD5:1/model.graphdef", "MD5:2/model.graphdef"}  # fmt: skip
    assert checksum_mismatches(model_dir) == []
    versions = _load(model_dir)
    try:
        assert sorted(versions) == [1, 2]
        x = np.random.default_rng(0).standard_normal((2, N_PF, 8), np.float32)
        cats = {f"input_cat{i}": np.ones((2, N_PF, 1), np.float32) for i in range(3)}
        feeds = {"input": x, **cats}
        for v, graph in graphs.items():
            got = versions[v].scheduler.pool.instances[0].execute(feeds, ["output/BiasAdd"])
            (want,) = run_graphdef(graph, feeds, ["output/BiasAdd"])
            np.testing.assert_array_equal(got["output/BiasAdd"], want)
    finally:
        for m in versions.values():
            m.close()


def test_a_frozen_graph_also_as_onnx_reports_the_largest_deviation(tmp_path: Path) -> None:
    (tmp_path / "m.pb").write_bytes(deepmet_like_graphdef(seed=3, n_pf=N_PF))
    result = import_model(tmp_path / "m.pb", tmp_path / "repo",
                          ImportOptions("deepmet", max_batch_size=8, to_onnx=True))  # fmt: skip
    assert result.onnx_dir == tmp_path / "repo" / "deepmet_onnx"
    assert result.onnx_max_abs_diff is not None and result.onnx_max_abs_diff < 1e-4
    onnx_config = load_config(result.onnx_dir, required=True)
    assert onnx_config.platform == "onnxruntime_onnx"
    assert _dims(onnx_config.input) == _dims(load_config(result.model_dir, required=True).input)
    assert checksum_mismatches(result.onnx_dir) == []


def test_savedmodel_and_onnx_files_complete_their_configs(tmp_path: Path) -> None:
    write_savedmodel(tmp_path / "scorer")
    (tmp_path / "mlp.onnx").write_bytes(mlp_model().SerializeToString())
    repo = tmp_path / "repo"
    import_model(tmp_path / "scorer", repo, ImportOptions("scorer", max_batch_size=8))
    import_model(tmp_path / "mlp.onnx", repo, ImportOptions("mlp"))
    scorer = load_config(repo / "scorer", required=True)
    assert scorer.platform == "tensorflow_savedmodel"
    assert (repo / "scorer" / "1" / "model.savedmodel" / "saved_model.pb").is_file()
    assert _dims(scorer.input) == {"x": [4], "ids": [-1]}
    assert _dims(scorer.output) == {"score": [2], "count": [1]}
    mlp = load_config(repo / "mlp", required=True)
    assert mlp.platform == "onnxruntime_onnx" and mlp.max_batch_size == 4  # Triton's default
    assert _dims(mlp.input) == {"input": [64]} and _dims(mlp.output) == {"output": [2]}
    assert checksum_mismatches(repo / "scorer") == [] and checksum_mismatches(repo / "mlp") == []


def test_torchscript_is_imported_from_the_input_shapes_it_is_given(tmp_path: Path) -> None:
    """TorchScript carries no shapes: without --input the import says what to give; with them,
    output dims come from running it at two sizes (the per-point output's P becomes -1)."""
    torch.jit.script(PointTagger().eval()).save(str(tmp_path / "tagger.pt"))
    (tmp_path / "labels.txt").write_text("light\ncharm\nbottom\n")
    with pytest.raises(NotImportable, match=r"--input NAME:DIMS\[:TYPE\]"):
        import_model(tmp_path / "tagger.pt", tmp_path / "repo", ImportOptions("tagger"))
    options = ImportOptions(
        "tagger", max_batch_size=500, labels=tmp_path / "labels.txt",
        inputs=[TensorArg.parse("points:2,-1"), TensorArg.parse("features:5,-1:FP32")],
        outputs=["softmax__0", "per_point__1"],
    )  # fmt: skip
    import_model(tmp_path / "tagger.pt", tmp_path / "repo", options)
    model_dir = tmp_path / "repo" / "tagger"
    config = load_config(model_dir, required=True)
    assert config.platform == "pytorch_libtorch" and config.max_batch_size == 500
    assert _dims(config.input) == {"points": [2, -1], "features": [5, -1]}
    assert _dims(config.output) == {"softmax__0": [3], "per_point__1": [4, -1]}
    assert config.output[0].label_filename == "labels.txt"
    assert (model_dir / "labels.txt").read_text().split() == ["light", "charm", "bottom"]
    versions = _load(model_dir)
    try:
        points = np.random.default_rng(1).standard_normal((3, 2, 11)).astype(np.float32)
        features = np.random.default_rng(2).standard_normal((3, 5, 11)).astype(np.float32)
        got = versions[1].scheduler.pool.instances[0].execute(
            {"points": points, "features": features}, ["softmax__0", "per_point__1"]
        )
        want = PointTagger().eval()(torch.from_numpy(points), torch.from_numpy(features))
        np.testing.assert_allclose(got["softmax__0"], want[0].detach().numpy(), rtol=1e-5)
        assert got["per_point__1"].shape == (3, 4, 11)
    finally:
        for m in versions.values():
            m.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["notes.h5"], "cannot tell what"),
        (["tagger.pt", "--input", "points:2,x"], "dims must be integers"),
        (["model.onnx", "--to-onnx"], "--to-onnx converts TensorFlow models"),
    ],
)
def test_bad_imports_say_what_was_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "notes.h5").write_bytes(b"\x89HDF")
    (tmp_path / "tagger.pt").write_bytes(b"")
    (tmp_path / "model.onnx").write_bytes(mlp_model().SerializeToString())
    cmd = [sys.executable, "-m", "sonic.cli", "repo", "import", str(tmp_path / args[0]),
           *args[1:], "-r", str(tmp_path / "repo"), "--name", "m"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_import_leaves_the_repository_as_it_was(tmp_path: Path) -> None:
    from sonic.errors import SonicError

    (tmp_path / "mlp.onnx").write_bytes(mlp_model().SerializeToString())
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    import_model(tmp_path / "mlp.onnx", tmp_path / "repo", ImportOptions("mlp"))
    before = (tmp_path / "repo" / "mlp" / "config.pbtxt").read_text()
    with pytest.raises(SonicError, match="onnxruntime cannot load it"):
        import_model(tmp_path / "broken.onnx", tmp_path / "repo", ImportOptions("other"))
    assert not (tmp_path / "repo" / "other").exists()
    (tmp_path / "mlp2.onnx").write_bytes(b"not a model either")
    with pytest.raises(SonicError, match="mlp"):  # a second version must load too
        import_model(tmp_path / "mlp2.onnx", tmp_path / "repo", ImportOptions("mlp"))
    assert (tmp_path / "repo" / "mlp" / "config.pbtxt").read_text() == before
    assert not (tmp_path / "repo" / "mlp" / "2").exists()
