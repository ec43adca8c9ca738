"""DeepMET as CMS serves it: a TensorFlow graphdef with CMS's names, dims and FP32 types.

CMS's own DeepMET is a ``tensorflow_graphdef``; this project trains DeepMET in
PyTorch (:mod:`sonic.workflow.deepmet`) and ships it as ONNX.  To run the
workflow through the TensorFlow serving path as CMS does, :func:`export_graphdef`
rebuilds the trained network as a frozen TF graph from the ONNX file's weights
(the trained network itself, not a retraining), op for op: clamped embeddings
of the three FP32 categorical inputs, standardised features, tanh layers,
``w = 2 sigmoid(.)`` and ``-sum w (px, py)``, ending in a node called
``output/BiasAdd`` (a BiasAdd with a zero bias, so that the graph's output node
is what CMS's config names).  :func:`write_graphdef_model` writes it as the
``deepmet`` model of a repository.  Needs the ``tensorflow`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

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
    """The trained network's parameters, as the ONNX export holds them."""

    mean: np.ndarray
    inv_std: np.ndarray
    embeddings: tuple[np.ndarray, ...]  # for input_cat0, 1, 2
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W [in, out], b [out]); tanh, ..., sigmoid


def weights_from_onnx(path: Path) -> Weights:
    """Read the parameters by the names the PyTorch export gives them; the dense weights are
    the second inputs of the MatMul nodes, in order."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    matmuls = [init[n.input[1]] for n in model.graph.node if n.op_type == "MatMul"]
    biases = sorted((k for k in init if k.startswith("mlp.") and k.endswith(".bias")),
                    key=lambda k: int(k.split(".")[1]))  # fmt: skip
    if len(matmuls) != len(biases) or "mean" not in init:
        raise ValueError(f"{path} is not a DeepMET export of sonic.workflow.deepmet")
    return Weights(init["mean"], init["inv_std"],
                   tuple(init[f"emb.{i}.weight"] for i in range(3)),
                   tuple(zip(matmuls, (init[b] for b in biases), strict=True)))  # fmt: skip


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
        for i, (weight, bias) in enumerate(w.layers):
            h = tf.tensordot(h, tf.constant(weight), axes=1) + bias
            h = tf.tanh(h) if i < len(w.layers) - 1 else 2 * tf.sigmoid(h)
        met = -tf.reduce_sum(h * x[..., 6:8], axis=1)  # features 6, 7: px/50, py/50
        with tf.name_scope("output"):
            tf.nn.bias_add(met, np.zeros(2, np.float32), name="BiasAdd")
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
