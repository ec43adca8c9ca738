"""The load itself: pre-encoded requests kept in flight (concurrency) or sent on a schedule (rate).

Requests are encoded once (:mod:`sonic.perf.target`), so each send costs only
the transport: gRPC through ``grpc.aio`` with bytes in and out, HTTP through
``aiohttp`` with the binary-tensor extension.  Every completed request is
recorded as ``(start_ns, end_ns, send_ns, recv_ns, ok)`` on the monotonic
clock, which Linux shares between processes, so windows line up across
several load processes.

:class:`ThreadLoad` runs the load on an asyncio loop in a thread of this
process; :class:`ProcessLoad` in another process (``--processes N`` starts N
of them, each with a share of the concurrency or rate), so that the load
generator is never the bottleneck.  Both answer :meth:`flush` with the
records completed since the previous flush; the profiler calls it at each
window boundary.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from sonic.perf.target import Target


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one load generator sends; picklable for worker processes."""

    target: Target
    payloads: tuple[Any, ...]  # gRPC: bytes; HTTP: (body, json header length)
    mode: str  # "concurrency" | "rate"
    value: float
    distribution: str = "constant"  # for rate: constant | poisson
    seed: int = 0


class _Records:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[int, int, int, int, int]] = []
        self.first_error: str | None = None

    def ok(self, start_ns: int, end_ns: int, send_ns: int, recv_ns: int) -> None:
        with self._lock:
            self._rows.append((start_ns, end_ns, send_ns, recv_ns, 1))

    def failed(self, start_ns: int, err: BaseException) -> None:
        """A failed request is data (counted, its first error kept), not a crash."""
        with self._lock:
            self._rows.append((start_ns, time.monotonic_ns(), 0, 0, 0))
            if self.first_error is None:
                self.first_error = f"{type(err).__name__}: {err}"

    def flush(self) -> np.ndarray:
        with self._lock:
            rows, self._rows = self._rows, []
        return np.array(rows, dtype=np.int64).reshape(-1, 5)


def _grpc_channel(t: Target, aio: bool) -> Any:
    """A grpc.aio or blocking channel with the target's TLS settings and no size limits."""
    import grpc

    api: Any = grpc.aio if aio else grpc
    # The minimal filter stack (no client-side deadline, size, retry or compression filters:
    # a load generator uses none of them) changes nothing on the wire and takes ~15% off
    # the client's CPU per call, which at concurrency 1 is latency the server never caused.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
               ("grpc.minimal_stack", 1)]  # fmt: skip
    if not t.ssl:
        return api.insecure_channel(t.url, options=options)
    o = t.ssl_options

    def read(key: str) -> bytes | None:
        return Path(o[key]).read_bytes() if o.get(key) else None

    creds = grpc.ssl_channel_credentials(read("root_certifications_file"),
                                         read("private_key_file"),
                                         read("certificate_chain_file"))  # fmt: skip
    return api.secure_channel(t.url, creds, options=options)


def _infer_call(spec: LoadSpec, aio: bool) -> tuple[Any, Any, Any]:
    """The channel, a ModelInfer call taking pre-encoded requests, and the -H metadata."""
    channel = _grpc_channel(spec.target, aio)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    return channel, call, tuple((k.lower(), v) for k, v in spec.target.headers) or None


async def _grpc_sender(spec: LoadSpec) -> tuple[Any, Any]:
    from tritonclient.grpc import service_pb2 as pb

    channel, call, metadata = _infer_call(spec, aio=True)
    payloads = spec.payloads

    async def send(i: int) -> tuple[int, int]:
        raw = await call(payloads[i % len(payloads)], metadata=metadata)
        t0 = time.monotonic_ns()
        pb.ModelInferResponse.FromString(raw)
        return 0, time.monotonic_ns() - t0

    return send, channel.close


async def _http_sender(spec: LoadSpec) -> tuple[Any, Any]:
    import json
    import ssl

    import aiohttp

    t = spec.target
    scheme = "https" if t.ssl else "http"
    path = f"/v2/models/{t.model}" + (f"/versions/{t.version}" if t.version else "") + "/infer"
    url = f"{scheme}://{t.url}{path}"
    ctx: Any = False
    if t.ssl:
        o = t.ssl_options
        ctx = ssl.create_default_context(cafile=o.get("ca_certificates_file"))
        if o.get("client_certificate_file"):
            ctx.load_cert_chain(o["client_certificate_file"], o.get("private_key_file"))
        if o.get("verify_peer") == "0":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ctx))
    base = {**dict(t.headers), "Content-Type": "application/octet-stream"}
    payloads = spec.payloads

    async def send(i: int) -> tuple[int, int]:
        body, header_len = payloads[i % len(payloads)]
        headers = {**base, "Inference-Header-Content-Length": str(header_len)}
        async with session.post(url, data=body, headers=headers) as r:
            data = await r.read()
            t0 = time.monotonic_ns()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {data[:300].decode(errors='replace')}")
            n = int(r.headers.get("Inference-Header-Content-Length", len(data)))
            json.loads(data[:n])
            return 0, time.monotonic_ns() - t0

    return send, session.close


