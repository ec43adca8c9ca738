"""A relay front-end process: serves the gRPC port and passes each call's bytes to the server."""


from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import grpc

from sonic.server.frontends.auth import Authenticator
from sonic.server.frontends.grpc_aio import CredentialsFirst, bind, server_options
from sonic.server.frontends.grpc_frames import (
    CALL,
    CANCEL,
    CODES,
    END,
    ERROR,
    HELLO,
    META,
    MSG,
    OPEN,
    REPLY,
    FrameReader,
    relay_methods,
)
from sonic.server.relay.hub import FrontendSettings
from sonic.server.settings import AuthSettings, KeepaliveSettings, TlsSettings

log = logging.getLogger("sonic.server.relay")


class _Failed(Exception):
    def __init__(self, code: int, details: bytes) -> None:
        super().__init__(code)
        self.code = CODES.get(code, grpc.StatusCode.UNKNOWN)
        self.details = details.decode("utf-8", "replace")


_GONE = _Failed(grpc.StatusCode.UNAVAILABLE.value[0],
                b"the server's data-plane process is gone")  # fmt: skip


class _FrontSide(FrameReader):
    """A front end's connection to the server."""

    def __init__(self, lost: asyncio.Event) -> None:
        super().__init__()
        self.lost = lost
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.streams: dict[int, asyncio.Queue[bytes | _Failed | None]] = {}

    def frame(self, kind: int, call: int, arg: int, body: bytes) -> None:
        if kind == REPLY:
            if (fut := self.waiting.pop(call, None)) is not None and not fut.done():
                fut.set_result(body)
        elif kind == ERROR:
            if (fut := self.waiting.pop(call, None)) is not None:
                if not fut.done():
                    fut.set_exception(_Failed(arg, body))
            elif (queue := self.streams.get(call)) is not None:
                queue.put_nowait(_Failed(arg, body))
        elif kind == MSG:
            if (queue := self.streams.get(call)) is not None:
                queue.put_nowait(body)
        elif kind == END and (queue := self.streams.get(call)) is not None:
            queue.put_nowait(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(_GONE)
        for queue in self.streams.values():
            queue.put_nowait(_GONE)
        self.lost.set()


class Frontend:
    """A ``grpc.aio`` server whose every method forwards bytes over the link."""

    def __init__(self, settings: FrontendSettings, link: _FrontSide) -> None:
        self.settings = settings
        self.link = link
        self._ids = itertools.count(1)
        self.loop = asyncio.get_running_loop()

    def _open(self, kind: int, index: int, context: Any, body: bytes = b"") -> int:
        call = next(self._ids)
        if self.settings.forward_metadata:
            pairs = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
            meta = {"metadata": pairs, "peer": context.peer()}
            self.link.send(META, call, 0, json.dumps(meta).encode())
        self.link.send(kind, call, index, body)
        return call

    def unary(self, index: int) -> Callable[[bytes, Any], Any]:
        async def handle(request: bytes, context: Any) -> bytes:
            if self.link.transport is None:
                await context.abort(_GONE.code, _GONE.details)
            fut = self.loop.create_future()
            call = self._open(CALL, index, context, request)
            self.link.waiting[call] = fut
            try:
                return await fut
            except _Failed as err:
                await context.abort(err.code, err.details)
                raise  # unreachable: abort raises
            except asyncio.CancelledError:
                self.link.waiting.pop(call, None)
                self.link.send(CANCEL, call, 0)
                raise

        return handle

    def streaming(self, index: int, client_streaming: bool) -> Callable[[Any, Any], Any]:
        async def handle(request: Any, context: Any) -> None:
            if self.link.transport is None:
                await context.abort(_GONE.code, _GONE.details)
            queue: asyncio.Queue[bytes | _Failed | None] = asyncio.Queue()
            call = self._open(OPEN, index, context)
            self.link.streams[call] = queue
            finished = False

            async def pump() -> None:
                if client_streaming:
                    while (msg := await context.read()) is not grpc.aio.EOF:
                        self.link.send(MSG, call, 0, msg)
                else:
                    self.link.send(MSG, call, 0, request)
                self.link.send(END, call)

            pumping = asyncio.create_task(pump())
            try:
                while (item := await queue.get()) is not None:
                    if isinstance(item, _Failed):
                        finished = True
                        await context.abort(item.code, item.details)
                    await context.write(item)
                finished = True
            finally:
                pumping.cancel()
                self.link.streams.pop(call, None)
                if not finished:
                    self.link.send(CANCEL, call, 0)

        return handle

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for i, m in enumerate(relay_methods()):
            if m.client_streaming:
                handler = grpc.stream_stream_rpc_method_handler(self.streaming(i, True))
            elif m.server_streaming:
                handler = grpc.unary_stream_rpc_method_handler(self.streaming(i, False))
            else:
                handler = grpc.unary_unary_rpc_method_handler(self.unary(i))
            by_service.setdefault(m.service, {})[m.name] = handler
        return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]


async def run_frontend(settings: FrontendSettings) -> int:
    loop = asyncio.get_running_loop()
    lost = asyncio.Event()
    _, link = await loop.create_unix_connection(lambda: _FrontSide(lost), settings.socket)
    front = Frontend(settings, link)
    auth = Authenticator(AuthSettings(**settings.auth))
    server = grpc.aio.server(options=server_options(
        settings.max_message_bytes, settings.reuse_port, settings.bdp_probe,
        KeepaliveSettings(**settings.keepalive)),
        interceptors=[CredentialsFirst(auth)] if auth.enabled else None)  # fmt: skip
    server.add_generic_rpc_handlers(front.handlers())
    port = bind(server, settings.address, TlsSettings(**settings.tls))
    await server.start()
    link.send(HELLO, 0, 0, json.dumps({"port": port, "pid": os.getpid()}).encode())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the server drains first, then stops us (SIGTERM).
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    await server.stop(grace=1.0)
    if lost.is_set() and not stop.is_set():
        log.error("gRPC front end %d: the server process closed the relay; exiting", os.getpid())
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = FrontendSettings(**json.loads(args[0]))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")  # fmt: skip
    try:
        import uvloop

        return uvloop.run(run_frontend(settings))
    except (OSError, RuntimeError) as err:  # grpc reports a port it cannot bind as RuntimeError
        log.error("gRPC front end: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
