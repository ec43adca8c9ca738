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

Frames, both directions, on the Unix socket: a :data:`HEADER` (kind, call id,
argument, body length) and the body.  The argument is the method's index in
:func:`relay_methods` for CALL and OPEN, the gRPC status code for ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2 as pb

from sonic.server.auth import Authenticator
from sonic.server.grpc_frontend import CredentialsFirst, bind, server_options
from sonic.server.settings import AuthSettings, TlsSettings

log = logging.getLogger("sonic.server.relay")

#: kind (u8), call id (u64), argument (u16), body length (u32).
HEADER = struct.Struct("<BQHI")

# Front end -> server.
CALL = 1  # a unary request: argument = method, body = the request's bytes
OPEN = 2  # a stream starts: argument = method
META = 3  # the call's metadata (JSON pairs), before CALL/OPEN; sent only where auth needs it
CANCEL = 4  # the client went away
HELLO = 5  # a front end is listening: body = JSON {"port", "pid"}
# Both ways: one message of a stream, and its end (the client's half-close, or the server's
# successful end of the response stream).
MSG = 6
END = 7
# Server -> front end.
REPLY = 8  # a unary call's response
ERROR = 9  # argument = status code, body = the details; ends the call

_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class RelayMethod:
    service: str
    name: str
    request: Any
    client_streaming: bool
    server_streaming: bool


def relay_methods() -> list[RelayMethod]:
    """Every relayed method; both sides number them by their place in this list."""
    methods = []
    for module, service in ((pb, "GRPCInferenceService"), (health_pb2, "Health")):
        desc = module.DESCRIPTOR.services_by_name[service]
        for m in desc.methods:
            methods.append(RelayMethod(desc.full_name, m.name, getattr(module, m.input_type.name),
                                       m.client_streaming, m.server_streaming))  # fmt: skip
    return methods


class _FrameReader(asyncio.Protocol):
    """Cuts the byte stream into frames and hands each to :meth:`frame`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= HEADER.size:
            kind, call, arg, length = HEADER.unpack_from(buf, pos)
            end = pos + HEADER.size + length
            if end > size:
                break
            with memoryview(buf) as view:
                body = bytes(view[pos + HEADER.size : end])
            pos = end
            self.frame(kind, call, arg, body)
        if pos:
            del buf[:pos]

    def send(self, kind: int, call: int, arg: int = 0, body: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines((HEADER.pack(kind, call, arg, len(body)), body))

    def frame(self, kind: int, call: int, arg: int, body: bytes) -> None:
        raise NotImplementedError


# -- the server side ---------------------------------------------------------


class _Abort(grpc.aio.AbortError):
    """What :meth:`CallContext.abort` raises; a subclass of grpc's, so servicers treat it alike."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use."""

    __slots__ = ("_metadata", "_peer")

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), peer: str = "") -> None:
        self._metadata = metadata
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)


_NO_METADATA = CallContext()


class ServerSide(_FrameReader):
    """Calls arriving as frames, in the server process: one front end's connection, or the
    in-process native transport (sonic.server.grpc_native), which delivers the same frames."""

    def __init__(self, hub: Dispatch) -> None:
        super().__init__()
        self.hub = hub
        self.tasks: dict[int, asyncio.Task[None]] = {}
        #: Each open stream's request queue and method (its MSG frames carry no method).
        self.streams: dict[int, tuple[asyncio.Queue[Any], int]] = {}
        self.metadata: dict[int, CallContext] = {}

    def frame(self, kind: int, call: int, arg: int, body: bytes) -> None:
        loop = self.hub.loop
        if kind in (CALL, OPEN):
            if arg >= len(self.hub.handlers):
                self.send(ERROR, call, grpc.StatusCode.UNIMPLEMENTED.value[0],
                          f"unknown method number {arg}".encode())  # fmt: skip
                return
            ctx = self.metadata.pop(call, _NO_METADATA)
            if kind == CALL:
                request = self._decode(call, arg, body)
                if request is not None:
                    self.tasks[call] = loop.create_task(self._unary(call, arg, request, ctx))
            else:
                queue: asyncio.Queue[Any] = asyncio.Queue()
                self.streams[call] = (queue, arg)
                self.tasks[call] = loop.create_task(self._stream(call, arg, queue, ctx))
        elif kind == MSG:
            if (stream := self.streams.get(call)) is not None:
                request = self._decode(call, stream[1], body)
                if request is None:
                    self.tasks[call].cancel()
                else:
                    stream[0].put_nowait(request)
        elif kind == END:
            if (stream := self.streams.get(call)) is not None:
                stream[0].put_nowait(None)
        elif kind == CANCEL:
            if (task := self.tasks.get(call)) is not None:
                task.cancel()
        elif kind == META:
            meta = json.loads(body)
            self.metadata[call] = CallContext(tuple(tuple(p) for p in meta["metadata"]),
                                           meta["peer"])  # fmt: skip
        elif kind == HELLO and isinstance(self.hub, RelayHub):
            self.hub.hello(json.loads(body))

    def _decode(self, call: int, index: int, body: bytes) -> Any:
        method = self.hub.methods[index]
        try:
            return method.request.FromString(body)
        except DecodeError as err:
            self.send(ERROR, call, grpc.StatusCode.INVALID_ARGUMENT.value[0],
                      f"cannot parse {method.request.DESCRIPTOR.name} for {method.name}: "
                      f"{err}".encode())  # fmt: skip
            return None

    def _fail(self, call: int, err: BaseException) -> None:
        if isinstance(err, _Abort):
            self.send(ERROR, call, err.code.value[0], err.details.encode())
        else:
            log.error("internal error in a relayed call", exc_info=err)
            self.send(ERROR, call, grpc.StatusCode.INTERNAL.value[0],
                      f"{type(err).__name__}: {err}".encode())  # fmt: skip

    async def _unary(self, call: int, index: int, request: Any, ctx: CallContext) -> None:
        try:
            response = await self.hub.handlers[index](request, ctx)
            self.send(REPLY, call, 0, response.SerializeToString())
        except Exception as err:
            self._fail(call, err)
        finally:
            del self.tasks[call]

    async def _stream(
        self, call: int, index: int, queue: asyncio.Queue[Any], ctx: CallContext
    ) -> None:
        method = self.hub.methods[index]
        try:
            if method.client_streaming:
                source: Any = _requests(queue)
            elif (source := await queue.get()) is None:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}: no request")
            async for response in self.hub.handlers[index](source, ctx):
                self.send(MSG, call, 0, response.SerializeToString())
            self.send(END, call)
        except Exception as err:
            self._fail(call, err)
        finally:
            del self.tasks[call]
            del self.streams[call]

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()


def _unimplemented(request: Any, context: Any) -> Any:
    raise _Abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


async def _requests(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while (request := await queue.get()) is not None:
        yield request


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


class Dispatch:
    """The servicers' methods by their number in relay_methods(), for ServerSide."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.methods = relay_methods()
        self.handlers: list[Callable[..., Any]] = [
            # A method the servicer leaves to grpc's generated base class (TraceSetting) is
            # answered as the in-process server answers it.
            getattr(services[m.service], m.name) if m.name in vars(type(services[m.service]))
            else _unimplemented for m in self.methods
        ]
        self.loop = asyncio.get_running_loop()


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
        self.code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
        self.details = details.decode("utf-8", "replace")


_GONE = _Failed(grpc.StatusCode.UNAVAILABLE.value[0],
                b"the server's data-plane process is gone")  # fmt: skip


class _FrontSide(_FrameReader):
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
        settings.max_message_bytes, settings.reuse_port, settings.bdp_probe),
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
