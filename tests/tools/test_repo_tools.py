"""`sonic repo check | checksum | threadcontrol | config`, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sonic.zoo.examples import identity_model, simple_model, write_example_repository
from sonic.zoo.examples import write_model as write
from tests.conftest import ENSEMBLE, SIMPLE_CONFIG

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "model_repository"


def sonic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def config_of(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    write_example_repository(repo)
    return repo


def test_check_passes_on_the_shipped_repository(shipped: Path) -> None:
    result = sonic("repo", "check", shipped)
    assert result.returncode == 0, result.stdout + result.stderr
    for model in ("deepmet", "facile", "particlenet", "mlp", "simple"):
        assert model in result.stdout


@pytest.mark.parametrize(
    ("mistake", "words"),
    [
        ("wrong_dims", ["simple", "input[INPUT0].dims", "[15]"]),
        ("wrong_dtype", ["simple", "input[INPUT1].data_type", "TYPE_FP32"]),
        ("missing_version", ["simple", "version"]),
        ("checksum", ["simple", "model_repository_agents.checksum", "MD5"]),
    ],
)
def test_check_fails_on_seeded_mistakes(tmp_path: Path, mistake: str, words: list[str]) -> None:
    repo = tmp_path / "repo"
    write(simple_model(), repo, "simple", config=SIMPLE_CONFIG)
    write(identity_model("FP32"), repo, "fine")
    cfg = repo / "simple" / "config.pbtxt"
    if mistake == "wrong_dims":
        cfg.write_text(SIMPLE_CONFIG.replace(
            '{ name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] }',
            '{ name: "INPUT0", data_type: TYPE_INT32, dims: [ 15 ] }'))  # fmt: skip
    elif mistake == "wrong_dtype":
        cfg.write_text(
            SIMPLE_CONFIG.replace(
                '{ name: "INPUT1", data_type: TYPE_INT32', '{ name: "INPUT1", data_type: TYPE_FP32'
            )
        )
    elif mistake == "missing_version":
        shutil.rmtree(repo / "simple" / "1")
    else:
        assert sonic("repo", "checksum", "--update", repo / "simple").returncode == 0
        (repo / "simple" / "1" / "model.onnx").write_bytes(
            identity_model("INT32").SerializeToString()
        )
        direct = sonic("repo", "checksum", repo / "simple")
        assert direct.returncode == 1 and "MD5:1/model.onnx" in direct.stderr
    result = sonic("repo", "check", repo)
    assert result.returncode == 1, result.stdout
    text = " ".join(result.stdout.split())
    for w in words:
        assert w in text, (w, result.stdout)
    assert "fine" in text and "ok" in text  # the other model is still checked and passes


def test_checksum_update_round_trip(tmp_path: Path) -> None:
    write(simple_model(), tmp_path, "simple", config=SIMPLE_CONFIG)
    assert sonic("repo", "checksum", tmp_path / "simple").returncode == 1  # none recorded yet
    assert sonic("repo", "checksum", "--update", tmp_path / "simple").returncode == 0
    agent = config_of(tmp_path / "simple").model_repository_agents.agents[0]
    assert agent.name == "checksum" and "MD5:1/model.onnx" in agent.parameters
    assert sonic("repo", "checksum", tmp_path / "simple").returncode == 0


def test_threadcontrol_recurses_into_ensembles(tmp_path: Path) -> None:

    write(simple_model(), tmp_path, "simple", config=SIMPLE_CONFIG)
    write(
        identity_model("INT32"),
        tmp_path,
        "identity_int32",
        config='backend: "onnxruntime"\ninstance_group [ { count: 4, kind: KIND_CPU } ]\n',
    )
    (tmp_path / "chain" / "1").mkdir(parents=True)
    (tmp_path / "chain" / "config.pbtxt").write_text(ENSEMBLE)
    result = sonic("repo", "threadcontrol", tmp_path, "chain", "--threads", "1")
    assert result.returncode == 0, result.stderr
    for name in ("simple", "identity_int32"):
        cfg = config_of(tmp_path / name)
        assert [(g.kind, g.count) for g in cfg.instance_group] == [
            (mc.ModelInstanceGroup.KIND_CPU, 1)
        ]
        assert cfg.parameters["intra_op_thread_count"].string_value == "1"
        assert cfg.parameters["inter_op_thread_count"].string_value == "1"


def test_config_written_from_the_model_file(tmp_path: Path) -> None:
    write(identity_model("FP16"), tmp_path, "ident")
    result = sonic("repo", "config", tmp_path / "ident", "--max-batch-size", "32",
                   "--instance-count", "3", "--threads", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    cfg = config_of(tmp_path / "ident")
    assert cfg.max_batch_size == 32
    assert cfg.input[0].name == "INPUT0" and cfg.input[0].data_type == mc.TYPE_FP16
    assert list(cfg.input[0].dims) == [-1]
    assert cfg.instance_group[0].count == 3
    assert cfg.HasField("dynamic_batching")
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    again = sonic("repo", "config", tmp_path / "ident", "--no-dynamic-batching")
    assert again.returncode == 0 and not config_of(tmp_path / "ident").HasField("dynamic_batching")
