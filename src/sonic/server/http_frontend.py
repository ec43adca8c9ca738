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
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sonic.errors import InvalidArgument, SonicError, Status, Unsupported
from sonic.protocol import http_codec
from sonic.repository.config import config_to_dict
from sonic.server.dataplane import DataPlane
from sonic.server.shm import CUDA_SHM_MISSING

log = logging.getLogger("sonic.server.http")

HTTP_STATUS: dict[Status, int] = {
    Status.INTERNAL: 500,
    Status.NOT_FOUND: 404,
    Status.UNAVAILABLE: 503,
    Status.UNSUPPORTED: 501,
    Status.ALREADY_EXISTS: 409,
}
DEFAULT_MAX_INPUT_BYTES = 1 << 26  # Triton's --http-max-input-size

Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as err:
        raise InvalidArgument(f"cannot decompress the {encoding} request body: {err}") from None
    raise InvalidArgument(f"unsupported Content-Encoding '{encoding}'; use gzip or deflate")


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


class HttpFrontend:
    def __init__(
        self, dataplane: DataPlane, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    ) -> None:
        self.dp = dataplane
        self.max_input_bytes = max_input_bytes

    async def _read(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_input_bytes:
            raise InvalidArgument(
                f"request body of {length} bytes exceeds the limit of {self.max_input_bytes} "
                "bytes (--http-max-input-size)"
            )
        body = await request.body()
        return _decompress(body, request.headers.get("content-encoding"))

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except SonicError as err:
                return _error(err.message, HTTP_STATUS.get(err.status, 400))
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
        body = await self._read(request)
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
            req = http_codec.decode_raw_binary(
                body, name, version, inp["name"], inp["datatype"], shape
            )
        else:
            req = http_codec.decode_request(body, header_length, name, version)
        resp = await self.dp.infer(req, start)
        binary = http_codec.binary_outputs(req, [t.name for t in resp.outputs])
        payload, json_length = http_codec.encode_response(resp, binary)
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
        data = _body_json(await self._read(request), "model load")
        params = dict(data.get("parameters") or {})
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
        await self.dp.unload(request.path_params["model"], data.get("parameters") or {})
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

    async def cuda_shm(self, request: Request) -> Response:
        raise Unsupported(CUDA_SHM_MISSING)

    # -- app ------------------------------------------------------------------
    def app(self) -> Starlette:
        g = self._guard
        model_routes: list[Route] = []
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version:int}"):
            model_routes += [
                Route(prefix, g(self.model_metadata), methods=["GET"]),
                Route(prefix + "/ready", g(self.model_ready), methods=["GET"]),
                Route(prefix + "/config", g(self.model_config), methods=["GET"]),
                Route(prefix + "/stats", g(self.model_stats), methods=["GET"]),
                Route(prefix + "/infer", g(self.infer), methods=["POST"]),
            ]
        routes = [
            Route("/v2/health/live", g(self.live), methods=["GET"]),
            Route("/v2/health/ready", g(self.ready), methods=["GET"]),
            Route("/v2", g(self.server_metadata), methods=["GET"]),
            Route("/v2/models/stats", g(self.model_stats), methods=["GET"]),
            Route("/v2/repository/index", g(self.repository_index), methods=["POST"]),
            Route("/v2/repository/models/{model}/load", g(self.load), methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", g(self.unload), methods=["POST"]),
            Route("/v2/systemsharedmemory/status", g(self.shm_status), methods=["GET"]),
            Route(
                "/v2/systemsharedmemory/region/{region}/status", g(self.shm_status), methods=["GET"]
            ),
            Route(
                "/v2/systemsharedmemory/region/{region}/register",
                g(self.shm_register),
                methods=["POST"],
            ),
            Route("/v2/systemsharedmemory/unregister", g(self.shm_unregister), methods=["POST"]),
            Route(
                "/v2/systemsharedmemory/region/{region}/unregister",
                g(self.shm_unregister),
                methods=["POST"],
            ),
            Route("/v2/cudasharedmemory/{rest:path}", g(self.cuda_shm), methods=["GET", "POST"]),
            *model_routes,
        ]

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return _error(str(exc.detail), exc.status_code)

        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
