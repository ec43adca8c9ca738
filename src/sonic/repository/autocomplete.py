"""Complete a missing or partial config from the model file, and check the two agree.

This is what Triton does without ``--strict-model-config`` (``--disable-auto-
complete-config``): a backend reports the model's own signature (names,
datatypes, full dims with -1 for dynamic), and the config takes whatever it
does not state.  A config that states something the model contradicts is an
error naming the field, in strict mode and otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError
from sonic.protocol.datatypes import from_config_type, to_config_type
from sonic.protocol.tensors import dims_match

# Triton's --backend-config=default-max-batch-size.
DEFAULT_MAX_BATCH_SIZE = 4


@dataclass(frozen=True, slots=True)
class IOSpec:
    """One input or output as the model file declares it (dims include batch)."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def _can_batch(specs: list[IOSpec]) -> bool:
    return bool(specs) and all(s.dims and s.dims[0] == -1 for s in specs)


def complete(
    config: mc.ModelConfig,
    inputs: list[IOSpec],
    outputs: list[IOSpec],
    *,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> None:
    """Fill in what ``config`` leaves out, in place."""
    all_specs = inputs + outputs
    if config.max_batch_size == 0 and _can_batch(all_specs):
        stated = list(config.input) + list(config.output)
        by_name = {s.name: s for s in all_specs}
        # A config that lists full-rank dims describes a non-batching model.
        full_rank = any(
            t.dims and t.name in by_name and len(t.dims) == len(by_name[t.name].dims)
            for t in stated
        )
        if not full_rank:
            config.max_batch_size = default_max_batch_size
    skip = 1 if config.max_batch_size > 0 else 0
    generated = {b.target_name[0] for b in config.batch_input if b.target_name}
    for specs, tensors in ((inputs, config.input), (outputs, config.output)):
        present = {t.name: t for t in tensors}
        for spec in specs:
            if spec.name in generated:
                continue
            t = present.get(spec.name)
            if t is None:
                t = tensors.add(name=spec.name)
            if t.data_type == mc.TYPE_INVALID:
                t.data_type = mc.DataType.Value(to_config_type(spec.datatype))
            if not t.dims:
                t.dims.extend(spec.dims[skip:] or ())
                if not t.dims:
                    t.dims.append(1)
    if config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
        config.dynamic_batching.SetInParent()


def check_against_model(
    config: mc.ModelConfig, inputs: list[IOSpec], outputs: list[IOSpec], model: str
) -> None:
    """Every stated input/output must exist in the model with the same type and dims."""
    batching = config.max_batch_size > 0
    # Inputs Triton generates per batch (``batch_input``) are not client inputs.
    generated = {b.target_name[0] for b in config.batch_input if b.target_name}
    for kind, specs, tensors in (
        ("input", inputs, config.input),
        ("output", outputs, config.output),
    ):
        by_name = {s.name: s for s in specs}
        for t in tensors:
            spec = by_name.get(t.name)
            if spec is None:
                raise ModelConfigError(
                    model,
                    f"{kind}[{t.name}]",
                    f"is not an {kind} of the model file, which has "
                    f"{', '.join(repr(n) for n in by_name) or 'none'}",
                )
            stated = from_config_type(mc.DataType.Name(t.data_type))
            if stated != spec.datatype:
                raise ModelConfigError(
                    model,
                    f"{kind}[{t.name}].data_type",
                    f"config.pbtxt says {mc.DataType.Name(t.data_type)}, the model file has "
                    f"{to_config_type(spec.datatype)}",
                )
            model_dims = spec.dims
            ragged = getattr(t, "allow_ragged_batch", False)
            if ragged and batching and len(model_dims) == 1:
                # Ragged inputs reach the model flattened into one 1-D tensor.
                continue
            if batching:
                if not model_dims or model_dims[0] != -1:
                    raise ModelConfigError(
                        model,
                        "max_batch_size",
                        f"is {config.max_batch_size} but {kind} '{t.name}' has the fixed first "
                        f"dim {list(model_dims)[:1]} in the model file, so it cannot batch; "
                        "set max_batch_size: 0 and list the full dims",
                    )
                model_dims = model_dims[1:]
            dims = tuple(t.reshape.shape) if t.HasField("reshape") else tuple(t.dims)
            if not dims_match(dims, model_dims, either=True) and not t.HasField("reshape"):
                raise ModelConfigError(
                    model,
                    f"{kind}[{t.name}].dims",
                    f"config.pbtxt says {list(t.dims)}"
                    + (" (batch dim excluded, max_batch_size > 0)" if batching else "")
                    + f", the model file has {list(model_dims)}",
                )
        if kind == "input":
            listed = {t.name for t in tensors} | generated
            missing = [s.name for s in specs if s.name not in listed]
            if missing:
                raise ModelConfigError(
                    model,
                    "input",
                    f"the model file needs input(s) {missing} that config.pbtxt does not list",
                )
