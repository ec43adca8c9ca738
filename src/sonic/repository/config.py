"""``config.pbtxt``: parse, convert to Triton's JSON form, and check for consistency.

The config is Triton's own ``inference.ModelConfig`` message (from
``tritonclient``), parsed with protobuf ``text_format`` so that every field
Triton knows parses here too and an unknown one is an error with its line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import ModelConfigError

ModelConfig = mc.ModelConfig
CONFIG_FILE = "config.pbtxt"

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def parse_config(text: str, model: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text; a syntax error names the model and the line."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except (text_format.ParseError, ValueError) as err:
        # protobuf raises a bare ValueError for some inputs (a number out of range after a
        # long digit run); both are syntax errors of the file.
        raise ModelConfigError(model, CONFIG_FILE, str(err)) from None
    return config


def load_config(model_dir: Path, *, required: bool) -> mc.ModelConfig:
    """Read ``<model_dir>/config.pbtxt``; absent is an error only when ``required``."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        if required:
            raise ModelConfigError(
                model_dir.name,
                CONFIG_FILE,
                f"{path} is missing, and --strict-model-config forbids auto-completion",
            )
        return mc.ModelConfig(name=model_dir.name)
    return parse_config(path.read_text(), model_dir.name)


def save_config(config: mc.ModelConfig, model_dir: Path) -> None:
    """Write ``config.pbtxt`` in protobuf text format, as Triton and CMSSW's tools write it."""
    (model_dir / CONFIG_FILE).write_text(text_format.MessageToString(config))


def config_from_json(text: str, model: str) -> mc.ModelConfig:
    """A config given as JSON (the ``config`` parameter of a load request)."""
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
    except (json_format.ParseError, json.JSONDecodeError) as err:
        raise ModelConfigError(model, "config", f"invalid JSON model config: {err}") from None
    return config


def _repeated(fd: FieldDescriptor) -> bool:
    # protobuf 6 deprecates ``label`` in favour of ``is_repeated``.
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return fd.label == FieldDescriptor.LABEL_REPEATED  # pragma: no cover - protobuf < 6


def _fix_int64(message: Any, data: dict[str, Any]) -> None:
    """protobuf's JSON writes int64 as strings; Triton writes numbers. Undo it."""
    for fd in message.DESCRIPTOR.fields:
        key = fd.name
        if key not in data:
            continue
        value = data[key]
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                vfd = fd.message_type.fields_by_name["value"]
                for k, v in value.items():
                    if vfd.message_type is not None:
                        _fix_int64(getattr(message, key)[k], v)
                    elif vfd.type in _INT64_TYPES:
                        value[k] = int(v)
            elif _repeated(fd):
                for sub, d in zip(getattr(message, key), value, strict=False):
                    _fix_int64(sub, d)
            else:
                _fix_int64(getattr(message, key), value)
        elif fd.type in _INT64_TYPES:
            data[key] = [int(v) for v in value] if isinstance(value, list) else int(value)


def config_to_dict(config: mc.ModelConfig) -> dict[str, Any]:
    """The JSON object Triton's HTTP ``/config`` endpoint returns."""
    data = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    _fix_int64(config, data)
    return data


def scheduler_kind(config: mc.ModelConfig) -> str | None:
    """``dynamic_batching``, ``sequence_batching``, ``ensemble_scheduling`` or None."""
    return config.WhichOneof("scheduling_choice")


def check_structure(config: mc.ModelConfig, model: str) -> None:
    """Checks that need no model file: names, dims, batching bounds."""
    if config.name and config.name != model:
        raise ModelConfigError(
            model, "name", f"'{config.name}' differs from the directory name '{model}'"
        )
    if config.max_batch_size < 0:
        raise ModelConfigError(
            model, "max_batch_size", f"must be >= 0, got {config.max_batch_size}"
        )
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for t in tensors:
            if not t.name:
                raise ModelConfigError(model, kind, "every tensor needs a name")
            if t.name in seen:
                raise ModelConfigError(model, f"{kind}[{t.name}]", "is listed twice")
            seen.add(t.name)
            if t.data_type == mc.TYPE_INVALID:
                raise ModelConfigError(model, f"{kind}[{t.name}].data_type", "is not set")
            dims = list(t.dims)
            if any(d < -1 or d == 0 for d in dims):
                raise ModelConfigError(
                    model, f"{kind}[{t.name}].dims", f"{dims}: each dim must be -1 or > 0"
                )
    if scheduler_kind(config) == "dynamic_batching":
        db = config.dynamic_batching
        for size in db.preferred_batch_size:
            if size < 1 or (config.max_batch_size > 0 and size > config.max_batch_size):
                raise ModelConfigError(
                    model,
                    "dynamic_batching.preferred_batch_size",
                    f"{size} must be between 1 and max_batch_size {config.max_batch_size}",
                )
        if db.priority_levels and db.default_priority_level > db.priority_levels:
            raise ModelConfigError(
                model,
                "dynamic_batching.default_priority_level",
                f"{db.default_priority_level} exceeds priority_levels {db.priority_levels}",
            )
    for group in config.instance_group:
        if group.count < 0:
            raise ModelConfigError(
                model, f"instance_group[{group.name}].count", f"must be >= 1, got {group.count}"
            )
