"""``sonic serve``'s flags: one table for the command line, the settings and ``--workers`` children.

Each row names a tritonserver flag, the :class:`~sonic.server.settings.ServerSettings`
field it sets (a dotted path into the nested settings) and how a worker of
``--workers N`` gets it.  The click options (:mod:`sonic.cli.serve`), the
settings built from them (:func:`settings_from`) and each worker's command
line (:func:`worker_args`) are all derived from :data:`FLAGS`, so a flag is
written once: before this table each was written three times, and
``--log-info`` never reached the workers.  Defaults come from the settings
dataclasses, not from here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sonic.server.settings import GRPC_TRANSPORTS, ControlMode, ServerSettings

Kind = Literal["bool", "int", "float", "str", "path", "choice"]


@dataclass(frozen=True, slots=True)
class Flag:
    """One ``sonic serve`` flag."""

    name: str
    #: The ServerSettings field it sets, dotted for nested settings ("limits.max_queue_size").
    setting: str
    kind: Kind
    help: str = ""
    aliases: tuple[str, ...] = ()
    #: Smallest value of an int flag.
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    multiple: bool = False
    required: bool = False
    hidden: bool = False
    envvar: str | None = None
    #: A --workers child gets the parent's value ("same") or one the supervisor gives ("own").
    worker: Literal["same", "own"] = "same"
    #: A second spelling of another flag's setting (OR-ed with it); never passed to workers.
    also: bool = False
    #: When true, this setting is set true as well (mutual TLS implies TLS).
    implies: str = ""
    #: Command-line value -> setting value (default: as it is).
    parse: Callable[[Any], Any] | None = None
    #: Setting value -> command-line values (default: one value; booleans as true/false).
    unparse: Callable[[Any], list[str]] | None = None

    @property
    def dest(self) -> str:
        """click's parameter name for it."""
        return self.name.removeprefix("--").replace("-", "_")

    def values(self, value: Any) -> list[str]:
        """The setting's value as this flag's command-line values."""
        if self.unparse is not None:
            return self.unparse(value)
        if isinstance(value, bool):
            return ["true" if value else "false"]
        if isinstance(value, list):
            return [str(v) for v in value]
        return [str(value)]


def _backend_config(items: Iterable[str]) -> int:
    """``--backend-config=backend,setting=value``: only default-max-batch-size is honoured."""
    size = ServerSettings.__dataclass_fields__["default_max_batch_size"].default
    for item in items:
        _, _, setting = str(item).partition(",")
        key, _, value = setting.partition("=")
        if key == "default-max-batch-size":
            size = int(value)
    return int(size)


def _tls(front: str) -> list[Flag]:
    """tritonserver's ``--grpc-use-ssl``, ``--grpc-server-cert`` ... (and the same for HTTP)."""
    what = "gRPC" if front == "grpc" else "HTTP"
    s = f"{front}_tls"
    return [
        Flag(f"--{front}-use-ssl", f"{s}.use_ssl", "bool", f"Serve {what} over TLS."),
        Flag(f"--{front}-use-ssl-mutual", f"{s}.mutual", "bool",
             f"Require {what} client certificates signed by --{front}-root-cert.",
             implies=f"{s}.use_ssl"),
        Flag(f"--{front}-server-cert", f"{s}.server_cert", "str", "PEM certificate (chain)."),
        Flag(f"--{front}-server-key", f"{s}.server_key", "str", "PEM private key."),
        Flag(f"--{front}-root-cert", f"{s}.root_cert", "str", "PEM CA for client certificates."),
    ]  # fmt: skip


