"""Small ONNX models built from code, for the example repository, tests and benchmarks.

Nothing is downloaded: each model is written with ``onnx.helper`` from a
fixed seed, so the same command always writes the same bytes.

- ``mlp``: the 64 -> 256 -> 256 -> 2 FP32 MLP of the benchmarks (ReLU).
- ``simple``: Triton's classic example, INT32 sum and difference of two inputs.
- the CMS models (``deepmet``, ``facile``, ``particlenet``) come from
  :mod:`sonic.zoo.cms_models` and :mod:`sonic.zoo.particlenet`.
- :func:`identity_model`: one input copied to one output, any datatype.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime this project supports

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BF16": TensorProto.BFLOAT16,
    "BYTES": TensorProto.STRING,
}


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sonic"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


# The benchmarks' MLP config (issue #3): batch up to 256, 100 us dynamic batching,
# one instance, one intra-op thread.  Without name or platform, so it serves as-is
# for onnxruntime and, prefixed with a backend line, for Triton's python backend.
MLP_BENCHMARK_CONFIG = """max_batch_size: 256
input [ { name: "input", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 1, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def mlp_model(sizes: tuple[int, ...] = (64, 256, 256, 2), seed: int = 0) -> onnx.ModelProto:
    """Dense layers with ReLU between them; input ``input``, output ``output``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (0.01 * rng.standard_normal(n_out)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(sizes) - 2
        mm, y = f"mm{i}", "output" if last else f"h{i}"
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [mm]))
        nodes.append(helper.make_node("Add", [mm, f"b{i}"], [y if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [y]))
        x = y
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    return _model(graph)


def simple_model() -> onnx.ModelProto:
    """INPUT0 + INPUT1 -> OUTPUT0, INPUT0 - INPUT1 -> OUTPUT1 (INT32 [batch, 16])."""
    io = lambda n: helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 16])  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [io("INPUT0"), io("INPUT1")],
        [io("OUTPUT0"), io("OUTPUT1")],
    )
    return _model(graph)


def identity_model(datatype: str, dims: tuple[int | str, ...] = ("batch", -1)) -> onnx.ModelProto:
    """``INPUT0`` copied to ``OUTPUT0``; ``-1`` dims become symbolic."""
    shape = [d if not (isinstance(d, int) and d < 0) else f"d{i}" for i, d in enumerate(dims)]
    tp = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("INPUT0", tp, shape)],
        [helper.make_tensor_value_info("OUTPUT0", tp, shape)],
    )
    return _model(graph)


def write_model(
    model: onnx.ModelProto, repo: Path, name: str, version: int = 1, config: str | None = None
) -> Path:
    """Write ``<repo>/<name>/<version>/model.onnx`` (and ``config.pbtxt`` if given)."""
    vdir = repo / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.onnx").write_bytes(model.SerializeToString())
    if config is not None:
        (repo / name / "config.pbtxt").write_text(config)
    return repo / name


def write_example_repository(repo: Path, *, torch: bool = False) -> list[str]:
    """Write the bundled example models (their configs are kept in git).

    DeepMET's ONNX file (trained by ``sonic workflow train``) and ParticleNet's
    are kept in git too; ParticleNet is rebuilt only with ``torch=True``, which
    needs PyTorch.  Returns the names written.
    """
    from sonic.zoo.cms_models import facile_model

    models = {"mlp": mlp_model(), "simple": simple_model(), "facile": facile_model()}
    for name, model in models.items():
        write_model(model, repo, name)
    written = list(models)
    if torch:
        from sonic.zoo.particlenet import export_particlenet

        export_particlenet(repo / "particlenet" / "1" / "model.onnx")
        written.append("particlenet")
    return written
