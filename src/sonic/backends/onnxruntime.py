"""ONNX Runtime backend, configured as Triton's ``onnxruntime`` backend is.

Selected by ``platform: "onnxruntime_onnx"`` or ``backend: "onnxruntime"``.
Thread settings come from the config ``parameters`` that Triton's backend
reads (``intra_op_thread_count``, ``inter_op_thread_count``), graph
optimisation from ``optimization.graph.level``.  KIND_GPU instances use the
CUDA execution provider on the group's GPU, and fail to load with a clear
message where onnxruntime has no CUDA provider.
"""

from __future__ import annotations

import ctypes
import logging
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement, int_parameter
from sonic.errors import InvalidArgument, ModelConfigError, Unavailable
from sonic.repository.autocomplete import IOSpec

log = logging.getLogger("sonic.backends.onnxruntime")

_ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}

_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    2: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def _bf16_from_ortvalue(value: ort.OrtValue) -> np.ndarray:
    """onnxruntime cannot hand BF16 to numpy; copy the bytes out of the OrtValue."""
    shape = value.shape()
    count = math.prod(shape)
    buf = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    return np.frombuffer(bytes(buf), dtype=ml_dtypes.bfloat16).reshape(shape)


class OnnxRuntimeInstance(BackendInstance):
    backend_name = "onnxruntime"
    platforms = ("onnxruntime_onnx",)
    default_filename = "model.onnx"
    platform = "onnxruntime_onnx"
    # Triton gives a KIND_CPU group without a count two ONNX Runtime instances.
    default_cpu_instance_count = 2
    inline_ok = True

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        super().__init__(model, config, version_dir, placement)
        path = self.require_model_file()
        options = ort.SessionOptions()
        intra = int_parameter(config, "intra_op_thread_count", model)
        inter = int_parameter(config, "inter_op_thread_count", model)
        if intra is not None:
            options.intra_op_num_threads = intra
        if inter is not None:
            options.inter_op_num_threads = inter
            if inter > 1:
                options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        level = config.optimization.graph.level
        options.graph_optimization_level = _GRAPH_LEVELS.get(
            level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=self._providers()
            )
        except Exception as err:  # onnxruntime raises bare RuntimeError/Fail types
            raise ModelConfigError(model, path.name, f"onnxruntime cannot load it: {err}") from err
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_types = {i.name: _ORT_TYPES.get(i.type, i.type) for i in self._inputs.values()}
        self._output_types = {
            o.name: _ORT_TYPES.get(o.type, o.type) for o in self.session.get_outputs()
        }
        self._bf16 = "BF16" in self._input_types.values() or "BF16" in self._output_types.values()

    def _providers(self) -> list[object]:
        if self.placement.kind != "GPU":
            return ["CPUExecutionProvider"]
        where = f"model '{self.model}': instance group '{self.placement.name}'"
        return gpu_providers(self.config, self.placement.device, ort.get_available_providers(),
                             where)  # fmt: skip

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        def spec(arg: ort.NodeArg, types: dict[str, str]) -> IOSpec:
            dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
            return IOSpec(arg.name, types[arg.name], dims)

        return (
            [spec(i, self._input_types) for i in self.session.get_inputs()],
            [spec(o, self._output_types) for o in self.session.get_outputs()],
        )

    def _feed_value(self, name: str, array: np.ndarray) -> object:
        if self._input_types.get(name) == "BYTES":
            try:
                return np.array(
                    [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.reshape(-1)],
                    dtype=object,
                ).reshape(array.shape)
            except UnicodeDecodeError:
                raise InvalidArgument(
                    f"input '{name}' for model '{self.model}': onnxruntime string tensors "
                    "must be valid UTF-8"
                ) from None
        return array

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        if self._bf16:
            return self._execute_ortvalues(inputs, outputs)
        feed = {name: self._feed_value(name, arr) for name, arr in inputs.items()}
        results = self.session.run(outputs, feed)
        out = dict(zip(outputs, results, strict=True))
        for name in outputs:
            if self._output_types[name] == "BYTES":
                out[name] = np.asarray(out[name], dtype=object)
        return out

    def _execute_ortvalues(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        feed = {}
        for name, arr in inputs.items():
            if self._input_types[name] == "BF16":
                feed[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    np.ascontiguousarray(arr).view(np.uint16),
                    onnx_element_type=TensorProto.BFLOAT16,
                )
            else:
                feed[name] = ort.OrtValue.ortvalue_from_numpy(self._feed_value(name, arr))
        results = self.session.run_with_ort_values(outputs, feed)
        return {
            name: _bf16_from_ortvalue(v) if self._output_types[name] == "BF16" else v.numpy()
            for name, v in zip(outputs, results, strict=True)
        }


# Triton's TensorRT accelerator parameters -> onnxruntime's TensorRT provider options.
_TRT_OPTIONS = {
    "max_workspace_size_bytes": ("trt_max_workspace_size", int),
    "trt_engine_cache_enable": ("trt_engine_cache_enable", lambda v: v.lower() == "true"),
    "trt_engine_cache_path": ("trt_engine_cache_path", str),
}


def gpu_providers(
    config: mc.ModelConfig, device: int, available: list[str], where: str
) -> list[object]:
    """onnxruntime providers for a KIND_GPU instance, as Triton's onnxruntime backend picks them:
    TensorRT first when the config asks for it (``optimization.execution_accelerators.
    gpu_execution_accelerator: [{name: "tensorrt"}]``, with its ``precision_mode`` and
    workspace), then CUDA, then the CPU for the operators neither has."""
    if "CUDAExecutionProvider" not in available:
        raise Unavailable(
            f"{where} is KIND_GPU, but onnxruntime has no CUDA execution provider here (it has "
            f"{', '.join(available)}); use KIND_CPU or install onnxruntime-gpu"
        )
    providers: list[object] = []
    for acc in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if acc.name != "tensorrt":
            continue
        if "TensorrtExecutionProvider" not in available:
            log.warning("%s asks for TensorRT, which this onnxruntime lacks; using CUDA", where)
            continue
        options: dict[str, object] = {"device_id": device}
        precision = acc.parameters.get("precision_mode", "FP32").upper()
        options["trt_fp16_enable"] = precision == "FP16"
        options["trt_int8_enable"] = precision == "INT8"
        for key, (option, convert) in _TRT_OPTIONS.items():
            if key in acc.parameters:
                options[option] = convert(acc.parameters[key])
        providers.append(("TensorrtExecutionProvider", options))
    providers.append(("CUDAExecutionProvider", {"device_id": device}))
    providers.append("CPUExecutionProvider")
    return providers
