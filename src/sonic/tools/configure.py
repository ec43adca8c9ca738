"""``sonic repo threadcontrol``: the edit CMSSW's ``cmsTritonConfigTool threadcontrol`` makes.

One KIND_CPU instance and a fixed number of threads for onnxruntime,
TensorFlow and PyTorch models, recursing into ensembles: what a grid job
running its models in-process (SONIC's local fallback) wants, so that it does
not take every core of a shared node.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sonic.repository.config import load_config, save_config

THREAD_PARAMETERS = {
    "onnxruntime": ("intra_op_thread_count", "inter_op_thread_count"),
    "tensorflow": ("TF_NUM_INTRA_THREADS", "TF_NUM_INTER_THREADS"),
    "pytorch": ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"),
}
_PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "pytorch_libtorch": "pytorch",
}


def threadcontrol(repository: Path, model: str, threads: int = 1) -> list[str]:
    """Pin ``model`` (and an ensemble's steps) to one KIND_CPU instance and ``threads`` threads.

    Returns the names of the models whose ``config.pbtxt`` was rewritten.
    """
    model_dir = repository / model
    config = load_config(model_dir, required=True)
    if config.platform == "ensemble":
        done: list[str] = []
        for step in config.ensemble_scheduling.step:
            if step.model_name not in done:
                done += threadcontrol(repository, step.model_name, threads)
        return done
    backend = config.backend or _PLATFORM_BACKENDS.get(config.platform, "")
    del config.instance_group[:]
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    for key in THREAD_PARAMETERS.get(backend, ()):
        config.parameters[key].string_value = str(threads)
    save_config(config, model_dir)
    return [model]
