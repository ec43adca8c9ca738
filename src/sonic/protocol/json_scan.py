"""Split a large JSON inference header into its small skeleton and its tensor arrays.

Why: a JSON parser builds a Python object for every value and every list, so
the cost of parsing depends on the text, not on the tensors it declares.  64
KiB of gzip inflates to 64 MiB of ``[],[],...``: 21 million lists, 2 GB and
10 s on the event loop, for a request whose tensors might hold one number.
Before anything is parsed, this module walks the bytes with numpy (no Python
object per byte, a fixed amount of memory per chunk) and finds each array that
opens at the depth of an input's fields (``{"inputs": [{"data": [...]}]}``),
counting the lists, commas and string quotes inside it and the nesting depth.
The rest, the skeleton, is small in any request a real client sends, and is
parsed first; each tensor's array is parsed only once its declared shape and
datatype say it may be that large (:mod:`sonic.protocol.http_codec`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonic.errors import InvalidArgument

#: Depth (enclosing containers) at which an input's fields open: top object, "inputs", input.
FIELD_DEPTH = 3
#: Bytes per scanned chunk: bounds the scan's own memory (a few arrays of this many entries).
CHUNK = 1 << 20
#: The skeleton (the header without its tensor arrays) of any real request is far smaller.
MAX_SKELETON_BYTES = 1 << 20
#: Deeper than any tensor inside a request can need (and orjson's own limit is 1024).
MAX_DEPTH = 64
#: More tensor fields (an input's shape or data, or anything else at that depth) than any
#: model has inputs.
MAX_SPANS = 4096

_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))
_STRUCT = np.zeros(256, dtype=np.int8)
_STRUCT[list(_OPEN)] = 1
_STRUCT[list(_CLOSE)] = -1


@dataclass(slots=True)
class Span:
    """One array at FIELD_DEPTH: where it is and what is inside it."""

    start: int
    end: int = 0
    #: Lists, commas and (unescaped) string quotes inside, and how deep the lists nest.
    lists: int = 0
    commas: int = 0
    quotes: int = 0
    depth: int = 0


@dataclass(slots=True)
class Scan:
    spans: list[Span]
    #: Bytes of the header outside the spans.
    skeleton_bytes: int


def _real_quotes(c: np.ndarray, carry_run: int) -> np.ndarray:
    """Positions of the quotes that open or close a string (not preceded by an odd run of
    backslashes; ``carry_run`` backslashes ended the previous chunk)."""
    quotes = np.flatnonzero(c == ord('"'))
    bs = c == ord("\\")
    if not bs.any():
        if carry_run % 2 and quotes.size and quotes[0] == 0:
            return quotes[1:]
        return quotes
    idx = np.arange(c.size)
    last_other = np.maximum.accumulate(np.where(bs, -1, idx))
    prev = quotes - 1
    run = np.where(prev >= 0, prev - last_other[np.maximum(prev, 0)], carry_run)
    run = np.where((prev >= 0) & (last_other[np.maximum(prev, 0)] < 0), prev + 1 + carry_run, run)
    return quotes[run % 2 == 0]


def _count(sorted_pos: np.ndarray, lo: int, hi: int) -> int:
    return int(np.searchsorted(sorted_pos, hi) - np.searchsorted(sorted_pos, lo))


def scan(text: bytes | memoryview) -> Scan:
    """Find the FIELD_DEPTH arrays of ``text``; INVALID_ARG if it nests deeper than MAX_DEPTH,
    has more than MAX_SPANS of them, or is not balanced.  Runs in a fixed amount of memory per
    CHUNK, whatever the text holds."""
    data = np.frombuffer(text, dtype=np.uint8)
    spans: list[Span] = []
    open_span: Span | None = None
    in_string, depth, run = 0, 0, 0
    for base in range(0, data.size, CHUNK):
        c = data[base : base + CHUNK]
        quotes = _real_quotes(c, run)
        # Outside a string: an even number of real quotes before the byte.
        if quotes.size:
            toggles = np.zeros(c.size, dtype=np.int8)
            toggles[quotes] = 1
            outside = ((np.cumsum(toggles, dtype=np.int32) - toggles + in_string) & 1) == 0
        else:
            outside = np.full(c.size, not in_string)
        delta = _STRUCT[c] * outside
        pos = np.flatnonzero(delta)
        steps = delta[pos].astype(np.int32)
        after = depth + np.cumsum(steps, dtype=np.int32)
        if after.size and after.min() < 0:
            raise InvalidArgument("the request JSON closes more brackets than it opens")
        if after.size and after.max() > MAX_DEPTH:
            raise InvalidArgument(f"the request JSON nests deeper than {MAX_DEPTH} levels")
        is_list = c[pos] == ord("[")
        starts = pos[is_list & (after - steps == FIELD_DEPTH)]
        ends = pos[(c[pos] == ord("]")) & (after == FIELD_DEPTH)]
        if len(spans) + starts.size > MAX_SPANS:
            raise InvalidArgument(f"the request JSON has more than {MAX_SPANS} tensor fields")
        list_pos = pos[is_list]
        comma_pos = np.flatnonzero((c == ord(",")) & outside)
        # The spans in this chunk, in order: the one carried over (if any), then each start
        # with the first end after it (spans sit at one depth, so they never nest).
        pieces: list[tuple[Span, int, int | None]] = []  # span, first byte, closing byte
        e = 0
        if open_span is not None:
            pieces.append((open_span, 0, int(ends[0]) if ends.size else None))
            e = 1
        for st in starts:
            while e < ends.size and ends[e] < st:
                e += 1
            spans.append(Span(base + int(st)))
            pieces.append((spans[-1], int(st), int(ends[e]) if e < ends.size else None))
            e += 1
        open_span = None
        for span, lo, close in pieces:
            hi = c.size if close is None else close + 1
            span.lists += _count(list_pos, lo, hi)
            span.commas += _count(comma_pos, lo, hi)
            span.quotes += _count(quotes, lo, hi)
            a, b = np.searchsorted(pos, lo), np.searchsorted(pos, hi)
            if b > a:
                span.depth = max(span.depth, int(after[a:b].max()) - FIELD_DEPTH)
            if close is None:
                open_span = span
            else:
                span.end = base + hi
        nonbs = np.flatnonzero(c[::-1] != ord("\\"))
        run = int(nonbs[0]) if nonbs.size else run + c.size
        in_string = (in_string + quotes.size) & 1
        if after.size:
            depth = int(after[-1])
    if depth != 0 or in_string or open_span is not None:
        raise InvalidArgument("the request JSON ends before its last object or string is closed")
    return Scan(spans, data.size - sum(s.end - s.start for s in spans))
