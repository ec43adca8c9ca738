"""Merge requests into one model batch and split the outputs back, exactly.

Rows of different requests are concatenated along the batch dimension in
queue order and every output is sliced back by the same offsets, so a
request only ever sees its own rows.  Inputs marked ``allow_ragged_batch``
are flattened and concatenated into one 1-D tensor, as Triton's ONNX Runtime
backend does, and the config's ``batch_input`` entries (element counts,
accumulated counts, item shapes) are generated so the model can find each
request's slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.errors import Internal
from sonic.protocol.datatypes import from_config_type, to_numpy_dtype

BatchInputKind = mc.BatchInput.Kind


@dataclass(frozen=True, slots=True)
class BatchInputSpec:
    kind: int
    target: str
    datatype: str
    sources: tuple[str, ...]


def batch_input_specs(config: mc.ModelConfig) -> list[BatchInputSpec]:
    return [
        BatchInputSpec(
            kind=b.kind,
            target=b.target_name[0] if b.target_name else "",
            datatype=from_config_type(mc.DataType.Name(b.data_type)),
            sources=tuple(b.source_input),
        )
        for b in config.batch_input
    ]


@dataclass(slots=True)
class BatchLayout:
    """How one batch was built: rows per request, for splitting outputs."""

    rows: list[int]


def _batch_input(spec: BatchInputSpec, parts: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    dtype = to_numpy_dtype(spec.datatype)
    source = spec.sources[0] if spec.sources else ""
    counts = np.array([p[source].size for p in parts], dtype=np.int64)
    if spec.kind == BatchInputKind.BATCH_ELEMENT_COUNT:
        return counts.astype(dtype)
    if spec.kind == BatchInputKind.BATCH_ACCUMULATED_ELEMENT_COUNT:
        return np.cumsum(counts).astype(dtype)
    if spec.kind == BatchInputKind.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO:
        return np.concatenate([[0], np.cumsum(counts)]).astype(dtype)
    if spec.kind == BatchInputKind.BATCH_MAX_ELEMENT_COUNT_AS_SHAPE:
        return np.zeros(int(counts.max(initial=0)), dtype=dtype)
    shapes = np.array([p[source].shape[1:] for p in parts], dtype=np.int64)
    if spec.kind == BatchInputKind.BATCH_ITEM_SHAPE:
        return shapes.astype(dtype)
    if spec.kind == BatchInputKind.BATCH_ITEM_SHAPE_FLATTEN:
        return shapes.reshape(-1).astype(dtype)
    raise Internal(f"batch_input kind {spec.kind} is not supported")  # pragma: no cover


def merge(
    parts: Sequence[dict[str, np.ndarray]],
    ragged: frozenset[str],
    batch_inputs: Sequence[BatchInputSpec],
    model_ranks: dict[str, int],
) -> dict[str, np.ndarray]:
    """One feed dict for the whole batch (a single request passes through unchanged)."""
    merged: dict[str, np.ndarray] = {}
    for name in parts[0]:
        if name in ragged:
            merged[name] = np.concatenate([p[name].reshape(-1) for p in parts])
        elif len(parts) == 1:
            merged[name] = parts[0][name]
        else:
            merged[name] = np.concatenate([p[name] for p in parts])
    for spec in batch_inputs:
        value = _batch_input(spec, parts)
        rank = model_ranks.get(spec.target, value.ndim)
        if rank == 2 and value.ndim == 1:
            value = value.reshape(-1, 1)
        merged[spec.target] = value
    return merged


def split(
    outputs: dict[str, np.ndarray], rows: Sequence[int], wanted: Sequence[Sequence[str]]
) -> list[dict[str, np.ndarray]]:
    """Slice each output by request rows; every request gets only what it asked for."""
    total = sum(rows)
    if len(rows) == 1:
        return [{n: outputs[n] for n in wanted[0]}]
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise Internal(
                f"output '{name}' has shape {list(array.shape)}, but the batch has {total} rows: "
                "the model does not keep the batch dimension, so requests cannot share a batch"
            )
    result: list[dict[str, np.ndarray]] = []
    offset = 0
    for n, names in zip(rows, wanted, strict=True):
        result.append({name: outputs[name][offset : offset + n] for name in names})
        offset += n
    return result
