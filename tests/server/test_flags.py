"""The flag table: every setting has a flag, and a ``--workers`` child gets what its parent has."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sonic.cli.serve import serve
from sonic.server import flags
from sonic.server.settings import ControlMode, ServerSettings
from sonic.server.workers import worker_args


def parse(args: list[str]) -> ServerSettings:
    """What ``sonic serve ARGS`` would run with, without running it."""
    ctx = serve.make_context("serve", list(args))
    return flags.settings_from(ctx.params)


def leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out |= leaves(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = value
    return out


def test_every_setting_has_exactly_one_flag() -> None:
    settings = set(leaves(ServerSettings(model_repositories=[])))
    primary = [f.setting for f in flags.FLAGS if not f.also]
    assert sorted(primary) == sorted(set(primary)), "a setting written by two primary flags"
    assert settings == set(primary)


def test_the_defaults_are_the_settings_defaults() -> None:
    assert parse(["--model-repository=/m"]) == ServerSettings(model_repositories=[Path("/m")])


# Every flag away from its default, so that a flag a worker does not get shows as a difference.
CHANGED = [
    "--model-repository=/a", "--model-store=/b", "--model-control-mode=poll",
    "--repository-poll-secs=3.5", "--strict-model-config=true", "--strict-readiness",
    "--exit-timeout-secs=7", "--backend-config=onnxruntime,default-max-batch-size=9",
    "--http-port=18000", "--grpc-port=18001", "--http-address=127.0.0.1",
    "--grpc-address=127.0.0.2", "--allow-http=false", "--allow-grpc=false",
    "--allow-client-shm=true", "--client-shm-key-prefix=/job-", "--allow-cpu-fallback",
    "--busy-poll-us=7", "--grpc-transport=python", "--grpc-http2-bdp-probe=true",
    "--grpc-keepalive-time=11", "--grpc-keepalive-timeout=12",
    "--grpc-keepalive-permit-without-calls=true", "--grpc-http2-max-pings-without-data=13",
    "--grpc-http2-min-recv-ping-interval-without-data=14", "--grpc-http2-max-ping-strikes=15",
    "--grpc-max-message-size=16", "--http-max-input-size=17", "--max-tensor-elements=18",
    "--max-batch-size=19", "--max-queue-size=20", "--request-timeout-ms=21",
    "--max-queue-bytes=22", "--http-max-header-size=2048", "--http-header-timeout-ms=24",
    "--http-max-connections=25", "--grpc-use-ssl-mutual=true", "--grpc-server-cert=c.pem",
    "--grpc-server-key=k.pem", "--grpc-root-cert=ca.pem", "--http-use-ssl=true",
    "--http-server-cert=hc.pem", "--http-server-key=hk.pem", "--http-root-cert=hca.pem",
    "--auth-token-file=t", "--auth-jwt-secret-file=s", "--auth-jwks-file=j",
    "--auth-jwt-audience=aud", "--auth-jwt-issuer=iss", "--auth-roles-claim=groups",
    "--auth-open-health=false", "--log-verbose=2", "--log-info=false", "--trace-config=rate=7",
]  # fmt: skip


def test_a_worker_gets_every_setting_of_its_parent() -> None:
    parent = parse([*CHANGED, "--workers=3"])
    child = parse(worker_args(parent, 9123, [9124, 9125])[4:])
    theirs, mine = leaves(parent), leaves(child)
    differ = {k for k in theirs if theirs[k] != mine[k]}
    # What the supervisor sets per worker, and nothing else.
    assert differ == {"metrics_address", "metrics_port", "workers", "reuse_port", "worker_peers"}
    assert (child.metrics_port, child.workers, child.reuse_port, child.worker_peers) == (
        9123, 1, True, [9124, 9125])
    assert child.log_info is False  # once lost on the way to the workers


def test_changed_flags_reach_their_settings() -> None:
    s = parse(CHANGED)
    assert s.model_repositories == [Path("/a"), Path("/b")]
    assert s.model_control_mode is ControlMode.POLL
    assert s.default_max_batch_size == 9 and s.client_shm_key_prefix == "job-"
    assert s.grpc_tls.use_ssl and s.grpc_tls.mutual, "mutual TLS implies TLS"
    assert s.limits.request_timeout_ms == 21 and s.grpc_keepalive.max_ping_strikes == 15
    assert parse(["--model-repository=/m", "--disable-auto-complete-config"]).strict_model_config


@pytest.mark.parametrize("arg", ["--allow-http=maybe", "--workers=0", "--busy-poll-us=-1",
                                 "--grpc-transport=carrier-pigeon"])  # fmt: skip
def test_bad_values_are_refused_by_name(arg: str) -> None:
    import click

    with pytest.raises(click.BadParameter) as err:
        parse(["--model-repository=/m", arg])
    assert f"'{arg.split('=')[0]}'" in err.value.format_message()
