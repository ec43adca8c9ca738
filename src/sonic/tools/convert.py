"""``sonic repo convert``: turn a trained model into a ready Triton model directory.

Sources, recognised by what they are:

- a PyTorch ``nn.Module`` (``package.module:Class`` or an object) with example
  inputs -> ONNX (default) or TorchScript;
- a TorchScript file (``.pt``/``.pth``) -> ONNX, or copied as TorchScript;
- an XGBoost model (``.json``/``.ubj``) or LightGBM model (``.txt``) -> FIL layout;
- a pickled scikit-learn estimator (``.pkl``/``.joblib``) -> ONNX (skl2onnx);
- a TensorFlow SavedModel directory -> ONNX (tf2onnx).

Each result is ``<repo>/<name>/1/<file>`` plus a ``config.pbtxt`` completed
from the converted file, so ``sonic serve`` (and Triton) can load it at once.
Converters are optional extras; a missing one raises ``ModuleNotFoundError``
with the install command.
"""

from __future__ import annotations

import importlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sonic.tools.check import write_config


def _need(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"converting this model needs {module}: pip install 'sonic-inference[{extra}]'"
        ) from err


def _version_dir(repo: Path, name: str) -> Path:
    vdir = repo / name / "1"
    if vdir.exists():
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True)
    return vdir


