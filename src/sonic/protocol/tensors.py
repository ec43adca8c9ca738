"""Transport-free inference requests and responses, and raw tensor bytes.

The gRPC and HTTP codecs both decode into :class:`InferRequest` and encode
from :class:`InferResponse`, so the data plane sees one shape of request
whatever the wire.  Raw bytes follow Triton's layout: flattened, row-major,
little-endian; BYTES elements are a 4-byte little-endian length followed by
the bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonic.errors import InvalidArgument, shown
from sonic.protocol.datatypes import element_size, to_numpy_dtype

_LEN = struct.Struct("<I")

#: Most elements one tensor may have (``sonic serve --max-tensor-elements``).  A shape is
#: checked against it before anything is allocated for it, so a request cannot claim more
#: memory than this with a few bytes of header.
_limits = {"max_elements": 1 << 28}


#: Longest model, input or output name: a model name is a directory name (NAME_MAX), and
#: tensor names are as short.  Longer names are refused before any work is done with them.
MAX_NAME_LENGTH = 255


def checked_name(name: str, what: str) -> str:
    """``name``, or INVALID_ARG if it is longer than any name can be."""
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{what} name '{shown(name)}' is longer than the "
                              f"{MAX_NAME_LENGTH} characters a name may have")  # fmt: skip
    return name


def set_max_tensor_elements(n: int) -> None:
    """Set the per-tensor element limit of this process (the server does, once, at start)."""
    if n <= 0:
        raise ValueError("the tensor element limit must be positive")
    _limits["max_elements"] = n


@dataclass(slots=True)
class Tensor:
    """A named tensor with its wire datatype; ``data`` has exactly ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    # None means "every output of the model", as in the protocol.
    outputs: list[RequestedOutput] | None = None


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[Tensor] = field(default_factory=list)


def dims_match(shape: tuple[int, ...] | list[int], dims: tuple[int, ...] | list[int], *,
               either: bool = False) -> bool:  # fmt: skip
    """Triton's shape rule: the same rank, and each size equal or ``-1`` (any) in ``dims``.

    With ``either``, a ``-1`` in ``shape`` matches too: comparing a config with
    a model file, where both sides may leave a dim variable.
    """
    return len(shape) == len(dims) and all(
        e == -1 or d == e or (either and d == -1) for d, e in zip(shape, dims, strict=True)
    )


def element_count(shape: tuple[int, ...] | list[int], name: str) -> int:
    """Number of elements of ``shape``, rejecting negative dims and oversized shapes by name.

    Each dim is checked on its own too: ``[0, 10**30]`` has no elements but no
    array can have that shape.
    """
    limit = _limits["max_elements"]
    for d in shape:
        if d < 0:
            raise InvalidArgument(
                f"input '{name}' has invalid shape {list(shape)}: dims must be >= 0"
            )
        if d > limit:
            raise InvalidArgument(
                f"input '{name}' has shape {list(shape)}: dim {d} is over the limit of {limit} "
                "elements per tensor (--max-tensor-elements)"
            )
    count = math.prod(shape)
    if count > limit:
        raise InvalidArgument(
            f"input '{name}' has shape {list(shape)} with {count} elements, over the limit of "
            f"{limit} per tensor (--max-tensor-elements)"
        )
    return count


def walk_cost(tensors: list[Tensor]) -> int:
    """About how many bytes encoding ``tensors`` walks element by element in Python (BYTES
    tensors; fixed-size ones are copied whole), for the front ends to decide whether to
    encode off the event loop."""
    return sum(8 * t.data.size for t in tensors if t.data.dtype == object)


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> length-prefixed concatenation, row-major."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, bytes | bytearray | memoryview):
            item = str(item).encode("utf-8")
        parts.append(_LEN.pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)


def deserialize_bytes(buf: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Length-prefixed BYTES -> object array of ``count`` elements, checked.

    Each element takes at least its 4-byte length, so a count the buffer cannot hold is
    refused before the array is allocated (a few bytes must not claim gigabytes).
    """
    view = memoryview(buf)
    pos, n = 0, len(view)
    if count * 4 > n:
        raise InvalidArgument(
            f"BYTES input '{name}': {n} bytes cannot hold {count} elements (4-byte length each)"
        )
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > n:
            raise InvalidArgument(f"BYTES input '{name}': data ends after {i} of {count} elements")
        (length,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + length > n:
            raise InvalidArgument(
                f"BYTES input '{name}': element {i} claims {length} bytes, only {n - pos} remain"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != n:
        raise InvalidArgument(
            f"BYTES input '{name}': {n - pos} unexpected bytes after {count} elements"
        )
    return out


def from_raw(
    name: str, datatype: str, shape: tuple[int, ...], buf: bytes | memoryview
) -> np.ndarray:
    """Decode raw tensor bytes into an array of ``shape``, zero-copy when fixed-size."""
    count = element_count(shape, name)
    size = element_size(datatype)
    if size is None:
        return deserialize_bytes(buf, count, name).reshape(shape)
    expected = count * size
    if len(buf) != expected:
        raise InvalidArgument(
            f"unexpected total byte size {len(buf)} for input '{name}', expecting "
            f"{expected} (shape {list(shape)}, datatype {datatype})"
        )
    return np.frombuffer(buf, dtype=to_numpy_dtype(datatype)).reshape(shape)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Encode an array as raw tensor bytes in Triton's layout."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    dtype = to_numpy_dtype(datatype)
    if array.dtype != dtype:
        array = array.astype(dtype)
    return np.ascontiguousarray(array).tobytes()
