"""Triton datatypes: wire names, config enum names and numpy dtypes.

One table, ``_TABLE``, is the single source; every other mapping is derived
from it so that a datatype can never be known to one direction and not the
other.  BF16 is held as ``ml_dtypes.bfloat16``, the dtype ``tritonclient``
itself uses, and BYTES as numpy ``object`` arrays of ``bytes``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from sonic.errors import InvalidArgument

# wire name, config enum name, numpy dtype (None for BYTES: variable size)
_TABLE: list[tuple[str, str, np.dtype | None]] = [
    ("BOOL", "TYPE_BOOL", np.dtype(np.bool_)),
    ("UINT8", "TYPE_UINT8", np.dtype(np.uint8)),
    ("UINT16", "TYPE_UINT16", np.dtype(np.uint16)),
    ("UINT32", "TYPE_UINT32", np.dtype(np.uint32)),
    ("UINT64", "TYPE_UINT64", np.dtype(np.uint64)),
    ("INT8", "TYPE_INT8", np.dtype(np.int8)),
    ("INT16", "TYPE_INT16", np.dtype(np.int16)),
    ("INT32", "TYPE_INT32", np.dtype(np.int32)),
    ("INT64", "TYPE_INT64", np.dtype(np.int64)),
    ("FP16", "TYPE_FP16", np.dtype(np.float16)),
    ("FP32", "TYPE_FP32", np.dtype(np.float32)),
    ("FP64", "TYPE_FP64", np.dtype(np.float64)),
    ("BF16", "TYPE_BF16", np.dtype(ml_dtypes.bfloat16)),
    ("BYTES", "TYPE_STRING", None),
]

DATATYPES: tuple[str, ...] = tuple(row[0] for row in _TABLE)
_TO_NUMPY: dict[str, np.dtype | None] = {wire: dt for wire, _, dt in _TABLE}
_FROM_CONFIG: dict[str, str] = {cfg: wire for wire, cfg, _ in _TABLE}
_TO_CONFIG: dict[str, str] = {wire: cfg for wire, cfg, _ in _TABLE}
_FROM_NUMPY: dict[np.dtype, str] = {dt: wire for wire, _, dt in _TABLE if dt is not None}


def check_datatype(datatype: str) -> str:
    """Return ``datatype`` if Triton knows it, else raise a helpful error."""
    if datatype not in _TO_NUMPY:
        raise InvalidArgument(
            f"unknown datatype '{datatype}'; expected one of {', '.join(DATATYPES)}"
        )
    return datatype


def to_numpy_dtype(datatype: str) -> np.dtype:
    """numpy dtype for a wire datatype; BYTES maps to ``object``."""
    dt = _TO_NUMPY.get(check_datatype(datatype))
    return np.dtype(object) if dt is None else dt


def from_numpy_dtype(dtype: np.dtype) -> str:
    """Wire datatype of a numpy dtype; strings and bytes map to BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[dtype]
    except KeyError:
        raise InvalidArgument(f"numpy dtype {dtype} has no Triton datatype") from None


def element_size(datatype: str) -> int | None:
    """Bytes per element, or None for BYTES, whose elements vary in size."""
    dt = _TO_NUMPY.get(check_datatype(datatype))
    return None if dt is None else dt.itemsize


def from_config_type(data_type: str) -> str:
    """``TYPE_FP32`` -> ``FP32`` (``TYPE_STRING`` -> ``BYTES``)."""
    try:
        return _FROM_CONFIG[data_type]
    except KeyError:
        raise InvalidArgument(
            f"unknown data_type '{data_type}'; expected one of {', '.join(_FROM_CONFIG)}"
        ) from None


def to_config_type(datatype: str) -> str:
    """``FP32`` -> ``TYPE_FP32`` (``BYTES`` -> ``TYPE_STRING``)."""
    return _TO_CONFIG[check_datatype(datatype)]