def load_object(spec: str) -> Any:
    """``package.module:Attribute`` -> the object (a class is instantiated without args)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"'{spec}' must look like 'package.module:ClassOrObject'")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj


def convert_torch(
    module: Any, example_inputs: dict[str, Any], repo: Path, name: str, *,
    output_names: list[str] | None = None, fmt: str = "onnx", max_batch_size: int = 0,
) -> Path:  # fmt: skip
    """A PyTorch module -> ONNX (batch dim dynamic) or TorchScript, with its config."""
    torch = _need("torch", "torch")
    module = module.eval()
    names = list(example_inputs)
    args = tuple(torch.as_tensor(v) for v in example_inputs.values())
    with torch.inference_mode():
        result = module(*args)
    n_out = len(result) if isinstance(result, tuple | list) else 1
    outputs = output_names or [f"output__{i}" for i in range(n_out)]
    vdir = _version_dir(repo, name)
    if fmt == "torchscript":
        traced = torch.jit.trace(module, args)
        traced.save(str(vdir / "model.pt"))
        _torchscript_config(repo / name, names, args, outputs, result, max_batch_size)
        return repo / name
    torch.onnx.export(
        module, args, str(vdir / "model.onnx"), input_names=names, output_names=outputs,
        dynamic_axes={n: {0: "batch"} for n in [*names, *outputs]}, opset_version=17,
        dynamo=False,
    )  # fmt: skip
    write_config(repo / name, max_batch_size=max_batch_size or None, dynamic_batching=True)
    return repo / name


def _torchscript_config(
    model_dir: Path, names: list[str], args: tuple[Any, ...], outputs: list[str], result: Any,
    max_batch_size: int,
) -> None:  # fmt: skip
    from sonic.protocol.datatypes import from_numpy_dtype, to_config_type

    results = result if isinstance(result, tuple | list) else (result,)
    mbs = max_batch_size or 0
    skip = 1 if mbs else 0

    def entry(name: str, tensor: Any) -> str:
        dtype = to_config_type(from_numpy_dtype(tensor.detach().numpy().dtype))
        dims = ", ".join(str(d) for d in list(tensor.shape)[skip:]) or "1"
        return f'{{ name: "{name}", data_type: {dtype}, dims: [ {dims} ] }}'

    text = [f'name: "{model_dir.name}"', 'platform: "pytorch_libtorch"', f"max_batch_size: {mbs}"]
    text.append(
        "input [ " + ", ".join(entry(n, a) for n, a in zip(names, args, strict=True)) + " ]"
    )
    text.append("output [ " + ", ".join(entry(n, r) for n, r in zip(outputs, results, strict=True))
                + " ]")  # fmt: skip
    if mbs:
        text.append("dynamic_batching { }")
    (model_dir / "config.pbtxt").write_text("\n".join(text) + "\n")


def convert_torchscript(path: Path, example_inputs: dict[str, Any], repo: Path, name: str, *,
                        fmt: str = "onnx", max_batch_size: int = 0) -> Path:  # fmt: skip
    torch = _need("torch", "torch")
    return convert_torch(torch.jit.load(str(path)), example_inputs, repo, name, fmt=fmt,
                         max_batch_size=max_batch_size)  # fmt: skip


def convert_trees(path: Path, repo: Path, name: str, *, classifier: bool | None = None,
                  max_batch_size: int = 1024) -> Path:  # fmt: skip
    """XGBoost (.json/.ubj) or LightGBM (.txt) -> Triton FIL layout and config."""
    if path.suffix == ".txt":
        lightgbm = _need("lightgbm", "trees")
        booster = lightgbm.Booster(model_file=str(path))
        n_features, n_classes = booster.num_feature(), booster._Booster__num_class
        objective = str(booster.params.get("objective", booster.dump_model().get("objective", "")))
        kind, filename = "lightgbm", "model.txt"
    else:
        xgboost = _need("xgboost", "trees")
        booster = xgboost.Booster()
        booster.load_model(bytearray(path.read_bytes()))
        import json

        learner = json.loads(booster.save_config())["learner"]
        n_features = booster.num_features()
        n_classes = max(int(learner["learner_model_param"]["num_class"]), 1)
        objective = learner["objective"]["name"]
        kind, filename = "xgboost_json", "xgboost.json"
    if classifier is None:
        classifier = any(w in objective for w in ("binary", "multi", "softmax", "logistic"))
    width = max(n_classes, 2) if classifier else 1
    vdir = _version_dir(repo, name)
    if kind == "lightgbm":
        shutil.copy(path, vdir / filename)
    else:
        booster.save_model(str(vdir / filename))
    flag = str(classifier).lower()
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "fil"\nmax_batch_size: {max_batch_size}\n'
        f'input [ {{ name: "input__0", data_type: TYPE_FP32, dims: [ {n_features} ] }} ]\n'
        f'output [ {{ name: "output__0", data_type: TYPE_FP32, dims: [ {width} ] }} ]\n'
        "parameters [\n"
        f'  {{ key: "model_type" value: {{ string_value: "{kind}" }} }},\n'
        f'  {{ key: "output_class" value: {{ string_value: "{flag}" }} }},\n'
        f'  {{ key: "predict_proba" value: {{ string_value: "{flag}" }} }}\n'
        "]\ndynamic_batching { }\n"
    )
    return repo / name


def convert_sklearn(
    path: Path, n_features: int, repo: Path, name: str, *, max_batch_size: int = 1024
) -> Path:
    """A pickled scikit-learn estimator -> ONNX with skl2onnx."""
    skl2onnx = _need("skl2onnx", "convert")
    from skl2onnx.common.data_types import FloatTensorType

    with path.open("rb") as f:
        estimator = pickle.load(f)
    onx = skl2onnx.convert_sklearn(
        estimator, initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None,
    )  # fmt: skip
    vdir = _version_dir(repo, name)
    (vdir / "model.onnx").write_bytes(onx.SerializeToString())
    write_config(repo / name, max_batch_size=max_batch_size, dynamic_batching=True)
    return repo / name


def convert_savedmodel(path: Path, repo: Path, name: str, *, max_batch_size: int = 1024) -> Path:
    """A TensorFlow/Keras SavedModel directory -> ONNX with tf2onnx."""
    _need("tf2onnx", "convert")
    vdir = _version_dir(repo, name)
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(path), "--output",
         str(vdir / "model.onnx"), "--opset", "17"],
        check=True,
    )  # fmt: skip
    write_config(repo / name, max_batch_size=max_batch_size, dynamic_batching=True)
    return repo / name
