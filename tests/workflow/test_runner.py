"""The workflow job direct and as a service (real ``sonic serve``), on one process and Dask."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uproot

from sonic.launcher import LocalServer
from sonic.workflow.report import read_outputs, resolution
from sonic.workflow.runner import STAGES, JobConfig, run_files
from tests.workflow.conftest import EXAMPLES, MODEL


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(EXAMPLES / "deepmet", repo / "deepmet")
    with LocalServer(repo) as srv:
        yield srv


def _met(paths: list[str]) -> np.ndarray:
    t = read_outputs(paths)
    pt, phi = t["DeepMETResolutionTune_pt"], t["DeepMETResolutionTune_phi"]
    return np.stack([pt * np.cos(phi), pt * np.sin(phi)], axis=1)


@pytest.fixture(scope="module")
def direct(samples: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("direct")
    return run_files(samples, JobConfig(mode="direct", model=MODEL, chunk_size=10), out).outputs


@pytest.mark.parametrize(("protocol", "client_mode"), [("grpc", "async"), ("grpc", "sync"),
                                                       ("http", "async")])  # fmt: skip
def test_service_outputs_equal_direct(
    samples: list[Path], direct: list[str], server: LocalServer, tmp_path: Path, protocol: str,
    client_mode: str,
) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    cfg = JobConfig(mode="service", servers=(url,), protocol=protocol, client_mode=client_mode,
                    chunk_size=10)  # fmt: skip
    result = run_files(samples, cfg, tmp_path)
    assert result.events == 48
    a, b = _met(direct), _met(result.outputs)
    assert np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-3)) <= 1e-5
    for stage in STAGES:
        assert result.stages[stage] > 0, stage  # the server reported its time too
    assert result.stages["infer_server"] < result.stages["infer_client"]


def test_direct_output_rows_and_resolution(samples: list[Path], direct: list[str]) -> None:
    t = read_outputs(direct)
    ids = np.concatenate([uproot.open(f)["Events"]["event"].array(library="np") for f in samples])
    assert t["event"].tolist() == ids.tolist()
    assert (t["nPFCands_used"] > 0).all()
    res = resolution(t)
    assert set(res) == {"DeepMET", "PF (raw)", "PUPPI"}
    assert all(r["events"] == 48 for r in res.values())


def test_dask_run_equals_single_process(samples: list[Path], direct: list[str],
                                        tmp_path: Path) -> None:  # fmt: skip
    """Every task, chained, on a Dask LocalCluster: the outputs of one process."""
    import awkward as ak

    cfg = JobConfig(mode="direct", tasks=("deepmet", "particlenet", "clustering"),
                    model_repository=EXAMPLES, chunk_size=10)  # fmt: skip
    result = run_files(samples, cfg, tmp_path / "dask", dask="local", workers=2)
    assert result.events == 48 and len(result.outputs) == 2
    assert result.requests["deepmet"] == 6 and result.requests["clustering"] == 48
    single = read_outputs(run_files(samples, cfg, tmp_path / "single").outputs)
    a, b = read_outputs(direct), read_outputs(result.outputs)
    assert a["event"].tolist() == b["event"].tolist()
    np.testing.assert_array_equal(_met(direct), _met(result.outputs))
    for collection in ("Jet", "AK4Jet"):
        assert ak.to_list(b[collection]) == ak.to_list(single[collection])


def test_root_output(samples: list[Path], tmp_path: Path) -> None:
    cfg = JobConfig(mode="direct", model=MODEL, output_format="root")
    (out,) = run_files(samples[:1], cfg, tmp_path).outputs
    tree = uproot.open(out)["Events"]
    assert tree.num_entries == 24
    assert {"event", "DeepMETResolutionTune_pt", "GenMET_pt"} <= set(tree.keys())


def test_bad_configs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tasks must be distinct names from"):
        JobConfig(tasks=("deepmet", "btag"))
    with pytest.raises(ValueError, match="model and model_name name one task's model"):
        JobConfig(tasks=("deepmet", "particlenet"), model=MODEL)
    with pytest.raises(ValueError, match="service mode needs servers"):
        JobConfig(mode="service")
    with pytest.raises(ValueError, match="mode must be 'direct' or 'service', not 'remote'"):
        JobConfig(mode="remote")
    empty = tmp_path / "empty.root"
    with uproot.recreate(empty) as f:
        f["other"] = {"x": np.arange(3)}
    with pytest.raises(KeyError, match="has no 'Events' tree"):
        run_files([empty], JobConfig(mode="direct", model=MODEL), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"direct mode needs the particlenet model: .*"
                       r"particlenet_AK4/1/model\.onnx does not exist"):  # fmt: skip
        run_files([empty], JobConfig(tasks=("particlenet",), model_repository=tmp_path),
                  tmp_path)  # fmt: skip


def test_service_on_the_tensorflow_graphdef_deepmet(
    samples: list[Path], direct: list[str], tmp_path: Path
) -> None:
    """The job served by DeepMET as CMS serves it (``sonic workflow graphdef``: a TF graphdef of
    the same trained weights) gives direct onnxruntime's MET to well below the resolution."""
    import subprocess
    import sys

    repo = tmp_path / "repo"
    cmd = [sys.executable, "-m", "sonic.cli", "workflow", "graphdef", str(repo), "--onnx",
           str(MODEL)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with LocalServer(repo) as srv:
        result = run_files(samples, JobConfig(mode="service", servers=(srv.grpc_url,),
                                              chunk_size=10), tmp_path / "out")  # fmt: skip
    assert result.events == 48
    assert np.max(np.abs(_met(direct) - _met(result.outputs))) < 0.01  # GeV
