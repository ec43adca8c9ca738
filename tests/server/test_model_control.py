"""Model control (explicit and poll modes), bad configs, versions, auto-completion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.zoo.examples import identity_model, mlp_model, write_model
from tests.conftest import CLIENT_VARIANTS, run_with_client
from tests.fixtures.waiting import wait_until


def _infer_mlp(client: Any, mod: Any, model: str = "mlp", version: str = "") -> np.ndarray:
    x = np.ones((2, 64), dtype=np.float32)
    inp = mod.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], model_version=version).as_numpy("output")


def _index(client: grpcclient.InferenceServerClient) -> dict[str, dict[str, str]]:
    rows = client.get_model_repository_index(as_json=True)["models"]
    return {r["name"] + (":" + r["version"] if r.get("version") else ""): r for r in rows}


def test_explicit_load_unload(fresh_repo: Path) -> None:
    with LocalServer(fresh_repo, "--model-control-mode=explicit", "--load-model=simple") as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        h = httpclient.InferenceServerClient(srv.http_url)
        index = _index(c)
        assert index["simple:1"]["state"] == "READY"
        assert index["mlp"].get("state", "") == ""  # in the repository, not loaded
        assert not c.is_model_ready("mlp")
        c.load_model("mlp")
        assert c.is_model_ready("mlp")
        assert _infer_mlp(c, grpcclient).shape == (2, 2)
        c.unload_model("mlp")
        assert not c.is_model_ready("mlp")
        assert _index(c)["mlp"]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as info:
            _infer_mlp(c, grpcclient)
        assert "mlp" in info.value.message()
        # HTTP control works the same way.
        h.load_model("mlp")
        assert h.is_model_ready("mlp")
        h.unload_model("mlp")
        assert not h.is_model_ready("mlp")
        with pytest.raises(InferenceServerException) as info:
            c.load_model("not_in_repo")
        assert "not_in_repo" in info.value.message()


def test_load_with_config_override_and_files(fresh_repo: Path, tmp_path: Path) -> None:
    with LocalServer(fresh_repo, "--model-control-mode=explicit") as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        h = httpclient.InferenceServerClient(srv.http_url)
        override = json.dumps({"max_batch_size": 16, "instance_group": [{"count": 1}]})
        c.load_model("mlp", config=override)
        assert int(c.get_model_config("mlp", as_json=True)["config"]["max_batch_size"]) == 16
        # A whole model from the request: config plus file:<version>/<name>.
        onnx_bytes = identity_model("FP32").SerializeToString()
        for client, name in ((c, "uploaded_grpc"), (h, "uploaded_http")):
            cfg = json.dumps({"name": name, "backend": "onnxruntime"})
            client.load_model(name, config=cfg, files={"file:1/model.onnx": onnx_bytes})
            x = np.arange(3, dtype=np.float32).reshape(1, 3)
            mod = grpcclient if client is c else httpclient
            inp = mod.InferInput("INPUT0", [1, 3], "FP32")
            inp.set_data_from_numpy(x)
            np.testing.assert_array_equal(client.infer(name, [inp]).as_numpy("OUTPUT0"), x)
        with pytest.raises(InferenceServerException) as info:
            c.load_model(
                "evil", config=json.dumps({"backend": "onnxruntime"}),
                files={"file:../../etc/x": b"boom"},
            )  # fmt: skip
        assert "relative path" in info.value.message()


def test_bad_config_is_unavailable_and_others_serve(fresh_repo: Path) -> None:
    (fresh_repo / "mlp" / "config.pbtxt").write_text(
        (fresh_repo / "mlp" / "config.pbtxt").read_text().replace("dims: [ 64 ]", "dims: [ 63 ]")
    )
    write_model(mlp_model(), fresh_repo, "wrong_type", config=(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "input", data_type: TYPE_INT32, dims: [ 64 ] } ]\n'
    ))  # fmt: skip
    (fresh_repo / "no_version").mkdir()
    (fresh_repo / "no_version" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    (fresh_repo / "syntax").mkdir()
    (fresh_repo / "syntax" / "config.pbtxt").write_text("max_batch_size: eight\n")
    with LocalServer(fresh_repo) as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        assert c.is_server_ready()
        index = _index(c)
        reasons = {k: v.get("reason", "") for k, v in index.items()}
        assert index["mlp"]["state"] == "UNAVAILABLE"
        assert "input[input].dims" in reasons["mlp"] and "63" in reasons["mlp"]
        assert "input[input].data_type" in reasons["wrong_type"]
        assert "TYPE_INT32" in reasons["wrong_type"] and "TYPE_FP32" in reasons["wrong_type"]
        assert "version" in reasons["no_version"]
        assert "config.pbtxt" in reasons["syntax"]
        assert c.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as info:
            _infer_mlp(c, grpcclient)
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert "63" in info.value.message()


def test_strict_config_refuses_autocomplete(fresh_repo: Path) -> None:
    with LocalServer(fresh_repo, "--strict-model-config=true") as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        index = _index(c)
        assert index["identity_fp32"]["state"] == "UNAVAILABLE"
        assert "strict" in index["identity_fp32"]["reason"]
        assert index["simple:1"]["state"] == "READY"


def test_version_policies(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for v in (1, 2, 3):
        write_model(mlp_model(seed=v), repo, "latest", version=v)
        write_model(mlp_model(seed=v), repo, "all", version=v)
        write_model(mlp_model(seed=v), repo, "specific", version=v)
        write_model(mlp_model(seed=v), repo, "latest2", version=v)
    (repo / "all" / "config.pbtxt").write_text("version_policy: { all: {} }\n")
    (repo / "specific" / "config.pbtxt").write_text(
        "version_policy: { specific: { versions: [1, 3] } }\n"
    )
    (repo / "latest2" / "config.pbtxt").write_text(
        "version_policy: { latest: { num_versions: 2 } }\n"
    )
    with LocalServer(repo) as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        versions = {
            m: c.get_model_metadata(m, as_json=True)["versions"]
            for m in ("latest", "all", "specific", "latest2")
        }
        assert versions == {
            "latest": ["3"], "all": ["1", "2", "3"], "specific": ["1", "3"], "latest2": ["2", "3"],
        }  # fmt: skip
        # Different versions are different models: their outputs differ.
        v1, v3 = _infer_mlp(c, grpcclient, "all", "1"), _infer_mlp(c, grpcclient, "all", "3")
        assert not np.array_equal(v1, v3)
        np.testing.assert_array_equal(_infer_mlp(c, grpcclient, "all"), v3)
        assert not c.is_model_ready("specific", "2")


def test_poll_mode_picks_up_changes(fresh_repo: Path, tmp_path: Path) -> None:
    with LocalServer(fresh_repo, "--model-control-mode=poll", "--repository-poll-secs=0.2") as srv:
        c = grpcclient.InferenceServerClient(srv.grpc_url)
        write_model(mlp_model(), fresh_repo, "added")
        wait_until(lambda: c.is_model_ready("added"), 20.0)
        shutil.rmtree(fresh_repo / "added")
        wait_until(lambda: not c.is_model_ready("added"), 20.0)
        with pytest.raises(InferenceServerException):
            c.load_model("mlp")


@pytest.mark.parametrize("variant", CLIENT_VARIANTS)
def test_every_client_controls_models(variant: str, fresh_repo: Path) -> None:
    """Index, load and unload through each tritonclient variant, in explicit mode."""

    async def scenario(c: Any, mod: Any) -> None:
        await c.load_model("simple")
        assert await c.is_model_ready("simple")
        index = await c.get_model_repository_index(
            **({"as_json": True} if variant.startswith("grpc") else {})
        )
        rows = index["models"] if isinstance(index, dict) else index
        assert {"name": "simple", "version": "1", "state": "READY"}.items() <= next(
            r for r in rows if r["name"] == "simple"
        ).items()
        await c.unload_model("simple")
        assert not await c.is_model_ready("simple")

    with LocalServer(fresh_repo, "--model-control-mode=explicit") as srv:
        run_with_client(variant, srv, scenario)
