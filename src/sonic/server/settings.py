"""Server settings: one typed object for what ``sonic serve`` (tritonserver's flags) sets."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class ControlMode(enum.Enum):
    """tritonserver's --model-control-mode."""

    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_EXIT_TIMEOUT_S = 30
DEFAULT_POLL_SECS = 15
#: sonic.server.frontends.busypoll's window: longer than the gap a sequential client leaves
#: between a response and its next request on loopback (~0.4 ms here), short enough that a
#: sparse stream of requests does not keep a core busy.
DEFAULT_BUSY_POLL_US = 1000
#: ``--grpc-transport``: grpc++ carrying the bytes (sonic.server.frontends.grpc_native), or
#: grpc.aio.
GRPC_TRANSPORTS = ("native", "python")
#: grpcio's per-call cost on both sides: its EventEngine TCP endpoints (recent grpcio's
#: default) hand every read and write to threads of their own, which on a 2-core node
#: costs more CPU than it saves; these processes use grpc's poller-thread path instead.
#: benchmarks/grpc_transport.py (README, "gRPC transport"): `sonic serve` +10% / +7% / +2%
#: requests/s and 5-13% less CPU per request; a Python blocking call 26% less CPU.  An
#: explicit GRPC_EXPERIMENTS wins.
GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_client"


@dataclass(slots=True)
class TlsSettings:
    """TLS of one front end; the names follow tritonserver's ``--grpc-*ssl*`` flags."""

    use_ssl: bool = False
    #: Require and verify a client certificate signed by ``root_cert``.
    mutual: bool = False
    server_cert: str = ""
    server_key: str = ""
    root_cert: str = ""

    def check(self, front: str) -> None:
        """Fail at start, naming the flag, rather than at the first handshake."""
        if not self.use_ssl:
            return
        for flag, path in (("server-cert", self.server_cert), ("server-key", self.server_key)):
            if not path or not Path(path).is_file():
                raise ValueError(f"--{front}-use-ssl needs --{front}-{flag} (a PEM file), "
                                 f"got {path!r}")  # fmt: skip
        if self.mutual and (not self.root_cert or not Path(self.root_cert).is_file()):
            raise ValueError(f"--{front}-use-ssl-mutual needs --{front}-root-cert, the CA that "
                             f"signs client certificates (got {self.root_cert!r})")  # fmt: skip



@dataclass(slots=True)
class KeepaliveSettings:
    """gRPC keepalive and HTTP/2 ping policy, with tritonserver's flags and defaults."""

    #: Server pings an idle connection after this long (--grpc-keepalive-time).
    time_ms: int = 7_200_000
    #: ... and closes it if the ping is not acknowledged within this (--grpc-keepalive-timeout).
    timeout_ms: int = 20_000
    #: Pings are allowed (both ways) on connections with no call in flight.
    permit_without_calls: bool = False
    #: Pings the server sends without data in between (0: no limit).
    max_pings_without_data: int = 2
    #: Shortest interval between a client's pings without data before they count as strikes.
    min_recv_ping_interval_without_data_ms: int = 300_000
    #: Strikes before the server closes the connection (GOAWAY "too_many_pings"; 0: none).
    max_ping_strikes: int = 2

    def channel_args(self) -> list[tuple[str, int]]:
        return [("grpc.keepalive_time_ms", self.time_ms),
                ("grpc.keepalive_timeout_ms", self.timeout_ms),
                ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
                ("grpc.http2.max_pings_without_data", self.max_pings_without_data),
                ("grpc.http2.min_ping_interval_without_data_ms",
                 self.min_recv_ping_interval_without_data_ms),
                ("grpc.http2.max_ping_strikes", self.max_ping_strikes)]  # fmt: skip



@dataclass(slots=True)
class AuthSettings:
    """Who may call what: see :mod:`sonic.server.frontends.auth`.  Off when no source is given."""

    #: Lines of ``<role> <token>``: static bearer tokens (role ``inference`` or ``admin``).
    token_file: str = ""
    #: Shared secret for HS256/384/512 JWTs.
    jwt_secret_file: str = ""
    #: Public keys (RFC 7517 JWKS) for RS/PS/ES/EdDSA JWTs.
    jwks_file: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    #: JWT claim with the roles: a list, or a space-separated string.
    roles_claim: str = "roles"
    #: Health endpoints answer without credentials (Kubernetes probes, load balancers).
    open_health: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.token_file or self.jwt_secret_file or self.jwks_file)



