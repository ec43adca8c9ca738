"""Hardening where credentials are on: requests refused before they cost anything, the audit
log, shared-memory regions owned by their registrant, and the smaller findings."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.server.frontends.auth import REFUSALS_PER_S
from sonic.server.frontends.grpc_servicers import MAX_WATCHES
from tests.fixtures.auth import AUDIENCE, TOKENS, auth_args, hs256, keys, repo
from tests.fixtures.waiting import wall_clock
from tests.security.attacks import assert_unharmed, under_attack

__all__ = ["keys", "repo"]  # pytest fixtures, from tests.fixtures.auth

SECOND_ADMIN = "tok-second-admin-0123456789"


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(repo: Path, keys: dict[str, Any]) -> Iterator[LocalServer]:
    tokens = keys["dir"] / "tokens"
    tokens.write_text(tokens.read_text() + f"admin {SECOND_ADMIN}\n")
    with LocalServer(repo, "--model-control-mode=explicit", "--load-model=*",
                     "--allow-client-shm=true", *auth_args(keys)) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def relayed(repo: Path, keys: dict[str, Any], secured: LocalServer) -> Iterator[LocalServer]:
    with LocalServer(repo, "--grpc-frontends=1", *auth_args(keys)) as server:
        yield server


# -- 5. an unauthenticated request costs about what its headers cost -----------------


@pytest.mark.parametrize("which", ["in-process", "relay"])
@wall_clock
def test_big_message_without_credentials_is_not_buffered(
    secured: LocalServer, relayed: LocalServer, which: str
) -> None:
    """Was: a 200 MiB gRPC message without credentials was buffered whole (+634 MB)."""
    server = secured if which == "in-process" else relayed
    request = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\0" * (200 << 20)])

    def attack() -> grpc.RpcError:
        with grpc.insecure_channel(server.grpc_url, options=[
                ("grpc.max_send_message_length", 256 << 20)]) as channel:  # fmt: skip
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
            return info.value

    felt = under_attack(server, attack)
    assert_unharmed(felt)
    assert felt.result.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "requires credentials" in felt.result.details()


# -- 6. the audit log ------------------------------------------------------------------


def _audit(server: LocalServer) -> list[str]:
    time.sleep(0.3)
    return [line for line in server.log().splitlines() if "sonic.audit]" in line]


def test_refusals_are_audited_and_rate_limited(secured: LocalServer) -> None:
    client = httpclient.InferenceServerClient(secured.http_url)
    before = len(_audit(secured))
    for i in range(50):
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("mlp", headers=_bearer(f"guess-{i}"))
    time.sleep(1.1)  # the next second's first refusal reports how many were left out
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("mlp", headers=_bearer("guess-last"))
    lines = _audit(secured)[before:]
    refused = [line for line in lines if "refused GET /v2/models/mlp from 127.0.0.1:" in line]
    assert REFUSALS_PER_S <= len(refused) <= 2 * REFUSALS_PER_S + 1, lines
    assert any(re.search(r"\d+ more refused calls", line) for line in lines), lines
    assert not any("guess-" in line for line in lines)  # never the token


def test_auditing_survives_log_info_off(secured: LocalServer, repo: Path) -> None:
    """Was: an admin could switch auditing off with log_info=false, and --log-info=false at
    start silenced it too."""
    admin = httpclient.InferenceServerClient(secured.http_url)
    admin.update_log_settings({"log_info": False}, headers=_bearer(TOKENS["admin"]))
    try:
        admin.load_model("mlp", headers=_bearer(TOKENS["admin"]))
        assert any("/v2/repository/models/mlp/load by token:" in line
                   for line in _audit(secured)[-3:])  # fmt: skip
    finally:
        admin.update_log_settings({"log_info": True}, headers=_bearer(TOKENS["admin"]))
    tokens = Path(tempfile.mkdtemp()) / "tokens"
    tokens.write_text(f"admin {TOKENS['admin']}\n")
    with LocalServer(repo, "--log-info=false", f"--auth-token-file={tokens}",
                     "--model-control-mode=explicit") as quiet:  # fmt: skip
        httpclient.InferenceServerClient(quiet.http_url).load_model(
            "mlp", headers=_bearer(TOKENS["admin"]))
        assert any("load by token:" in line for line in _audit(quiet))


def test_control_characters_never_reach_audit_lines(secured: LocalServer) -> None:
    sub = "job\x1b[31m\nFAKE admin line\u2028\x00end"
    token = hs256(["inference"], sub=sub)
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    with pytest.raises(InferenceServerException):
        client.load_model("mlp", headers=_bearer(token))
    lines = _audit(secured)
    line = next(line for line in reversed(lines) if "denied RepositoryModelLoad" in line)
    assert "job\\x1b[31m\\x0aFAKE admin line\\u2028\\x00end" in line
    log = secured.log()
    assert "\x1b" not in log and "\u2028" not in log and "\x00" not in log
    assert not any(line.startswith("FAKE") for line in log.splitlines())


# -- 8. shared-memory regions belong to whoever registered them ---------------------


def test_regions_are_private_to_their_registrant(secured: LocalServer) -> None:
    """Was: an inference-role token read and overwrote another job's region (as in Triton)."""
    key = f"/sonic_owned_{os.getpid()}"
    region = shm.create_shared_memory_region("mine", key, 4096)
    first, second = _bearer(TOKENS["admin"]), _bearer(SECOND_ADMIN)
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    try:
        x = np.ones((1, 64), np.float32)
        shm.set_shared_memory_region(region, [x])
        client.register_system_shared_memory("mine", key, 4096, headers=first)
        inp = grpcclient.InferInput("input", [1, 64], "FP32")
        inp.set_shared_memory("mine", x.nbytes)
        client.infer("mlp", [inp], headers=first)
        for headers in (second, _bearer(TOKENS["inference"])):
            with pytest.raises(InferenceServerException) as info:
                client.infer("mlp", [inp], headers=headers)
            assert str(info.value.status()) == "StatusCode.NOT_FOUND"
            assert "unable to find shared memory region 'mine'" in info.value.message()
        assert not client.get_system_shared_memory_status(headers=second).regions
        # The same name is free for the other job; unregistering all is per job too.
        client.register_system_shared_memory("mine", key, 4096, headers=second)
        client.unregister_system_shared_memory(headers=second)
        assert "mine" in client.get_system_shared_memory_status(headers=first).regions
        client.infer("mlp", [inp], headers=first)
        client.unregister_system_shared_memory("mine", headers=first)
    finally:
        shm.destroy_shared_memory_region(region)


