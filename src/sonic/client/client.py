"""The SONIC client: one model, many servers, retries and a local fallback.

It does for Python event-processing jobs what CMSSW's SonicTriton client does
for C++ modules, on the stock ``tritonclient`` transports (gRPC or HTTP), so
it works against ``sonic serve`` and NVIDIA Triton alike:

- the model's metadata and config are read once and every input is checked
  against them before anything is sent (:class:`~sonic.client.errors.InputError`);
- rectangular batches larger than ``max_batch_size`` are split, never padded;
  ragged batches go as one request per entry, several in flight;
- servers are discovered with RepositoryIndex (a server that refuses it, as a
  saturated SuperSONIC gateway does, is skipped with a warning) and the best one
  is live, ready, hosts the model, has failed least, then queues least;
- a failed call is retried by policy: the same server N times, then another
  server, then a local fallback ``sonic serve`` started on free ports;
- every call records its timing: serialisation, wait, deserialisation and,
  with ``verbose``, the server's queue and compute times;
- inputs go through system shared memory to a server on the same host that
  allows it (``shared_memory="auto"``, the default; see ``client.shm``).

Modes: :meth:`Client.infer` (sync), :meth:`Client.infer_async` (asyncio) and
:meth:`Client.infer_future` (pseudo-async: a thread completes a future).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonic.client.calls import (
    CallTiming,
    ModelInfo,
    Prepared,
    Retry,
    TensorInfo,
    concat,
)
from sonic.client.endpoint import CONTROL_TIMEOUT_S, Endpoint
from sonic.client.errors import (
    InferenceError,
    InputError,
    ModelVersionError,
    NoServerError,
)
from sonic.client.routing import Router
from sonic.client.servers import Server, environment_servers, load_servers
from sonic.client.shm import (
    ShmPool,
    is_local,
    output_spans,
    read_output,
    unknown_region,
)
from sonic.client.validation import check_inputs, chunks, empty_outputs
from sonic.protocol.datatypes import to_numpy_dtype

log = logging.getLogger("sonic.client")

UNITS = {"seconds": 1.0, "milliseconds": 1e-3, "microseconds": 1e-6}
DEFAULT_RETRIES: tuple[tuple[str, int], ...] = (("same", 1), ("diff", 1), ("fallback", 1))
_POOL = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="sonic-client")


class Client:
    """A client for one model; see the module docstring for what it does."""

    def __init__(
        self,
        model: str,
        servers: Sequence[str | Server] = (),
        *,
        server_file: Path | None = None,
        protocol: str = "grpc",
        version: str = "",
        timeout: float | None = None,
        timeout_unit: str = "seconds",
        compression: str | None = None,
        outputs: Sequence[str] | None = None,
        preferred_server: str | None = None,
        retries: Sequence[tuple[str, int]] = DEFAULT_RETRIES,
        fallback_repository: Path | None = None,
        model_config_path: Path | None = None,
        verbose: bool = False,
        shared_memory: str = "auto",
        verify_checksums: bool = True,
        cuda_device: int = 0,
        wake_timeout: float = 0.0,
    ) -> None:
        """``model_config_path``: the job's own copy of the model (its ``config.pbtxt``, or the
        model directory holding it); with ``verify_checksums`` (CMSSW's model versioning) the
        server's MD5 checksum agent must match it, checked here, at construction.
        ``wake_timeout`` (seconds, in ``timeout_unit``): how long construction waits while every
        server refuses with a retryable status, as a site scaled to zero does while it starts
        a server (0: not at all; the servers that refuse are skipped at once)."""
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        if timeout_unit not in UNITS:
            raise ValueError(
                f"timeout_unit must be one of {', '.join(UNITS)}, not {timeout_unit!r}"
            )
        if compression not in (None, "none", "gzip", "deflate"):
            raise ValueError(f"compression must be none, gzip or deflate, not {compression!r}")
        if shared_memory not in ("auto", "on", "off", "cuda"):
            raise ValueError(
                f"shared_memory must be auto, on, off or cuda, not {shared_memory!r}"
            )
        for kind, _ in retries:
            if kind not in ("same", "diff", "fallback"):
                raise ValueError(f"retry kinds are 'same', 'diff' and 'fallback', not {kind!r}")
        self.model = model
        self.version = version
        self.protocol = protocol
        self.timeout_s = None if not timeout else timeout * UNITS[timeout_unit]
        self.compression = None if compression in (None, "none") else compression
        self.requested_outputs = list(outputs) if outputs else None
        self.preferred = preferred_server
        self.retries = list(retries)
        self.fallback_repository = fallback_repository
        if model_config_path is not None and Path(model_config_path).is_dir():
            model_config_path = Path(model_config_path) / "config.pbtxt"
        self.model_config_path = model_config_path
        self.verbose = verbose
        self.shared_memory = shared_memory
        self.cuda_device = cuda_device  # the GPU of shared_memory="cuda" regions
        specs = [Server.parse(s) for s in servers]
        if server_file is not None:
            specs += load_servers(server_file)
        specs += environment_servers()
        self.control_timeout_s = self.timeout_s or CONTROL_TIMEOUT_S
        self.endpoints = [Endpoint(s, protocol, timeout_s=self.control_timeout_s) for s in specs]
        self.timings: list[CallTiming] = []
        self._lock = threading.Lock()
        self._info: ModelInfo | None = None
        same_server_attempts = 1 + sum(n for kind, n in retries if kind == "same")
        self.router = Router(model, version, protocol, self.endpoints, preferred=preferred_server,
                             fallback_repository=fallback_repository,
                             control_timeout_s=self.control_timeout_s,
                             wake_timeout_s=wake_timeout * UNITS[timeout_unit],
                             control_attempts=same_server_attempts)  # fmt: skip
        if self.requested_outputs:
            self.info()  # an output the model does not have is an error now, not per call
        if model_config_path is not None and verify_checksums:
            self.verify_checksum()

    def best_server(self) -> Endpoint:
        """The server calls go to now (see :class:`~sonic.client.routing.Router`)."""
        return self.router.best()

    # -- model interface --------------------------------------------------------------
    def info(self) -> ModelInfo:
        """The model's inputs, outputs and max_batch_size, read once from a server."""
        if self._info is None:
            ep = self.best_server()
            meta = self.router.ask(
                ep, lambda c, kw: c.get_model_metadata(self.model, self.version, **kw))
            cfg = self._config(ep)
            mbs = int(cfg.get("max_batch_size", 0))
            skip = 1 if mbs > 0 else 0

            def specs(tensors: list[dict[str, Any]]) -> dict[str, TensorInfo]:
                return {t["name"]: TensorInfo(t["name"], t["datatype"],
                                              tuple(int(d) for d in t["shape"])[skip:])
                        for t in tensors}  # fmt: skip

            outputs = specs(meta["outputs"])
            unknown = [n for n in self.requested_outputs or () if n not in outputs]
            if unknown:
                raise InputError(f"model '{self.model}' has no output(s) {unknown}; it has "
                                 f"{sorted(outputs)}")  # fmt: skip
            self._info = ModelInfo(self.model, mbs, specs(meta["inputs"]), list(outputs), outputs)
        return self._info

    def verify_checksum(self) -> None:
        """CMSSW's check: the server's config must carry the local config's MD5 checksums.

        Compares the ``model_repository_agents`` ``checksum`` parameters of the local
        ``model_config_path`` with the served config; a mismatch means the server runs
        another version of the model than the job was configured for.
        """
        if self.model_config_path is None:
            raise ValueError("verify_checksum needs model_config_path (the job's config.pbtxt)")
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as mc

        local = text_format.Parse(Path(self.model_config_path).read_text(), mc.ModelConfig())
        want = {k: v for a in local.model_repository_agents.agents if a.name == "checksum"
                for k, v in a.parameters.items()}  # fmt: skip
        if not want:
            raise ModelVersionError(f"{self.model_config_path} records no checksum agent")
        ep = self.best_server()
        remote = self._config(ep)
        have: dict[str, str] = {}
        for agent in remote.get("model_repository_agents", {}).get("agents", []):
            if agent.get("name") == "checksum":
                have.update(agent.get("parameters", {}))
        wrong = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v}
        if wrong:
            detail = "; ".join(f"{k}: local {a}, server {b}" for k, (a, b) in wrong.items())
            raise ModelVersionError(
                f"model '{self.model}' on {ep.server.name} does not match {self.model_config_path}:"
                f" {detail}"
            )

    def validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Check inputs against the model; returns the batch size (rows)."""
        return check_inputs(self.model, self.info(), inputs)

    # -- requests -----------------------------------------------------------------
    def _pool(self, ep: Endpoint) -> ShmPool | None:
        """The endpoint's shared-memory pool, made on first use (see ``client.shm``) under the
        lock: concurrent first requests would each make one and leak the others' regions."""
        with self._lock:
            if ep.shm is None:
                host = ep.server.url.rsplit(":", 1)[0].strip("[]")
                wanted = self.shared_memory in ("on", "cuda") or (self.shared_memory == "auto"
                                                                   and is_local(host))  # fmt: skip
                cuda = self.cuda_device if self.shared_memory == "cuda" else None
                ep.shm = ShmPool(ep.sync, ep.headers(), cuda) if wanted else False
        return ep.shm if isinstance(ep.shm, ShmPool) else None

    def _request(self, ep: Endpoint, chunk: Mapping[str, np.ndarray], rows: int,
                 aio: bool) -> Prepared:  # fmt: skip
        mod = ep.module(aio)
        info = self.info()
        arrays = {name: np.asarray(a) for name, a in chunk.items()}
        names = self.requested_outputs or info.outputs
        in_bytes = sum(a.nbytes for a in arrays.values())
        fixed: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        out_spans: dict[str, tuple[int, int]] = {}
        region = None
        pool = self._pool(ep)
        if pool is not None and all(info.inputs[n].datatype != "BYTES" for n in arrays):
            # Outputs of a fixed size come back through the region too, after the inputs
            # (not through CUDA regions: tritonclient reads those only from their start).
            if pool.cuda_device is None:
                batch = (rows,) if info.max_batch_size > 0 else ()
                fixed = {n: (to_numpy_dtype(info.output_specs[n].datatype),
                             (*batch, *info.output_specs[n].dims)) for n in names
                         if info.output_specs[n].datatype != "BYTES"
                         and all(d > 0 for d in info.output_specs[n].dims)}  # fmt: skip
                out_spans = output_spans(fixed, in_bytes)
            try:
                region = pool.acquire(in_bytes + sum(size for _, size in out_spans.values()))
            except Exception as err:
                if self.shared_memory == "cuda":
                    raise InferenceError(
                        f"no CUDA shared memory with server {ep.server.name} on GPU "
                        f"{self.cuda_device}: {err}", []) from err
                if self.shared_memory == "on":
                    raise InferenceError(
                        f"server {ep.server.name} refused shared memory ({err}); start it with "
                        "--allow-client-shm=true or use shared_memory='auto'", []) from err
                log.info("server %s: no shared memory (%s); inputs go on the wire",
                         ep.server.name, err)  # fmt: skip
                ep.shm = False
        prepared = Prepared([], [], region)
        spans = pool.write(region, list(arrays.values())) if pool and region else []
        for i, (name, array) in enumerate(arrays.items()):
            t = mod.InferInput(name, list(array.shape), info.inputs[name].datatype)
            if region is not None:
                offset, size = spans[i]
                t.set_shared_memory(region.name, size, offset=offset)
            else:
                t.set_data_from_numpy(array)
            prepared.tensors.append(t)
        for name in names:
            out = mod.InferRequestedOutput(name)
            if region is not None and name in out_spans:
                offset, size = out_spans[name]
                out.set_shared_memory(region.name, size, offset=offset)
                prepared.placed[name] = (offset, *fixed[name])
            prepared.outputs.append(out)
        return prepared

    def _kwargs(self, ep: Endpoint) -> dict[str, Any]:
        kw: dict[str, Any] = {"model_version": self.version, "headers": ep.headers()}
        if self.timeout_s:
            if self.protocol == "grpc":
                kw["client_timeout"] = self.timeout_s
            else:
                kw["timeout"] = int(self.timeout_s * 1e6)
        if self.compression:
            key = (
                "compression_algorithm"
                if self.protocol == "grpc"
                else "request_compression_algorithm"
            )
            kw[key] = self.compression
        return kw

    def _stats(self, ep: Endpoint) -> tuple[int, int, int]:
        s = self.router.ask(
            ep, lambda c, kw: c.get_inference_statistics(self.model, self.version, **kw))
        st = s["model_stats"][0]["inference_stats"]
        ns = lambda k: int(st.get(k, {}).get("ns", 0))  # noqa: E731
        return (
            int(st.get("success", {}).get("count", 0)),
            ns("queue"),
            (ns("compute_input") + ns("compute_infer") + ns("compute_output")),
        )

    def _config(self, ep: Endpoint) -> dict[str, Any]:
        cfg = self.router.ask(
            ep, lambda c, kw: c.get_model_config(self.model, self.version, **kw))
        return cfg.get("config", cfg)  # gRPC wraps it in a ModelConfigResponse

    def model_config(self) -> dict[str, Any]:
        """The model's config as the best server serves it (Triton's JSON form)."""
        return self._config(self.best_server())

    def server_times(self) -> dict[str, tuple[int, int]]:
        """Per server, the model's total (queue ns, compute ns) from the statistics extension.

        Differences between two calls give the time the servers spent on the
        requests in between, as they report it; a server that does not answer
        is left out.
        """
        times = {}
        for ep in self.endpoints:
            try:
                _, queue, compute = self._stats(ep)
            except Exception as err:
                log.debug("no statistics from %s: %s", ep.server.name, err)
                continue
            times[ep.server.name] = (queue, compute)
        return times

    def _decode(self, result: Any, prepared: Prepared) -> dict[str, np.ndarray]:
        names = self.requested_outputs or self.info().outputs
        region, placed = prepared.region, prepared.placed
        return {n: read_output(region, *placed[n]) if region is not None and n in placed
                else result.as_numpy(n) for n in names}  # fmt: skip

    def _once(
        self, ep: Endpoint, chunk: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        prepared = self._request(ep, chunk, rows, aio=False)
        try:
            before = self._stats(ep) if self.verbose else None
            t1 = time.perf_counter()

            def send() -> Any:
                return ep.sync().infer(self.model, prepared.tensors, outputs=prepared.outputs,
                                       **self._kwargs(ep))  # fmt: skip

            try:
                result = send()
            except Exception as err:
                if prepared.region is None or not unknown_region(err):
                    raise
                ep.shm.register(prepared.region)  # type: ignore[union-attr]  # forgotten: again
                result = send()
            t2 = time.perf_counter()
            out = self._decode(result, prepared)
        finally:
            if prepared.region is not None:
                ep.shm.release(prepared.region)  # type: ignore[union-attr]
        t3 = time.perf_counter()
        self._record(ep, t1 - t0, t2 - t1, t3 - t2, rows, before, prepared.shared_memory)
        return out

    async def _once_async(
        self, ep: Endpoint, chunk: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        prepared = self._request(ep, chunk, rows, aio=True)
        try:
            before = await asyncio.to_thread(self._stats, ep) if self.verbose else None
            t1 = time.perf_counter()

            async def send() -> Any:
                return await ep.aio().infer(self.model, prepared.tensors,
                                            outputs=prepared.outputs,
                                            **self._kwargs(ep))  # fmt: skip

            try:
                result = await send()
            except Exception as err:
                if prepared.region is None or not unknown_region(err):
                    raise
                await asyncio.to_thread(ep.shm.register, prepared.region)  # type: ignore[union-attr]
                result = await send()
            t2 = time.perf_counter()
            out = self._decode(result, prepared)
        finally:
            if prepared.region is not None:
                ep.shm.release(prepared.region)  # type: ignore[union-attr]
        times = (ep, t1 - t0, t2 - t1, time.perf_counter() - t2, rows, before,
                 prepared.shared_memory)  # fmt: skip
        if before is None:
            self._record(*times)
        else:  # the server's split: statistics calls, off the event loop
            await asyncio.to_thread(self._record, *times)
        return out

    def _record(self, ep: Endpoint, ser: float, wait: float, de: float, rows: int,
                before: tuple[int, int, int] | None, shared_memory: str = "") -> None:  # fmt: skip
        timing = CallTiming(ep.server.name, ser, wait, de, rows, shared_memory=shared_memory)
        if before is not None:
            after = self._stats(ep)
            for _ in range(50):  # Triton may publish a request's statistics after replying
                if after[0] > before[0]:
                    break
                time.sleep(0.002)
                after = self._stats(ep)
            if after[0] > before[0]:
                n = after[0] - before[0]
                timing.server_queue_s = (after[1] - before[1]) / n / 1e9
                timing.server_compute_s = (after[2] - before[2]) / n / 1e9
        with self._lock:
            self.timings.append(timing)

    def _call(self, chunk: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        retry = Retry(self, self.best_server())
        for kind, planned in retry.steps():
            try:
                ep = planned or self.router.next(kind, retry.ep, retry.tried)
            except NoServerError as err:  # no fallback: the attempts so far are the story
                retry.attempts.append(f"fallback: {err}")
                break
            if ep is None:
                continue
            try:
                return retry.succeeded(ep, self._once(retry.use(ep), chunk, rows))
            except Exception as err:
                if not retry.failed(ep, err):
                    break
        raise retry.error()

    async def _call_async(self, chunk: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        retry = Retry(self, self.router.current or await asyncio.to_thread(self.best_server))
        for kind, planned in retry.steps():
            try:
                ep = planned or await asyncio.to_thread(self.router.next, kind, retry.ep,
                                                        retry.tried)
            except NoServerError as err:
                retry.attempts.append(f"fallback: {err}")
                break
            if ep is None:
                continue
            try:
                return retry.succeeded(ep, await self._once_async(retry.use(ep), chunk, rows))
            except Exception as err:
                if not retry.failed(ep, err):
                    break
        raise retry.error()

    # -- public API ----------------------------------------------------------------
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A rectangular batch (outer dim = rows), split at max_batch_size; blocks."""
        rows = self.validate(inputs)
        if rows == 0:
            return empty_outputs(self.info(), self.requested_outputs)
        pieces = chunks(inputs, rows, self.info().max_batch_size)
        return concat([self._call(c, len(next(iter(c.values())))) for c in pieces])

    async def infer_async(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """As :meth:`infer`, on asyncio; the chunks of a split batch are sent concurrently."""
        if self._info is None:
            await asyncio.to_thread(self.info)
        rows = self.validate(inputs)
        if rows == 0:
            return empty_outputs(self.info(), self.requested_outputs)
        pieces = chunks(inputs, rows, self.info().max_batch_size)
        parts = await asyncio.gather(*(self._call_async(c, len(next(iter(c.values()))))
                                       for c in pieces))  # fmt: skip
        return concat(list(parts))

    def infer_future(
        self, inputs: Mapping[str, np.ndarray]
    ) -> concurrent.futures.Future[dict[str, np.ndarray]]:
        """Pseudo-async, as CMSSW's PseudoAsync mode: a thread runs :meth:`infer`."""
        return _POOL.submit(self.infer, inputs)

    def infer_ragged(
        self, entries: Sequence[Mapping[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """One request per entry (each with its own shape), several in flight at once."""
        futures = [self.infer_future(e) for e in entries]
        return [f.result() for f in futures]

    async def infer_ragged_async(
        self, entries: Sequence[Mapping[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """As :meth:`infer_ragged`, on asyncio: every entry in flight at once."""
        return list(await asyncio.gather(*(self.infer_async(e) for e in entries)))

    async def close_async(self) -> None:
        """Close the asyncio clients of the running loop (call before the loop ends)."""
        await self.router.close_async()

    def close(self) -> None:
        self.router.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
