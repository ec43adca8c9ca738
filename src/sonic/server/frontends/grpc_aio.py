"""The Python gRPC transport (``--grpc-transport python``): a ``grpc.aio`` server.

It registers the servicers of :mod:`~sonic.server.frontends.grpc_servicers` on
grpcio's asyncio server; the channel arguments (:func:`server_options`) and the
credentials check before a message is read (:class:`CredentialsFirst`) are
shared with the native transport and the relay front ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sonic.server.dataplane import DataPlane
from sonic.server.frontends.auth import Authenticator
from sonic.server.frontends.grpc_servicers import (
    HEALTH_SERVICE,
    INFERENCE_SERVICE,
    method_categories,
    peer,
    refused_unread,
    servicers,
)
from sonic.server.settings import AuthSettings, KeepaliveSettings, TlsSettings


class CredentialsFirst(grpc.aio.ServerInterceptor):
    """Refuse a call without valid credentials before its message is read.

    grpc reads a unary call's whole message before its handler runs, so without
    this a 200 MiB request with no token was buffered (and parsed) before being
    refused.  A refused call gets a handler that takes the request as a stream
    it never reads, and answers UNAUTHENTICATED; the handlers check the caller's
    role again in full (:func:`_rpc`), which costs a dictionary lookup for a
    token seen here.  Installed only when authentication is on; also used by
    the relay's front-end processes (:mod:`sonic.server.relay.frontend`).
    """

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.categories = method_categories()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        why = refused_unread(self.auth, self.categories.get(details.method),
                             details.invocation_metadata)  # fmt: skip
        if why is not None:
            return self._refusal(details.method, why)
        return await continuation(details)

    def _refusal(self, method: str, message: str) -> grpc.RpcMethodHandler:
        auth = self.auth

        async def refuse(requests: Any, context: Any) -> Any:
            auth.refused(method, peer(context), message)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def refuse_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            await refuse(requests, context)
            yield  # pragma: no cover - abort raises

        if method.endswith(("/ModelStreamInfer", "/Watch")):
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.stream_unary_rpc_method_handler(refuse)


def _credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    pair = (Path(tls.server_key).read_bytes(), Path(tls.server_cert).read_bytes())
    root = Path(tls.root_cert).read_bytes() if tls.root_cert else None
    return grpc.ssl_server_credentials([pair], root_certificates=root,
                                       require_client_auth=tls.mutual)  # fmt: skip


#: HTTP/2 receive window (per stream and per connection) the server announces when grpc's
#: bandwidth-delay-product probing is off (``--grpc-http2-bdp-probe=false``, the default).  BDP
#: probing sends a PING when data arrives and handles its ACK, which for a client sending one
#: request after another means ping traffic with every request (benchmarks/grpc_flow_control.py
#: measures the difference); a fixed 16 MiB window, per stream and per connection, is what keeps
#: large tensors flowing over a long round trip (HTTP/2's default is 64 KiB).
STATIC_WINDOW_BYTES = 16 << 20


def server_options(
    max_message_bytes: int = 1 << 28, reuse_port: bool = False, bdp_probe: bool = False,
    keepalive: KeepaliveSettings | None = None,
) -> list[tuple[str, int]]:
    """grpc channel arguments of every gRPC server: in-process grpc.aio, the relay front ends
    and the native transport (grpc++ reads the same arguments)."""
    options: list[tuple[str, int]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.http2.bdp_probe", 1 if bdp_probe else 0),
        *(keepalive or KeepaliveSettings()).channel_args(),
    ]
    if not bdp_probe:  # a static window instead (STATIC_WINDOW_BYTES says why)
        options.append(("grpc.http2.lookahead_bytes", STATIC_WINDOW_BYTES))
    return options


def bind(server: grpc.aio.Server, address: str, tls: TlsSettings | None = None) -> int:
    """Add the listening port (TLS when configured); the bound port, or OSError."""
    if tls is not None and tls.use_ssl:
        port = server.add_secure_port(address, _credentials(tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    return port


def build_server(
    dataplane: DataPlane,
    address: str,
    *,
    max_message_bytes: int = 1 << 28,
    reuse_port: bool = False,
    tls: TlsSettings | None = None,
    auth: Authenticator | None = None,
    bdp_probe: bool = False,
    keepalive: KeepaliveSettings | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A ``grpc.aio`` server bound to ``address`` (``host:port``); returns it and its port.

    Messages over ``max_message_bytes`` are refused by grpc itself with
    RESOURCE_EXHAUSTED before they are read into memory.
    """
    auth = auth or Authenticator(AuthSettings())
    server = grpc.aio.server(options=server_options(max_message_bytes, reuse_port, bdp_probe,
                                                    keepalive),
                             interceptors=[CredentialsFirst(auth)] if auth.enabled else None)
    services = servicers(dataplane, auth)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(services[INFERENCE_SERVICE], server)
    health_pb2_grpc.add_HealthServicer_to_server(services[HEALTH_SERVICE], server)
    return server, bind(server, address, tls)
