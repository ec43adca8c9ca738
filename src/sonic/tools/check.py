"""``sonic repo config`` and ``sonic repo check``: repository tools that load models.

They sit above the server layer because they load models exactly as the
server does (same loader, same auto-completion, same checks), so a
repository that passes ``check`` loads in ``sonic serve`` and in Triton alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import SonicError
from sonic.launcher import LocalServer
from sonic.protocol.datatypes import to_numpy_dtype
from sonic.repository.config import CONFIG_FILE, load_config
from sonic.repository.layout import ModelRepository
from sonic.server.loader import LoadOptions, load_model
from sonic.server.model import LoadedModel


def write_config(
    model_dir: Path,
    *,
    max_batch_size: int | None = None,
    dynamic_batching: bool | None = None,
    instance_count: int | None = None,
    kind: str | None = None,
    threads: int | None = None,
) -> mc.ModelConfig:
    """Write ``<model_dir>/config.pbtxt`` completed from the model file, with overrides."""
    config_path = model_dir / CONFIG_FILE
    base = load_config(model_dir, required=False)
    if max_batch_size is not None:
        base.max_batch_size = max_batch_size
    override = json_format.MessageToJson(base)
    config, versions = load_model(model_dir.name, model_dir, LoadOptions(), override)
    for v in versions.values():
        v.close()
    if dynamic_batching is False:
        config.ClearField("dynamic_batching")
    elif dynamic_batching and config.max_batch_size > 0:
        config.dynamic_batching.SetInParent()
    if instance_count is not None or kind is not None:
        kinds = {"cpu": mc.ModelInstanceGroup.KIND_CPU, "gpu": mc.ModelInstanceGroup.KIND_GPU}
        group = config.instance_group[0]
        if instance_count is not None:
            group.count = instance_count
        if kind is not None:
            group.kind = kinds[kind]
            del group.gpus[:]
    if threads is not None and config.backend == "onnxruntime":
        for key in ("intra_op_thread_count", "inter_op_thread_count"):
            config.parameters[key].string_value = str(threads)
    for group in config.instance_group:
        group.ClearField("name")
    config_path.write_text(text_format.MessageToString(config))
    return config


@dataclass
class ModelCheck:
    name: str
    problem: str = ""
    max_abs_diff: float | None = None
    note: str = ""


@dataclass
class CheckReport:
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not m.problem for m in self.models)


def random_inputs(model: LoadedModel, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs for every input of a model: batch 2 (if it batches), -1 dims as 3."""
    out: dict[str, np.ndarray] = {}
    for spec in model.inputs.values():
        shape = tuple(2 if i == 0 and model.batching else (3 if d == -1 else d)
                      for i, d in enumerate(spec.shape_with_batch(model.batching)))  # fmt: skip
        if spec.datatype == "BYTES":
            out[spec.name] = np.array(
                [f"w{i}".encode() for i in range(int(np.prod(shape)))], dtype=object
            ).reshape(shape)
        elif spec.datatype == "BOOL":
            out[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            dtype = to_numpy_dtype(spec.datatype)
            kind = np.dtype(dtype).kind
            array = rng.integers(0, 3, shape) if kind in "iu" else rng.standard_normal(shape)
            out[spec.name] = array.astype(dtype)
    return out


def accepted_inputs(
    model: LoadedModel, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random inputs the model runs on, and its direct outputs for them.

    Random normal values first; where the model refuses them, small non-negative
    integers (0 to 2) of the same types: categorical inputs that index an
    embedding (DeepMET's FP32 ``input_cat0..2``) must be valid indices.
    """
    run = model.scheduler.pool.instances[0].execute
    normal = random_inputs(model, rng)
    try:
        return normal, run(normal, list(model.outputs))
    except Exception:  # the runtime's own error (TensorFlow's InvalidArgumentError, for one)
        small = {k: v if v.dtype == object else np.abs(np.rint(v)).clip(0, 2).astype(v.dtype)
                 for k, v in normal.items()}  # fmt: skip
        return small, run(small, list(model.outputs))


def check_repository(roots: list[Path], *, round_trip: bool = True) -> CheckReport:
    """Load every model as the server would, then compare served against direct outputs."""
    report = CheckReport()
    repo = ModelRepository(roots)
    found, clashes = repo.scan()
    loaded: dict[str, LoadedModel] = {}
    for name, err in sorted(clashes.items()):
        report.models.append(ModelCheck(name, problem=str(err)))
    for name, loc in sorted(found.items()):
        try:
            _, versions = load_model(name, loc.path, LoadOptions(strict_config=False),
                                          resolve=lambda n, v: loaded[n])  # fmt: skip
        except SonicError as err:
            report.models.append(ModelCheck(name, problem=str(err)))
            continue
        except Exception as err:  # a runtime's own error: still a problem with this model
            report.models.append(ModelCheck(name, problem=f"{type(err).__name__}: {err}"))
            continue
        loaded[name] = versions[max(versions)]
        report.models.append(ModelCheck(name))
    try:
        if round_trip and loaded:
            _round_trip(roots, loaded, {m.name: m for m in report.models})
    finally:
        for model in loaded.values():
            model.close()
    return report


def _round_trip(
    roots: list[Path], loaded: dict[str, LoadedModel], checks: dict[str, ModelCheck]
) -> None:
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(0)
    names = [n for n, m in loaded.items() if m.config.platform != "ensemble"]
    args = ["--model-control-mode=explicit", *(f"--load-model={n}" for n in loaded)]
    with LocalServer(roots, *args) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for name in names:
            model = loaded[name]
            check = checks[name]
            if model.config.batch_input:
                check.note = "round trip skipped: batch_input models need ragged requests"
                continue
            try:
                feeds, direct = accepted_inputs(model, rng)
            except Exception as err:
                check.problem = f"model '{name}': direct inference failed: {err}"
                continue
            inputs = []
            for spec in model.inputs.values():
                t = grpcclient.InferInput(spec.name, list(feeds[spec.name].shape), spec.datatype)
                t.set_data_from_numpy(feeds[spec.name])
                inputs.append(t)
            try:
                served = client.infer(name, inputs)
            except Exception as err:
                check.problem = f"model '{name}': served inference failed: {err}"
                continue
            worst = 0.0
            for out in model.outputs:
                got, want = served.as_numpy(out), direct[out]
                if model.outputs[out].datatype == "BYTES":
                    same = [bytes(a) for a in got.reshape(-1)] == [
                        b if isinstance(b, bytes) else str(b).encode() for b in want.reshape(-1)
                    ]
                    worst = max(worst, 0.0 if same else float("inf"))
                    continue
                if got.shape != want.shape:
                    check.problem = (f"model '{name}': output '{out}' has shape {got.shape} "
                                     f"served and {want.shape} direct")  # fmt: skip
                    break
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
            check.max_abs_diff = worst
            if worst != 0.0 and not check.problem:
                check.problem = f"model '{name}': served and direct outputs differ by {worst:g}"
