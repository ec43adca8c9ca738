"""The ``sonic`` command.

``sonic serve`` accepts the tritonserver flags that existing scripts, Helm
charts and CMSSW's ``cmsTriton`` pass, in both ``--flag=value`` and
``--flag value`` forms; boolean flags take ``true``/``false`` (or nothing,
meaning true).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sonic import __version__
from sonic.server.settings import (
    DEFAULT_BUSY_POLL_US,
    GRPC_EXPERIMENTS,
    GRPC_TRANSPORTS,
    AuthSettings,
    KeepaliveSettings,
    Limits,
    ServerSettings,
    TlsSettings,
)

_LIMITS = Limits()
_KEEPALIVE = KeepaliveSettings()

_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


class _Bool(click.ParamType):
    """tritonserver-style boolean: ``--allow-http=false``."""

    name = "boolean"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.fail(f"{value!r} is not a boolean; use true or false", param, ctx)


BOOL = _Bool()


def _bool_option(name: str, default: bool, help: str) -> click.Option:
    return click.option(
        name,
        type=BOOL,
        default=default,
        is_flag=False,
        flag_value="true",
        show_default=True,
        help=help,
    )


def _tls_options(front: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """tritonserver's ``--grpc-use-ssl``, ``--grpc-server-cert`` ... (and the same for HTTP)."""
    what = "gRPC" if front == "grpc" else "HTTP"
    options = [
        _bool_option(f"--{front}-use-ssl", False, f"Serve {what} over TLS."),
        _bool_option(f"--{front}-use-ssl-mutual", False,
                     f"Require {what} client certificates signed by --{front}-root-cert."),
        click.option(f"--{front}-server-cert", default="", help="PEM certificate (chain)."),
        click.option(f"--{front}-server-key", default="", help="PEM private key."),
        click.option(f"--{front}-root-cert", default="", help="PEM CA for client certificates."),
    ]  # fmt: skip

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _tls_settings(front: str, opts: dict[str, Any]) -> TlsSettings:
    return TlsSettings(
        use_ssl=bool(opts[f"{front}_use_ssl"] or opts[f"{front}_use_ssl_mutual"]),
        mutual=bool(opts[f"{front}_use_ssl_mutual"]),
        server_cert=str(opts[f"{front}_server_cert"]),
        server_key=str(opts[f"{front}_server_key"]),
        root_cert=str(opts[f"{front}_root_cert"]),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sonic")
def main() -> None:
    """SONIC in Python: inference as a service for particle-physics computing."""
    # Read once, when grpc first loads: every subcommand imports grpc after this.
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


@main.command(context_settings={"show_default": True})
@click.option(
    "--model-repository",
    "--model-store",
    "model_repository",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Model repository directory (repeatable).",
)
@click.option("--http-port", type=int, default=8000)
@click.option("--grpc-port", type=int, default=8001)
@click.option("--metrics-port", type=int, default=8002)
@click.option("--http-address", default="0.0.0.0")
@click.option("--grpc-address", default="0.0.0.0")
@click.option("--metrics-address", default="0.0.0.0")
@click.option(
    "--model-control-mode",
    type=click.Choice(["none", "poll", "explicit"]),
    default="none",
    help="How models are loaded and unloaded.",
)
@click.option(
    "--load-model",
    multiple=True,
    help="Model to load at start in explicit mode (repeatable; '*' for all).",
)
@click.option(
    "--repository-poll-secs",
    type=float,
    default=15.0,
    help="Seconds between repository scans in poll mode.",
)
@_bool_option("--strict-model-config", False, "Require complete configs (no auto-complete).")
@_bool_option("--disable-auto-complete-config", False, "Same as --strict-model-config=true.")
@_bool_option("--strict-readiness", False, "Ready only while every known model is READY.")
@click.option(
    "--exit-timeout-secs",
    type=float,
    default=30.0,
    help="Longest wait for requests in flight on SIGTERM/SIGINT.",
)
@_bool_option("--allow-http", True, "Serve HTTP/REST.")
@_bool_option("--allow-grpc", True, "Serve gRPC.")
@_bool_option("--allow-metrics", True, "Serve Prometheus metrics.")
@_bool_option("--allow-client-shm", False, "Let clients register system shared memory.")
@_bool_option("--allow-cpu-fallback", False,
              "Run KIND_GPU instance groups on the CPU when there is no GPU.")
@click.option("--client-shm-key-prefix", default="",
              help="Only shared-memory keys that start with this may be registered.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    help="Server processes sharing the ports (SO_REUSEPORT), for many cores.",
)
@_bool_option("--reuse-port", False, "Bind gRPC and HTTP with SO_REUSEPORT (set by --workers).")
@click.option("--busy-poll-us", type=click.IntRange(min=0), default=DEFAULT_BUSY_POLL_US,
              help="Keep the event loop polling this long after each request, instead of "
                   "sleeping: lower latency for clients that send one request after another, "
                   "at the price of spinning one core in gaps shorter than this (0: off).")
@click.option("--grpc-keepalive-time", type=click.IntRange(min=1), default=_KEEPALIVE.time_ms,
              help="Milliseconds before the server pings an idle connection.")
@click.option("--grpc-keepalive-timeout", type=click.IntRange(min=1),
              default=_KEEPALIVE.timeout_ms,
              help="Milliseconds a keepalive ping may go unanswered before the connection closes.")
@_bool_option("--grpc-keepalive-permit-without-calls", _KEEPALIVE.permit_without_calls,
              "Allow keepalive pings on connections with no call in flight.")
@click.option("--grpc-http2-max-pings-without-data", type=click.IntRange(min=0),
              default=_KEEPALIVE.max_pings_without_data,
              help="Pings the server sends without data in between (0: no limit).")
@click.option("--grpc-http2-min-recv-ping-interval-without-data", type=click.IntRange(min=0),
              default=_KEEPALIVE.min_recv_ping_interval_without_data_ms,
              help="Shortest interval (ms) between a client's pings without data.")
@click.option("--grpc-http2-max-ping-strikes", type=click.IntRange(min=0),
              default=_KEEPALIVE.max_ping_strikes,
              help="Pings too early before the connection is closed (0: no limit).")
@click.option("--grpc-transport", type=click.Choice(GRPC_TRANSPORTS), default=None,
              envvar="SONIC_GRPC_TRANSPORT", show_envvar=True,
              help="gRPC server: 'native' (grpc++ carries the bytes, sonic.server.grpc_native; "
                   "the default where it is built) or 'python' (grpc.aio).")
@click.option("--grpc-frontends", type=click.IntRange(min=0), default=0,
              help="Serve gRPC from this many front-end processes that relay each call's bytes "
                   "to this process's data plane, so protocol work and inference use two "
                   "cores (0: serve gRPC in this process).")
@_bool_option("--grpc-http2-bdp-probe", False,
              "grpc's HTTP/2 bandwidth-delay probing (a PING per burst of data); off: a static "
              "16 MiB receive window.")
@click.option("--worker-peers", default="", hidden=True,
              help="Other workers' private metrics ports (set by --workers).")
@click.option("--http-max-input-size", type=click.IntRange(min=1),
              default=_LIMITS.http_max_input_size,
              help="Largest HTTP request body (after decompression), in bytes.")
@click.option("--grpc-max-message-size", type=click.IntRange(min=1),
              default=_LIMITS.grpc_max_message_size, help="Largest gRPC message, in bytes.")
@click.option("--max-tensor-elements", type=click.IntRange(min=1),
              default=_LIMITS.max_tensor_elements, help="Most elements in one tensor.")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=_LIMITS.max_batch_size,
              help="Cap on every model's max_batch_size (0: none).")