async def drive(spec: LoadSpec, records: _Records, stop: asyncio.Event) -> None:
    """Generate the load until ``stop`` is set."""
    send, close = await (_grpc_sender(spec) if spec.target.protocol == "grpc"
                         else _http_sender(spec))  # fmt: skip
    counter = iter(range(1 << 62))

    async def one() -> None:
        i = next(counter)
        t0 = time.monotonic_ns()
        try:
            s, r = await send(i)
            records.ok(t0, time.monotonic_ns(), s, r)
        except Exception as err:
            records.failed(t0, err)

    async def closed_loop() -> None:
        while not stop.is_set():
            await one()

    try:
        if spec.mode == "concurrency":
            workers = [asyncio.create_task(closed_loop()) for _ in range(int(spec.value))]
            await stop.wait()
            await asyncio.gather(*workers, return_exceptions=True)
        else:
            rng = np.random.default_rng(spec.seed)
            inflight: set[asyncio.Task[None]] = set()
            loop = asyncio.get_running_loop()
            next_t = loop.time()
            while not stop.is_set():
                gap = rng.exponential(1 / spec.value) if spec.distribution == "poisson" \
                    else 1 / spec.value  # fmt: skip
                next_t += gap
                delay = next_t - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # a plain timer: no task per request
                    if stop.is_set():
                        break
                task = asyncio.create_task(one())
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            await asyncio.gather(*inflight, return_exceptions=True)
    finally:
        await close()


#: Requests at least this large go through _CallbackGrpcLoad, smaller ones _BlockingGrpcLoad.
CALLBACK_FROM_BYTES = 8192


class _CallbackGrpcLoad:
    """Concurrency mode over gRPC: N calls in flight, each completion starting the next.

    grpcio's future API runs the completion callback on its own channel thread,
    so there is no Python thread per request in flight.  Measured on this 2-core
    machine against one blocking thread per request in flight (the MLP, medians
    of 3, alternating): 15% more requests at batch 64 (16 kB requests) and
    concurrency 1, 7% more at concurrency 4; but 6% fewer at batch 1 (256 B),
    where the hop to the callback thread adds ~100 us to every round trip.
    Hence :data:`CALLBACK_FROM_BYTES`.  (Those runs used grpc's default transport;
    with the poller-thread one the ``sonic`` command selects, one run of 3 still
    favoured callbacks at batch 64: 0.97 against 0.81 of perf_analyzer at
    concurrency 1, 0.92 against 0.89 at concurrency 4.)
    """

    def __init__(self, spec: LoadSpec, records: _Records) -> None:
        from tritonclient.grpc import service_pb2 as pb

        self._channel, call, metadata = _infer_call(spec, aio=False)
        payloads = spec.payloads
        self._stopping = False
        self._idle = threading.Condition()
        counter = iter(range(1 << 62))
        local = threading.local()

        def start_one() -> None:
            with self._idle:
                if self._stopping:
                    self._inflight -= 1
                    self._idle.notify_all()
                    return
                i = next(counter)
            t0 = time.monotonic_ns()
            try:
                future = call.future(payloads[i % len(payloads)], metadata=metadata)
            except Exception as err:  # the channel refused the call outright
                records.failed(t0, err)
                issue()
                return
            future.add_done_callback(lambda f: done(f, t0))

        def issue() -> None:
            # A call that is already over when its callback is added (a channel failing
            # fast) runs the callback here, in this thread: queue it instead of recursing.
            if getattr(local, "active", False):
                local.pending += 1
                return
            local.active, local.pending = True, 1
            try:
                while local.pending:
                    local.pending -= 1
                    start_one()
            finally:
                local.active = False

        def done(future: Any, t0: int) -> None:
            t1 = time.monotonic_ns()
            try:
                raw = future.result()
                pb.ModelInferResponse.FromString(raw)
                records.ok(t0, t1, 0, time.monotonic_ns() - t1)
            except Exception as err:
                records.failed(t0, err)
            issue()

        self._inflight = int(spec.value)
        for _ in range(int(spec.value)):
            issue()

    def stop(self) -> None:
        """Let the calls in flight finish (up to a minute), then close the channel."""
        with self._idle:
            self._stopping = True
            self._idle.wait_for(lambda: self._inflight <= 0, timeout=60)
        self._channel.close()