FLAGS: tuple[Flag, ...] = (
    # -- the repository and model control
    Flag("--model-repository", "model_repositories", "path", "Model repository directory "
         "(repeatable).", aliases=("--model-store",), multiple=True, required=True),
    Flag("--model-control-mode", "model_control_mode", "choice",
         "How models are loaded and unloaded.", choices=tuple(m.value for m in ControlMode),
         parse=ControlMode, unparse=lambda m: [m.value]),
    Flag("--load-model", "load_models", "str",
         "Model to load at start in explicit mode (repeatable; '*' for all).", multiple=True),
    Flag("--repository-poll-secs", "repository_poll_secs", "float",
         "Seconds between repository scans in poll mode."),
    Flag("--strict-model-config", "strict_model_config", "bool",
         "Require complete configs (no auto-complete)."),
    Flag("--disable-auto-complete-config", "strict_model_config", "bool",
         "Same as --strict-model-config=true.", also=True),
    Flag("--strict-readiness", "strict_readiness", "bool",
         "Ready only while every known model is READY."),
    Flag("--exit-timeout-secs", "exit_timeout_secs", "float",
         "Longest wait for requests in flight on SIGTERM/SIGINT."),
    Flag("--backend-config", "default_max_batch_size", "str",
         "backend,setting=value; default-max-batch-size is honoured.", multiple=True,
         parse=_backend_config,
         unparse=lambda v: [f"onnxruntime,default-max-batch-size={v}"]),
    # -- ports and what is served
    Flag("--http-port", "http_port", "int"),
    Flag("--grpc-port", "grpc_port", "int"),
    Flag("--metrics-port", "metrics_port", "int", worker="own"),
    Flag("--http-address", "http_address", "str"),
    Flag("--grpc-address", "grpc_address", "str"),
    Flag("--metrics-address", "metrics_address", "str", worker="own"),
    Flag("--allow-http", "allow_http", "bool", "Serve HTTP/REST."),
    Flag("--allow-grpc", "allow_grpc", "bool", "Serve gRPC."),
    Flag("--allow-metrics", "allow_metrics", "bool", "Serve Prometheus metrics.", worker="own"),
    Flag("--allow-client-shm", "allow_client_shm", "bool",
         "Let clients register system shared memory."),
    Flag("--client-shm-key-prefix", "client_shm_key_prefix", "str",
         "Only shared-memory keys that start with this may be registered.",
         parse=lambda v: str(v).lstrip("/")),
    Flag("--allow-cpu-fallback", "allow_cpu_fallback", "bool",
         "Run KIND_GPU instance groups on the CPU when there is no GPU."),
    # -- processes, transports and tuning
    Flag("--workers", "workers", "int",
         "Server processes sharing the ports (SO_REUSEPORT), for many cores.", minimum=1,
         worker="own"),
    Flag("--reuse-port", "reuse_port", "bool",
         "Bind gRPC and HTTP with SO_REUSEPORT (set by --workers).", worker="own"),
    Flag("--worker-peers", "worker_peers", "str",
         "Other workers' private metrics ports (set by --workers).", hidden=True, worker="own",
         parse=lambda v: [int(p) for p in str(v).split(",") if p],
         unparse=lambda ports: [",".join(map(str, ports))]),
    Flag("--busy-poll-us", "busy_poll_us", "int",
         "Keep the event loop polling this long after each request, instead of sleeping: lower "
         "latency for clients that send one request after another, at the price of spinning "
         "one core in gaps shorter than this (0: off).", minimum=0),
    Flag("--adaptive-batch-delay", "adaptive_batch_delay", "bool",
         "Send a dynamic batcher's partial batch without waiting max_queue_delay_microseconds "
         "while such waits keep gathering no other request (one request in flight at a time); "
         "false: hold every delay, as Triton does (sonic.server.scheduling.delay)."),
    Flag("--grpc-transport", "grpc_transport", "choice",
         "gRPC server: 'native' (grpc++ carries the bytes, sonic.server.frontends.grpc_native; "
         "the default where it is built) or 'python' (grpc.aio).", choices=GRPC_TRANSPORTS,
         envvar="SONIC_GRPC_TRANSPORT", parse=lambda v: v or "",
         unparse=lambda v: [v] if v else []),
    Flag("--grpc-frontends", "grpc_frontends", "int",
         "Serve gRPC from this many front-end processes that relay each call's bytes to this "
         "process's data plane, so protocol work and inference use two cores (0: serve gRPC "
         "in this process).", minimum=0),
    Flag("--grpc-http2-bdp-probe", "grpc_bdp_probe", "bool",
         "grpc's HTTP/2 bandwidth-delay probing (a PING per burst of data); off: a static "
         "16 MiB receive window."),
    # -- gRPC keepalive, as tritonserver
    Flag("--grpc-keepalive-time", "grpc_keepalive.time_ms", "int",
         "Milliseconds before the server pings an idle connection.", minimum=1),
    Flag("--grpc-keepalive-timeout", "grpc_keepalive.timeout_ms", "int",
         "Milliseconds a keepalive ping may go unanswered before the connection closes.",
         minimum=1),
    Flag("--grpc-keepalive-permit-without-calls", "grpc_keepalive.permit_without_calls", "bool",
         "Allow keepalive pings on connections with no call in flight."),
    Flag("--grpc-http2-max-pings-without-data", "grpc_keepalive.max_pings_without_data", "int",
         "Pings the server sends without data in between (0: no limit).", minimum=0),
    Flag("--grpc-http2-min-recv-ping-interval-without-data",
         "grpc_keepalive.min_recv_ping_interval_without_data_ms", "int",
         "Shortest interval (ms) between a client's pings without data.", minimum=0),
    Flag("--grpc-http2-max-ping-strikes", "grpc_keepalive.max_ping_strikes", "int",
         "Pings too early before the connection is closed (0: no limit).", minimum=0),
    # -- what one request may ask (sonic.server.settings.Limits)
    Flag("--grpc-max-message-size", "limits.grpc_max_message_size", "int",
         "Largest gRPC message, in bytes.", minimum=1),
    Flag("--http-max-input-size", "limits.http_max_input_size", "int",
         "Largest HTTP request body (after decompression), in bytes.", minimum=1),
    Flag("--max-tensor-elements", "limits.max_tensor_elements", "int",
         "Most elements in one tensor.", minimum=1),
    Flag("--max-batch-size", "limits.max_batch_size", "int",
         "Cap on every model's max_batch_size (0: none).", minimum=0),
    Flag("--max-queue-size", "limits.max_queue_size", "int",
         "Queued requests per model where its config sets none (0: unbounded).", minimum=0),
    Flag("--request-timeout-ms", "limits.request_timeout_ms", "int",
         "Longest time a request may spend in the server (0: no limit).", minimum=0),
    Flag("--max-queue-bytes", "limits.max_queue_bytes", "int",
         "Bytes of input tensors of requests accepted and not yet answered, server-wide; more "
         "are refused with UNAVAILABLE.", minimum=1),
    Flag("--http-max-header-size", "limits.http_max_header_size", "int",
         "Largest HTTP request line plus headers, in bytes (431 beyond).", minimum=1024),
    Flag("--http-header-timeout-ms", "limits.http_header_timeout_ms", "int",
         "Time an HTTP request's headers may take to arrive (408 beyond).", minimum=1),
    Flag("--http-max-connections", "limits.http_max_connections", "int",
         "Open HTTP connections per port (0: half the open-file limit).", minimum=0),
    # -- TLS and authentication
    *_tls("grpc"),
    *_tls("http"),
    Flag("--auth-token-file", "auth.token_file", "str",
         "Static bearer tokens: lines '<role> <token>'."),
    Flag("--auth-jwt-secret-file", "auth.jwt_secret_file", "str",
         "Shared secret for HS256/384/512 JWTs."),
    Flag("--auth-jwks-file", "auth.jwks_file", "str",
         "JWKS with the public keys for signed JWTs."),
    Flag("--auth-jwt-audience", "auth.jwt_audience", "str",
         "Required JWT 'aud' (empty: not checked)."),
    Flag("--auth-jwt-issuer", "auth.jwt_issuer", "str", "Required JWT 'iss' (empty: not checked)."),
    Flag("--auth-roles-claim", "auth.roles_claim", "str", "JWT claim that lists the roles."),
    Flag("--auth-open-health", "auth.open_health", "bool",
         "Health endpoints answer without credentials."),
    # -- logging
    Flag("--log-verbose", "log_verbose", "int", "Verbose logging level (0 = off)."),
    Flag("--log-info", "log_info", "bool", "Log informational messages."),
    Flag("--trace-config", "trace_config", "str",
         "Request traces, as tritonserver: level=TIMESTAMPS, mode=opentelemetry, rate=N, count=N, "
         "opentelemetry,url=HOST:PORT/v1/traces, opentelemetry,resource=KEY=VALUE (repeatable; "
         "off by default).", multiple=True),
)  # fmt: skip


