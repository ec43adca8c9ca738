"""The native gRPC transport (``sonic serve --grpc-transport native``, the default when built).

grpc++ (``native/grpc_transport``, built into ``sonic.server.frontends._grpc_native``) accepts
every method of ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health`` as
bytes on one completion-queue thread and queues each call's events; an eventfd on
the asyncio loop wakes :class:`NativeSide`, which drains them in bulk and runs
them through :class:`sonic.server.frontends.grpc_frames.ServerSide`, the same code that
serves the relay's front-end processes (decoding with tritonclient's protos,
credentials, the servicers, the data plane).  Each answer is handed back as soon as it is
encoded, and grpc++'s completion-queue thread writes it, so that grpc's write work leaves the
Python thread.
With ``--grpc-transport python`` the server uses ``grpc.aio`` instead
(:mod:`sonic.server.frontends.grpc_servicers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import grpc

from sonic.server.dataplane import DataPlane
from sonic.server.frontends.auth import Authenticator
from sonic.server.frontends.grpc_frames import (
    CALL,
    ERROR,
    META,
    NO_METADATA,
    CallContext,
    Dispatch,
    ServerSide,
    relay_methods,
)
from sonic.server.frontends.grpc_servicers import method_categories, refused_unread, servicers
from sonic.server.settings import GRPC_EXPERIMENTS, TlsSettings

log = logging.getLogger("sonic.server.grpc")

def native_module() -> Any:
    """The compiled transport, or ImportError saying how to build it."""
    try:
        from sonic.server.frontends import _grpc_native
    except ImportError as err:
        raise ImportError(
            "the native gRPC transport is not built: run 'make setup' (or "
            "scripts/build_native.sh, which needs Debian's libgrpc++-dev), or start with "
            f"--grpc-transport python ({err})"
        ) from err
    return _grpc_native


def default_transport() -> str:
    """``native`` where the extension is importable, else ``python``."""
    try:
        native_module()
    except ImportError:
        return "python"
    return "native"


#: With credentials on, the transport sends each call's metadata first (META) and reads its
#: message only after GO: a call without valid credentials is refused unread.
GO = 10


class NativeSide(ServerSide):
    """Frames from the native transport in, in bulk; answers out, each as soon as it exists."""

    def __init__(self, dispatch: Dispatch, server: Any, auth: Authenticator) -> None:
        super().__init__(dispatch)
        self.server = server
        self.auth = auth
        self.categories = method_categories()
        self.paths = [f"/{m.service}/{m.name}" for m in dispatch.methods]

    def pump(self) -> None:
        """The eventfd is readable: take every event the transport has queued."""
        infer, infers = self.hub.infer_index, []
        for kind, call, method, body, metadata, peer, arrived in self.server.drain():
            if kind == CALL and method == infer:
                # Taken together, after the events before them (start_infers).
                infers.append((call, body, self.metadata.pop(call, NO_METADATA), arrived))
                continue
            if infers:
                self.start_infers(infers)
                infers = []
            if kind == META:
                self.metadata[call] = CallContext(tuple(metadata), peer)
                self._admit(call, method, metadata, peer)
            else:
                self.frame(kind, call, method, body)
        if infers:
            self.start_infers(infers)

    def _admit(self, call: int, method: int, metadata: list[tuple[str, str]], peer: str) -> None:
        """GO for a call whose credentials verify (or that needs none), else UNAUTHENTICATED
        before its message is read (as CredentialsFirst does for grpc.aio)."""
        path = self.paths[method]
        why = refused_unread(self.auth, self.categories.get(path), metadata)
        if why is None:
            self.send(GO, call)
            return
        self.metadata.pop(call, None)
        self.auth.refused(path, peer, why)
        self.send(ERROR, call, grpc.StatusCode.UNAUTHENTICATED.value[0], why.encode())

    def send(self, kind: int, call: int, arg: int = 0, body: bytes = b"") -> None:
        """Hand one answer to grpc++ now.  Answers used to be gathered and handed back together
        by a callback the loop ran next (``call_soon``), but uvloop runs that callback only
        after its next poll, so every answer waited behind the next hand-over's decoding and
        queueing: 200-350 us per request.  Handing each back at once, one crossing each, gave
        1.20-1.35x the throughput at batch 64 concurrency 4 and 1.14-1.44x at batch 1
        concurrency 8 (perf_analyzer, alternating, 2026-12-03)."""
        self.server.send([(kind, call, arg, body)])


class NativeGrpcServer:
    """``sonic serve``'s gRPC port on the native transport."""

    def __init__(self, dataplane: DataPlane, auth: Authenticator, address: str,
                 options: list[tuple[str, int]], tls: TlsSettings) -> None:  # fmt: skip
        """``options``: grpc channel arguments (grpc_frontend.server_options, shared with the
        grpc.aio servers; grpc++ reads the same ones)."""
        module = native_module()
        methods = relay_methods()
        self.server = module.Server(
            [f"/{m.service}/{m.name}" for m in methods],
            [int(m.client_streaming) + 2 * int(m.server_streaming) for m in methods],
            gated=auth.enabled,
        )
        self.side = NativeSide(Dispatch(servicers(dataplane, auth)), self.server, auth)
        self.address = address
        self.options = options
        self.tls = tls
        self.loop = asyncio.get_running_loop()

    def start(self) -> int:
        """Bind and serve; the bound port, or OSError naming the address."""
        tls: dict[str, Any] = {}
        if self.tls.use_ssl:
            tls = {"use_ssl": True, "mutual": self.tls.mutual,
                   "server_cert": Path(self.tls.server_cert).read_text(),
                   "server_key": Path(self.tls.server_key).read_text(),
                   "root_cert": Path(self.tls.root_cert).read_text()
                   if self.tls.root_cert else ""}  # fmt: skip
        # grpc++ 1.51 reads GRPC_EXPERIMENTS too, and logs an error for the grpcio setting
        # sonic's CLI puts there (sonic.server.settings.GRPC_EXPERIMENTS), which is not for it.
        ours = os.environ.get("GRPC_EXPERIMENTS") == GRPC_EXPERIMENTS
        if ours:
            del os.environ["GRPC_EXPERIMENTS"]
        try:
            port = int(self.server.start(self.address, self.options, tls))
        except RuntimeError as err:
            raise OSError(str(err)) from None
        finally:
            if ours:
                os.environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
        self.loop.add_reader(self.server.fd(), self.side.pump)
        return port

    async def stop(self, grace_s: float) -> None:
        self.loop.remove_reader(self.server.fd())
        await asyncio.to_thread(self.server.stop, grace_s)
        self.side.connection_lost(None)

