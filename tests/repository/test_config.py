"""config.pbtxt parsing, JSON form, version policies and auto-completion."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError
from sonic.repository.autocomplete import IOSpec, check_against_model, complete
from sonic.repository.config import check_structure, config_to_dict, parse_config
from sonic.repository.layout import ModelRepository
from sonic.repository.versions import available_versions, select_versions


def test_parse_error_names_model_and_line() -> None:
    with pytest.raises(ModelConfigError, match=r"model 'm': config.pbtxt: 2:"):
        parse_config('name: "m"\nmax_batch_size: eight\n', "m")
    with pytest.raises(ModelConfigError, match="no_such_field"):
        parse_config("no_such_field: 1\n", "m")


def test_json_form_writes_int64_as_numbers() -> None:
    cfg = parse_config(
        'max_batch_size: 8 input [{name: "x" data_type: TYPE_FP32 dims: [3, -1]}]\n'
        "dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [4] }",
        "m",
    )
    data = config_to_dict(cfg)
    assert data["input"][0]["dims"] == [3, -1]
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["max_batch_size"] == 8


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('name: "other"', "name"),
        ("max_batch_size: -1", "max_batch_size"),
        ('input [{name: "x" data_type: TYPE_FP32 dims: [0]}]', "input[x].dims"),
        ('input [{name: "x" dims: [1]}]', "input[x].data_type"),
        ('input [{name: "x" data_type: TYPE_FP32 dims: [1]}, {name: "x" data_type: TYPE_FP32 '
         "dims: [1]}]", "input[x]"),
        ("max_batch_size: 4 dynamic_batching { preferred_batch_size: [8] }",
         "dynamic_batching.preferred_batch_size"),
    ],
)  # fmt: skip
def test_structure_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        check_structure(parse_config(text, "m"), "m")
    assert info.value.field == field
    assert str(info.value).startswith(f"model 'm': {field}")


def test_version_policies(tmp_path: Path) -> None:
    for v in (1, 2, 10):
        (tmp_path / str(v)).mkdir()
    (tmp_path / "notes").mkdir()
    available = available_versions(tmp_path)
    assert available == [1, 2, 10]
    pick = lambda text: select_versions(parse_config(text, "m"), available, "m")  # noqa: E731
    assert pick("") == [10]
    assert pick("version_policy { latest { num_versions: 2 } }") == [2, 10]
    assert pick("version_policy { all {} }") == [1, 2, 10]
    assert pick("version_policy { specific { versions: [2] } }") == [2]
    with pytest.raises(ModelConfigError, match=r"version_policy\.specific\.versions"):
        pick("version_policy { specific { versions: [3] } }")
    with pytest.raises(ModelConfigError, match="at least one version"):
        select_versions(mc.ModelConfig(), [], "m")


def test_autocomplete_batching_and_tensors() -> None:
    ins = [IOSpec("x", "FP32", (-1, 8)), IOSpec("y", "INT64", (-1, -1))]
    outs = [IOSpec("z", "FP32", (-1, 2))]
    cfg = mc.ModelConfig(name="m")
    complete(cfg, ins, outs)
    assert cfg.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("x", [8]), ("y", [-1])]
    assert cfg.output[0].data_type == mc.TYPE_FP32
    assert cfg.HasField("dynamic_batching")
    check_against_model(cfg, ins, outs, "m")
    # Full-rank dims in the config describe a model that does not batch.
    cfg = parse_config('input [{name: "x" data_type: TYPE_FP32 dims: [-1, 8]}]', "m")
    complete(cfg, ins, outs)
    assert cfg.max_batch_size == 0
    # A model with a fixed first dim cannot batch.
    fixed = [IOSpec("x", "FP32", (1, 8))]
    cfg = mc.ModelConfig(name="m")
    complete(cfg, fixed, [])
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 8]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('max_batch_size: 4 input [{name: "x" data_type: TYPE_INT32 dims: [8]}]',
         "input[x].data_type"),
        ('max_batch_size: 4 input [{name: "x" data_type: TYPE_FP32 dims: [9]}]', "input[x].dims"),
        ('max_batch_size: 4 input [{name: "w" data_type: TYPE_FP32 dims: [8]}]', "input[w]"),
        ('max_batch_size: 4 input [{name: "x" data_type: TYPE_FP32 dims: [8]}] '
         'output [{name: "z" data_type: TYPE_FP32 dims: [8]}]', "output[z].dims"),
    ],
)  # fmt: skip
def test_config_contradicting_model_names_the_field(text: str, field: str) -> None:
    ins, outs = [IOSpec("x", "FP32", (-1, 8))], [IOSpec("z", "FP32", (-1, 2))]
    cfg = parse_config(text, "m")
    with pytest.raises(ModelConfigError) as info:
        check_against_model(cfg, ins, outs, "m")
    assert info.value.field == field


def test_fixed_batch_dim_with_max_batch_size() -> None:
    cfg = parse_config('max_batch_size: 4 input [{name: "x" data_type: TYPE_FP32 dims: [8]}]', "m")
    with pytest.raises(ModelConfigError, match=r"max_batch_size.*fixed first dim"):
        check_against_model(cfg, [IOSpec("x", "FP32", (1, 8))], [], "m")


def test_repository_scan_and_clashes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["one", "both"]), (b, ["two", "both"])):
        for n in names:
            (root / n).mkdir(parents=True)
    found, clashes = ModelRepository([a, b]).scan()
    assert sorted(found) == ["one", "two"]
    assert "both" in clashes and "two repositories" in str(clashes["both"])
    with pytest.raises(FileNotFoundError):
        ModelRepository([tmp_path / "missing"])
