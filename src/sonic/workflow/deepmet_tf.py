"""DeepMET as CMS serves it: a TensorFlow graphdef with CMS's names, dims and FP32 types.

CMS's own DeepMET is a ``tensorflow_graphdef``; this project trains DeepMET in
PyTorch (:mod:`sonic.workflow.deepmet`) and ships it as ONNX.  To run the
workflow through the TensorFlow serving path as CMS does, :func:`export_graphdef`
rebuilds the trained network as a frozen TF graph from the ONNX file's weights
(the trained network itself, not a retraining), op for op: clamped embeddings
of the three FP32 categorical inputs, standardised features, tanh layers each
followed by BatchNorm (folded into a scale and shift), the per-candidate head,
the masked weighted sum and the last Dense, whose bias add is
``output/BiasAdd`` as in CMS's graph.  :func:`write_graphdef_model` writes it as the
``deepmet`` model of a repository.  Needs the ``tensorflow`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sonic.workflow.deepmet import PT_FEATURE
from sonic.workflow.inputs import FEATURES, INPUT_NAMES, MAX_N_PF

#: The same interface and batching as examples/model_repository/deepmet, on the TF backend.
GRAPHDEF_CONFIG = f"""name: "deepmet"
platform: "tensorflow_graphdef"
max_batch_size: 100
input [
  {{ name: "input", data_type: TYPE_FP32, dims: [ {MAX_N_PF}, {len(FEATURES)} ] }},
  {{ name: "input_cat0", data_type: TYPE_FP32, dims: [ {MAX_N_PF}, 1 ] }},
  {{ name: "input_cat1", data_type: TYPE_FP32, dims: [ {MAX_N_PF}, 1 ] }},
  {{ name: "input_cat2", data_type: TYPE_FP32, dims: [ {MAX_N_PF}, 1 ] }}
]
output [ {{ name: "output/BiasAdd", data_type: TYPE_FP32, dims: [ 2 ] }} ]
dynamic_batching {{ preferred_batch_size: [ 8, 16 ] }}
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""


@dataclass(frozen=True, slots=True)
class Weights:
    """The trained network's parameters, as the ONNX export holds them (BatchNorm folded into a
    scale and a shift per feature, as it acts at inference)."""

    mean: np.ndarray
    inv_std: np.ndarray
    embeddings: tuple[np.ndarray, ...]  # for input_cat0, 1, 2
    #: Per hidden layer: W [in, out], b, then tanh, then BatchNorm's scale and shift.
    layers: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]  # [16, 3]: w - 1, b_x, b_y per candidate
    output: tuple[np.ndarray, np.ndarray]  # [4, 2]: from sum w (b_x, b_y, px, py)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers by name, and the Identity nodes the exporter aliases repeated ones with."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    for alias, source in aliases.items():
        while source in aliases and source not in values:
            source = aliases[source]
        if source in values:
            values[alias] = values[source]
    return values


def weights_from_onnx(path: Path) -> Weights:
    """Read the parameters: by the names the PyTorch export gives them, the dense weights as
    the second inputs of the MatMul nodes and BatchNorm's from its nodes, in order."""
    model = onnx.load(str(path))
    c = _constants(model)
    nodes = model.graph.node
    matmuls = [c[n.input[1]] for n in nodes if n.op_type == "MatMul" and n.input[1] in c]
    norms = []
    for n in (n for n in nodes if n.op_type == "BatchNormalization"):
        gamma, beta, mu, var = (c[i] for i in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        norms.append((scale, beta - mu * scale))
    if "mean" not in c or len(matmuls) != len(norms) + 1 or "output.weight" not in c:
        raise ValueError(f"{path} is not a DeepMET export of sonic.workflow.deepmet")
    layers = tuple((w, c[f"dense.{i}.bias"], *norms[i]) for i, w in enumerate(matmuls[:-1]))
    return Weights(c["mean"], c["inv_std"], tuple(c[f"emb.{i}.weight"] for i in range(3)),
                   layers, (matmuls[-1], c["head.bias"]),
                   (c["output.weight"].T, c["output.bias"]))  # fmt: skip


def export_graphdef(onnx_path: Path, out: Path, max_n_pf: int = MAX_N_PF) -> Path:
    """Write the trained DeepMET of ``onnx_path`` as a frozen TensorFlow graph."""
    import tensorflow as tf

    w = weights_from_onnx(onnx_path)
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, max_n_pf, len(FEATURES)], name=INPUT_NAMES[0])
        embedded = []
        for name, table in zip(INPUT_NAMES[1:], w.embeddings, strict=True):
            cat = tf1.placeholder(tf.float32, [None, max_n_pf, 1], name=name)
            # As the PyTorch network: truncate to an index and clamp into the table.
            index = tf.clip_by_value(tf.cast(cat[..., 0], tf.int64), 0, len(table) - 1)
            embedded.append(tf.gather(tf.constant(table), index))
        h = tf.concat([(x - w.mean) * w.inv_std, *embedded], axis=-1)
        for weight, bias, scale, shift in w.layers:
            h = tf.tanh(tf.tensordot(h, tf.constant(weight), axes=1) + bias) * scale + shift
        head = tf.tensordot(h, tf.constant(w.head[0]), axes=1) + w.head[1]
        real = tf.cast(tf.not_equal(x[..., PT_FEATURE], 0.0), tf.float32)[..., None]
        weight = (1.0 + head[..., :1]) * real
        summed = tf.reduce_sum(weight * tf.concat([head[..., 1:3], x[..., 6:8]], axis=-1), axis=1)
        with tf.name_scope("output"):  # CMS's last Dense: its bias add is the output node
            tf.nn.bias_add(tf.matmul(summed, tf.constant(w.output[0])), w.output[1],
                           name="BiasAdd")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(graph.as_graph_def().SerializeToString())
    return out


def write_graphdef_model(onnx_path: Path, repository: Path) -> Path:
    """``<repository>/deepmet`` as a TF graphdef (version 1), replacing the ONNX model there."""
    model_dir = repository / "deepmet"
    for stale in (model_dir / "1").glob("model.*"):
        stale.unlink()
    export_graphdef(onnx_path, model_dir / "1" / "model.graphdef")
    (model_dir / "config.pbtxt").write_text(GRAPHDEF_CONFIG)
    return model_dir
