"""Turn a model directory into servable versions (blocking; run it in a thread).

The steps are Triton's: read ``config.pbtxt`` (or start empty), check its
structure, pick versions by policy, choose the backend, load one instance to
learn the model's signature, complete the config from it unless strict, check
config against model, then load the remaining instances.  Any failure raises
an error naming the model and the field; nothing is half-registered.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement
from sonic.backends.registry import select_backend
from sonic.errors import InvalidArgument, ModelConfigError
from sonic.repository.autocomplete import check_against_model, complete
from sonic.repository.checksums import verify_checksums
from sonic.repository.config import check_structure, config_from_json, load_config
from sonic.repository.layout import check_model_name
from sonic.repository.versions import available_versions, select_versions
from sonic.server.ensemble import EnsembleModel, Resolver
from sonic.server.model import LoadedModel
from sonic.server.scheduling.batching import batch_input_specs
from sonic.server.scheduling.instances import InstancePool
from sonic.server.scheduling.scheduler import BatchShape, DirectScheduler, DynamicBatcher
from sonic.server.statistics import ModelStatistics

log = logging.getLogger("sonic.server.loader")


@dataclass(slots=True)
class LoadOptions:
    strict_config: bool = False
    default_max_batch_size: int = 4
    #: The GPUs the server sees (visible indices); see sonic.server.gpus.
    gpus: tuple[int, ...] = ()
    #: Run KIND_GPU groups on the CPU when there is no GPU (``--allow-cpu-fallback``).
    cpu_fallback: bool = False
    #: Cap on max_batch_size (``--max-batch-size``; 0: none).
    max_batch_size: int = 0
    #: Queue bound for models whose config sets none (``--max-queue-size``; 0: none).
    max_queue_size: int = 0
    #: Stop holding partial batches whose waits gather nothing (``--adaptive-batch-delay``).
    adaptive_batch_delay: bool = True
    #: Short calls of single-instance models run inline under load too: the gRPC transport
    #: stamps requests as it reads them (the native one; InstancePool).
    inline_under_load: bool = False


def _gpu_devices(
    group: mc.ModelInstanceGroup, i: int, gpus: tuple[int, ...], model: str, cpu_fallback: bool
) -> list[int] | None:
    """The devices of a KIND_GPU group, or None when it falls back to the CPU."""
    if not gpus:
        if cpu_fallback:
            log.warning("model '%s': instance_group[%d] is KIND_GPU but this server sees no GPU; "
                        "running it on the CPU (--allow-cpu-fallback)", model, i)  # fmt: skip
            return None
        raise ModelConfigError(
            model, f"instance_group[{i}].kind",
            "KIND_GPU, but this server sees no GPU (no NVIDIA driver or NVML, or "
            "CUDA_VISIBLE_DEVICES hides them); use KIND_CPU or KIND_AUTO, or start the server "
            "with --allow-cpu-fallback=true",
        )  # fmt: skip
    missing = [d for d in group.gpus if d not in gpus]
    if missing:
        raise ModelConfigError(
            model, f"instance_group[{i}].gpus",
            f"GPU {missing[0]} does not exist; this server has GPU(s) {list(gpus)}",
        )  # fmt: skip
    return list(group.gpus) or list(gpus)


def placements(
    config: mc.ModelConfig, backend: type[BackendInstance], gpus: tuple[int, ...], model: str,
    cpu_fallback: bool = False,
) -> list[InstancePlacement]:  # fmt: skip
    """Instances to create, completing ``instance_group`` as Triton reports it.

    ``gpus`` are the GPUs the server sees (:mod:`sonic.server.gpus`).  KIND_AUTO picks
    them when there are any; KIND_GPU without any fails, or with ``cpu_fallback`` is
    rewritten to KIND_CPU (so clients reading the config see where it runs).
    """
    if not config.instance_group:
        group = config.instance_group.add()
        group.kind = mc.ModelInstanceGroup.KIND_GPU if gpus else mc.ModelInstanceGroup.KIND_CPU
        group.count = 1
    out: list[InstancePlacement] = []
    for i, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{model}_{i}"
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = mc.ModelInstanceGroup.KIND_GPU if gpus else mc.ModelInstanceGroup.KIND_CPU
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            devices = _gpu_devices(group, i, gpus, model, cpu_fallback)
            if devices is None:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                group.ClearField("gpus")
            else:
                if not group.gpus:
                    group.gpus.extend(devices)
                group.count = count = group.count or 1
                for dev in devices:
                    out.extend(InstancePlacement(f"{group.name}_{dev}_{j}", "GPU", dev)
                               for j in range(count))  # fmt: skip
                continue
        if group.kind in (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_MODEL):
            count = group.count or backend.default_cpu_instance_count
            group.count = count
            out.extend(InstancePlacement(f"{group.name}_{j}", "CPU") for j in range(count))
        else:
            raise ModelConfigError(
                model,
                f"instance_group[{i}].kind",
                f"{mc.ModelInstanceGroup.Kind.Name(group.kind)} is not supported",
            )
    return out


def _cap_batch(config: mc.ModelConfig, cap: int) -> None:
    """Lower max_batch_size to the server's cap; clients read the lowered value and split."""
    if cap and config.max_batch_size > cap:
        log.warning("model '%s': max_batch_size %d lowered to the server's --max-batch-size %d",
                    config.name, config.max_batch_size, cap)  # fmt: skip
        config.max_batch_size = cap