@click.option("--max-queue-size", type=click.IntRange(min=0), default=_LIMITS.max_queue_size,
              help="Queued requests per model where its config sets none (0: unbounded).")
@click.option("--request-timeout-ms", type=click.IntRange(min=0),
              default=_LIMITS.request_timeout_ms,
              help="Longest time a request may spend in the server (0: no limit).")
@click.option("--max-queue-bytes", type=click.IntRange(min=1), default=_LIMITS.max_queue_bytes,
              help="Bytes of input tensors of requests accepted and not yet answered, "
                   "server-wide; more are refused with UNAVAILABLE.")
@click.option("--http-max-header-size", type=click.IntRange(min=1024),
              default=_LIMITS.http_max_header_size,
              help="Largest HTTP request line plus headers, in bytes (431 beyond).")
@click.option("--http-header-timeout-ms", type=click.IntRange(min=1),
              default=_LIMITS.http_header_timeout_ms,
              help="Time an HTTP request's headers may take to arrive (408 beyond).")
@click.option("--http-max-connections", type=click.IntRange(min=0),
              default=_LIMITS.http_max_connections,
              help="Open HTTP connections per port (0: half the open-file limit).")
@_tls_options("grpc")
@_tls_options("http")
@click.option("--auth-token-file", default="", help="Static bearer tokens: lines '<role> <token>'.")
@click.option("--auth-jwt-secret-file", default="", help="Shared secret for HS256/384/512 JWTs.")
@click.option("--auth-jwks-file", default="", help="JWKS with the public keys for signed JWTs.")
@click.option("--auth-jwt-audience", default="", help="Required JWT 'aud' (empty: not checked).")
@click.option("--auth-jwt-issuer", default="", help="Required JWT 'iss' (empty: not checked).")
@click.option("--auth-roles-claim", default="roles", help="JWT claim that lists the roles.")
@_bool_option("--auth-open-health", True, "Health endpoints answer without credentials.")
@click.option("--log-verbose", type=int, default=0, help="Verbose logging level (0 = off).")
@_bool_option("--log-info", True, "Log informational messages.")
@click.option(
    "--backend-config",
    multiple=True,
    help="backend,setting=value; default-max-batch-size is honoured.",
)
def serve(**opts: object) -> None:
    """Serve a Triton model repository over gRPC and HTTP (tritonserver's flags)."""
    from sonic.server.app import serve as run_server
    from sonic.server.settings import ControlMode

    verbose = int(opts["log_verbose"])  # type: ignore[call-overload]
    level = logging.DEBUG if verbose else (logging.INFO if opts["log_info"] else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s] %(message)s")

    default_mbs = 4
    for item in opts["backend_config"]:  # type: ignore[union-attr]
        _, _, setting = str(item).partition(",")
        key, _, value = setting.partition("=")
        if key == "default-max-batch-size":
            default_mbs = int(value)

    settings = ServerSettings(
        model_repositories=list(opts["model_repository"]),  # type: ignore[call-overload]
        load_models=list(opts["load_model"]),  # type: ignore[call-overload]
        model_control_mode=ControlMode(opts["model_control_mode"]),
        repository_poll_secs=float(opts["repository_poll_secs"]),  # type: ignore[arg-type]
        strict_model_config=bool(
            opts["strict_model_config"] or opts["disable_auto_complete_config"]
        ),
        strict_readiness=bool(opts["strict_readiness"]),
        exit_timeout_secs=float(opts["exit_timeout_secs"]),  # type: ignore[arg-type]
        http_address=str(opts["http_address"]),
        http_port=int(opts["http_port"]),  # type: ignore[call-overload]
        grpc_address=str(opts["grpc_address"]),
        grpc_port=int(opts["grpc_port"]),  # type: ignore[call-overload]
        metrics_address=str(opts["metrics_address"]),
        metrics_port=int(opts["metrics_port"]),  # type: ignore[call-overload]
        allow_http=bool(opts["allow_http"]),
        allow_grpc=bool(opts["allow_grpc"]),
        allow_metrics=bool(opts["allow_metrics"]),
        allow_client_shm=bool(opts["allow_client_shm"]),
        client_shm_key_prefix=str(opts["client_shm_key_prefix"]).lstrip("/"),
        allow_cpu_fallback=bool(opts["allow_cpu_fallback"]),
        workers=int(opts["workers"]),  # type: ignore[call-overload]
        reuse_port=bool(opts["reuse_port"]),
        busy_poll_us=int(opts["busy_poll_us"]),  # type: ignore[call-overload]
        grpc_bdp_probe=bool(opts["grpc_http2_bdp_probe"]),
        grpc_frontends=int(opts["grpc_frontends"]),  # type: ignore[call-overload]
        grpc_transport=str(opts["grpc_transport"] or ""),
        worker_peers=[int(p) for p in str(opts["worker_peers"]).split(",") if p],
        default_max_batch_size=default_mbs,
        log_verbose=verbose,
        log_info=bool(opts["log_info"]),
        grpc_tls=_tls_settings("grpc", opts),
        grpc_keepalive=KeepaliveSettings(
            time_ms=int(opts["grpc_keepalive_time"]),  # type: ignore[call-overload]
            timeout_ms=int(opts["grpc_keepalive_timeout"]),  # type: ignore[call-overload]
            permit_without_calls=bool(opts["grpc_keepalive_permit_without_calls"]),
            max_pings_without_data=int(opts["grpc_http2_max_pings_without_data"]),  # type: ignore[call-overload]
            min_recv_ping_interval_without_data_ms=int(
                opts["grpc_http2_min_recv_ping_interval_without_data"]),  # type: ignore[call-overload]
            max_ping_strikes=int(opts["grpc_http2_max_ping_strikes"]),  # type: ignore[call-overload]
        ),
        http_tls=_tls_settings("http", opts),
        auth=AuthSettings(
            token_file=str(opts["auth_token_file"]),
            jwt_secret_file=str(opts["auth_jwt_secret_file"]),
            jwks_file=str(opts["auth_jwks_file"]),
            jwt_audience=str(opts["auth_jwt_audience"]),
            jwt_issuer=str(opts["auth_jwt_issuer"]),
            roles_claim=str(opts["auth_roles_claim"]),
            open_health=bool(opts["auth_open_health"]),
        ),
        limits=Limits(**{k: int(opts[k]) for k in (  # type: ignore[call-overload]
            "grpc_max_message_size", "http_max_input_size", "max_tensor_elements",
            "max_batch_size", "max_queue_size", "request_timeout_ms", "max_queue_bytes",
            "http_max_header_size", "http_header_timeout_ms", "http_max_connections")}),
    )
    if settings.workers > 1 and settings.model_control_mode is ControlMode.EXPLICIT:
        raise click.BadParameter(
            "explicit model control would reach one worker only; use --model-control-mode "
            "none or poll with --workers > 1",
            param_hint="--workers",
        )
    if settings.workers > 1 and settings.grpc_frontends:
        raise click.BadParameter(
            "--workers and --grpc-frontends are two ways to use more cores; choose one "
            "(--grpc-frontends keeps one data plane, with one batcher and one set of instances)",
            param_hint="--grpc-frontends",
        )
    for repo in settings.model_repositories:
        if not repo.is_dir():
            raise click.BadParameter(
                f"'{repo}' is not a directory", param_hint="--model-repository"
            )
    try:
        settings.grpc_tls.check("grpc")
        settings.http_tls.check("http")
        for path in (settings.auth.token_file, settings.auth.jwt_secret_file,
                     settings.auth.jwks_file):  # fmt: skip
            if path and not Path(path).is_file():
                raise ValueError(f"authentication file '{path}' does not exist")
        from sonic.server.auth import Authenticator

        Authenticator(settings.auth)  # a malformed token file or JWKS fails here, by name
        if settings.grpc_transport == "native":
            from sonic.server.grpc_native import native_module

            native_module()
    except (ValueError, ImportError) as err:
        raise click.UsageError(str(err)) from None
    run_server(settings)


