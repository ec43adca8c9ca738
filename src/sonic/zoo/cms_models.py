"""ONNX builders for the CMS SONIC example models, with their CMSSW tensor interfaces.

Each model takes exactly the tensors its CMSSW SONIC producer sends (see
``examples/model_repository/<model>/README.md`` for the sources), so a job
configured for those models can be pointed at this server.  FACILE's weights
are random (fixed seed); DeepMET is trained by the physics workflow
(:mod:`sonic.workflow.deepmet`) and its ONNX file ships in the repository.

- :func:`facile_model`: FacileHcalReconstructor, one row per HCAL channel:
  ``continuousinputs``, ``depth``, ``ieta`` -> ``output/BiasAdd``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sonic.zoo.examples import IR_VERSION, OPSET

FACILE_CONTINUOUS = 10  # iphi, gain, 8 charge time samples
FACILE_DEPTHS = 7
FACILE_IETAS = 30


class _Graph:
    """A tiny helper to write ONNX graphs readably."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: object) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def dense(self, x: str, n_in: int, n_out: int, act: str | None, out: str | None = None) -> str:
        w = (self.rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (0.01 * self.rng.standard_normal(n_out)).astype(np.float32)
        y = self.op("Add", [self.op("MatMul", [x, self.const(w, "w")]), self.const(b, "b")],
                    None if act else out)  # fmt: skip
        return self.op(act, [y], out) if act else y

    def slice_last(self, x: str, start: int, end: int) -> str:
        return self.op("Slice", [x, self.const(np.array([start])), self.const(np.array([end])),
                                 self.const(np.array([-1]))])  # fmt: skip

    def model(self, name: str, inputs: list, outputs: list) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sonic")  # fmt: skip
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


def facile_model(seed: int = 0) -> onnx.ModelProto:
    """FACILE: one-hot depth and |ieta| inside the model, BN, Dense 200-100-50-20-10-5-1."""
    g = _Graph(seed)
    values = g.const(np.array([0.0, 1.0], dtype=np.float32))
    onehots = []
    for name, depth, offset in (("depth", FACILE_DEPTHS, 1), ("ieta", FACILE_IETAS, 0)):
        idx = g.op("Cast", [name], to=TensorProto.INT64)
        if name == "ieta":
            idx = g.op("Abs", [idx])
        idx = g.op("Sub", [idx, g.const(np.array(offset, dtype=np.int64))])
        idx = g.op("Clip", [idx, g.const(np.array(0)), g.const(np.array(depth - 1))])
        hot = g.op("OneHot", [idx, g.const(np.array(depth)), values], axis=-1)
        onehots.append(g.op("Squeeze", [hot, g.const(np.array([1]))]))
    x = g.op("Concat", ["continuousinputs", *onehots], axis=1)
    width = FACILE_CONTINUOUS + FACILE_DEPTHS + FACILE_IETAS
    scale = (1.0 + 0.1 * g.rng.standard_normal(width)).astype(np.float32)
    shift = (0.1 * g.rng.standard_normal(width)).astype(np.float32)
    x = g.op("Add", [g.op("Mul", [x, g.const(scale)]), g.const(shift)])  # inference-mode BN
    for n_out in (200, 100, 50, 20, 10, 5):
        x = g.dense(x, width, n_out, "Relu")
        width = n_out
    g.dense(x, width, 1, None, out="output/BiasAdd")
    inputs = [
        helper.make_tensor_value_info("continuousinputs", TensorProto.FLOAT,
                                      ["batch", FACILE_CONTINUOUS]),
        helper.make_tensor_value_info("depth", TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info("ieta", TensorProto.INT32, ["batch", 1]),
    ]  # fmt: skip
    outputs = [helper.make_tensor_value_info("output/BiasAdd", TensorProto.FLOAT, ["batch", 1])]
    return g.model("facile", inputs, outputs)
