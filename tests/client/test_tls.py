"""The client's SSL and token settings against a real TLS endpoint (HAProxy terminating TLS and
checking JWTs in front of sonic serve), from a CMSSW-style server file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sonic.client import Client, InferenceError, NoServerError, load_servers
from sonic.gateway import Gateway
from sonic.launcher import LocalServer, free_ports
from sonic.zoo.examples import mlp_model, write_model
from tests.fixtures.tokens import AUDIENCE, ISSUER, SECRET, jwt
from tests.fixtures.tools import require


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    require("haproxy", "openssl")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    bundle = d / "haproxy.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    repo = d / "repo"
    write_model(mlp_model(), repo, "mlp")
    with LocalServer(repo) as server:
        g, h, s = free_ports(3)
        gw = Gateway([("127.0.0.1", server.grpc_port, server.http_port)], g, h, s,
                     tls_crt=str(bundle), auth="jwt", jwt_key=SECRET, jwt_issuer=ISSUER,
                     jwt_audience=AUDIENCE).start()  # fmt: skip
        try:
            yield gw, cert
        finally:
            gw.stop()


def server_file(path: Path, port: int, cert: Path, *, ssl: bool = True, token: str = "") -> Path:
    entry = {"name": "tls-site", "address": "localhost", "port": port, "useSsl": ssl,
             "rootCertificates": str(cert), "token": token}
    path.write_text(json.dumps({"servers": [entry]}))
    return path


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ssl_and_token_from_the_server_file(tls: tuple[Gateway, Path], tmp_path: Path,
                                            protocol: str) -> None:  # fmt: skip
    gw, cert = tls
    port = gw.grpc_port if protocol == "grpc" else gw.http_port
    servers = server_file(tmp_path / "s.json", port, cert, token=jwt())
    assert load_servers(servers)[0].ssl
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    with Client("mlp", server_file=servers, protocol=protocol, retries=[]) as client:
        assert client.infer({"input": x})["output"].shape == (3, 2)
        out = asyncio.run(client.infer_async({"input": x}))["output"]
        np.testing.assert_array_equal(out, client.infer({"input": x})["output"])


def test_without_token_or_without_tls_nothing_is_served(tls: tuple[Gateway, Path],
                                                        tmp_path: Path) -> None:  # fmt: skip
    gw, cert = tls
    x = np.zeros((1, 64), np.float32)
    no_token = server_file(tmp_path / "a.json", gw.grpc_port, cert)
    # Discovery fails with UNAUTHENTICATED: the only server is skipped, so none hosts the model.
    with pytest.raises((NoServerError, InferenceError)), \
            Client("mlp", server_file=no_token, retries=[]) as client:  # fmt: skip
        client.infer({"input": x})
    plaintext = server_file(tmp_path / "b.json", gw.grpc_port, cert, ssl=False, token=jwt())
    with pytest.raises((NoServerError, InferenceError)), \
            Client("mlp", server_file=plaintext, retries=[], timeout=5) as client:  # fmt: skip
        client.infer({"input": x})