def _get(settings: ServerSettings, path: str) -> Any:
    return operator.attrgetter(path)(settings)


def _set(settings: ServerSettings, path: str, value: Any) -> None:
    owner, _, name = path.rpartition(".")
    setattr(_get(settings, owner) if owner else settings, name, value)


def default(flag: Flag) -> Any:
    """The flag's default on the command line, from the settings' own defaults."""
    if flag.multiple:
        return ()
    values = flag.values(_get(ServerSettings(model_repositories=[]), flag.setting))
    return values[0] if values else None


def settings_from(values: Mapping[str, Any]) -> ServerSettings:
    """ServerSettings from the command line's values, keyed by :attr:`Flag.dest`."""
    settings = ServerSettings(model_repositories=[])
    for flag in FLAGS:
        value = values[flag.dest]
        if flag.multiple:
            value = list(value)
        if flag.parse is not None:
            value = flag.parse(value)
        if flag.also:
            value = _get(settings, flag.setting) or value
        _set(settings, flag.setting, value)
        if flag.implies and value:
            _set(settings, flag.implies, True)
    return settings


def worker_args(settings: ServerSettings, own: Mapping[str, Any]) -> list[str]:
    """Every flag of a ``--workers`` child: the parent's values, and ``own`` (by flag name) for
    the flags the supervisor sets per worker."""
    args: list[str] = []
    for flag in FLAGS:
        if flag.also:
            continue
        if flag.worker == "own":
            if flag.name not in own:
                raise KeyError(f"the supervisor must give each worker {flag.name}")
            values = flag.values(own[flag.name])
        else:
            values = flag.values(_get(settings, flag.setting))
        args += [f"{flag.name}={v}" for v in values]
    return args
