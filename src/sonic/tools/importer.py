"""``sonic repo import``: a model file as CMSSW ships it -> a complete Triton model directory.

CMSSW keeps its models as plain files in ``cms-data`` (a frozen TensorFlow
graph ``.pb``, a SavedModel folder, an ONNX file, a TorchScript ``.pt``); SONIC
needs each as a Triton model directory.  This writes one version of it: the
file under ``<model>/<version>/`` with Triton's file name, a ``config.pbtxt``
completed from the model (names, datatypes, dims, the batch dimension), the
MD5 checksum agent over every version, labels, and optionally a named symlink
beside the version (CMS's ``deepmet_v1_2018 -> 1``).  A second import into the
same model adds the next version and, unless the config chose a policy, serves
every version (``version_policy { all {} }``), as CMS does.

What a format does not carry is asked for, not guessed: TorchScript has no
input shapes (``--input NAME:DIMS[:TYPE]``); its outputs are found by running
it twice on zeros of two sizes, a dim that changes becoming -1.  A frozen graph
has no declared outputs: its end nodes are taken unless ``--output`` names them.
``--to-onnx`` also writes the TensorFlow model as ONNX (tf2onnx) beside it, after
checking both give the same outputs on random inputs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from sonic.protocol.datatypes import DATATYPES, from_numpy_dtype, to_config_type, to_numpy_dtype
from sonic.repository.checksums import update_checksums
from sonic.repository.config import CONFIG_FILE, load_config, save_config
from sonic.repository.versions import available_versions
from sonic.server.loader import LoadOptions, load_model
from sonic.tools.check import accepted_inputs, write_config
from sonic.tools.convert import _need

#: Formats by what the file is, and the name Triton gives it inside a version folder.
FORMATS = {
    "tensorflow_graphdef": "model.graphdef",
    "tensorflow_savedmodel": "model.savedmodel",
    "onnxruntime_onnx": "model.onnx",
    "pytorch_libtorch": "model.pt",
}


class NotImportable(ValueError):
    """What cannot be imported, and what to give instead."""


@dataclass(slots=True)
class TensorArg:
    """``--input NAME:DIMS[:TYPE]``: dims without the batch dim, -1 for a variable one."""

    name: str
    dims: tuple[int, ...]
    datatype: str = "FP32"

    @classmethod
    def parse(cls, text: str) -> TensorArg:
        name, _, rest = text.partition(":")
        dims_text, _, datatype = rest.partition(":")
        try:
            dims = tuple(int(d) for d in dims_text.split(",")) if dims_text else ()
        except ValueError:
            raise NotImportable(
                f"--input '{text}': dims must be integers, like 'pf_points:2,-1:FP32'"
            ) from None
        datatype = datatype.upper() or "FP32"
        numeric = [d for d in DATATYPES if d != "BYTES"]  # TorchScript has no string tensors
        if not name or not dims or datatype not in numeric:
            raise NotImportable(
                f"--input '{text}' must be NAME:DIMS[:TYPE], like 'pf_points:2,-1:FP32' (dims "
                f"without the batch dim; TYPE one of {', '.join(numeric)})"
            )
        return cls(name, dims, datatype)


@dataclass(slots=True)
class ImportOptions:
    name: str
    version: int = 0  # 0: the next free version
    version_name: str = ""  # a symlink beside the version, as CMS keeps them
    max_batch_size: int | None = None  # None: from the model (Triton's default where it batches)
    inputs: list[TensorArg] = field(default_factory=list)  # TorchScript
    outputs: list[str] = field(default_factory=list)
    labels: Path | None = None
    to_onnx: bool = False


@dataclass(slots=True)
class ImportResult:
    model_dir: Path
    version: int
    onnx_dir: Path | None = None
    onnx_max_abs_diff: float | None = None


def detect_format(source: Path) -> str:
    if source.is_dir():
        if (source / "saved_model.pb").is_file():
            return "tensorflow_savedmodel"
        raise NotImportable(f"{source} is a folder but not a SavedModel (no saved_model.pb)")
    by_suffix = {".pb": "tensorflow_graphdef", ".graphdef": "tensorflow_graphdef",
                 ".onnx": "onnxruntime_onnx", ".pt": "pytorch_libtorch",
                 ".pth": "pytorch_libtorch", ".ts": "pytorch_libtorch"}  # fmt: skip
    if source.suffix not in by_suffix:
        raise NotImportable(
            f"cannot tell what {source} is: give a frozen TensorFlow graph (.pb), a SavedModel "
            "folder, an ONNX file (.onnx) or a TorchScript file (.pt)"
        )
    return by_suffix[source.suffix]


def import_model(source: Path, repository: Path, options: ImportOptions) -> ImportResult:
    platform = detect_format(source)
    if options.to_onnx and not platform.startswith("tensorflow"):
        raise NotImportable(f"--to-onnx converts TensorFlow models; {source} is {platform}")
    model_dir = repository / options.name
    existing = (
        load_config(model_dir, required=False) if (model_dir / CONFIG_FILE).exists() else None
    )
    if existing is not None and existing.platform and existing.platform != platform:
        raise NotImportable(
            f"{model_dir} holds a {existing.platform} model; {source} is {platform}"
        )
    version = options.version or max(available_versions(model_dir), default=0) + 1
    vdir = model_dir / str(version)
    if vdir.exists():
        raise NotImportable(f"{vdir} already exists: choose another --version")
    config = existing or _first_config(source, platform, options)
    if existing is not None and not config.HasField("version_policy"):
        config.version_policy.all.SetInParent()  # every version addressable, as CMS serves them
    new_model = not model_dir.exists()
    old_config = (model_dir / CONFIG_FILE).read_text() if existing is not None else None
    vdir.mkdir(parents=True)
    target = vdir / FORMATS[platform]
    try:
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        _write(model_dir, config)
        if existing is None:
            _complete(model_dir, options)
        else:
            _check_loads(model_dir, config, version)
        if options.version_name:
            link = model_dir / options.version_name
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(str(version), link)
        update_checksums(model_dir)
    except BaseException:  # leave the repository as it was
        shutil.rmtree(model_dir if new_model else vdir, ignore_errors=True)
        if old_config is not None:
            (model_dir / CONFIG_FILE).write_text(old_config)
        elif not new_model:
            (model_dir / CONFIG_FILE).unlink(missing_ok=True)
        raise
    result = ImportResult(model_dir, version)
    if options.to_onnx:
        result.onnx_dir, result.onnx_max_abs_diff = tf_to_onnx(model_dir, version)
    return result


def _first_config(source: Path, platform: str, options: ImportOptions) -> mc.ModelConfig:
    """What the model itself does not tell the server; the loader completes the rest."""
    config = mc.ModelConfig(name=options.name, platform=platform)
    if options.max_batch_size is not None:
        config.max_batch_size = options.max_batch_size
    if platform == "pytorch_libtorch":
        _torchscript_tensors(source, config, options)
    elif platform == "tensorflow_graphdef":
        _need("tensorflow", "tensorflow")
        from sonic.backends.tensorflow import frozen_graph_outputs

        for spec in frozen_graph_outputs(source, options.outputs, options.name):
            # The loader completes the dims, with or without the batch dim, from the graph.
            datatype = mc.DataType.Value(to_config_type(spec.datatype))
            config.output.add(name=spec.name, data_type=datatype)
        if not config.output:
            raise NotImportable(f"{source}: found no output node; name them with --output")
    return config


def _write(model_dir: Path, config: mc.ModelConfig) -> None:
    save_config(config, model_dir)


def _complete(model_dir: Path, options: ImportOptions) -> None:
    """Complete the config from the model as the server does, then add labels."""
    config = write_config(model_dir, max_batch_size=options.max_batch_size, dynamic_batching=True)
    if options.labels is not None:
        shutil.copyfile(options.labels, model_dir / "labels.txt")
        name = options.outputs[0] if options.outputs else config.output[0].name
        named = [t for t in config.output if t.name == name]
        if not named:
            raise NotImportable(f"--labels: the model has no output '{name}'; it has "
                                f"{', '.join(t.name for t in config.output)}")  # fmt: skip
        named[0].label_filename = "labels.txt"
    config.ClearField("instance_group")  # the server's defaults, as Triton's
    config.ClearField("version_policy")
    _write(model_dir, config)


def _check_loads(model_dir: Path, config: mc.ModelConfig, version: int) -> None:
    """A version added to a model must load as the server would load it, with that config."""
    only = mc.ModelConfig()
    only.CopyFrom(config)
    only.version_policy.specific.versions[:] = [version]
    override = json_format.MessageToJson(only)
    _, loaded = load_model(model_dir.name, model_dir, LoadOptions(), override)
    for model in loaded.values():
        model.close()


def _torchscript_tensors(path: Path, config: mc.ModelConfig, options: ImportOptions) -> None:
    if not options.inputs:
        raise NotImportable(
            f"{path} is TorchScript, which carries no input shapes: give every input of "
            "forward() in order as --input NAME:DIMS[:TYPE] (dims without the batch dim, -1 "
            "for a variable one), for example --input pf_points:2,-1 --input pf_mask:1,-1"
        )
    torch = _need("torch", "torch")
    module = torch.jit.load(str(path), map_location="cpu").eval()
    batching = (options.max_batch_size or 0) > 0
    shapes = []
    for batch, size in ((2, 3), (3, 5)):  # two sizes: a dim that follows them is variable
        args = [torch.zeros(((batch,) if batching else ()) + tuple(size if d == -1 else d
                                                                   for d in t.dims),
                            dtype=getattr(torch, str(to_numpy_dtype(t.datatype))))
                for t in options.inputs]  # fmt: skip
        with torch.inference_mode():
            result = module(*args)
        results = result if isinstance(result, tuple | list) else (result,)
        shapes.append([(tuple(r.shape), r.numpy().dtype) for r in results])
    names = options.outputs or [f"OUTPUT__{i}" for i in range(len(shapes[0]))]
    if len(names) != len(shapes[0]):
        raise NotImportable(f"forward() returns {len(shapes[0])} tensors; --output names {names}")
    skip = 1 if batching else 0
    for t in options.inputs:
        config.input.add(name=t.name, data_type=mc.DataType.Value(to_config_type(t.datatype)),
                         dims=t.dims)  # fmt: skip
    for name, (a, dtype), (b, _) in zip(names, shapes[0], shapes[1], strict=True):
        dims = [x if x == y else -1 for x, y in zip(a[skip:], b[skip:], strict=True)] or [1]
        datatype = to_config_type(from_numpy_dtype(dtype))
        config.output.add(name=name, data_type=mc.DataType.Value(datatype), dims=dims)


def tf_to_onnx(model_dir: Path, version: int) -> tuple[Path, float]:
    """Write version ``version`` of ``<model>_onnx`` (tf2onnx) beside a TensorFlow model and
    return the largest difference of its outputs from TensorFlow's on random inputs."""
    tf2onnx = _need("tf2onnx", "convert")
    _need("tf2onnx.tf_loader", "convert")
    _need("tensorflow", "tensorflow")
    from sonic.backends.tensorflow import read_graph_def, tensor_name

    config = load_config(model_dir, required=True)
    vdir = model_dir / str(version)
    if config.platform == "tensorflow_savedmodel":
        graph_def, inputs, outputs, renames = tf2onnx.tf_loader.from_saved_model(
            str(vdir / "model.savedmodel"), None, None, return_tensors_to_rename=True
        )
    else:
        graph_def = read_graph_def(vdir / "model.graphdef")
        # ONNX takes the config's names: "output/BiasAdd", not the graph's "output/BiasAdd:0".
        renames = {tensor_name(t.name): t.name for t in [*config.input, *config.output]}
        inputs = [tensor_name(t.name) for t in config.input]
        outputs = [tensor_name(t.name) for t in config.output]
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                              opset=17, tensors_to_rename=renames)  # fmt: skip
    onnx_dir = model_dir.parent / f"{model_dir.name}_onnx"
    (onnx_dir / str(version)).mkdir(parents=True, exist_ok=True)
    (onnx_dir / str(version) / "model.onnx").write_bytes(proto.SerializeToString())
    onnx_config = mc.ModelConfig()
    onnx_config.CopyFrom(config)
    onnx_config.name = onnx_dir.name
    onnx_config.platform = "onnxruntime_onnx"
    onnx_config.ClearField("backend")
    onnx_config.ClearField("model_repository_agents")
    onnx_config.ClearField("default_model_filename")
    onnx_config.ClearField("parameters")
    for t in onnx_config.output:
        if t.label_filename:
            shutil.copyfile(model_dir / t.label_filename, onnx_dir / t.label_filename)
    _write(onnx_dir, onnx_config)
    update_checksums(onnx_dir)
    return onnx_dir, _max_abs_diff(model_dir, onnx_dir, version)


def _max_abs_diff(tf_dir: Path, onnx_dir: Path, version: int) -> float:
    """Largest |ONNX - TensorFlow| over the outputs, on random inputs TensorFlow accepts."""
    opts = LoadOptions()
    _, tf_models = load_model(tf_dir.name, tf_dir, opts)
    _, onnx_models = load_model(onnx_dir.name, onnx_dir, opts)
    try:
        tf_model, onnx_model = tf_models[version], onnx_models[version]
        try:
            feeds, want = accepted_inputs(tf_model, np.random.default_rng(0))
        except Exception as err:  # TensorFlow's own error
            raise NotImportable(
                f"TensorFlow cannot run {tf_dir.name} on random inputs: {err}"
            ) from err
        got = onnx_model.scheduler.pool.instances[0].execute(feeds, list(want))
        return max(float(np.max(np.abs(np.asarray(got[n], np.float64) -
                                       np.asarray(want[n], np.float64)), initial=0.0))
                   for n in want)  # fmt: skip
    finally:
        for m in [*tf_models.values(), *onnx_models.values()]:
            m.close()
