"""The gRPC servicers, ``inference.GRPCInferenceService`` and ``grpc.health.v1``, of all transports.

The same servicer objects answer whichever transport carries the bytes
(:mod:`~sonic.server.frontends.grpc_aio`, :mod:`~sonic.server.frontends.grpc_native`,
the relay), so statuses and messages are identical on all of them.  Each
method decodes the message, calls the data plane, and encodes the answer;
errors map to gRPC status codes through one table, as Triton maps its
``TRITONSERVER_ERROR_*`` codes.  Unexpected exceptions become INTERNAL with
their message and are logged; they never take the server down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sonic.errors import SonicError, Unauthenticated
from sonic.protocol.grpc_codec import (
    decode_cost,
    decode_request,
    encode_response,
    params_from_proto,
    response_from,
    response_head,
    restore_plan_key,
    take_plan_key,
)
from sonic.protocol.tensors import InferRequest, InferResponse, to_raw, walk_cost
from sonic.server.dataplane import OFF_LOOP_BYTES, Accepted, Answer, DataPlane, run_by_cost
from sonic.server.frontends.auth import Authenticator, Category
from sonic.server.frontends.grpc_status import STATUS_CODES, status_of
from sonic.server.model import LoadedModel, Plan

log = logging.getLogger("sonic.server.grpc")

R = TypeVar("R")


Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


@dataclass(slots=True)
class Found:
    """What :meth:`InferenceServicer.find_plan` found for a ModelInfer request."""

    start: int
    model: LoadedModel
    #: The model's plan for the request's layout, with the request's raw input contents and
    #: id, taken off the message; None where the request takes the full path.
    plan: Plan | None = None
    raws: list[bytes] = field(default_factory=list)
    request_id: str = ""
    #: The key of the request's layout, for the model to keep a plan of it once it validates.
    key: bytes | None = None


#: Most response heads (sonic.protocol.grpc_codec.response_head) a plan keeps: one per shape
#: of its outputs, which vary only where the model's output dims do.
MAX_HEADS = 16
#: Largest request (bytes on the wire) :meth:`InferenceServicer.find_plan` looks up a model's
#: plan for: past this, the time saved is small beside the data's, and looking would copy the
#: data twice on the event loop's thread.
PLANNED_BYTES = 1 << 20
#: Where :meth:`InferenceServicer.start_found` sends a call's outcome: the serialized
#: response, or the error that ends the call.
Reply = Callable[[bytes | BaseException], None]


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return str(value)
    return None


def peer(context: Any) -> str:
    return str(context.peer()) if hasattr(context, "peer") else ""


async def _admit(auth: Authenticator, category: Category, context: Any, what: str) -> None:
    """Abort the call unless its credentials allow ``category`` (for handlers outside _rpc)."""
    if auth.enabled:
        try:
            auth.check(category, _authorization(context), what, peer(context))
        except SonicError as err:
            await context.abort(STATUS_CODES[err.status], err.message)


def _rpc(category: Category) -> Callable[[Method[R]], Method[R]]:
    """Check the caller's role for ``category``, then map :class:`SonicError` (and anything
    unexpected) to a gRPC status."""

    def decorate(method: Method[R]) -> Method[R]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                if self.auth.enabled:
                    self.auth.check(category, _authorization(context), method.__name__,
                                    peer(context))  # fmt: skip
                return await method(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as err:
                await context.abort(*status_of(err, method.__name__))
            raise AssertionError("unreachable")  # pragma: no cover - abort always raises

        wrapper.category = category  # type: ignore[attr-defined]  # read by method_categories
        return wrapper

    return decorate


def _regions(response: Any, rows: list[dict[str, Any]]) -> Any:
    """A (System|Cuda)SharedMemoryStatusResponse with one RegionStatus per row."""
    msg = response()
    for row in rows:
        msg.regions[row["name"]].CopyFrom(response.RegionStatus(**row))
    return msg


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, auth: Authenticator) -> None:
        self.dp = dataplane
        self.auth = auth
        #: Large responses being encoded on a worker thread (start_found's path).
        self._encoding: set[asyncio.Task[pb.ModelInferResponse]] = set()

    @_rpc(Category.HEALTH)
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dp.live())

    @_rpc(Category.HEALTH)
    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dp.ready())

    @_rpc(Category.HEALTH)
    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(request.name, request.version))

    @_rpc(Category.METADATA)
    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dp.server_metadata())

    @_rpc(Category.METADATA)
    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        meta = self.dp.model_metadata(request.name, request.version)
        msg = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for key, target in (("inputs", msg.inputs), ("outputs", msg.outputs)):
            for t in meta[key]:
                target.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return msg

    @_rpc(Category.MODEL_CONFIG)
    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.dp.model_config(request.name, request.version))

    @_rpc(Category.STATISTICS)
    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        stats = await self.dp.statistics_all(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[s.to_proto() for s in stats])

    async def _decode(self, msg: Any) -> InferRequest:
        """The request, after its model was found (a request to no model costs no decoding),
        decoded on a worker thread when it is large enough to hold up other clients."""
        self.dp.check_model(msg.model_name, msg.model_version)
        return await run_by_cost(decode_cost(msg), decode_request, msg)

    @staticmethod
    async def _encode(resp: InferResponse) -> pb.ModelInferResponse:
        return await run_by_cost(walk_cost(resp.outputs), encode_response, resp)

    @_rpc(Category.INFERENCE)
    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        start = time.perf_counter_ns()
        return await self._encode(await self.dp.infer(await self._decode(request), start))

    def find_plan(self, request: Any, context: Any, size: int, arrived_ns: int = 0) -> Found:
        """ModelInfer's first steps on the frame transports: credentials, the model, and the
        model's plan for the request's layout where it has one (:class:`sonic.server.model.
        Plan`: the request then needs no decoding or validating).  Requests over
        :data:`PLANNED_BYTES`, and those to models that never plan, do not look for one, as
        looking copies their data.  ``size``: the request's bytes on the wire;
        ``arrived_ns``: when the transport had read it (``time.perf_counter_ns``), 0 for now:
        the request's times count from there.  Refusals raise."""
        start = arrived_ns or time.perf_counter_ns()
        if self.auth.enabled:
            self.auth.check(Category.INFERENCE, _authorization(context), "ModelInfer",
                            peer(context))  # fmt: skip
        model = self.dp.check_model(request.model_name, request.model_version)
        if size > PLANNED_BYTES or not model.plannable:
            return Found(start, model)
        key, raws, request_id = take_plan_key(request)
        plan = model.plans.get(key)
        # A length that differs takes the full path, which says what is wrong with it.
        if plan is not None and [len(raw) for raw in raws] == plan.sizes:
            return Found(start, model, plan, raws, request_id)
        restore_plan_key(request, raws, request_id)
        return Found(start, model, key=key)

    def start_found(self, found: Found, request: Any, reply: Reply) -> Accepted | None:
        """ModelInfer without a task, for the transports that hand calls over as frames
        (:class:`sonic.server.frontends.grpc_frames.ServerSide`), after :meth:`find_plan`:
        ``reply`` gets the serialized response or the error; errors before the request was
        queued raise here.  None where the request is big enough to be decoded on a worker
        thread: then the caller runs :meth:`ModelInfer`."""
        if found.plan is not None:
            answer = self.planned_answer(found, reply)
            return self.dp.start_planned(found.model, found.plan, found.raws, found.request_id,
                                         found.start, answer)  # fmt: skip
        if decode_cost(request) > OFF_LOOP_BYTES:
            return None
        return self.dp.start(decode_request(request), found.start,
                             functools.partial(self._answered, reply), found.model,
                             found.key)  # fmt: skip

    def planned_answer(self, found: Found, reply: Reply) -> Answer:
        """Where a request that came through a plan is answered: its outputs, encoded."""
        assert found.plan is not None
        return functools.partial(self._answered_planned, reply, found.model, found.plan,
                                 found.request_id)  # fmt: skip

    def _answered(self, reply: Reply, outcome: InferResponse | BaseException) -> None:
        if isinstance(outcome, BaseException):
            reply(outcome)
        elif walk_cost(outcome.outputs) > OFF_LOOP_BYTES:
            task = asyncio.get_running_loop().create_task(self._encode(outcome))
            self._encoding.add(task)
            task.add_done_callback(functools.partial(self._encoded, reply))
        else:
            try:
                reply(encode_response(outcome).SerializeToString())
            except Exception as err:
                reply(err)

    @staticmethod
    def _answered_planned(reply: Reply, model: LoadedModel, plan: Plan, request_id: str,
                          outcome: dict[str, np.ndarray] | BaseException) -> None:  # fmt: skip
        if isinstance(outcome, BaseException):
            reply(outcome)
            return
        try:
            arrays = [outcome[name] for name, _ in plan.outputs]
            shapes = tuple([a.shape for a in arrays])
            head = plan.encodings.get(shapes)
            if head is None:  # outputs with variable dims have a head per shape
                if len(plan.encodings) >= MAX_HEADS:
                    plan.encodings.clear()
                head = plan.encodings[shapes] = response_head(
                    model.name, model.version_str,
                    [(n, datatype, s) for (n, datatype), s in zip(plan.outputs, shapes,
                                                                  strict=True)])  # fmt: skip
            reply(response_from(head, request_id, [to_raw(a, datatype) for a, (_, datatype)
                                                   in zip(arrays, plan.outputs, strict=True)]))
        except Exception as err:
            reply(err)

    def _encoded(self, reply: Reply, task: asyncio.Task[pb.ModelInferResponse]) -> None:
        self._encoding.discard(task)
        if task.cancelled():
            reply(asyncio.CancelledError())
        elif (err := task.exception()) is not None:
            reply(err)
        else:
            reply(task.result().SerializeToString())

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently; each response or error goes back as it completes."""
        await _admit(self.auth, Category.INFERENCE, context, "ModelStreamInfer")
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def one(msg: Any) -> None:
            start = time.perf_counter_ns()
            try:
                resp = await self._encode(await self.dp.infer(await self._decode(msg), start))
                results.put_nowait(pb.ModelStreamInferResponse(infer_response=resp))
            except SonicError as err:
                results.put_nowait(
                    pb.ModelStreamInferResponse(
                        error_message=err.message,
                        infer_response=pb.ModelInferResponse(
                            model_name=msg.model_name, model_version=msg.model_version, id=msg.id
                        ),
                    )
                )
            except Exception as err:
                log.exception("internal error in ModelStreamInfer")
                results.put_nowait(
                    pb.ModelStreamInferResponse(error_message=f"{type(err).__name__}: {err}")
                )

        async def reader() -> None:
            async for msg in request_iterator:
                task = asyncio.create_task(one(msg))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*list(pending))
            results.put_nowait(None)

        read_task = asyncio.create_task(reader())
        try:
            while (item := await results.get()) is not None:
                yield item
        finally:
            read_task.cancel()

    @_rpc(Category.REPOSITORY_INDEX)
    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        rows = self.dp.repository_index(request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows]
        )

    @_rpc(Category.MODEL_REPOSITORY)
    async def RepositoryModelLoad(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self.dp.load(request.model_name, params_from_proto(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @_rpc(Category.MODEL_REPOSITORY)
    async def RepositoryModelUnload(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.dp.unload(request.model_name, params_from_proto(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    @_rpc(Category.SHARED_MEMORY)
    async def SystemSharedMemoryStatus(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        return _regions(pb.SystemSharedMemoryStatusResponse, self.dp.shm.status(request.name))

    @_rpc(Category.SHARED_MEMORY)
    async def SystemSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.dp.shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_rpc(Category.SHARED_MEMORY)
    async def SystemSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.dp.shm.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_rpc(Category.LOGGING)
    async def LogSettings(self, request: Any, context: Any) -> pb.LogSettingsResponse:
        changes = params_from_proto(request.settings)  # SettingValue: the same oneof
        values = self.dp.logs.update(changes) if changes else self.dp.logs.get()
        msg = pb.LogSettingsResponse()
        for key, v in values.items():
            target = msg.settings[key]
            if isinstance(v, bool):
                target.bool_param = v
            elif isinstance(v, int):
                target.uint32_param = v
            else:
                target.string_param = v
        return msg

    @_rpc(Category.SHARED_MEMORY)
    async def CudaSharedMemoryStatus(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        return _regions(pb.CudaSharedMemoryStatusResponse, self.dp.shm.cuda.status(request.name))

    @_rpc(Category.SHARED_MEMORY)
    async def CudaSharedMemoryRegister(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.dp.shm.register_cuda(request.name, request.raw_handle, request.device_id,
                                  request.byte_size)  # fmt: skip
        return pb.CudaSharedMemoryRegisterResponse()

    @_rpc(Category.SHARED_MEMORY)
    async def CudaSharedMemoryUnregister(
        self, request: Any, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.dp.shm.cuda.unregister(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()


#: Health Watch streams open at once (each holds a task for as long as the client likes);
#: load balancers and probes need a handful.
MAX_WATCHES = 256


class HealthServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1``: SERVING while the server is ready."""

    SERVICES = ("", "inference.GRPCInferenceService")

    def __init__(self, dataplane: DataPlane, auth: Authenticator) -> None:
        self.dp = dataplane
        self.auth = auth
        self.watches = 0

    def _status(self, service: str) -> int:
        if self.dp.ready():
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        await _admit(self.auth, Category.HEALTH, context, "grpc.health.v1.Health/Check")
        if request.service not in self.SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(
        self, request: Any, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await _admit(self.auth, Category.HEALTH, context, "grpc.health.v1.Health/Watch")
        if self.watches >= MAX_WATCHES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{MAX_WATCHES} health Watch streams are open already; "
                                "poll with Check instead")  # fmt: skip
        self.watches += 1
        try:
            last = None
            while True:
                status = (
                    self._status(request.service)
                    if request.service in self.SERVICES
                    else health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                )
                if status != last:
                    yield health_pb2.HealthCheckResponse(status=status)
                    last = status
                await asyncio.sleep(1.0)
        finally:
            self.watches -= 1


