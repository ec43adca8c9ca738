"""``sonic gateway`` (the L7 gateway on one machine) and ``sonic demo`` (``make demo``)."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
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


@click.command(context_settings={"show_default": True})
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
    from sonic.workflow.demo import run_demo

    raise SystemExit(run_demo(model_repository, work_dir, n_events, deepmet_format))
