"""gRPC calls as frames: what a transport hands the data plane, and the server's side of it.

A call travels between a gRPC transport and the server's data plane as
frames: CALL (a unary request), OPEN / MSG / END (a stream and its messages),
CANCEL (the client went away), META (the call's metadata, where credentials
need it) one way; REPLY, ERROR, MSG and END the other.  Two transports speak
it: the relay's front-end processes over a Unix socket (:mod:`sonic.server.relay.frontend`,
each frame a :data:`HEADER` -- kind, call id, argument, body length -- and
the body) and the native transport in-process (:mod:`sonic.server.frontends.grpc_native`).
The argument is the method's index in :func:`relay_methods` for CALL and OPEN,
the gRPC status code for ERROR.  :class:`ServerSide` turns frames into calls of
the servicers (:func:`sonic.server.frontends.grpc_servicers.servicers`), so every transport
gives the same statuses and messages; a ModelInfer CALL is queued without a task
(``InferenceServicer.find_plan`` and ``start_found``) and answered from the scheduler's
callback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2 as pb

from sonic.server.frontends.grpc_status import status_of

if TYPE_CHECKING:
    from sonic.server.dataplane import Accepted
    from sonic.server.frontends.grpc_servicers import Found, InferenceServicer
    from sonic.server.grouped import GroupMember

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

CODES = {code.value[0]: code for code in grpc.StatusCode}


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


class FrameReader(asyncio.Protocol):
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


NO_METADATA = CallContext()


class ServerSide(FrameReader):
    """Calls arriving as frames, in the server process: one front end's connection, or the
    in-process native transport (sonic.server.frontends.grpc_native), which delivers the same
    frames."""

    def __init__(self, hub: Dispatch) -> None:
        super().__init__()
        self.hub = hub
        self.tasks: dict[int, asyncio.Task[None]] = {}
        #: Each open stream's request queue and method (its MSG frames carry no method).
        self.streams: dict[int, tuple[asyncio.Queue[Any], int]] = {}
        self.metadata: dict[int, CallContext] = {}
        #: ModelInfer calls queued without a task (:meth:`_start_infer`, :meth:`start_infers`).
        self.accepted: dict[int, Accepted | GroupMember] = {}

    def frame(self, kind: int, call: int, arg: int, body: bytes) -> None:
        loop = self.hub.loop
        if kind in (CALL, OPEN):
            if arg >= len(self.hub.handlers):
                self.send(ERROR, call, grpc.StatusCode.UNIMPLEMENTED.value[0],
                          f"unknown method number {arg}".encode())  # fmt: skip
                return
            ctx = self.metadata.pop(call, NO_METADATA)
            if kind == CALL and arg == self.hub.infer_index:
                self.start_infers([(call, body, ctx, 0)])
            elif kind == CALL:
                request = self._decode(call, arg, body)
                if request is None:
                    return
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
            elif (accepted := self.accepted.pop(call, None)) is not None:
                accepted.cancel(asyncio.CancelledError())
        elif kind == META:
            meta = json.loads(body)
            self.metadata[call] = CallContext(tuple(tuple(p) for p in meta["metadata"]),
                                           meta["peer"])  # fmt: skip
        elif kind == HELLO:
            self.hub.hello(json.loads(body))

    def _start_infer(self, call: int, request: Any, found: Found) -> bool:
        """ModelInfer without a task (InferenceServicer.start_found); False where it needs the
        awaited path."""
        try:
            reply = functools.partial(self._inferred, call)
            accepted = self.hub.inference.start_found(found, request, reply)
        except Exception as err:
            self.send(ERROR, call, *_details(err))
            return True
        if accepted is None:
            return False
        self.accepted[call] = accepted
        return True

    def start_infers(self, calls: list[tuple[int, bytes, CallContext, int]]) -> None:
        """ModelInfer calls that arrived together: those of a layout a model has a plan for
        are queued together, one item per plan where its scheduler allows it
        (:mod:`sonic.server.grouped`); the others one by one.  Each call: its number, body,
        context and when it arrived (``time.perf_counter_ns``; 0: now)."""
        index, inference = self.hub.infer_index, self.hub.inference
        by_plan: dict[int, list[tuple[int, Found]]] = {}
        for call, body, ctx, arrived in calls:
            request = self._decode(call, index, body)
            if request is None:
                continue
            try:
                found = inference.find_plan(request, ctx, len(body), arrived)
            except Exception as err:
                self.send(ERROR, call, *_details(err))
                continue
            if found.plan is None:
                if not self._start_infer(call, request, found):
                    self.tasks[call] = self.hub.loop.create_task(
                        self._unary(call, index, request, ctx))
                continue
            by_plan.setdefault(id(found.plan), []).append((call, found))
        for members in by_plan.values():
            self._start_group(members)

    def _start_group(self, members: list[tuple[int, Found]]) -> None:
        first = members[0][1]
        model, plan = first.model, first.plan
        assert plan is not None
        per = model.max_batch_size // plan.rows if model.batching else 1
        if len(members) < 2 or per < 2 or not model.scheduler.groupable(len(members)):
            for call, found in members:
                self._start_infer(call, None, found)
            return
        inference = self.hub.inference
        for start in range(0, len(members), per):
            chunk = members[start : start + per]
            answers = [inference.planned_answer(found, functools.partial(self._inferred, call))
                       for call, found in chunk]  # fmt: skip
            try:
                handles = inference.dp.start_group(
                    model, plan, [found.raws for _, found in chunk],
                    [found.request_id for _, found in chunk], first.start, answers)  # fmt: skip
            except Exception as err:
                for call, _ in chunk:
                    self.send(ERROR, call, *_details(err))
                continue
            for (call, _), handle in zip(chunk, handles, strict=True):
                if handle is not None:
                    self.accepted[call] = handle

    def _inferred(self, call: int, outcome: bytes | BaseException) -> None:
        self.accepted.pop(call, None)
        if isinstance(outcome, BaseException):
            self.send(ERROR, call, *_details(outcome))
        else:
            self.send(REPLY, call, 0, outcome)

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
        for accepted in self.accepted.values():
            accepted.cancel(asyncio.CancelledError())
        self.accepted.clear()


def _details(err: BaseException) -> tuple[int, bytes]:
    """An ERROR frame's argument and body for ModelInfer ending with ``err``."""
    code, details = status_of(err, "ModelInfer")
    return code.value[0], details.encode()


def _unimplemented(request: Any, context: Any) -> Any:
    raise _Abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


async def _requests(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while (request := await queue.get()) is not None:
        yield request


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
        inference = services[pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name]
        #: ModelInfer's number, and the servicer whose path without a task it takes
        #: (InferenceServicer.find_plan and start_found).
        self.infer_index = next(i for i, m in enumerate(self.methods) if m.name == "ModelInfer")
        self.inference: InferenceServicer = inference
        self.loop = asyncio.get_running_loop()

    def hello(self, info: dict[str, int]) -> None:
        """A relay front end announced itself (only the relay's hub waits for that)."""
