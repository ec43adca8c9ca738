"""Transport security and who may do what, against real ``sonic serve`` processes and the stock
``tritonclient`` (gRPC and HTTP), the SONIC client and ``sonic perf``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sonic.client import Client
from sonic.launcher import LocalServer
from sonic.server.frontends.auth import Authenticator, Category, Role
from sonic.server.settings import AuthSettings
from tests.fixtures.auth import AUDIENCE, SECRET, TOKENS, auth_args, hs256, keys, repo, rs256
from tests.fixtures.pki import Pki, make_pki

__all__ = ["keys", "repo"]  # pytest fixtures, from tests.fixtures.auth


@pytest.fixture(scope="module")
def secured(repo: Path, keys: dict[str, Any]) -> Iterator[LocalServer]:
    with LocalServer(repo, "--model-control-mode=explicit", "--load-model=*",
                     "--allow-client-shm=true", *auth_args(keys)) as server:  # fmt: skip
        yield server


def outcome(call: Callable[[], Any]) -> str:
    """'ok', 'unauthenticated' or 'denied', whatever the protocol reports them as."""
    try:
        call()
    except InferenceServerException as err:
        status = str(err.status())
        if status in ("StatusCode.UNAUTHENTICATED", "401"):
            return "unauthenticated"
        if status in ("StatusCode.PERMISSION_DENIED", "403"):
            return "denied"
        raise
    return "ok"


def operations(client: Any, mod: Any, headers: dict[str, str] | None) -> dict[str, Callable]:
    x = mod.InferInput("input", [2, 64], "FP32")
    x.set_data_from_numpy(np.ones((2, 64), np.float32))
    return {
        "metadata": lambda: client.get_model_metadata("mlp", headers=headers),
        "infer": lambda: client.infer("mlp", [x], headers=headers),
        "statistics": lambda: client.get_inference_statistics("mlp", headers=headers),
        "index": lambda: client.get_model_repository_index(headers=headers),
        "load": lambda: client.load_model("mlp", headers=headers),
        "shm": lambda: client.get_system_shared_memory_status(headers=headers),
        "logs": lambda: client.get_log_settings(headers=headers),
    }


READ = {"metadata", "infer", "statistics", "index"}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_roles_decide_what_a_token_may_do(secured: LocalServer, keys: dict[str, Any],
                                          protocol: str) -> None:  # fmt: skip
    mod = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(secured.grpc_url if protocol == "grpc" else secured.http_url)
    # Health answers without credentials: probes and load balancers carry none.
    assert client.is_server_live() and client.is_server_ready()
    cases = {
        "none": None,
        "garbage": {"authorization": "Bearer not-a-token"},
        "basic": {"authorization": "Basic dXNlcjpwYXNz"},
        "inference": {"authorization": f"Bearer {TOKENS['inference']}"},
        "admin": {"authorization": f"Bearer {TOKENS['admin']}"},
        "jwt-inference": {"authorization": f"Bearer {hs256(['inference'])}"},
        "jwt-admin": {"authorization": f"Bearer {rs256(keys['rsa'], 'inference admin')}"},
    }
    for who, headers in cases.items():
        got = {op: outcome(call) for op, call in operations(client, mod, headers).items()}
        if who in ("none", "garbage", "basic"):
            want = dict.fromkeys(got, "unauthenticated")
        elif who.endswith("inference"):
            want = {op: "ok" if op in READ else "denied" for op in got}
        else:
            want = dict.fromkeys(got, "ok")
        assert got == want, who


def test_rejected_jwts_name_the_reason(secured: LocalServer, keys: dict[str, Any]) -> None:
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    now = int(time.time())
    bad = {
        "expired": hs256(["inference"], exp=now - 60),
        "audience": hs256(["inference"], aud="another-service"),
        "no expiry": jwt.encode({"aud": AUDIENCE, "roles": ["admin"]}, SECRET, "HS256"),
        "alg none": jwt.encode({"aud": AUDIENCE, "exp": now + 60, "roles": ["admin"]},
                               None, "none"),
        "forged signature": rs256(keys["other_rsa"], ["admin"]),
        "unknown kid": rs256(keys["rsa"], ["admin"], kid="elsewhere"),
        "wrong secret": jwt.encode({"aud": AUDIENCE, "exp": now + 60, "roles": ["admin"]},
                                   b"x" * 40, "HS256"),
    }
    for label, token in bad.items():
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("mlp", headers={"authorization": f"Bearer {token}"})
        assert info.value.status() == "StatusCode.UNAUTHENTICATED", label
    # A valid token whose roles are for other services is authenticated but may do nothing.
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("mlp", headers={"authorization": f"Bearer {hs256(['dqm'])}"})
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "'inference' role" in info.value.message()


def test_streams_check_tokens(secured: LocalServer) -> None:
    results: list[Any] = []
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    client.start_stream(callback=lambda result, error: results.append(error or result))
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    # The server ends the stream at once; the request may be refused locally or answered.
    with contextlib.suppress(InferenceServerException):
        client.async_stream_infer("mlp", [x])
    client.stop_stream()
    assert results and isinstance(results[0], InferenceServerException)
    assert "credentials" in str(results[0])
    results.clear()
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    client.start_stream(callback=lambda result, error: results.append(error or result),
                        headers={"authorization": f"Bearer {TOKENS['inference']}"})  # fmt: skip
    client.async_stream_infer("mlp", [x])
    client.stop_stream()
    assert results[0].as_numpy("output").shape == (1, 2)


def test_sonic_client_sends_its_token(secured: LocalServer, tmp_path: Path) -> None:
    entry = {"name": "site", "address": "127.0.0.1", "port": secured.grpc_port,
             "token": TOKENS["inference"]}  # fmt: skip
    (tmp_path / "servers.json").write_text(json.dumps({"servers": [entry]}))
    x = np.ones((3, 64), np.float32)
    # Shared memory needs the admin role: "auto" falls back to the wire instead of failing.
    with Client("mlp", server_file=tmp_path / "servers.json", retries=[]) as client:
        assert client.infer({"input": x})["output"].shape == (3, 2)


def test_health_can_be_closed_too(repo: Path, keys: dict[str, Any]) -> None:
    token = {"authorization": f"Bearer {TOKENS['inference']}"}
    with LocalServer(repo, *auth_args(keys), "--auth-open-health=false") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert outcome(client.is_server_live) == "unauthenticated"
        assert client.is_server_live(headers=token)
        http = httpclient.InferenceServerClient(server.http_url)
        assert not http.is_server_ready()  # tritonclient reads the 401 as "not ready"
        assert http.is_server_ready(headers=token)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://{server.http_url}/v2/health/live")
        assert info.value.code == 401
        assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_authenticator_caches_verified_jwts() -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("wb") as f:
        f.write(SECRET)
        f.flush()
        auth = Authenticator(AuthSettings(jwt_secret_file=f.name))
        token = hs256(["admin"], aud=None)
        assert auth.role(f"Bearer {token}") is Role.ADMIN
        assert token in auth._cache
        auth.check(Category.MODEL_REPOSITORY, f"bearer {token}")  # the scheme is case-blind
        assert auth.role(f"Bearer {hs256('inference', aud=None)}") is Role.INFERENCE


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(p: Pki) -> list[str]:
    args = []
    for front in ("grpc", "http"):
        args += [f"--{front}-use-ssl-mutual=true", f"--{front}-server-cert={p.server_cert}",
                 f"--{front}-server-key={p.server_key}", f"--{front}-root-cert={p.ca}"]  # fmt: skip
    return args


@pytest.fixture(scope="module")
def tls_server(repo: Path, pki: Pki) -> Iterator[LocalServer]:
    with LocalServer(repo, *tls_args(pki), "--http-use-ssl=true") as server:
        yield server


def _grpc(server: LocalServer, **kw: Any) -> Any:
    return grpcclient.InferenceServerClient(f"localhost:{server.grpc_port}", **kw)


def _http(server: LocalServer, **kw: Any) -> Any:
    return httpclient.InferenceServerClient(f"localhost:{server.http_port}", **kw)


def test_mutual_tls_with_tritonclient(tls_server: LocalServer, pki: Pki) -> None:
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    good = _grpc(tls_server, ssl=True, root_certificates=str(pki.ca),
                 private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
    assert good.infer("mlp", [x]).as_numpy("output").shape == (1, 2)
    refused = {
        "plaintext": _grpc(tls_server),
        "no client certificate": _grpc(tls_server, ssl=True, root_certificates=str(pki.ca)),
        "unknown server CA": _grpc(tls_server, ssl=True, root_certificates=str(pki.other_ca),
                                   private_key=str(pki.client_key),
                                   certificate_chain=str(pki.client_cert)),
    }
    for label, client in refused.items():
        with pytest.raises(InferenceServerException) as info:
            client.is_server_live(client_timeout=5)
        assert info.value.status() == "StatusCode.UNAVAILABLE", label

    hx = httpclient.InferInput("input", [1, 64], "FP32")
    hx.set_data_from_numpy(np.ones((1, 64), np.float32))
    options = {"ca_certs": str(pki.ca), "certfile": str(pki.client_cert),
               "keyfile": str(pki.client_key)}  # fmt: skip
    https = _http(tls_server, ssl=True, ssl_options=options)
    assert https.infer("mlp", [hx]).as_numpy("output").shape == (1, 2)
    for label, kw in {"plaintext": {},
                      "no client certificate": {"ssl": True,
                                                "ssl_options": {"ca_certs": str(pki.ca)}},
                      "unknown server CA": {"ssl": True, "ssl_options": {
                          **options, "ca_certs": str(pki.other_ca)}}}.items():  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017 - a refused handshake or a closed socket
            _http(tls_server, **kw, network_timeout=5).is_server_live()
        del label


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sonic_client_over_mutual_tls(tls_server: LocalServer, pki: Pki, tmp_path: Path,
                                      protocol: str) -> None:  # fmt: skip
    port = tls_server.grpc_port if protocol == "grpc" else tls_server.http_port
    entry = {"name": "tls", "address": "localhost", "port": port, "useSsl": True,
             "rootCertificates": str(pki.ca), "privateKey": str(pki.client_key),
             "certificateChain": str(pki.client_cert)}  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps({"servers": [entry]}))
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    with Client("mlp", server_file=tmp_path / "s.json", protocol=protocol, retries=[]) as client:
        out = client.infer({"input": x})["output"]
        np.testing.assert_array_equal(asyncio.run(client.infer_async({"input": x}))["output"], out)


def test_sonic_perf_over_mutual_tls(tls_server: LocalServer, pki: Pki) -> None:
    cmd = [sys.executable, "-m", "sonic.cli", "perf", "-m", "mlp", "-i", "grpc",
           "-u", f"localhost:{tls_server.grpc_port}", "--concurrency-range", "2",
           "-p", "300", "-s", "100", "-r", "6", "--ssl-grpc-use-ssl",
           f"--ssl-grpc-root-certifications-file={pki.ca}",
           f"--ssl-grpc-private-key-file={pki.client_key}",
           f"--ssl-grpc-certificate-chain-file={pki.client_cert}"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Concurrency: 2, throughput:" in run.stdout


def test_tls_flags_are_checked_at_start(repo: Path, pki: Pki) -> None:
    cases = {
        ("--grpc-use-ssl=true",): "--grpc-server-cert",
        ("--http-use-ssl-mutual=true", f"--http-server-cert={pki.server_cert}",
         f"--http-server-key={pki.server_key}"): "--http-root-cert",
        ("--auth-token-file=/nonexistent/tokens",): "/nonexistent/tokens",
        (f"--auth-token-file={pki.ca}",): "the first word must be the role",
        (f"--auth-jwks-file={pki.ca}",): "not a usable JWKS",
    }  # fmt: skip
    for args, named in cases.items():
        run = subprocess.run([sys.executable, "-m", "sonic.cli", "serve",
                              f"--model-repository={repo}", *args],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode != 0 and named in run.stderr, (args, run.stderr)


def test_workers_share_tls_and_credentials(repo: Path, keys: dict[str, Any], pki: Pki) -> None:
    """``--workers 2``: every worker gets the TLS, credential and limit flags."""
    args = [*tls_args(pki), "--http-use-ssl=true", *auth_args(keys), "--workers=2",
            "--max-batch-size=2"]  # fmt: skip
    with LocalServer(repo, *args) as server:
        token = {"authorization": f"Bearer {TOKENS['inference']}"}
        client = _grpc(server, ssl=True, root_certificates=str(pki.ca),
                       private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
        x = grpcclient.InferInput("input", [2, 64], "FP32")
        x.set_data_from_numpy(np.ones((2, 64), np.float32))
        for _ in range(4):  # new channels land on either worker
            assert outcome(lambda c=client: c.infer("mlp", [x])) == "unauthenticated"
            assert client.infer("mlp", [x], headers=token).as_numpy("output").shape == (2, 2)
            config = client.get_model_config("mlp", headers=token, as_json=True)["config"]
            assert config["max_batch_size"] == 2
            client = _grpc(server, ssl=True, root_certificates=str(pki.ca),
                           private_key=str(pki.client_key),
                           certificate_chain=str(pki.client_cert))  # fmt: skip


def test_admin_calls_and_refusals_are_audited(secured: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(secured.grpc_url)
    client.load_model("mlp", headers={"authorization": f"Bearer {TOKENS['admin']}"})
    with pytest.raises(InferenceServerException):
        client.unload_model("mlp", headers={"authorization": f"Bearer {hs256(['inference'])}"})
    time.sleep(0.2)
    log = secured.log()
    digest = hashlib.sha256(TOKENS["admin"].encode()).hexdigest()[:8]
    assert f"RepositoryModelLoad by token:{digest}" in log
    assert re.search(r"denied RepositoryModelUnload to job from ipv4:127.0.0.1:\d+ "
                     r"\(inference role\)", log)
    assert all(token not in log for token in TOKENS.values())  # who, never the secret
