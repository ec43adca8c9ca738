"""HTTP/REST front end (Starlette on uvicorn): Triton's ``/v2`` routes.

Routes, JSON bodies, the binary tensor extension, gzip/deflate bodies and the
status-code mapping follow Triton's ``http_server.cc``: INTERNAL -> 500,
NOT_FOUND -> 404, UNAVAILABLE -> 503, UNSUPPORTED -> 501, anything else
-> 400; errors are ``{"error": "..."}``.  A client mistake never yields 500.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sonic.errors import InvalidArgument, SonicError, Status
from sonic.protocol import http_codec
from sonic.protocol.tensors import InferRequest, walk_cost
from sonic.repository.config import config_to_dict
from sonic.server.dataplane import DataPlane, run_by_cost
from sonic.server.frontends.auth import Authenticator, Category
from sonic.server.settings import AuthSettings

log = logging.getLogger("sonic.server.http")

HTTP_STATUS: dict[Status, int] = {
    Status.INTERNAL: 500,
    Status.NOT_FOUND: 404,
    Status.UNAVAILABLE: 503,
    Status.UNSUPPORTED: 501,
    Status.ALREADY_EXISTS: 409,
    Status.UNAUTHENTICATED: 401,
    Status.PERMISSION_DENIED: 403,
}
DEFAULT_MAX_INPUT_BYTES = 1 << 26  # Triton's --http-max-input-size
#: After refusing an over-long body, read and drop up to this much more of it before answering:
#: a client still sending would otherwise meet a reset connection instead of the 400 that says
#: why (the lingering close web servers do).
LINGER_BYTES = 16 << 20

Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Inflate a gzip/deflate body, refusing one that inflates past ``limit`` (a zip bomb)."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidArgument(f"unsupported Content-Encoding '{encoding}'; use gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise InvalidArgument(f"cannot decompress the {encoding} request body: {err}") from None
    if len(out) > limit:
        raise InvalidArgument(
            f"the {encoding} request body inflates to more than the limit of {limit} bytes "
            "(--http-max-input-size)"
        )
    if not inflater.eof:
        raise InvalidArgument(f"cannot decompress the {encoding} request body: it is truncated")
    return out


async def _drop(stream: AsyncIterator[bytes], limit: int) -> None:
    """Read and discard the rest of a refused body, up to ``limit`` bytes."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            return


def _compress(body: bytes, accept: str | None) -> tuple[bytes, str | None]:
    if not accept:
        return body, None
    accepted = {a.split(";")[0].strip() for a in accept.split(",")}
    if "gzip" in accepted:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in accepted:
        return zlib.compress(body, 1), "deflate"
    return body, None