def load_model(
    name: str,
    model_dir: Path,
    options: LoadOptions,
    config_json: str | None = None,
    resolve: Resolver | None = None,
) -> tuple[mc.ModelConfig, dict[int, LoadedModel]]:
    """Load every version the policy selects; returns the completed config and versions.

    ``resolve`` finds other served models; ensembles use it to reach their steps.
    """
    if config_json is not None:
        config = config_from_json(config_json, name)
    else:
        config = load_config(model_dir, required=options.strict_config)
    if not config.name:
        config.name = name
    check_structure(config, name)
    versions = select_versions(config, available_versions(model_dir), name)
    verify_checksums(config, model_dir, name)
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.platform == "ensemble":
        if resolve is None:  # pragma: no cover - the manager always passes one
            raise ModelConfigError(name, "platform", "ensembles need a model manager")
        return config, {v: EnsembleModel(name, v, config, resolve) for v in versions}
    backend = select_backend(name, config, model_dir / str(versions[0]))
    if not config.default_model_filename:
        config.default_model_filename = backend.model_path(
            config, model_dir / str(versions[0])
        ).name
    where = placements(config, backend, options.gpus, name, options.cpu_fallback)

    loaded: dict[int, LoadedModel] = {}
    created: list[BackendInstance] = []
    shape = BatchShape()
    try:
        for v in versions:
            vdir = model_dir / str(v)
            first = backend(name, config, vdir, where[0])
            created.append(first)
            if v == versions[0]:
                ins, outs = first.signature()
                if not options.strict_config:
                    complete(
                        config, ins, outs, default_max_batch_size=options.default_max_batch_size
                    )
                check_against_model(config, ins, outs, name)
                check_structure(config, name)
                _cap_batch(config, options.max_batch_size)
                shape = BatchShape(
                    ragged=frozenset(t.name for t in config.input if t.allow_ragged_batch),
                    batch_inputs=tuple(batch_input_specs(config)),
                    model_ranks={s.name: len(s.dims) for s in ins},
                )
            rest = [backend(name, config, vdir, p) for p in where[1:]]
            created.extend(rest)
            stats = ModelStatistics(name, str(v))
            pool = InstancePool([first, *rest], name, options.inline_under_load)
            scheduler: DirectScheduler | DynamicBatcher
            if config.max_batch_size > 0 and config.HasField("dynamic_batching"):
                scheduler = DynamicBatcher(pool, stats, shape, config, options.max_queue_size,
                                           options.adaptive_batch_delay)
            else:
                scheduler = DirectScheduler(pool, stats, shape, options.max_queue_size)
            loaded[v] = LoadedModel(name, v, config, scheduler, stats, model_dir)
    except BaseException:
        for inst in created:
            inst.close()
        raise
    return config, loaded


def materialize_files(name: str, files: dict[str, bytes]) -> Path:
    """Write ``file:<path>`` load parameters into a fresh model directory.

    Paths are checked to stay inside that directory: no absolute paths, no
    ``..``; the caller removes the directory with :func:`remove_materialized`.
    """
    check_model_name(name)
    root = Path(tempfile.mkdtemp(prefix="sonic-model-"))
    model_dir = root / name
    model_dir.mkdir()
    try:
        for rel, content in files.items():
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise InvalidArgument(
                    f"file parameter 'file:{rel}' must be a relative path inside the model "
                    "directory, such as 'file:1/model.onnx'"
                )
            target = model_dir.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return model_dir


def remove_materialized(model_dir: Path) -> None:
    shutil.rmtree(model_dir.parent, ignore_errors=True)