INFERENCE_SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"


def servicers(dataplane: DataPlane, auth: Authenticator) -> dict[str, Any]:
    """The gRPC services by full name: registered on the in-process server, or called by name
    for the relay front ends (:mod:`sonic.server.relay.frontend`)."""
    return {
        INFERENCE_SERVICE: InferenceServicer(dataplane, auth),
        HEALTH_SERVICE: HealthServicer(dataplane, auth),
    }


def method_categories() -> dict[str, Category]:
    """The protocol category of every method, by its full path (``/service/Method``)."""
    table = {f"/{INFERENCE_SERVICE}/ModelStreamInfer": Category.INFERENCE,
             f"/{HEALTH_SERVICE}/Check": Category.HEALTH,
             f"/{HEALTH_SERVICE}/Watch": Category.HEALTH}  # fmt: skip
    for name, member in vars(InferenceServicer).items():
        if (category := getattr(member, "category", None)) is not None:
            table[f"/{INFERENCE_SERVICE}/{name}"] = category
    return table


def refused_unread(
    auth: Authenticator, category: Category | None, metadata: Any
) -> str | None:
    """Why a call must be refused before its message is read (no valid credentials where its
    category needs them), or None; for CredentialsFirst and the native transport."""
    if category is Category.HEALTH and auth.settings.open_health:
        return None
    authorization = next((str(v) for k, v in metadata or () if k == "authorization"), None)
    try:
        auth.caller(authorization)
    except Unauthenticated as err:
        return err.message
    return None
