"""gRPC front-end processes that relay raw messages to the data plane (``--grpc-frontends N``).

Why: in one process the event-loop thread does everything, and at concurrency
a third to a half of its time goes to ``grpc.aio``'s own per-call work (py-spy:
55% at concurrency 8), while the node's other core idles.  With
``--grpc-frontends N`` the server process keeps the data plane (decoding,
batching, models, statistics, HTTP, metrics, model control) and N child
processes serve the gRPC port (``SO_REUSEPORT`` when N > 1).  A front end never
parses a message: it hands the request's bytes and the method's number to the
server over a private Unix socket and returns the bytes that come back, so the
two halves of each request's CPU run on two cores
(``benchmarks/server_vs_triton.py`` measures the effect; the README has it).
Only the server process busy-polls (``--busy-poll-us``): with the front ends
polling as well, two spinning loops took the client's core on the two-core VM
(ad hoc, concurrency 1: 1130-1300 instead of 1640 requests/s).

Every method of ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``
is relayed, streams included; the server calls the same servicer objects as
the in-process gRPC server (:func:`sonic.server.grpc_frontend.servicers`), so
errors, status codes and messages are identical.  A client's cancellation
cancels the call in the server.  A front end that dies is restarted; a front end
whose server is gone fails its calls with UNAVAILABLE and exits.

The frames and the server's side of them are in :mod:`sonic.server.grpc_frames`,
shared with the native transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from sonic.server.auth import Authenticator
from sonic.server.grpc_frames import (
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
    Dispatch,
    FrameReader,
    ServerSide,
    relay_methods,
)
from sonic.server.grpc_frontend import CredentialsFirst, bind, server_options
from sonic.server.settings import AuthSettings, KeepaliveSettings, TlsSettings

log = logging.getLogger("sonic.server.relay")

RELAY_PREFIX = "sonic-relay-"


def _remove_stale_relays() -> None:
    """Remove this user's relay directories whose server process is gone (killed, so it could
    not remove its own)."""
    for path in Path(tempfile.gettempdir()).glob(f"{RELAY_PREFIX}*-*"):
        pid = path.name[len(RELAY_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (path / "relay.sock").unlink(missing_ok=True)
                path.rmdir()
        except OSError:
            continue


class RelayHub(Dispatch):
    """The server's end: a Unix socket that front ends connect to, calling ``services``."""

    def __init__(self, services: dict[str, Any]) -> None:
        super().__init__(services)
        self.hellos: asyncio.Queue[dict[str, int]] = asyncio.Queue()
        _remove_stale_relays()
        # Mode 0700: this user only.  The pid in the name lets a later server remove the
        # directory of one that was killed before it could (see _remove_stale_relays).
        self._dir = Path(tempfile.mkdtemp(prefix=f"{RELAY_PREFIX}{os.getpid()}-"))
        self.path = self._dir / "relay.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await self.loop.create_unix_server(lambda: ServerSide(self),
                                                          str(self.path))  # fmt: skip

    def hello(self, info: dict[str, int]) -> None:
        self.hellos.put_nowait(info)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._dir.rmdir()


@dataclass(frozen=True)
class FrontendSettings:
    """What a front-end process needs, passed to it as JSON on its command line."""

    socket: str
    address: str
    max_message_bytes: int
    reuse_port: bool
    bdp_probe: bool
    forward_metadata: bool
    tls: dict[str, Any]
    #: The server's AuthSettings: a front end refuses calls without valid credentials before
    #: reading their messages (CredentialsFirst); the server then checks each call in full.
    auth: dict[str, Any]
    keepalive: dict[str, Any]


class Frontends:
    """Starts the front-end processes, restarts one that dies, and stops them."""

    def __init__(self, hub: RelayHub, settings: FrontendSettings, count: int) -> None:
        self.hub = hub
        self.settings = settings
        self.count = count
        self.procs: list[asyncio.subprocess.Process] = []
        self.port = 0
        self._watch: asyncio.Task[None] | None = None

    async def _spawn(self, settings: FrontendSettings) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sonic.server.grpc_relay", json.dumps(asdict(settings))
        )

    async def _started(self, proc: asyncio.subprocess.Process, timeout_s: float = 60) -> int:
        hello = asyncio.ensure_future(self.hub.hellos.get())
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait({hello, exited}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if hello not in done:
            hello.cancel()
            exited.cancel()
            if proc.returncode is None:
                proc.kill()
            raise OSError(f"gRPC front end {proc.pid} did not start (exit status "
                          f"{proc.returncode}; its log is above)")  # fmt: skip
        exited.cancel()
        return int(hello.result()["port"])

    async def start(self) -> int:
        """Start all front ends; the bound gRPC port (chosen by the first when 0)."""
        first = await self._spawn(self.settings)
        self.procs.append(first)
        self.port = await self._started(first)
        host = self.settings.address.rsplit(":", 1)[0]
        self.settings = replace(self.settings, address=f"{host}:{self.port}")
        for _ in range(self.count - 1):
            proc = await self._spawn(self.settings)
            self.procs.append(proc)
            await self._started(proc)
        self._watch = asyncio.create_task(self._restart_dead())
        return self.port

    async def _restart_dead(self) -> None:
        exits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self.procs)}
        try:
            while True:
                done, _ = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    i = exits.pop(fut)
                    log.error("gRPC front end %d exited with status %s; restarting it",
                              self.procs[i].pid, self.procs[i].returncode)  # fmt: skip
                    await asyncio.sleep(0.5)
                    self.procs[i] = await self._spawn(self.settings)
                    exits[asyncio.ensure_future(self.procs[i].wait())] = i
                    try:
                        await self._started(self.procs[i])
                    except OSError as err:
                        log.error("%s", err)
        finally:
            for fut in exits:
                fut.cancel()

    async def stop(self) -> None:
        """Stop the front ends (SIGTERM, SIGKILL after 5 s), then close the hub."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.hub.close()


# -- the front-end process ---------------------------------------------------


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
