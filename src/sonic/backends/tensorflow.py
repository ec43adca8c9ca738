"""TensorFlow (``tensorflow_graphdef``, ``tensorflow_savedmodel``), as Triton's tensorflow backend.

CMS serves DeepMET and other models as frozen graphs (``model.graphdef``) and
SavedModels (a ``model.savedmodel/`` folder), so a server that replaces
Triton at CMS must run them unchanged.  Both run in a TF1 session of the
instance's own graph, built once at load: ``Session.run`` releases the GIL,
so instance groups run in parallel, and a session runs a frozen graph and a
SavedModel's serving signature alike.

Tensors are named as Triton names them:

- graphdef: the config names a graph tensor; ``output/BiasAdd`` is
  ``output/BiasAdd:0`` (a name with ``:`` is taken as it is).  The graph's
  placeholders are its inputs; outputs are whatever the config asks for.
- savedmodel: the config names the keys of the signature (``serving_default``,
  or the ``TF_SIGNATURE_DEF`` parameter), which also completes a partial config.

Config ``parameters`` that Triton's backend reads: ``TF_NUM_INTRA_THREADS``,
``TF_NUM_INTER_THREADS``, ``TF_USE_PER_SESSION_THREADS``, ``TF_GRAPH_TAG`` (the
SavedModel tag, ``serve``) and ``TF_SIGNATURE_DEF``.  ``optimization { graph
{ level: -1 } }`` turns TF's graph optimisations off, ``1`` turns XLA on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement, int_parameter
from sonic.errors import Internal, ModelConfigError, Unavailable
from sonic.protocol.datatypes import from_numpy_dtype
from sonic.repository.autocomplete import IOSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banner is not the server's log
import tensorflow as tf

_v1 = tf.compat.v1


def _param(config: mc.ModelConfig, key: str, default: str = "") -> str:
    return config.parameters[key].string_value if key in config.parameters else default


def _session_config(config: mc.ModelConfig, model: str) -> Any:
    options = _v1.ConfigProto(
        intra_op_parallelism_threads=int_parameter(config, "TF_NUM_INTRA_THREADS", model) or 0,
        inter_op_parallelism_threads=int_parameter(config, "TF_NUM_INTER_THREADS", model) or 0,
        use_per_session_threads=_param(config, "TF_USE_PER_SESSION_THREADS").lower()
        in ("1", "true", "yes", "on"),
        allow_soft_placement=True,
    )
    level = config.optimization.graph.level
    if level == -1:
        options.graph_options.optimizer_options.opt_level = _v1.OptimizerOptions.L0
        options.graph_options.rewrite_options.disable_meta_optimizer = True
    elif level >= 1:
        options.graph_options.optimizer_options.global_jit_level = _v1.OptimizerOptions.ON_1
    return options


def _datatype(dtype: Any, model: str, what: str) -> str:
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return "BYTES"
    try:
        return from_numpy_dtype(np.dtype(dtype.as_numpy_dtype))
    except Exception:
        raise ModelConfigError(
            model, what, f"TensorFlow type {dtype.name} has no Triton datatype"
        ) from None


def _dims(shape: Any) -> tuple[int, ...] | None:
    """-1 for every unknown dim; None when even the rank is unknown."""
    shape = tf.TensorShape(shape)
    if shape.rank is None:
        return None
    return tuple(-1 if d is None else int(d) for d in shape.as_list())


def read_graph_def(path: Path) -> Any:
    """A frozen graph file as a GraphDef (the backend, sonic repo import and its ONNX step)."""
    graph_def = _v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return graph_def


def tensor_name(name: str) -> str:
    """A config name as a graph tensor name: ``output/BiasAdd`` -> ``output/BiasAdd:0``."""
    return name if ":" in name else f"{name}:0"


#: Graph nodes that end a frozen graph without being one of its outputs.
_NOT_OUTPUTS = {"NoOp", "Const", "Placeholder", "PlaceholderV2", "Assert", "SaveV2", "RestoreV2"}


def frozen_graph_outputs(path: Path, names: list[str], model: str) -> list[IOSpec]:
    """The outputs of a frozen graph file: ``names``, or else the nodes nothing consumes (a
    graph declares no outputs; ``sonic repo import`` writes these into the config)."""
    graph_def = read_graph_def(path)
    if not names:
        consumed = {i.split(":")[0].lstrip("^") for node in graph_def.node for i in node.input}
        names = [n.name for n in graph_def.node
                 if n.name not in consumed and n.op not in _NOT_OUTPUTS]  # fmt: skip
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    specs = []
    for name in names:
        try:
            tensor = graph.get_tensor_by_name(tensor_name(name))
        except (KeyError, ValueError):
            raise ModelConfigError(
                model, f"output[{name}]", f"{path.name} has no tensor '{tensor_name(name)}'"
            ) from None
        dims = _dims(tensor.shape) or (-1,)
        specs.append(IOSpec(name, _datatype(tensor.dtype, model, f"output[{name}]"), dims))
    return specs


class TensorFlowInstance(BackendInstance):
    """A frozen graph (``tensorflow_graphdef``); :class:`SavedModelInstance` for SavedModels."""

    backend_name = "tensorflow"
    platforms = ("tensorflow_graphdef",)
    default_filename = "model.graphdef"
    platform = "tensorflow_graphdef"
    # Triton gives a KIND_CPU group without a count two instances of a TensorFlow model.
    default_cpu_instance_count = 2
    inline_ok = True  # one Session.run of native kernels

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        super().__init__(model, config, version_dir, placement)
        if placement.kind == "GPU" and not tf.config.list_physical_devices("GPU"):
            raise Unavailable(
                f"model '{model}': instance group '{placement.name}' is KIND_GPU, but "
                "TensorFlow sees no GPU here (tensorflow-cpu); use KIND_CPU"
            )
        path = self.model_path(config, version_dir)
        self.graph = tf.Graph()
        self.session = _v1.Session(graph=self.graph, config=_session_config(config, model))
        #: Config name -> graph tensor, for the inputs and the outputs the model offers.
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        try:
            self._load(path)
        except ModelConfigError:
            self.session.close()
            raise
        except Exception as err:
            self.session.close()
            raise ModelConfigError(model, path.name, f"TensorFlow cannot load it: {err}") from err
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise ModelConfigError(
                self.model, "default_model_filename", f"model file {path} does not exist"
            )
        with self.graph.as_default():
            tf.graph_util.import_graph_def(read_graph_def(path), name="")
        for op in self.graph.get_operations():
            if op.type in ("Placeholder", "PlaceholderV2"):
                self._inputs[op.name] = op.outputs[0]
        for t in self.config.output:
            self._outputs[t.name] = self._graph_tensor(t.name, "output")
        for t in self.config.input:  # a config input may name a tensor that is not a placeholder
            if t.name not in self._inputs:
                self._inputs[t.name] = self._graph_tensor(t.name, "input")

    def _graph_tensor(self, name: str, kind: str) -> Any:
        try:
            return self.graph.get_tensor_by_name(tensor_name(name))
        except (KeyError, ValueError):
            raise ModelConfigError(
                self.model, f"{kind}[{name}]",
                f"the graph has no tensor '{tensor_name(name)}'",
            ) from None  # fmt: skip

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        """The placeholders (or the signature's inputs) and the outputs, as the graph types them;
        a dim the graph leaves unknown, or a rank, comes from the config."""
        stated = {t.name: t for t in [*self.config.input, *self.config.output]}
        batch = 1 if self.config.max_batch_size > 0 else 0

        def spec(name: str, tensor: Any, kind: str) -> IOSpec:
            dims = _dims(tensor.shape)
            if dims is None:
                t = stated.get(name)
                dims = (*([-1] * batch), *t.dims) if t is not None else (-1,)
            return IOSpec(name, _datatype(tensor.dtype, self.model, f"{kind}[{name}]"), dims)

        return ([spec(n, t, "input") for n, t in self._inputs.items()],
                [spec(n, t, "output") for n, t in self._outputs.items()])  # fmt: skip

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        key = (tuple(inputs), tuple(outputs))
        run = self._callables.get(key)
        if run is None:
            missing = [n for n in outputs if n not in self._outputs]
            if missing:
                raise Internal(f"model '{self.model}': no graph tensor for output(s) {missing}")
            run = self.session.make_callable(
                [self._outputs[n] for n in outputs], feed_list=[self._inputs[n] for n in inputs]
            )
            self._callables[key] = run
        results = run(*inputs.values())
        return dict(zip(outputs, (np.asarray(r) for r in results), strict=True))

    def close(self) -> None:
        self.session.close()


class SavedModelInstance(TensorFlowInstance):
    """A SavedModel folder (``tensorflow_savedmodel``), run through its serving signature."""

    platforms = ("tensorflow_savedmodel",)
    default_filename = "model.savedmodel"
    platform = "tensorflow_savedmodel"

    def _load(self, path: Path) -> None:
        if not (path / "saved_model.pb").is_file():
            raise ModelConfigError(
                self.model, "default_model_filename",
                f"{path} is not a SavedModel folder (it has no saved_model.pb)",
            )  # fmt: skip
        tag = _param(self.config, "TF_GRAPH_TAG", "serve")
        key = _param(self.config, "TF_SIGNATURE_DEF", "serving_default")
        with self.graph.as_default():
            meta = _v1.saved_model.loader.load(self.session, [tag], str(path))
        if key not in meta.signature_def:
            raise ModelConfigError(
                self.model, "parameters[TF_SIGNATURE_DEF]",
                f"the SavedModel has no signature '{key}'; it has "
                f"{', '.join(sorted(meta.signature_def)) or 'none'}",
            )  # fmt: skip
        signature = meta.signature_def[key]
        for name, info in signature.inputs.items():
            self._inputs[name] = self.graph.get_tensor_by_name(info.name)
        for name, info in signature.outputs.items():
            self._outputs[name] = self.graph.get_tensor_by_name(info.name)