def _body_json(body: bytes, what: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidArgument(f"failed to parse the {what} JSON body: {err}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"the {what} body must be a JSON object")
    return data


def _parameters(data: dict[str, Any], what: str) -> dict[str, Any]:
    params = data.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidArgument(f"the {what} 'parameters' must be a JSON object")
    return dict(params)


class HttpFrontend:
    def __init__(
        self, dataplane: DataPlane, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        auth: Authenticator | None = None,
    ) -> None:  # fmt: skip
        self.dp = dataplane
        self.max_input_bytes = max_input_bytes
        self.auth = auth or Authenticator(AuthSettings())

    def _too_big(self, size: int | str) -> InvalidArgument:
        return InvalidArgument(
            f"request body of {size} bytes exceeds the limit of {self.max_input_bytes} "
            "bytes (--http-max-input-size)"
        )

    async def _read(self, request: Request) -> bytes:
        """The body, read no further than the limit (chunked bodies have no length), inflated."""
        body = await self._read_raw(request)
        return _decompress(body, request.headers.get("content-encoding"), self.max_input_bytes)

    async def _read_raw(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        stream = request.stream()
        if length is not None and length.isdigit() and int(length) > self.max_input_bytes:
            await _drop(stream, LINGER_BYTES)
            raise self._too_big(length)
        chunks: list[bytes] = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > self.max_input_bytes:
                await _drop(stream, LINGER_BYTES)
                raise self._too_big(f"more than {self.max_input_bytes}")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _guard(self, handler: Handler, category: Category) -> Handler:
        """Check the caller's role, and turn every error into Triton's ``{"error": ...}``."""
        auth = self.auth

        async def wrapped(request: Request) -> Response:
            try:
                if auth.enabled:
                    peer = f"{request.client.host}:{request.client.port}" if request.client else ""
                    auth.check(category, request.headers.get("authorization"),
                               f"{request.method} {request.url.path}", peer)  # fmt: skip
                return await handler(request)
            except SonicError as err:
                response = _error(err.message, HTTP_STATUS.get(err.status, 400))
                if err.status is Status.UNAUTHENTICATED:
                    response.headers["WWW-Authenticate"] = 'Bearer realm="sonic"'
                return response
            except Exception as err:
                log.exception("internal error on %s", request.url.path)
                return _error(f"{type(err).__name__}: {err}", 500)

        return wrapped

    # -- handlers -------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return Response(status_code=200 if self.dp.live() else 400)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.dp.ready() else 400)

    async def server_metadata(self, request: Request) -> Response:
        return _json(self.dp.server_metadata())

    @staticmethod
    def _model(request: Request) -> tuple[str, str]:
        p = request.path_params
        return p["model"], str(p.get("version", ""))

    async def model_ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.dp.model_ready(*self._model(request)) else 400)

    async def model_metadata(self, request: Request) -> Response:
        return _json(self.dp.model_metadata(*self._model(request)))

    async def model_config(self, request: Request) -> Response:
        return _json(config_to_dict(self.dp.model_config(*self._model(request))))

    async def model_stats(self, request: Request) -> Response:
        name, version = self._model(request) if "model" in request.path_params else ("", "")
        stats = await self.dp.statistics_all(name, version)
        return _json({"model_stats": [s.to_dict() for s in stats]})

    async def infer(self, request: Request) -> Response:
        start = time.perf_counter_ns()
        name, version = self._model(request)
        self.dp.check_model(name, version)  # before the body is read or decoded
        body = await self._read_raw(request)
        header = request.headers.get(http_codec.HEADER_LENGTH)
        if header is not None:
            try:
                header_length: int | None = int(header)
            except ValueError:
                raise InvalidArgument(
                    f"Inference-Header-Content-Length must be an integer, got {header!r}"
                ) from None
        else:
            header_length = None
        raw_input = None
        if header_length == 0:
            meta = self.dp.model_metadata(name, version)
            if len(meta["inputs"]) != 1:
                raise InvalidArgument(
                    f"a raw binary request (Inference-Header-Content-Length: 0) needs a model "
                    f"with exactly one input; '{name}' has {len(meta['inputs'])}"
                )
            inp = meta["inputs"][0]
            shape = tuple(inp["shape"])
            if self.dp.model_config(name, version).max_batch_size > 0:
                shape = (1, *shape[1:])
            raw_input = (inp["name"], inp["datatype"], shape)
        encoding = request.headers.get("content-encoding")

        def decode() -> InferRequest:
            data = _decompress(body, encoding, self.max_input_bytes)
            if raw_input is not None:
                return http_codec.decode_raw_binary(data, name, version, *raw_input)
            return http_codec.decode_request(data, header_length, name, version)

        # Inflating and parsing a large body takes long enough to hold up every other client;
        # a compressed body counts for what it may inflate to (64 times its size).
        compressed = encoding not in (None, "identity")
        req = await run_by_cost(len(body) << 6 if compressed else len(body), decode)
        resp = await self.dp.infer(req, start)
        binary = http_codec.binary_outputs(req, [t.name for t in resp.outputs])
        payload, json_length = await run_by_cost(walk_cost(resp.outputs),
                                                 http_codec.encode_response, resp, binary)
        headers: dict[str, str] = {}
        if json_length is not None:
            headers["Inference-Header-Content-Length"] = str(json_length)
        payload, encoding = _compress(payload, request.headers.get("accept-encoding"))
        if encoding:
            headers["Content-Encoding"] = encoding
        media = "application/json" if json_length is None else "application/octet-stream"
        return Response(payload, headers=headers, media_type=media)

    async def repository_index(self, request: Request) -> Response:
        data = _body_json(await self._read(request), "repository index")
        return _json(self.dp.repository_index(bool(data.get("ready", False))))

    async def load(self, request: Request) -> Response:
        params = _parameters(_body_json(await self._read(request), "model load"), "model load")
        for key, value in params.items():
            if key.startswith("file:"):
                try:
                    params[key] = base64.b64decode(value, validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise InvalidArgument(f"load parameter '{key}' must be base64") from None
        await self.dp.load(request.path_params["model"], params)
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        data = _body_json(await self._read(request), "model unload")
        await self.dp.unload(request.path_params["model"], _parameters(data, "model unload"))
        return Response(status_code=200)

    async def shm_status(self, request: Request) -> Response:
        return _json(self.dp.shm.status(request.path_params.get("region", "")))

    async def shm_register(self, request: Request) -> Response:
        data = _body_json(await self._read(request), "shared memory register")
        try:
            key, offset, size = str(data["key"]), int(data.get("offset", 0)), int(data["byte_size"])
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(
                'the register body must be {"key": str, "offset": int, "byte_size": int}'
            ) from None
        self.dp.shm.register(request.path_params["region"], key, offset, size)
        return Response(status_code=200)

    async def shm_unregister(self, request: Request) -> Response:
        self.dp.shm.unregister(request.path_params.get("region", ""))
        return Response(status_code=200)

    async def logging(self, request: Request) -> Response:
        if request.method == "GET":
            return _json(self.dp.logs.get())
        return _json(self.dp.logs.update(_body_json(await self._read(request), "log settings")))

    async def cuda_shm_status(self, request: Request) -> Response:
        return _json(self.dp.shm.cuda.status(request.path_params.get("region", "")))

    async def cuda_shm_register(self, request: Request) -> Response:
        data = _body_json(await self._read(request), "CUDA shared memory register")
        try:
            handle = data["raw_handle"]["b64"]
            raw = base64.b64decode(handle, validate=True)
            device, size = int(data["device_id"]), int(data["byte_size"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise InvalidArgument(
                'the register body must be {"raw_handle": {"b64": str}, "device_id": int, '
                '"byte_size": int}'
            ) from None
        self.dp.shm.register_cuda(request.path_params["region"], raw, device, size)
        return Response(status_code=200)

    async def cuda_shm_unregister(self, request: Request) -> Response:
        self.dp.shm.cuda.unregister(request.path_params.get("region", ""))
        return Response(status_code=200)

    # -- app ------------------------------------------------------------------
    def app(self) -> Starlette:
        def r(path: str, handler: Handler, category: Category, methods: list[str]) -> Route:
            return Route(path, self._guard(handler, category), methods=methods)

        C = Category
        get, post = ["GET"], ["POST"]
        model_routes: list[Route] = []
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version:int}"):
            model_routes += [
                r(prefix, self.model_metadata, C.METADATA, get),
                r(prefix + "/ready", self.model_ready, C.HEALTH, get),
                r(prefix + "/config", self.model_config, C.MODEL_CONFIG, get),
                r(prefix + "/stats", self.model_stats, C.STATISTICS, get),
                r(prefix + "/infer", self.infer, C.INFERENCE, post),
            ]
        shm, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
        routes = [
            r("/v2/health/live", self.live, C.HEALTH, get),
            r("/v2/health/ready", self.ready, C.HEALTH, get),
            r("/v2", self.server_metadata, C.METADATA, get),
            r("/v2/models/stats", self.model_stats, C.STATISTICS, get),
            r("/v2/repository/index", self.repository_index, C.REPOSITORY_INDEX, post),
            r("/v2/repository/models/{model}/load", self.load, C.MODEL_REPOSITORY, post),
            r("/v2/repository/models/{model}/unload", self.unload, C.MODEL_REPOSITORY, post),
            r(shm + "/status", self.shm_status, C.SHARED_MEMORY, get),
            r(shm + "/region/{region}/status", self.shm_status, C.SHARED_MEMORY, get),
            r(shm + "/region/{region}/register", self.shm_register, C.SHARED_MEMORY, post),
            r(shm + "/unregister", self.shm_unregister, C.SHARED_MEMORY, post),
            r(shm + "/region/{region}/unregister", self.shm_unregister, C.SHARED_MEMORY, post),
            r(cuda + "/status", self.cuda_shm_status, C.SHARED_MEMORY, get),
            r(cuda + "/region/{region}/status", self.cuda_shm_status, C.SHARED_MEMORY, get),
            r(cuda + "/region/{region}/register", self.cuda_shm_register, C.SHARED_MEMORY, post),
            r(cuda + "/unregister", self.cuda_shm_unregister, C.SHARED_MEMORY, post),
            r(cuda + "/region/{region}/unregister", self.cuda_shm_unregister,
              C.SHARED_MEMORY, post),
            r("/v2/logging", self.logging, C.LOGGING, get + post),
            *model_routes,
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return _error(str(exc.detail), exc.status_code)

        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