@main.group()
def repo() -> None:
    """Model-repository tools."""


@repo.command("examples")
@click.argument("directory", type=click.Path(path_type=Path), default="examples/model_repository")
@click.option(
    "--torch", "with_torch", is_flag=True, help="Also rebuild particlenet (needs the torch extra)."
)
def repo_examples(directory: Path, with_torch: bool) -> None:
    """Write the example models (mlp, simple, deepmet, facile[, particlenet]) into DIRECTORY."""
    from sonic.repository.examples import write_example_repository

    names = write_example_repository(directory, torch=with_torch)
    click.echo(f"wrote {', '.join(names)} under {directory}")


@repo.command("config")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--max-batch-size", type=int, help="Override max_batch_size.")
@click.option(
    "--dynamic-batching/--no-dynamic-batching", default=None, help="Add or remove dynamic_batching."
)
@click.option("--instance-count", type=int, help="Instances in the instance group.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), help="Instance kind.")
@click.option("--threads", type=int, help="onnxruntime intra/inter-op threads.")
def repo_config(model_dir: Path, **overrides: object) -> None:
    """Write MODEL_DIR/config.pbtxt completed from the model file (e.g. 1/model.onnx)."""
    from google.protobuf import text_format

    from sonic.errors import SonicError
    from sonic.repotools import write_config

    try:
        config = write_config(model_dir, **overrides)  # type: ignore[arg-type]
    except SonicError as err:
        raise click.ClickException(str(err)) from None
    click.echo(text_format.MessageToString(config), nl=False)


@repo.command("convert")
@click.argument("source")
@click.option(
    "--repository",
    "-r",
    type=click.Path(path_type=Path),
    required=True,
    help="Model repository to write into.",
)
@click.option("--name", required=True, help="Model name (directory).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torchscript"]),
    default="onnx",
    show_default=True,
    help="Target for PyTorch sources.",
)
@click.option(
    "--example-shape",
    "shapes",
    multiple=True,
    help="PyTorch inputs as NAME:d1,d2 (FP32 zeros; first dim is the batch).",
)
@click.option("--max-batch-size", type=int, default=0, help="max_batch_size for the config.")
@click.option("--n-features", type=int, help="Feature count for scikit-learn models.")
def repo_convert(source: str, repository: Path, name: str, fmt: str, shapes: tuple[str, ...],
                 max_batch_size: int, n_features: int | None) -> None:  # fmt: skip
    """Convert SOURCE into REPOSITORY/NAME, ready to serve.

    SOURCE is a PyTorch module ('package.module:Class'), a TorchScript file (.pt), an XGBoost
    (.json/.ubj) or LightGBM (.txt) model, a pickled scikit-learn estimator (.pkl), or a
    TensorFlow SavedModel directory.
    """
    import numpy as np

    from sonic import convert

    def examples() -> dict[str, object]:
        if not shapes:
            raise click.BadParameter("PyTorch sources need --example-shape NAME:d1,d2")
        out: dict[str, object] = {}
        for item in shapes:
            key, _, dims = item.partition(":")
            out[key] = np.zeros([int(d) for d in dims.split(",")], dtype=np.float32)
        return out

    path = Path(source)
    if path.is_dir() and (path / "saved_model.pb").exists():
        done = convert.convert_savedmodel(path, repository, name,
                                          max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif path.suffix in (".pt", ".pth", ".ts"):
        done = convert.convert_torchscript(path, examples(), repository, name, fmt=fmt,
                                           max_batch_size=max_batch_size)  # fmt: skip
    elif path.suffix in (".json", ".ubj", ".txt"):
        done = convert.convert_trees(path, repository, name,
                                     max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif path.suffix in (".pkl", ".pickle", ".joblib"):
        if n_features is None:
            raise click.BadParameter("scikit-learn sources need --n-features")
        done = convert.convert_sklearn(path, n_features, repository, name,
                                       max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif ":" in source and not path.exists():
        done = convert.convert_torch(convert.load_object(source), examples(), repository, name,
                                     fmt=fmt, max_batch_size=max_batch_size)  # fmt: skip
    else:
        raise click.BadParameter(
            f"cannot tell what '{source}' is: give package.module:Class, a .pt, .json, .ubj, "
            ".txt or .pkl file, or a SavedModel directory"
        )
    click.echo(f"wrote {done}")
    click.echo((done / "config.pbtxt").read_text(), nl=False)


@repo.command("import")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--repository", "-r", type=click.Path(path_type=Path), required=True,
              help="Model repository to write into.")  # fmt: skip
@click.option("--name", required=True, help="Model name (directory).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number [default: the next free one].")  # fmt: skip
@click.option("--version-name", default="", help="A symlink to the version, as CMS names them.")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=None,
              help="[default: Triton's, 4, where the model's first dim is variable]")  # fmt: skip
@click.option("--input", "inputs", multiple=True,
              help="TorchScript inputs in forward() order: NAME:DIMS[:TYPE], no batch dim.")
@click.option("--output", "outputs", multiple=True,
              help="Output names (TorchScript, frozen graphs); the first gets --labels.")
@click.option("--labels", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Class labels, one a line, for the classification extension.")  # fmt: skip
@click.option("--to-onnx", is_flag=True, help="Also write a TensorFlow model as ONNX (tf2onnx).")
def repo_import(source: Path, repository: Path, name: str, version: int | None,
                version_name: str, max_batch_size: int | None, inputs: tuple[str, ...],
                outputs: tuple[str, ...], labels: Path | None, to_onnx: bool) -> None:  # fmt: skip
    """Import a model file as CMSSW ships it (.pb, SavedModel, .onnx, .pt) into REPOSITORY/NAME:
    config completed from the model, MD5 checksum agent, labels, named version symlink."""
    from sonic.errors import SonicError
    from sonic.importer import ImportOptions, NotImportable, TensorArg, import_model

    try:
        options = ImportOptions(name, version or 0, version_name, max_batch_size,
                                [TensorArg.parse(t) for t in inputs], list(outputs), labels,
                                to_onnx)  # fmt: skip
        result = import_model(source, repository, options)
    except (NotImportable, ModuleNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    except SonicError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result.model_dir}/{result.version}")
    click.echo((result.model_dir / "config.pbtxt").read_text(), nl=False)
    if result.onnx_dir is not None:
        click.echo(f"wrote {result.onnx_dir}/{result.version}: largest |ONNX - TensorFlow| "
                   f"on random inputs {result.onnx_max_abs_diff:.3g}")  # fmt: skip


@repo.command("check")
@click.argument(
    "repositories",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
)
@click.option("--no-round-trip", is_flag=True, help="Only load and validate; serve nothing.")
def repo_check(repositories: tuple[Path, ...], no_round_trip: bool) -> None:
    """Load every model, validate config against model, and compare served with direct outputs."""
    from rich.console import Console
    from rich.table import Table

    from sonic.repotools import check_repository

    logging.basicConfig(level=logging.ERROR)
    report = check_repository(list(repositories), round_trip=not no_round_trip)
    table = Table(title=f"sonic repo check {' '.join(map(str, repositories))}")
    for col in ("model", "status", "max |Δ| served vs direct", "detail"):
        table.add_column(col)
    for m in report.models:
        diff = "" if m.max_abs_diff is None else f"{m.max_abs_diff:g}"
        table.add_row(m.name, "[red]FAIL[/red]" if m.problem else "ok", diff, m.problem or m.note)
    Console(width=200).print(table)
    if not report.ok:
        raise SystemExit(1)


@repo.command("checksum")
@click.argument(
    "model_dirs",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
)
@click.option("--update", is_flag=True, help="Write the current MD5 checksums into config.pbtxt.")
def repo_checksum(model_dirs: tuple[Path, ...], update: bool) -> None:
    """Check (or --update) the CMSSW MD5 checksums in model_repository_agents."""
    from sonic.repository.tools import checksum_mismatches, update_checksums

    problems: list[str] = []
    for model_dir in model_dirs:
        if update:
            for key, value in update_checksums(model_dir).items():
                click.echo(f"{model_dir.name}: {key} = {value}")
        else:
            problems += checksum_mismatches(model_dir)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise SystemExit(1)


@repo.command("threadcontrol")
@click.argument("repository", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("model")
@click.option("--threads", type=int, default=1, show_default=True)
def repo_threadcontrol(repository: Path, model: str, threads: int) -> None:
    """One KIND_CPU instance and THREADS threads for MODEL (recursing into ensembles)."""
    from sonic.repository.tools import threadcontrol

    for name in threadcontrol(repository, model, threads):
        click.echo(f"updated {repository / name / 'config.pbtxt'}")


def _progress(total: int, what: str) -> tuple[object, object]:
    """A rich progress bar and a callback that advances it by n."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn())  # fmt: skip
    task = bar.add_task(what, total=total)
    return bar, lambda n: bar.advance(task, n)


@main.command(context_settings={"show_default": True})
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--events", "n_events", type=click.IntRange(min=1), default=500)
@click.option("--process", "processes", multiple=True, default=("ttbar", "znunu"),
              type=click.Choice(["ttbar", "znunu"]),
              help="Hard processes, alternating event by event (repeatable).")
@click.option("--pileup", type=click.FloatRange(min=0), default=20.0,
              help="Mean number of pileup collisions (Poisson).")
@click.option("--seed", type=int, default=1)
@click.option("--pool-size", type=click.IntRange(min=1), default=400,
              help="Minimum-bias events generated for pileup overlay.")
def sample(output: Path, n_events: int, processes: tuple[str, ...], pileup: float, seed: int,
           pool_size: int) -> None:  # fmt: skip
    """Generate Pythia 8 events with pileup into a NanoAOD-like ROOT file OUTPUT."""
    from sonic.workflow.generate import generate_sample

    bar, advance = _progress(n_events, f"generating {output.name}")
    done = [0]

    def step(n: int) -> None:
        advance(n - done[0])  # type: ignore[operator]
        done[0] = n

    with bar:  # type: ignore[attr-defined]
        generate_sample(output, n_events, processes=list(processes), pileup=pileup, seed=seed,
                        pool_size=pool_size, progress=step)  # fmt: skip
    click.echo(f"wrote {output}")


@main.group()
def workflow() -> None:
    """The DeepMET job: run it direct or as a service; train the model."""


@workflow.command("run", context_settings={"show_default": True})
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--mode", type=click.Choice(["direct", "service"]), default="direct")
@click.option("--model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=Path("examples/model_repository/deepmet/1/model.onnx"),
              help="ONNX file for direct mode.")
@click.option("--model-name", default="deepmet", help="Model name on the servers.")
@click.option("--server", "servers", multiple=True, help="host:port (repeatable).")
@click.option("--server-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="JSON file of named servers (CMSSW format).")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc")
@click.option("--client-mode", type=click.Choice(["sync", "async"]), default="async")
@click.option("--shared-memory", type=click.Choice(["auto", "on", "off"]), default="auto",
              help="Inputs through system shared memory to a server on this node.")
@click.option("--fallback-repository", type=click.Path(path_type=Path, file_okay=False),
              help="Repository for a local fallback server when every server fails.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=100, help="Events per chunk.")
@click.option("--ignore-leptons", is_flag=True, help="As CMSSW's ignore_leptons.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("workflow-output"))
@click.option("--format", "fmt", type=click.Choice(["parquet", "root"]), default="parquet")
@click.option("--dask", help="'local' for a LocalCluster, or a scheduler address.")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="LocalCluster workers.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the timing summary as JSON.")
def workflow_run(files: tuple[Path, ...], mode: str, model: Path, model_name: str,
                 servers: tuple[str, ...], server_file: Path | None, protocol: str,
                 client_mode: str, shared_memory: str, fallback_repository: Path | None,
                 chunk_size: int,
                 ignore_leptons: bool, output_dir: Path, fmt: str, dask: str | None,
                 workers: int, json_out: Path | None) -> None:  # fmt: skip
    """Run DeepMET over FILES (ROOT, tree Events) and write per-event MET."""
    import json

    import uproot

    from sonic.workflow.runner import JobConfig, run_files

    cfg = JobConfig(mode=mode, model=model.resolve(), model_name=model_name, servers=servers,
                    server_file=server_file, protocol=protocol, client_mode=client_mode,
                    shared_memory=shared_memory,
                    fallback_repository=fallback_repository, chunk_size=chunk_size,
                    ignore_leptons=ignore_leptons, output_format=fmt)  # fmt: skip
    total = sum(uproot.open(f)["Events"].num_entries for f in files)
    bar, advance = _progress(total, f"{mode} over {len(files)} file(s)")
    with bar:  # type: ignore[attr-defined]
        result = run_files(list(files), cfg, output_dir, dask=dask, workers=workers,
                           progress=advance)  # type: ignore[arg-type]  # fmt: skip
    click.echo(f"{result.events} events in {result.wall_s:.2f} s: "
               f"{result.events_per_s:.1f} events/s")  # fmt: skip
    for stage, seconds in result.stages.items():
        click.echo(f"  {stage:13s} {seconds:8.3f} s  {seconds / max(result.events, 1) * 1e3:7.3f} "
                   "ms/event")  # fmt: skip
    for out in result.outputs:
        click.echo(f"wrote {out}")
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_dict(), indent=1))


@workflow.command("graphdef", context_settings={"show_default": True})
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=Path("examples/model_repository/deepmet/1/model.onnx"),
              help="The trained DeepMET (sonic workflow train).")  # fmt: skip
def workflow_graphdef(repository: Path, onnx_path: Path) -> None:
    """Write the trained DeepMET as CMS serves it, a TensorFlow graphdef, as REPOSITORY/deepmet
    (serve it with sonic serve; run the job on it with sonic workflow run --mode service)."""
    from sonic.workflow.deepmet_tf import write_graphdef_model

    if (repository / "deepmet" / "1" / "model.onnx").resolve() == onnx_path.resolve():
        raise click.BadParameter("write into another repository than the ONNX model's own",
                                 param_hint="REPOSITORY")  # fmt: skip
    click.echo(f"wrote {write_graphdef_model(onnx_path, repository)}")


@workflow.command("train", context_settings={"show_default": True})
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("examples/model_repository/deepmet/1/model.onnx"))
@click.option("--epochs", type=click.IntRange(min=1), default=25)
@click.option("--seed", type=int, default=0)
def workflow_train(files: tuple[Path, ...], out: Path, epochs: int, seed: int) -> None:
    """Train DeepMET with PyTorch on generated FILES and export it to ONNX (--out)."""
    from sonic.workflow import deepmet

    inputs, target = deepmet.load_training_data(list(files))
    click.echo(f"{len(inputs)} events, up to {inputs.tensors['input'].shape[1]} candidates")
    bar, advance = _progress(epochs, "training")

    def report(epoch: int, train_loss: float, val_loss: float) -> None:
        advance(1)  # type: ignore[operator]
        bar.console.log(f"epoch {epoch}: train {train_loss:.4f} validation {val_loss:.4f}")  # type: ignore[attr-defined]

    with bar:  # type: ignore[attr-defined]
        net, result = deepmet.train(inputs, target, epochs=epochs, seed=seed, progress=report)
    deepmet.export_onnx(net, out)
    click.echo(f"trained in {result.seconds:.0f} s; wrote {out}")


@main.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("-m", "model", help="Model name (required unless a subcommand is given).")
@click.option("-x", "version", default="", help="Model version (default: the server's choice).")
@click.option("-u", "url", help="Server address (default localhost:8000 http / 8001 grpc).")
@click.option("-i", "protocol", type=click.Choice(["http", "grpc"], case_sensitive=False),
              default="http")
@click.option("-b", "batch_size", type=click.IntRange(min=1), default=1)
@click.option("--concurrency-range", help="start[:end[:step]] requests in flight.")
@click.option("--request-rate-range", help="start[:end[:step]] requests per second.")
@click.option("--request-distribution", type=click.Choice(["constant", "poisson"]),
              default="constant")
@click.option("-p", "--measurement-interval", type=click.IntRange(min=1), default=5000,
              help="Window length (ms) in time_windows mode.")
@click.option("--measurement-mode", type=click.Choice(["time_windows", "count_windows"]),
              default="time_windows")
@click.option("--measurement-request-count", type=click.IntRange(min=1), default=50)
@click.option("-s", "--stability-percentage", type=click.FloatRange(min=0), default=10.0)
@click.option("-r", "--max-trials", type=click.IntRange(min=3), default=10)
@click.option("--percentile", type=click.IntRange(1, 99), help="Stabilize on this percentile.")
@click.option("--shared-memory", type=click.Choice(["none", "system", "cuda"]), default="none")
@click.option("--output-shared-memory-size", type=click.IntRange(min=1), default=102400)
@click.option("--input-data", default="random", help="zero, random or a JSON data file.")
@click.option("--shape", "shapes", multiple=True, help="NAME:d1,d2 for variable dims.")
@click.option("-f", "csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--verbose-csv", is_flag=True)
@click.option("--collect-metrics", is_flag=True, help="Scrape nv_gpu_* from --metrics-url.")
@click.option("--metrics-url", default="localhost:8002/metrics")
@click.option("--metrics-interval", type=click.IntRange(min=10), default=1000)
@click.option("--profile-export-file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-H", "headers", multiple=True, help="'name:value' header (repeatable).")
@click.option("--ssl-grpc-use-ssl", is_flag=True)
@click.option("--ssl-grpc-root-certifications-file", type=click.Path(exists=True))
@click.option("--ssl-grpc-private-key-file", type=click.Path(exists=True))
@click.option("--ssl-grpc-certificate-chain-file", type=click.Path(exists=True))
@click.option("--ssl-https-verify-peer", type=click.Choice(["0", "1"]), default="1")
@click.option("--ssl-https-verify-host", type=click.Choice(["0", "1", "2"]), default="2")
@click.option("--ssl-https-ca-certificates-file", type=click.Path(exists=True))
@click.option("--ssl-https-client-certificate-file", type=click.Path(exists=True))
@click.option("--ssl-https-private-key-file", type=click.Path(exists=True))
@click.option("--async", "async_", is_flag=True, help="Accepted; sonic perf is always async.")
@click.option("--sync", is_flag=True, help="Accepted; sonic perf is always async.")
@click.option("--processes", type=click.IntRange(min=1), default=1,
              help="Load-generating processes (sonic's own flag).")
@click.pass_context
def perf(ctx: click.Context, **o: Any) -> None:
    """perf_analyzer's command line: measure a model at concurrency or request-rate levels.

    The measurement (windows stable within -s percent over the last 3), the
    server-side breakdown and the -f CSV are perf_analyzer's.  Subcommands
    sweep, scrape and report build on it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sonic.perf.analyzer import Options, Unstable, analyze, parse_range
    from sonic.perf.inputs import parse_shapes
    from sonic.perf.profiler import Settings
    from sonic.perf.target import Target, parse_header

    if not o["model"]:
        raise click.UsageError("-m (model name) is required")
    if o["shared_memory"] == "cuda":
        raise click.UsageError("--shared-memory cuda is not available: this build has no CUDA "
                               "shared memory; use system")  # fmt: skip
    protocol = o["protocol"].lower()
    kind = "grpc" if protocol == "grpc" else "https"
    try:
        levels: list[tuple[str, float]] = [("concurrency", 1)]
        if o["request_rate_range"]:
            levels = [("rate", v) for v in parse_range(o["request_rate_range"], float)]
        if o["concurrency_range"]:
            levels = [("concurrency", v) for v in parse_range(o["concurrency_range"])]
        prefix = f"ssl_{kind}_"
        ssl_options = {k.removeprefix(prefix): str(v) for k, v in o.items()
                       if k.startswith(prefix) and v and not isinstance(v, bool)}  # fmt: skip
        ssl = o["ssl_grpc_use_ssl"] if kind == "grpc" else bool(
            o["ssl_https_ca_certificates_file"] or o["ssl_https_client_certificate_file"])
        url = o["url"] or ("localhost:8001" if kind == "grpc" else "localhost:8000")
        target = Target(url, protocol, o["model"], o["version"],
                        tuple(parse_header(h) for h in o["headers"]), ssl, ssl_options)  # fmt: skip
        settings = Settings(o["measurement_mode"], o["measurement_interval"],
                            o["measurement_request_count"], o["stability_percentage"],
                            o["max_trials"], o["percentile"], o["processes"],
                            o["request_distribution"])  # fmt: skip
        opts = Options(o["batch_size"], levels, settings, o["input_data"],
                       parse_shapes(o["shapes"]), o["shared_memory"],
                       o["output_shared_memory_size"], o["csv_file"], o["verbose_csv"],
                       o["collect_metrics"], o["metrics_url"], o["metrics_interval"],
                       o["profile_export_file"])  # fmt: skip
        analyze(target, opts, log=click.echo)
    except Unstable as err:
        click.echo(str(err), err=True)
        raise SystemExit(2) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    except Exception as err:  # a server that is down, a model it does not have, ...
        raise click.ClickException(f"{type(err).__name__}: {err}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, not {text!r}") from None


def _write_table(rows: list[dict[str, Any]], out: Path, parquet: Path | None) -> None:
    from sonic.perf import tidy

    tidy.write(rows, out, parquet)
    click.echo(f"wrote {len(rows)} rows to {out}" + (f" and {parquet}" if parquet else ""))


@perf.command("sweep", context_settings={"show_default": True})
@click.option("-m", "model", required=True)
@click.option("-u", "url", required=True)
@click.option("-i", "protocol", type=click.Choice(["http", "grpc"]), default="grpc")
@click.option("-x", "version", default="")
@click.option("--batch-sizes", default="1", help="Comma-separated, e.g. 1,8,64.")
@click.option("--concurrency", "concurrencies", default="1,2,4,8", help="Comma-separated.")
@click.option("--instance-counts", default="", help="Reload with each count (explicit mode).")
@click.option("--max-queue-delays", default="", help="dynamic_batching delays in us.")
@click.option("--preferred-batch-sizes", default="",
              help="Sets separated by ';', e.g. '8,16;32'.")
@click.option("-p", "--measurement-interval", type=click.IntRange(min=1), default=2000)
@click.option("-s", "--stability-percentage", type=click.FloatRange(min=0), default=10.0)
@click.option("-r", "--max-trials", type=click.IntRange(min=3), default=10)
@click.option("--input-data", default="random")
@click.option("--shape", "shapes", multiple=True)
@click.option("--server-name", default="", help="Recorded in the table (e.g. sonic, triton).")
@click.option("--hardware", default="", help="Recorded in the table (e.g. cpu, h200).")
@click.option("-o", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("sweep.csv"))
@click.option("--parquet", type=click.Path(path_type=Path, dir_okay=False))
def perf_sweep(model: str, url: str, protocol: str, version: str, batch_sizes: str,
               concurrencies: str, instance_counts: str, max_queue_delays: str,
               preferred_batch_sizes: str, measurement_interval: int,
               stability_percentage: float, max_trials: int, input_data: str,
               shapes: tuple[str, ...], server_name: str, hardware: str, out: Path,
               parquet: Path | None) -> None:  # fmt: skip
    """Measure batch sizes x concurrencies (x instance counts x batcher settings)."""
    from sonic.perf.inputs import parse_shapes
    from sonic.perf.profiler import Settings
    from sonic.perf.sweep import SweepSpace, sweep
    from sonic.perf.target import Target

    preferred = [_ints(p) for p in preferred_batch_sizes.split(";") if p.strip()]
    space = SweepSpace(_ints(batch_sizes), _ints(concurrencies), _ints(instance_counts),
                       _ints(max_queue_delays), preferred)  # fmt: skip
    settings = Settings(interval_ms=measurement_interval, stability_pct=stability_percentage,
                        max_trials=max_trials)  # fmt: skip
    meta = {"server": server_name or None, "hardware": hardware or None, "protocol": protocol,
            "source": f"sonic perf sweep {url}"}  # fmt: skip
    bar, advance = _progress(space.size(), f"sweeping {model}")
    with bar:  # type: ignore[attr-defined]
        rows = sweep(Target(url, protocol, model, version), space, settings, meta,
                     input_data=input_data, shapes=parse_shapes(shapes),
                     progress=lambda _: advance(1))  # type: ignore[operator]  # fmt: skip
    _write_table(rows, out, parquet)


@perf.command("scrape")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("-o", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("scraped.csv"), show_default=True)
@click.option("--parquet", type=click.Path(path_type=Path, dir_okay=False))
def perf_scrape(paths: tuple[Path, ...], out: Path, parquet: Path | None) -> None:
    """Read perf_analyzer CSVs and profile exports under PATHS into one tidy table."""
    from sonic.perf.scrape import scrape

    rows = scrape(list(paths))
    if not rows:
        raise click.ClickException(f"no perf_analyzer CSV or profile export under {list(paths)}")
    _write_table(rows, out, parquet)


@perf.command("report")
@click.argument("tables", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("perf-report"), show_default=True)
@click.option("--title", default="Inference performance")
def perf_report(tables: tuple[Path, ...], out_dir: Path, title: str) -> None:
    """Plots (PNG) and one HTML page from tidy tables (sweep or scrape output)."""
    from sonic.perf import tidy
    from sonic.perf.report import write_report

    rows = [r for t in tables for r in tidy.read(t)]
    try:
        page = write_report(rows, out_dir, title)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {page} and {len(list(out_dir.glob('*.png')))} PNG files")


@main.command("plan", context_settings={"show_default": True})
@click.option("--profile", "profile_path", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Tidy table (sonic perf sweep/scrape output).")
@click.option("--model", help="Select rows of this model.")
@click.option("--server", help="Select rows of this server.")
@click.option("--hardware", help="Select rows of this hardware.")
@click.option("--batch-size", type=int, help="Select rows of this batch size.")
@click.option("--instance-count", type=int, help="Select rows of this instance count.")
@click.option("--jobs", type=click.IntRange(min=1), required=True, help="Client jobs.")
@click.option("--events-per-second", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Events per second per job.")
@click.option("--inferences-per-event", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--latency-budget-ms", type=float, help="Largest acceptable p99 latency.")
@click.option("--utilisation", type=click.FloatRange(0, 1, min_open=True), default=0.8,
              help="Target load as a fraction of the measured maximum.")
@click.option("--json", "as_json", is_flag=True)
def plan_cmd(profile_path: Path, model: str | None, server: str | None, hardware: str | None,
             batch_size: int | None, instance_count: int | None, jobs: int,
             events_per_second: float, inferences_per_event: float,
             latency_budget_ms: float | None, utilisation: float,
             as_json: bool) -> None:  # fmt: skip
    """Servers (or GPUs) needed for a workload, expected latency, clients per server."""
    import json

    from sonic.perf import tidy
    from sonic.perf.plan import Workload, plan

    want = {"model": model, "server": server, "hardware": hardware, "batch_size": batch_size,
            "instance_count": instance_count}
    rows = [r for r in tidy.read(profile_path)
            if all(v is None or r.get(k) == v for k, v in want.items())]  # fmt: skip
    try:
        p = plan(rows, Workload(jobs, events_per_second, inferences_per_event),
                 latency_budget_us=latency_budget_ms * 1000 if latency_budget_ms else None,
                 utilisation=utilisation)  # fmt: skip
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(p.as_dict(), indent=1))
        return
    click.echo(f"demand: {p.demand:.0f} inferences/s ({jobs} jobs x {events_per_second:g} "
               f"events/s x {inferences_per_event:g})")  # fmt: skip
    click.echo(f"one server: {p.max_throughput:.0f} inferences/s measured"
               + (f" within p99 <= {latency_budget_ms:g} ms" if latency_budget_ms else "")
               + f", {p.capacity_per_server:.0f} usable at {utilisation:.0%}")  # fmt: skip
    click.echo(f"servers needed: {p.servers}  ({p.load_per_server:.0f} inferences/s each, "
               f"{p.utilisation:.0%} of measured maximum)")  # fmt: skip
    click.echo(f"expected latency: avg {p.expected_avg_latency_us / 1000:.2f} ms, "
               f"p99 {p.expected_p99_latency_us / 1000:.2f} ms")  # fmt: skip
    click.echo(f"clients per server: {p.clients_per_server:.1f}")


@main.command(context_settings={"show_default": True})
@click.option("--model-repository", "repositories", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--replicas", type=click.IntRange(min=1), default=2, help="sonic serve replicas.")
@click.option("--grpc-port", type=int, default=8001)
@click.option("--http-port", type=int, default=8000)
@click.option("--stats-port", type=int, default=8404, help="HAProxy stats and /metrics.")
@click.option("--prometheus-port", type=int, default=9090)
@click.option("--address", default="127.0.0.1", help="Where the gateway listens.")
@click.option("--auth", type=click.Choice(["none", "jwt"]), default="none")
@click.option("--jwt-alg", default="HS256")
@click.option("--jwt-key", envvar="SONIC_JWT_KEY", default="",
              help="HS256 secret or the issuer's PEM path (or $SONIC_JWT_KEY).")
@click.option("--jwt-issuer", default="", help="The tokens' required 'iss' (with --auth jwt).")
@click.option("--jwt-audience", default="", help="The tokens' required 'aud' (with --auth jwt).")
@click.option("--admission-threshold", type=float, default=0.0,
              help="Refuse RepositoryIndex above this queue time per execution (ms); 0 = off.")
@click.option("--serve-arg", "serve_args", multiple=True,
              help="Extra sonic serve flag for every replica (repeatable).")
def gateway(repositories: tuple[Path, ...], replicas: int, grpc_port: int, http_port: int,
            stats_port: int, prometheus_port: int, address: str, auth: str, jwt_alg: str,
            jwt_key: str, jwt_issuer: str, jwt_audience: str, admission_threshold: float,
            serve_args: tuple[str, ...]) -> None:  # fmt: skip
    """Replicas of sonic serve behind the L7 gateway (HAProxy) with Prometheus, on one machine."""
    import contextlib
    import signal

    from sonic.gateway import Gateway, Prometheus
    from sonic.launcher import LocalServer

    if auth == "jwt" and not (jwt_key and jwt_issuer and jwt_audience):
        raise click.UsageError("--auth jwt needs --jwt-key (or $SONIC_JWT_KEY), --jwt-issuer and "
                               "--jwt-audience: tokens are checked for all three")  # fmt: skip
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(LocalServer(list(repositories), *serve_args))
                   for _ in range(replicas)]  # fmt: skip
        prom = Prometheus([f"127.0.0.1:{s.metrics_port}" for s in servers], prometheus_port)
        stack.callback(prom.stop)
        prom.start()
        gw = Gateway([("127.0.0.1", s.grpc_port, s.http_port) for s in servers], grpc_port,
                     http_port, stats_port, auth=auth, jwt_alg=jwt_alg, jwt_key=jwt_key,
                     jwt_issuer=jwt_issuer, jwt_audience=jwt_audience,
                     prometheus=prom.url, admission_threshold=admission_threshold,
                     bind=address)  # fmt: skip
        stack.callback(gw.stop)
        gw.start()
        click.echo(f"gateway: gRPC {address}:{grpc_port}, HTTP {address}:{http_port}, "
                   f"stats http://{address}:{stats_port}/stats")  # fmt: skip
        click.echo(f"prometheus: http://{prom.url}")
        for s in servers:
            click.echo(f"replica: gRPC {s.grpc_url}, HTTP {s.http_url}, metrics {s.metrics_url}")
        click.echo("ready", err=True)
        while not stop["now"]:
            if gw.proc is not None and gw.proc.poll() is not None:
                raise click.ClickException(f"haproxy exited:\n{gw.logs()[-2000:]}")
            time.sleep(0.2)
    click.echo("stopped")


@main.command(context_settings={"show_default": True})
@click.option(
    "--model-repository",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=Path("examples/model_repository"),
)
@click.option("--events", "n_events", type=click.IntRange(min=1), default=600,
              help="Events in the demo sample (generated once, then reused).")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("build/demo"), help="Sample cache, outputs and report.")
@click.option("--deepmet-format", type=click.Choice(["onnx", "graphdef"]), default="onnx",
              help="Serve DeepMET as ONNX, or as a TensorFlow graphdef as CMS does.")  # fmt: skip
def demo(model_repository: Path, n_events: int, work_dir: Path, deepmet_format: str) -> None:
    """Generate (or reuse) a sample, run DeepMET direct and as a service, write a report."""
    from sonic.demo import run_demo

    raise SystemExit(run_demo(model_repository, work_dir, n_events, deepmet_format))


if __name__ == "__main__":  # pragma: no cover
    main()
