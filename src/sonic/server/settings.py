"""Server settings: one typed object for what ``sonic serve`` (tritonserver's flags) sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sonic.server.manager import ControlMode

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_EXIT_TIMEOUT_S = 30
DEFAULT_POLL_SECS = 15


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
    http_max_input_size: int = 1 << 26
    default_max_batch_size: int = 4
    #: Server processes sharing the ports (SO_REUSEPORT); see sonic.server.workers.
    workers: int = 1
    #: Bind with SO_REUSEPORT (set for the workers of --workers N).
    reuse_port: bool = False
    #: The other workers' private metrics ports, whose statistics this worker adds to its own.
    worker_peers: list[int] = field(default_factory=list)
    log_verbose: int = 0
