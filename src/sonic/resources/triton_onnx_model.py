"""Triton python-backend model that runs ``model.onnx`` with onnxruntime.

The pytriton build of tritonserver has only the python backend, so this is how
real NVIDIA Triton serves the same ONNX file in the tests and benchmarks
(``sonic.testing.triton.write_triton_onnx_model`` writes it, with a first line that
puts onnxruntime's site-packages on ``sys.path``): one session per instance,
whole dynamic batches per ``execute()``.  It is a data file of the package, run
by Triton's python backend stub, never imported by sonic.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_thread_count", {})
        if threads.get("string_value"):
            options.intra_op_num_threads = int(threads["string_value"])
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.inputs
        }
        rows = [a.shape[0] for a in feeds[self.inputs[0]]]
        merged = {
            name: np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            for name, arrays in feeds.items()
        }
        results = self.session.run(self.outputs, merged)
        responses, offset = [], 0
        for n in rows:
            tensors = [
                pb_utils.Tensor(name, value[offset : offset + n])
                for name, value in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += n
        return responses