@dataclass(slots=True)
class Limits:
    """What one request may ask of the server; each is a ``sonic serve`` flag.

    The defaults admit every realistic HEP request (a DeepMET batch of 1024
    events is ~110 MB) and refuse the ones that would exhaust the host.
    """

    #: Largest gRPC message, either way (grpc's own default is 4 MiB).
    grpc_max_message_size: int = 1 << 28
    #: Largest HTTP request body after decompression (Triton's --http-max-input-size).
    http_max_input_size: int = 1 << 26
    #: Most elements in one tensor; bounds the memory a shape can claim.
    max_tensor_elements: int = 1 << 28
    #: Cap on every model's max_batch_size (configs above it are lowered at load, with a warning).
    max_batch_size: int = 1 << 16
    #: Requests queued per model when its config sets no max_queue_size (0: unbounded).
    max_queue_size: int = 1 << 14
    #: Longest time a request may spend in the server, queue and execution (0: no limit).
    request_timeout_ms: int = 300_000
    #: Bytes of input tensors held by requests accepted and not yet answered, server-wide.
    max_queue_bytes: int = 2 << 30
    #: Largest HTTP request line plus headers (431 beyond).
    http_max_header_size: int = 64 << 10
    #: Time an HTTP request's headers may take to arrive (408 beyond).
    http_header_timeout_ms: int = 10_000
    #: Open HTTP connections per port (0: half of what the open-file limit leaves).
    http_max_connections: int = 0



@dataclass(slots=True)
class ServerSettings:
    model_repositories: list[Path]
    #: Models to load at start in explicit mode ("*" for all).
    load_models: list[str] = field(default_factory=list)
    model_control_mode: ControlMode = ControlMode.NONE
    repository_poll_secs: float = DEFAULT_POLL_SECS
    #: No auto-completion from the model file: config.pbtxt must be complete.
    strict_model_config: bool = False
    #: Ready only while every known model is READY (Triton's --strict-readiness).
    strict_readiness: bool = False
    exit_timeout_secs: float = DEFAULT_EXIT_TIMEOUT_S
    http_address: str = "0.0.0.0"
    http_port: int = DEFAULT_HTTP_PORT
    grpc_address: str = "0.0.0.0"
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_address: str = "0.0.0.0"
    metrics_port: int = DEFAULT_METRICS_PORT
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    #: Let clients register system shared-memory regions (tritonserver's --allow-client-shm).
    allow_client_shm: bool = False
    #: Only keys starting with this (after the leading '/') may be registered.
    client_shm_key_prefix: str = ""
    default_max_batch_size: int = 4
    #: Run KIND_GPU instance groups on the CPU when the server sees no GPU (else they fail).
    allow_cpu_fallback: bool = False
    #: Server processes sharing the ports (SO_REUSEPORT); see sonic.server.workers.
    workers: int = 1
    #: Bind with SO_REUSEPORT (set for the workers of --workers N).
    reuse_port: bool = False
    #: The other workers' private metrics ports, whose statistics this worker adds to its own.
    worker_peers: list[int] = field(default_factory=list)
    #: Microseconds the event loop keeps polling after each request (0: sleep at once).
    busy_poll_us: int = DEFAULT_BUSY_POLL_US
    #: Partial batches go at once while waiting gathers nothing (sonic.server.scheduling.delay).
    adaptive_batch_delay: bool = True
    #: grpc's HTTP/2 bandwidth-delay-product probing (off: a static 16 MiB window instead).
    grpc_bdp_probe: bool = False
    #: gRPC front-end processes relaying to the data plane (0: gRPC in-process); grpc_relay.
    grpc_frontends: int = 0
    #: One of GRPC_TRANSPORTS; "" picks native where the extension is built.
    grpc_transport: str = ""
    log_verbose: int = 0
    log_info: bool = True
    #: tritonserver's --trace-config items (sonic.server.tracing; OpenTelemetry mode only).
    trace_config: list[str] = field(default_factory=list)
    grpc_tls: TlsSettings = field(default_factory=TlsSettings)
    grpc_keepalive: KeepaliveSettings = field(default_factory=KeepaliveSettings)
    http_tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: Limits = field(default_factory=Limits)
