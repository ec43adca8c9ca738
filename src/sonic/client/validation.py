"""Inputs checked against the model before anything is sent, and batches cut to its size.

A job learns of a wrong name, datatype or shape from an
:class:`~sonic.client.errors.InputError` naming the input, what it got and
what the model expects, not from a server error after a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sonic.client.calls import ModelInfo
from sonic.client.errors import InputError
from sonic.protocol.datatypes import from_numpy_dtype, to_numpy_dtype
from sonic.protocol.tensors import dims_match


def check_inputs(model: str, info: ModelInfo, inputs: Mapping[str, np.ndarray]) -> int:
    """Check inputs against the model; returns the batch size (rows)."""
    unknown = sorted(set(inputs) - set(info.inputs))
    if unknown:
        raise InputError(f"model '{model}' has no input(s) {unknown}; it has {sorted(info.inputs)}")
    missing = sorted(set(info.inputs) - set(inputs))
    if missing:
        raise InputError(f"model '{model}' needs input(s) {missing}")
    batching = info.max_batch_size > 0
    rows = -1
    for name, array in inputs.items():
        spec = info.inputs[name]
        got = from_numpy_dtype(np.asarray(array).dtype)
        if got != spec.datatype:
            raise InputError(
                f"input '{name}' of model '{model}' must be {spec.datatype}, got {got}")
        shape = tuple(np.shape(array))
        if not dims_match(shape[1:] if batching else shape, spec.dims):
            expected = ([-1] if batching else []) + list(spec.dims)
            raise InputError(f"input '{name}' of model '{model}' has shape {list(shape)}, "
                             f"expected {expected}")  # fmt: skip
        if batching:
            if rows not in (-1, shape[0]):
                raise InputError(f"inputs of model '{model}' disagree on the batch size "
                                 f"({rows} and {shape[0]} for '{name}')")  # fmt: skip
            rows = shape[0]
    return rows if batching else 1


def empty_outputs(info: ModelInfo, outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
    """The answer to a batch of 0 rows, given without a call (CMSSW and coffea make none):
    each output with 0 rows, its dtype, and 0 for a variable dim."""
    return {n: np.empty((0, *(max(d, 0) for d in info.output_specs[n].dims)),
                        dtype=to_numpy_dtype(info.output_specs[n].datatype))
            for n in outputs or info.outputs}  # fmt: skip


def chunks(inputs: Mapping[str, np.ndarray], rows: int,
           max_batch_size: int) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """A batch larger than ``max_batch_size`` as several requests: split, never padded."""
    if max_batch_size <= 0 or rows <= max_batch_size:
        return [dict(inputs)]
    return [{k: np.asarray(v)[i : i + max_batch_size] for k, v in inputs.items()}
            for i in range(0, rows, max_batch_size)]  # fmt: skip
