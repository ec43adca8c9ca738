"""Assemble and run a server: model manager, data plane, gRPC, HTTP and metrics.

Everything runs on one asyncio event loop (uvloop): ``grpc.aio`` and uvicorn
share it, and model executions run on per-instance threads; with
``--grpc-frontends N`` the gRPC port is served by child processes instead
(:mod:`sonic.server.relay.frontend`).  SIGTERM/SIGINT
start a drain: readiness goes false, new requests are refused, requests in
flight finish (up to ``--exit-timeout-secs``), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import ssl as stdlib_ssl
from typing import Any

import uvicorn

from sonic.protocol.tensors import set_max_tensor_elements
from sonic.repository.layout import ModelRepository
from sonic.server import tracing
from sonic.server.dataplane import DataPlane
from sonic.server.frontends.auth import Authenticator, describe
from sonic.server.frontends.grpc_aio import build_server, server_options
from sonic.server.frontends.grpc_native import NativeGrpcServer, default_transport, native_module
from sonic.server.frontends.grpc_servicers import servicers
from sonic.server.frontends.http import HttpFrontend
from sonic.server.frontends.http_limits import guarded_protocol, raise_open_file_limit
from sonic.server.gpus import discover
from sonic.server.loader import LoadOptions
from sonic.server.logsettings import LogSettings
from sonic.server.manager import ControlMode, ModelManager
from sonic.server.relay.hub import Frontends, FrontendSettings, RelayHub
from sonic.server.settings import Limits, ServerSettings, TlsSettings

log = logging.getLogger("sonic.server")


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn(
    app: object, host: str, port: int, limits: Limits, tls: TlsSettings | None = None
) -> uvicorn.Server:
    ssl: dict[str, Any] = {}
    if tls is not None and tls.use_ssl:
        ssl = {"ssl_certfile": tls.server_cert, "ssl_keyfile": tls.server_key,
               "ssl_ca_certs": tls.root_cert or None,
               "ssl_cert_reqs": stdlib_ssl.CERT_REQUIRED if tls.mutual else stdlib_ssl.CERT_NONE}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=guarded_protocol(limits.http_max_header_size, limits.http_header_timeout_ms / 1000,
                              limits.http_max_connections),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        **ssl,
    )
    server = uvicorn.Server(config)
    # The server owns signal handling; uvicorn must not install its own.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        settings.grpc_tls.check("grpc")
        settings.http_tls.check("http")
        limits = settings.limits
        set_max_tensor_elements(limits.max_tensor_elements)
        self.auth = Authenticator(settings.auth)
        self.gpus = discover()
        log.info("GPUs: %s", ", ".join(f"{g.index}: {g.name} ({g.uuid})" for g in self.gpus)
                 or "none")  # fmt: skip
        #: The gRPC transport: checked here, so that a missing extension fails the start.
        self.transport = settings.grpc_transport or default_transport()
        native = self.transport == "native" and settings.allow_grpc and not settings.grpc_frontends
        if native:
            native_module()
        self.manager = ModelManager(
            ModelRepository(settings.model_repositories),
            settings.model_control_mode,
            LoadOptions(
                strict_config=settings.strict_model_config,
                default_max_batch_size=settings.default_max_batch_size,
                max_batch_size=limits.max_batch_size,
                max_queue_size=limits.max_queue_size,
                adaptive_batch_delay=settings.adaptive_batch_delay,
                gpus=tuple(g.index for g in self.gpus),
                cpu_fallback=settings.allow_cpu_fallback,
                inline_under_load=native,
            ),
            settings.load_models,
        )
        self.dataplane = DataPlane(
            self.manager,
            strict_readiness=settings.strict_readiness,
            allow_client_shm=settings.allow_client_shm,
            request_timeout_s=limits.request_timeout_ms / 1000,
            shm_key_prefix=settings.client_shm_key_prefix,
            logs=LogSettings(settings.log_verbose, settings.log_info),
            busy_poll_s=settings.busy_poll_us / 1e6,
            max_queue_bytes=limits.max_queue_bytes,
        )
        self.dataplane.peers = list(settings.worker_peers)
        if self.gpus:
            self.dataplane.extensions.append("cuda_shared_memory")
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def _start_frontends(self) -> Frontends:
        s = self.settings
        hub = RelayHub(servicers(self.dataplane, self.auth))
        await hub.start()
        frontends = Frontends(hub, FrontendSettings(
            socket=str(hub.path), address=f"{s.grpc_address}:{s.grpc_port}",
            max_message_bytes=s.limits.grpc_max_message_size,
            reuse_port=s.reuse_port or s.grpc_frontends > 1, bdp_probe=s.grpc_bdp_probe,
            forward_metadata=self.auth.enabled,
            tls=dataclasses.asdict(s.grpc_tls), auth=dataclasses.asdict(s.auth),
            keepalive=dataclasses.asdict(s.grpc_keepalive),
        ), s.grpc_frontends)  # fmt: skip
        try:
            await frontends.start()
        except OSError:
            await frontends.stop()
            raise
        return frontends

    async def run(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

        tracing.configure(tracing.TraceConfig.parse(s.trace_config))
        await self.manager.startup()
        # Models are loaded: serve from the first connection.  With --workers the kernel hands
        # connections to a worker as soon as its shared socket listens, so a worker must never
        # listen while still refusing requests.
        self.dataplane.accepting = True

        grpc_server = None
        native: NativeGrpcServer | None = None
        relay: Frontends | None = None
        http_servers: list[uvicorn.Server] = []
        if s.allow_grpc and s.grpc_frontends:
            relay = await self._start_frontends()
            log.info("Started GRPCInferenceService at %s:%d%s in %d front-end process(es)",
                     s.grpc_address, relay.port, " (TLS)" if s.grpc_tls.use_ssl else "",
                     s.grpc_frontends)  # fmt: skip
        elif s.allow_grpc and self.transport == "native":
            native = NativeGrpcServer(
                self.dataplane, self.auth, f"{s.grpc_address}:{s.grpc_port}",
                server_options(s.limits.grpc_max_message_size, s.reuse_port, s.grpc_bdp_probe,
                               s.grpc_keepalive), s.grpc_tls,
            )  # fmt: skip
            port = native.start()
            log.info("Started GRPCInferenceService at %s:%d%s (native transport, grpc++)",
                     s.grpc_address, port, " (TLS)" if s.grpc_tls.use_ssl else "")  # fmt: skip
        elif s.allow_grpc:
            grpc_server, port = build_server(
                self.dataplane, f"{s.grpc_address}:{s.grpc_port}", reuse_port=s.reuse_port,
                max_message_bytes=s.limits.grpc_max_message_size, tls=s.grpc_tls, auth=self.auth,
                bdp_probe=s.grpc_bdp_probe, keepalive=s.grpc_keepalive,
            )  # fmt: skip
            await grpc_server.start()
            log.info("Started GRPCInferenceService at %s:%d%s (python transport, grpc.aio)",
                     s.grpc_address, port, " (TLS)" if s.grpc_tls.use_ssl else "")  # fmt: skip
        if s.allow_http:
            front = HttpFrontend(self.dataplane, s.limits.http_max_input_size, self.auth)
            http_servers.append(_uvicorn(front.app(), s.http_address, s.http_port, s.limits,
                                         s.http_tls))
        log.info(describe(s.auth))
        if s.allow_metrics:
            from sonic.server.metrics import metrics_app

            http_servers.append(
                _uvicorn(metrics_app(self.manager, worker=bool(s.worker_peers), gpus=self.gpus),
                         s.metrics_address, s.metrics_port, s.limits)
            )
        http_tasks = []
        for i, srv in enumerate(http_servers):
            # The HTTP port (the first server) is shared between workers; metrics are not.
            sockets = (
                [_reuse_port_socket(s.http_address, s.http_port)]
                if s.reuse_port and s.allow_http and i == 0
                else None
            )
            http_tasks.append(asyncio.create_task(srv.serve(sockets=sockets)))
        poller = None
        if s.model_control_mode is ControlMode.POLL:
            poller = asyncio.create_task(self.manager.poll_forever(s.repository_poll_secs))

        # Wait until every HTTP listener is up (or one failed) before announcing readiness.
        while any(not srv.started for srv in http_servers):
            for t in http_tasks:
                if t.done():
                    await t  # re-raises a bind failure
                    raise OSError("an HTTP listener stopped during start-up")
            await asyncio.sleep(0.01)
        print("sonic server ready", flush=True)

        await self._stop.wait()
        log.info("stopping: draining requests in flight (up to %ss)", s.exit_timeout_secs)
        if poller is not None:
            poller.cancel()
        if not await self.dataplane.drain(s.exit_timeout_secs):
            log.warning(
                "exit timeout reached with %d request(s) in flight", self.dataplane.inflight.count
            )
        if grpc_server is not None:
            await grpc_server.stop(grace=0.5)
        if native is not None:
            await native.stop(0.5)
        if relay is not None:
            await relay.stop()
        for srv in http_servers:
            srv.should_exit = True
        if http_tasks:
            await asyncio.wait(http_tasks, timeout=5)
        await self.manager.close()
        self.dataplane.shm.close()
        await asyncio.to_thread(tracing.shutdown)  # the last sampled requests' spans go out
        log.info("server stopped")


def serve(settings: ServerSettings) -> None:
    """Run the server until SIGTERM/SIGINT; returns after a clean drain."""
    raise_open_file_limit()  # connections are descriptors (see sonic.server.frontends.http_limits)
    if settings.workers > 1:
        from sonic.server.workers import supervise

        raise SystemExit(supervise(settings))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    runner(Server(settings).run())