class _BlockingGrpcLoad:
    """Concurrency mode over gRPC: one thread per request in flight, blocking calls.

    grpcio's blocking call waits on its completion queue in the calling
    thread, which saves the hand-off to an event loop that ``grpc.aio``
    makes per response: measured here, 5-15% more requests per second at
    low concurrency, which is what keeps this tool near perf_analyzer.
    """

    def __init__(self, spec: LoadSpec, records: _Records) -> None:
        from tritonclient.grpc import service_pb2 as pb

        self._channel, call, metadata = _infer_call(spec, aio=False)
        payloads = spec.payloads
        self._stop = threading.Event()
        counter = iter(range(1 << 62))
        lock = threading.Lock()

        def work() -> None:
            while not self._stop.is_set():
                with lock:
                    i = next(counter)
                t0 = time.monotonic_ns()
                try:
                    raw = call(payloads[i % len(payloads)], metadata=metadata)
                    t1 = time.monotonic_ns()
                    pb.ModelInferResponse.FromString(raw)
                    records.ok(t0, t1, 0, time.monotonic_ns() - t1)
                except Exception as err:
                    records.failed(t0, err)

        self._threads = [threading.Thread(target=work, daemon=True, name=f"sonic-perf-{i}")
                         for i in range(int(spec.value))]  # fmt: skip
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        self._channel.close()


class ThreadLoad:
    """The load in threads of this process: gRPC calls in blocking threads or with completion
    callbacks (concurrency mode), or an asyncio loop (request rates, and HTTP)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.records = _Records()
        self._grpc: _CallbackGrpcLoad | _BlockingGrpcLoad | None = None
        if spec.mode == "concurrency" and spec.target.protocol == "grpc":
            large = max(len(p) for p in spec.payloads) >= CALLBACK_FROM_BYTES
            self._grpc = (_CallbackGrpcLoad if large else _BlockingGrpcLoad)(spec, self.records)
            return
        self._loop = uvloop.new_event_loop()  # less per-request CPU than asyncio's loop
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._stop = asyncio.Event()
            ready.set()
            self._loop.run_until_complete(drive(spec, self.records, self._stop))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="sonic-perf-load", daemon=True)
        self._thread.start()
        ready.wait()

    def flush(self) -> np.ndarray:
        return self.records.flush()

    @property
    def first_error(self) -> str | None:
        return self.records.first_error

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop()
            return
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def _worker_main(spec: LoadSpec, conn: Connection) -> None:
    load = ThreadLoad(spec)
    conn.send("sending")
    while True:
        msg = conn.recv()
        if msg == "flush":
            conn.send((load.flush(), load.first_error))
        else:
            load.stop()
            conn.send((load.flush(), load.first_error))
            return


class ProcessLoad:
    """The same load in a separate process (``spawn``: no state leaks from the parent)."""

    def __init__(self, spec: LoadSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(spec, child), daemon=True)
        self._proc.start()
        self.first_error: str | None = None
        # A spawned process takes a second or two to import and connect: the windows
        # must not start before it sends, or the first one measures its start-up.
        deadline = time.monotonic() + 120
        while not self._conn.poll(0.05):
            if not self._proc.is_alive():
                raise RuntimeError(f"a load process exited (code {self._proc.exitcode}) "
                                   "before it started sending")  # fmt: skip
            if time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError("a load process did not start sending within 120 s")
        self._conn.recv()

    def _ask(self, msg: str) -> np.ndarray:
        self._conn.send(msg)
        rows, err = self._conn.recv()
        self.first_error = self.first_error or err
        return rows

    def flush(self) -> np.ndarray:
        return self._ask("flush")

    def stop(self) -> None:
        self._ask("stop")
        self._proc.join(60)


class Load:
    """N loads (threads or processes) that share the concurrency or rate, as one."""

    def __init__(self, spec: LoadSpec, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, not {processes}")
        if spec.mode == "concurrency":
            shares = [int(spec.value) // processes + (i < int(spec.value) % processes)
                      for i in range(processes)]  # fmt: skip
        else:
            shares = [spec.value / processes] * processes
        specs = [LoadSpec(spec.target, spec.payloads, spec.mode, s, spec.distribution,
                          spec.seed + i) for i, s in enumerate(shares) if s > 0]  # fmt: skip
        self._loads: list[ThreadLoad | ProcessLoad] = (
            [ThreadLoad(specs[0])] if processes == 1 else [ProcessLoad(s) for s in specs]
        )

    def flush(self) -> np.ndarray:
        return np.concatenate([load.flush() for load in self._loads])

    @property
    def first_error(self) -> str | None:
        return next((ld.first_error for ld in self._loads if ld.first_error), None)

    def stop(self) -> np.ndarray:
        rows = []
        for load in self._loads:
            load.stop()
            if isinstance(load, ThreadLoad):
                rows.append(load.flush())
        return np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)
