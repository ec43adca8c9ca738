"""A Triton python-backend model.py, written for Triton, served unchanged."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer

# Written the way Triton's python-backend examples are: config-driven dtypes,
# pb_utils helpers, one response per request, errors as TritonError.
ADD_SUB = textwrap.dedent("""
    import json

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            self.model_config = model_config = json.loads(args["model_config"])
            output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
            output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")
            self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
            self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])
            self.instance = args["model_instance_name"]

        def execute(self, requests):
            responses = []
            for request in requests:
                in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
                if np.any(in_1 == 999):
                    responses.append(pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError("999 is not allowed")))
                    continue
                out_0 = pb_utils.Tensor("OUTPUT0", (in_0 + in_1).astype(self.output0_dtype))
                out_1 = pb_utils.Tensor("OUTPUT1", (in_0 - in_1).astype(self.output1_dtype))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out_0, out_1]))
            return responses

        def finalize(self):
            pb_utils.Logger.log_info("Cleaning up...")
""")

CONFIG = """
name: "add_sub"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
        { name: "INPUT1", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
         { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""

AUTO = textwrap.dedent("""
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(auto_complete_model_config):
            config = auto_complete_model_config
            config.add_input({"name": "X", "data_type": "TYPE_INT64", "dims": [2]})
            config.add_output({"name": "Y", "data_type": "TYPE_INT64", "dims": [2]})
            config.set_max_batch_size(4)
            return config

        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x * 10)]))
            return out
""")


@pytest.fixture(scope="module")
def python_server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    repo = tmp_path_factory.mktemp("python_repo")
    for name, source, config in (("add_sub", ADD_SUB, CONFIG), ("auto", AUTO, None)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_text(source)
        if config:
            (repo / name / "config.pbtxt").write_text(config)
    with LocalServer(repo) as srv:
        yield srv


def _inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    out = []
    for name, x in (("INPUT0", a), ("INPUT1", b)):
        t = grpcclient.InferInput(name, list(x.shape), "FP32")
        t.set_data_from_numpy(x)
        out.append(t)
    return out


def test_existing_python_model_runs_unchanged(python_server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(python_server.grpc_url)
    meta = client.get_model_metadata("add_sub", as_json=True)
    assert meta["platform"] == "python"
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    result = client.infer("add_sub", _inputs(a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_requests_in_one_batch_reach_execute_separately(python_server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(python_server.grpc_url)
    results: dict[int, object] = {}

    def done(i: int):
        return lambda result, error: results.__setitem__(i, error or result)

    for i in range(4):
        a = np.full((1, 4), i, dtype=np.float32)
        client.async_infer("add_sub", _inputs(a, a), callback=done(i))
    import time

    deadline = time.monotonic() + 30
    while len(results) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    for i, r in results.items():
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), np.full((1, 4), 2 * i))
    stats = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) < int(stats["inference_count"])  # they shared executions


def test_triton_error_reaches_the_client(python_server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(python_server.grpc_url)
    bad = np.full((1, 4), 999, dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("add_sub", _inputs(bad, bad))
    assert "999 is not allowed" in info.value.message()
    assert client.is_server_live()


def test_auto_complete_config(python_server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(python_server.grpc_url)
    config = client.get_model_config("auto", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 4
    assert config["input"][0]["name"] == "X"
    x = np.array([[1, 2]], dtype=np.int64)
    t = grpcclient.InferInput("X", [1, 2], "INT64")
    t.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("auto", [t]).as_numpy("Y"), x * 10)


def test_model_that_runs_on_real_triton_runs_here(tmp_path: Path) -> None:
    """The python model real tritonserver serves in the tests and benchmarks runs here too."""
    from sonic.testing.triton import TRITON_ONNX_MODEL as source
    from sonic.zoo.examples import mlp_model

    vdir = tmp_path / "mlp_py" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.py").write_text(source.read_text())
    (vdir / "model.onnx").write_bytes(mlp_model().SerializeToString())
    (tmp_path / "mlp_py" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 64\n'
        'input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]\n'
        'output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
    )
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
    want = ort.InferenceSession(mlp_model().SerializeToString()).run(["output"], {"input": x})[0]
    with LocalServer(tmp_path) as srv:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        t = grpcclient.InferInput("input", [3, 64], "FP32")
        t.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("mlp_py", [t]).as_numpy("output"), want)