# -- 9. unauthenticated input that gave a 500 ------------------------------------------


def test_jwt_with_a_key_of_the_wrong_type_is_401(secured: LocalServer) -> None:
    """Was: an ES256 JWT naming the RSA key's kid gave a 500 with a traceback."""
    token = jwt.encode({"sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60},
                       ec.generate_private_key(ec.SECP256R1()), "ES256",
                       headers={"kid": "site-1"})  # fmt: skip
    request = urllib.request.Request(f"http://{secured.http_url}/v2/models/mlp",
                                     headers=_bearer(token))  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401
    assert "needs a key of type EC; key 'site-1' is RSA" in info.value.read().decode()
    assert "Traceback" not in secured.log()


def test_trace_setting_through_the_relay_is_not_a_500(relayed: LocalServer) -> None:
    with grpc.insecure_channel(relayed.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for metadata in ((), tuple(_bearer(TOKENS["inference"]).items())):
            with pytest.raises(grpc.RpcError) as info:
                stub.TraceSetting(pb.TraceSettingRequest(), metadata=metadata, timeout=10)
            assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                         grpc.StatusCode.UNIMPLEMENTED)  # fmt: skip
    assert "Traceback" not in relayed.log()


# -- 11. the smaller findings -------------------------------------------------------------


def test_a_malformed_token_line_is_not_printed(repo: Path, tmp_path: Path) -> None:
    secret = "s3cr3t-token-value-that-must-not-leak"
    for line in (secret, f"{secret} admin", f"operator {secret}"):
        (tmp_path / "tokens").write_text(f"inference good-token\n{line}\n")
        run = subprocess.run([sys.executable, "-m", "sonic.cli", "serve",
                              f"--model-repository={repo}",
                              f"--auth-token-file={tmp_path / 'tokens'}"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode != 0
        assert f"{tmp_path / 'tokens'}:2:" in run.stderr
        assert secret not in run.stdout + run.stderr


def test_health_watch_streams_are_capped(secured: LocalServer) -> None:
    with grpc.insecure_channel(secured.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        streams = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_WATCHES)]
        try:
            for s in streams:
                assert next(s).status == health_pb2.HealthCheckResponse.SERVING
            extra = stub.Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.RpcError) as info:
                next(extra)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            for s in streams:
                s.cancel()
        time.sleep(0.5)
        again = stub.Watch(health_pb2.HealthCheckRequest())
        assert next(again).status == health_pb2.HealthCheckResponse.SERVING
        again.cancel()


def test_worker_statistics_need_the_workers_secret(repo: Path) -> None:
    with LocalServer(repo, "--workers=2") as server:
        assert server.proc is not None
        workers = psutil.Process(server.proc.pid).children()
        peers = re.findall(r"--worker-peers=(\d+)", " ".join(" ".join(w.cmdline())
                                                              for w in workers))  # fmt: skip
        assert len(set(peers)) == 2, peers
        for port in set(peers):
            deadline = time.monotonic() + 30  # a worker may still be starting
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/worker/statistics",
                                           timeout=5)  # fmt: skip
                except urllib.error.HTTPError as err:
                    assert err.code == 403
                    break
                except urllib.error.URLError:
                    assert time.monotonic() < deadline, f"worker port {port} never answered"
                    time.sleep(0.2)
                    continue
                raise AssertionError("/worker/statistics answered without the secret")
        # The workers still add each other's numbers.
        stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics("mlp")
        assert stats["model_stats"][0]["name"] == "mlp"


def test_a_killed_servers_relay_directory_is_removed(repo: Path) -> None:
    tmp = Path(tempfile.gettempdir())
    server = LocalServer(repo, "--grpc-frontends=1").start()
    assert server.proc is not None
    mine = [p for p in tmp.glob(f"sonic-relay-{server.proc.pid}-*")]
    assert mine
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    with LocalServer(repo, "--grpc-frontends=1"):
        assert not any(p.exists() for p in mine)
    server.stop()

