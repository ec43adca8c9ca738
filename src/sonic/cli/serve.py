"""``sonic serve``: tritonserver's command line, in ``--flag=value`` and ``--flag value`` forms.

The flags are those existing scripts, Helm charts and CMSSW's ``cmsTriton``
pass (the table is :data:`sonic.server.flags.FLAGS`); boolean flags take
``true``/``false`` (or nothing, meaning true).  What cannot work is refused
here, naming the flag, before anything starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from sonic.cli.options import serve_options
from sonic.server import flags
from sonic.server.settings import ControlMode


@click.command(context_settings={"show_default": True})
@serve_options
def serve(**opts: object) -> None:
    """Serve a Triton model repository over gRPC and HTTP (tritonserver's flags)."""
    from sonic.server.app import serve as run_server

    settings = flags.settings_from(opts)
    level = logging.WARNING if not settings.log_info else logging.INFO
    logging.basicConfig(level=logging.DEBUG if settings.log_verbose else level,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")  # fmt: skip
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
        from sonic.server.frontends.auth import Authenticator

        Authenticator(settings.auth)  # a malformed token file or JWKS fails here, by name
        from sonic.server.tracing import check

        check(settings.trace_config)
        if settings.grpc_transport == "native":
            from sonic.server.frontends.grpc_native import native_module

            native_module()
    except (ValueError, ImportError) as err:
        raise click.UsageError(str(err)) from None
    run_server(settings)


