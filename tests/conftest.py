"""Shared fixtures: generated model repositories and real ``sonic serve`` processes.

Every server is a real subprocess on free loopback ports, polled until ready
(never a fixed sleep), and stopped with SIGTERM at the end.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sonic.launcher import LocalServer
from sonic.zoo.examples import (
    IR_VERSION,
    MLP_BENCHMARK_CONFIG,
    OPSET,
    identity_model,
    mlp_model,
    simple_model,
    write_model,
)

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip

MLP_CONFIG = """
name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 256
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { count: 2, kind: KIND_CPU } ]
"""

SIMPLE_CONFIG = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_INT32, dims: [ 16 ] }
]
"""

#: Two steps of ``simple`` chained: sums and differences of sums and differences.
ENSEMBLE = """
name: "chain"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A", data_type: TYPE_INT32, dims: [ 16 ] },
        { name: "B", data_type: TYPE_INT32, dims: [ 16 ] } ]
output [ { name: "TWICE_A", data_type: TYPE_INT32, dims: [ 16 ] },
         { name: "TWICE_B", data_type: TYPE_INT32, dims: [ 16 ] },
         { name: "DIFF", data_type: TYPE_INT32, dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "simple" model_version: -1
      input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
      output_map { key: "OUTPUT0" value: "sum" } output_map { key: "OUTPUT1" value: "diff" } },
    { model_name: "simple" model_version: -1
      input_map { key: "INPUT0" value: "sum" } input_map { key: "INPUT1" value: "diff" }
      output_map { key: "OUTPUT0" value: "TWICE_A" }
      output_map { key: "OUTPUT1" value: "TWICE_B" } },
    { model_name: "identity_int32" model_version: 1
      input_map { key: "INPUT0" value: "diff" } output_map { key: "OUTPUT0" value: "DIFF" } }
  ]
}
"""


def slow_model(width: int = 1024, depth: int = 64) -> onnx.ModelProto:
    """A chain of MatMuls: slow enough to be in flight when a test acts."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, x = [], "INPUT0"
    for i in range(depth):
        y = "OUTPUT0" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [x, "w"], [y]))
        x = y
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


SLOW_CONFIG = """
name: "slow"
max_batch_size: 512
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
instance_group [ { count: 1, kind: KIND_CPU } ]
"""


def write_mlp(root: Path) -> Path:
    """The benchmark MLP as model ``mlp`` in ``root`` (the perf, gateway and tracing tests')."""
    config = 'name: "mlp"\nplatform: "onnxruntime_onnx"\n' + MLP_BENCHMARK_CONFIG
    write_model(mlp_model(), root, "mlp", config=config)
    return root


def write_python_model(repo: Path, name: str, code: str, *, instances: int = 1,
                       max_batch_size: int = 0) -> Path:  # fmt: skip
    """A python-backend model ``X`` -> ``Y`` (FP32 [1]) whose ``model.py`` is ``code``: for the
    tests that need a server slow, stuck or failing on purpose."""
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(code)
    (repo / name / "config.pbtxt").write_text(
        f'backend: "python"\nmax_batch_size: {max_batch_size}\n'
        'input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
        'output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
        f"instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]\n"
    )
    return repo / name


def build_repository(root: Path) -> Path:
    """The test repository: mlp, simple, slow, one identity model per datatype."""
    write_model(mlp_model(), root, "mlp", config=MLP_CONFIG)
    write_model(simple_model(), root, "simple", config=SIMPLE_CONFIG)
    write_model(slow_model(), root, "slow", config=SLOW_CONFIG)
    for dt in DATATYPES:
        # No config.pbtxt: everything is auto-completed from the ONNX file.
        write_model(identity_model(dt), root, f"identity_{dt.lower()}")
    return root


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def server(model_repo: Path) -> Iterator[LocalServer]:
    with LocalServer(model_repo) as srv:
        yield srv


@pytest.fixture
def fresh_repo(tmp_path: Path, model_repo: Path) -> Path:
    """A private copy of the test repository that a test may change."""
    dest = tmp_path / "repo"
    shutil.copytree(model_repo, dest)
    return dest


def random_tensor(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random data of a Triton datatype, as tritonclient's numpy types expect it."""
    from tritonclient.utils import triton_to_np_dtype

    if datatype == "BYTES":
        words = [f"word-{i}-é".encode() for i in rng.integers(0, 10_000, size=int(np.prod(shape)))]
        return np.array(words, dtype=object).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    dtype = np.dtype(triton_to_np_dtype(datatype))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


# -- the four tritonclient variants, driven through one async interface ----------

CLIENT_VARIANTS = ["grpc", "http", "grpc.aio", "http.aio"]


class _Async:
    """Wrap a synchronous tritonclient so tests can ``await`` every call."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return call


def client_module(variant: str) -> Any:
    import importlib

    return importlib.import_module(f"tritonclient.{variant}")


def run_with_client(
    variant: str, server: LocalServer, scenario: Callable[[Any, Any], Awaitable[Any]]
) -> Any:
    """Run ``scenario(client, module)`` with a real client of ``variant``."""
    mod = client_module(variant)
    url = server.grpc_url if variant.startswith("grpc") else server.http_url

    async def main() -> Any:
        client = mod.InferenceServerClient(url)
        wrapped = client if variant.endswith("aio") else _Async(client)
        try:
            return await scenario(wrapped, mod)
        finally:
            closing = client.close()
            if asyncio.iscoroutine(closing):
                await closing

    return asyncio.run(main())
