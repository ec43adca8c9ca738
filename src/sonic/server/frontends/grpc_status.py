"""gRPC status codes for sonic's errors: one table for every gRPC path.

Triton maps its ``TRITONSERVER_ERROR_*`` codes to gRPC statuses the same way;
the servicers (awaited calls) and the frame transports (ModelInfer without a
task) both end calls through :func:`status_of`, so a client sees the same
status and message whichever path served it.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from sonic.errors import SonicError, Status

log = logging.getLogger("sonic.server.grpc")

STATUS_CODES: dict[Status, grpc.StatusCode] = {
    Status.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    Status.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
    Status.CANCELLED: grpc.StatusCode.CANCELLED,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def status_of(err: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and details that end a call with ``err``: a :class:`SonicError`'s own,
    CANCELLED, or INTERNAL (logged: a bug, never the client's fault)."""
    if isinstance(err, SonicError):
        return STATUS_CODES[err.status], err.message
    if isinstance(err, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, f"{method}: the request was cancelled"
    log.error("internal error in %s", method, exc_info=err)
    return grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"
