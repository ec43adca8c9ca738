"""Limits on HTTP connections before a request reaches the application.

uvicorn's httptools parser buffers headers of any size and waits for them
forever, and every open connection holds a file descriptor: a 160 MB header
stalled the loop for seconds, and a thousand connections that never finished
their headers used up the process's descriptors, shutting out gRPC as well.
:func:`guarded_protocol` gives uvicorn a protocol class that

- answers 431 once a request's line and headers pass ``--http-max-header-size``
  (counted as bytes arrive, up to the blank line that ends them, so the body
  does not count);
- answers 408 and closes a connection whose request headers are not complete
  ``--http-header-timeout-ms`` after it opened or after the request began;
- keeps at most ``--http-max-connections`` connections per port: a new
  connection over the budget takes the place of the oldest one that is still
  waiting for its headers (a slow client, or an idle keep-alive one); when
  every connection is busy with a request, the new one gets 503 and is closed.

All of this happens before authentication, so it holds for callers without
credentials too.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Descriptors kept back from the HTTP budget for gRPC, metrics, models and files.
RESERVED_FDS = 256


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """Half of what the open-file limit leaves after RESERVED_FDS (at least 16)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, (soft - RESERVED_FDS) // 2)


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of this module (set by guarded_protocol)."""

    max_header_bytes = 64 << 10
    header_timeout_s = 10.0
    max_connections = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._tail = b""  # the last bytes seen, for a blank line split between two reads

    # -- the connection budget ---------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._evict_one():
            self._refuse(503, "Service Unavailable", f"this server keeps at most "
                         f"{self.max_connections} HTTP connections and all are busy "
                         "(--http-max-connections)")  # fmt: skip
            return
        self._await_headers()

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for its headers; False if none is."""
        waiting = [c for c in self.connections
                   if isinstance(c, GuardedProtocol) and c is not self
                   and c._waiting_since is not None and not c.transport.is_closing()]  # fmt: skip
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since or 0.0).transport.close()
        return True

    # -- header size and time ---------------------------------------------------
    def _await_headers(self) -> None:
        self._waiting_since = time.monotonic()
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _headers_done(self) -> None:
        self._waiting_since = None
        self._header_bytes = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._waiting_since is not None and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", f"the request headers did not arrive within "
                         f"{self.header_timeout_s:g} s (--http-header-timeout-ms)")  # fmt: skip

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._refused = True
        self.transport.write(_response(status, reason, message))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # Idle keep-alive: uvicorn's keep-alive timeout closes it; over the budget it is
            # the first to go.
            self._waiting_since = time.monotonic()

    def data_received(self, data: bytes) -> None:
        """Count what arrives until the headers' blank line, before the parser sees it (the
        parser keeps a header's value whole until it ends, however long)."""
        if self._refused:
            return
        if self._waiting_since is not None:
            end = (self._tail + data).find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(end + 4 - len(self._tail), 0)
            self._tail = data[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request line and headers exceed {self.max_header_bytes} "
                             "bytes (--http-max-header-size)")  # fmt: skip
                return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)


def guarded_protocol(max_header_bytes: int, header_timeout_s: float,
                     max_connections: int) -> type[GuardedProtocol]:  # fmt: skip
    """A GuardedProtocol class with these limits (``max_connections`` 0: the default)."""
    return type("GuardedProtocol", (GuardedProtocol,), {
        "max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s,
        "max_connections": max_connections or default_max_connections()})  # fmt: skip
