"""Where models run: GPU discovery, KIND_GPU/KIND_AUTO placement, CPU fallback, and what a
server without a GPU answers for the GPU-only parts (CUDA shared memory, nv_gpu_* metrics)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from sonic.backends.onnxruntime import OnnxRuntimeInstance
from sonic.errors import ModelConfigError
from sonic.launcher import LocalServer
from sonic.repository.config import parse_config
from sonic.server.gpus import discover, visible
from sonic.server.loader import placements
from sonic.zoo.examples import mlp_model, write_model

ROWS = [(0, "GPU-aaaa-0000", "NVIDIA H200"), (1, "GPU-bbbb-1111", "NVIDIA H200"),
        (2, "GPU-cccc-2222", "NVIDIA H200")]  # fmt: skip
NO_GPU = pytest.mark.skipif(bool(discover()), reason="checks a server without a GPU")


def test_cuda_visible_devices_is_applied_as_cuda_applies_it() -> None:
    assert [g.nvml_index for g in visible(ROWS, None)] == [0, 1, 2]
    two = visible(ROWS, "2,0")
    assert [(g.index, g.nvml_index) for g in two] == [(0, 2), (1, 0)]
    assert [g.nvml_index for g in visible(ROWS, "GPU-bbbb")] == [1]
    assert [g.nvml_index for g in visible(ROWS, "1,7,2")] == [1]  # stops at the unknown one
    assert visible(ROWS, "") == [] and visible(ROWS, "-1") == []


def _config(groups: str) -> mc.ModelConfig:
    return parse_config(f'name: "m"\nmax_batch_size: 8\n{groups}', "m")


def test_kind_gpu_without_a_gpu_fails_or_falls_back() -> None:
    config = _config("instance_group [ { count: 2, kind: KIND_GPU } ]")
    with pytest.raises(ModelConfigError) as info:
        placements(config, OnnxRuntimeInstance, (), "m")
    assert "instance_group[0].kind" in info.value.message
    assert "--allow-cpu-fallback=true" in info.value.message
    where = placements(config, OnnxRuntimeInstance, (), "m", cpu_fallback=True)
    assert [p.kind for p in where] == ["CPU", "CPU"]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU  # clients see it


def test_gpu_groups_spread_over_their_devices() -> None:
    config = _config("instance_group [ { count: 2, kind: KIND_GPU }, "
                     "{ count: 1, kind: KIND_GPU, gpus: [ 1 ] }, { count: 1, kind: KIND_CPU } ]")
    where = placements(config, OnnxRuntimeInstance, (0, 1), "m")
    assert [(p.kind, p.device) for p in where] == [
        ("GPU", 0), ("GPU", 0), ("GPU", 1), ("GPU", 1), ("GPU", 1), ("CPU", 0)]
    assert list(config.instance_group[0].gpus) == [0, 1]
    auto = _config("instance_group [ { kind: KIND_AUTO } ]")
    assert [p.kind for p in placements(auto, OnnxRuntimeInstance, (0,), "m")] == ["GPU"]
    assert [p.kind for p in placements(_config(""), OnnxRuntimeInstance, (), "m")] == ["CPU"]
    missing = _config("instance_group [ { kind: KIND_GPU, gpus: [ 3 ] } ]")
    with pytest.raises(ModelConfigError) as info:
        placements(missing, OnnxRuntimeInstance, (0, 1), "m")
    assert "instance_group[0].gpus" in info.value.message and "GPU 3" in info.value.message


GPU_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { count: 1, kind: KIND_GPU } ]
"""


@NO_GPU
@pytest.mark.parametrize("fallback", [False, True])
def test_a_server_without_gpus(tmp_path: Path, fallback: bool) -> None:
    write_model(mlp_model(), tmp_path, "gpu_mlp", config=GPU_CONFIG)
    write_model(mlp_model(), tmp_path, "cpu_mlp")
    with LocalServer(tmp_path, f"--allow-cpu-fallback={fallback}") as server:
        g = grpcclient.InferenceServerClient(server.grpc_url)
        assert g.is_model_ready("cpu_mlp")
        if fallback:
            config = g.get_model_config("gpu_mlp", as_json=True)["config"]
            assert config["instance_group"][0]["kind"] == "KIND_CPU"
            x = grpcclient.InferInput("input", [1, 64], "FP32")
            x.set_data_from_numpy(np.ones((1, 64), np.float32))
            assert g.infer("gpu_mlp", [x]).as_numpy("output").shape == (1, 2)
        else:
            row = {m["name"]: m for m in g.get_model_repository_index(as_json=True)["models"]}
            assert row["gpu_mlp"]["state"] == "UNAVAILABLE"
            assert "sees no GPU" in row["gpu_mlp"]["reason"]
        # The GPU-only parts answer, and say why they cannot serve.
        assert "cuda_shared_memory" not in g.get_server_metadata().extensions
        with pytest.raises(InferenceServerException) as info:
            g.get_cuda_shared_memory_status()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "CUDA shared memory" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            g.unregister_cuda_shared_memory()
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        h = httpclient.InferenceServerClient(server.http_url)
        with pytest.raises(InferenceServerException) as info:
            h.register_cuda_shared_memory("r", b"AAAA", 0, 16)
        assert "CUDA shared memory" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            h.unregister_cuda_shared_memory("r")
        assert "CUDA shared memory" in info.value.message()
        metrics = urllib.request.urlopen(server.metrics_url).read().decode()
        assert "nv_cpu_utilization" in metrics and "nv_gpu_" not in metrics


def test_onnxruntime_providers_follow_the_config() -> None:
    from sonic.backends.onnxruntime import gpu_providers
    from sonic.errors import Unavailable

    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    plain = _config("instance_group [ { kind: KIND_GPU } ]")
    assert gpu_providers(plain, 1, every, "m") == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    trt = _config('optimization { execution_accelerators { gpu_execution_accelerator : [ {\n'
                  '  name : "tensorrt"\n'
                  '  parameters { key: "precision_mode" value: "FP16" }\n'
                  '  parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ] } }')
    first = gpu_providers(trt, 0, every, "m")[0]
    assert first == ("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True,
                     "trt_int8_enable": False, "trt_max_workspace_size": 1073741824})
    # Asked for, but absent: CUDA alone, with a warning.
    assert gpu_providers(trt, 0, every[1:], "m")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    with pytest.raises(Unavailable, match="no CUDA execution provider"):
        gpu_providers(plain, 0, ["CPUExecutionProvider"], "m")
