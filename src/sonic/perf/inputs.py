"""Request inputs for a load test, from the model's metadata: zero, random, or a JSON file.

As ``perf_analyzer --input-data``: ``zero`` and ``random`` fill each input of
the model's shape (``--shape NAME:d1,d2`` fixes variable dimensions, without
the batch dimension); a JSON file gives one or more steps of real data in
perf_analyzer's format, ``{"data": [{"INPUT0": [...] | {"content": [...],
"shape": [...]} | {"b64": "..."}}, ...]}``, and requests cycle through them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonic.protocol.datatypes import to_numpy_dtype


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # without the batch dimension; -1 where variable


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def parse_shapes(values: tuple[str, ...] | list[str]) -> dict[str, tuple[int, ...]]:
    """``NAME:d1,d2`` strings (perf_analyzer's ``--shape``) as a dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise ValueError(
                f"--shape must look like NAME:d1,d2 (e.g. INPUT0:1,16), not {v!r}"
            ) from None
    return shapes


def _concrete(spec: TensorSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    if spec.name in shapes:
        return shapes[spec.name]
    if any(d < 0 for d in spec.shape):
        raise ValueError(
            f"input '{spec.name}' has variable dimensions {list(spec.shape)}; give them with "
            f"--shape {spec.name}:{','.join('1' if d < 0 else str(d) for d in spec.shape)}"
        )
    return spec.shape


def _fill(spec: TensorSpec, shape: tuple[int, ...], kind: str,
          rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    if spec.datatype == "BYTES":
        n = int(np.prod(shape, dtype=np.int64))
        words = [b"" if kind == "zero" else rng.bytes(8).hex().encode() for _ in range(n)]
        return np.array(words, dtype=object).reshape(shape)
    dtype = to_numpy_dtype(spec.datatype)
    if kind == "zero":
        return np.zeros(shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _from_json(value: Any, spec: TensorSpec, shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    dtype = object if spec.datatype == "BYTES" else to_numpy_dtype(spec.datatype)
    shape: tuple[int, ...] | None = None
    if isinstance(value, dict):
        if "shape" in value:
            shape = tuple(value["shape"])
        if "b64" in value:
            raw = base64.b64decode(value["b64"])
            return np.frombuffer(raw, dtype=dtype).reshape(shape or _concrete(spec, shapes))
        value = value.get("content", value)
    if spec.datatype == "BYTES":
        array = np.array([v.encode() if isinstance(v, str) else v for v in np.ravel(value)],
                         dtype=object)  # fmt: skip
    else:
        array = np.asarray(value, dtype=dtype)
    return array.reshape(shape or _concrete(spec, shapes))


def build_inputs(
    model: ModelSpec,
    batch_size: int,
    input_data: str = "random",
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """One dict of arrays per data step, each with the batch dimension when the model batches."""
    shapes = shapes or {}
    if model.max_batch_size == 0 and batch_size != 1:
        raise ValueError(f"model '{model.name}' does not batch (max_batch_size 0); use -b 1")
    if model.max_batch_size and batch_size > model.max_batch_size:
        raise ValueError(f"batch size {batch_size} exceeds model '{model.name}' max_batch_size "
                         f"{model.max_batch_size}")  # fmt: skip
    unknown = set(shapes) - {s.name for s in model.inputs}
    if unknown:
        raise ValueError(f"--shape names unknown input(s) {sorted(unknown)}; model "
                         f"'{model.name}' has {[s.name for s in model.inputs]}")  # fmt: skip
    rng = np.random.default_rng(seed)
    if input_data in ("zero", "random"):
        one = {s.name: _fill(s, _concrete(s, shapes), input_data, rng) for s in model.inputs}
        steps = [one]
    else:
        path = Path(input_data)
        if not path.is_file():
            raise ValueError(f"--input-data must be zero, random or a JSON file; {path} is none")
        doc = json.loads(path.read_text())
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not data:
            raise ValueError(f"{path}: expected {{\"data\": [{{<input>: values}}, ...]}}")
        steps = []
        for i, step in enumerate(data):
            missing = [s.name for s in model.inputs if s.name not in step]
            if missing:
                raise ValueError(f"{path}: data[{i}] lacks input(s) {missing}")
            steps.append({s.name: _from_json(step[s.name], s, shapes) for s in model.inputs})
    if model.max_batch_size == 0:
        return steps
    return [{k: np.repeat(v[None], batch_size, axis=0) for k, v in s.items()} for s in steps]
