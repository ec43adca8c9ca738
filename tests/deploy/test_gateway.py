"""The real local gateway (HAProxy, deploy/k8s/base/gateway) before two sonic replicas."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sonic.client import Client
from sonic.gateway import Gateway, Prometheus
from sonic.launcher import LocalServer, free_ports
from tests.conftest import write_mlp
from tests.fixtures.metrics import sample
from tests.fixtures.tokens import AUDIENCE, ISSUER, SECRET, jwt

AUTH = {"authorization": f"Bearer {jwt()}"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_mlp(root)
    return root


@pytest.fixture
def replicas(repo: Path) -> Iterator[list[LocalServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(LocalServer(repo)) for _ in range(2)]


def start_gateway(replicas: list[LocalServer], **kw: object) -> Gateway:
    grpc_port, http_port, stats_port = free_ports(3)
    gw = Gateway([("127.0.0.1", r.grpc_port, r.http_port) for r in replicas], grpc_port,
                 http_port, stats_port, **kw).start()  # type: ignore[arg-type]  # fmt: skip
    deadline = time.monotonic() + 20  # until its health checks see every replica up
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/metrics") as r:
            text = r.read().decode()
        up = [ln for ln in text.splitlines()
              if ln.startswith("haproxy_server_status") and 'proxy="sonic_grpc"' in ln
              and 'state="UP"' in ln and ln.endswith(" 1")]  # fmt: skip
        if len(up) == len(replicas):
            return gw
        time.sleep(0.2)
    gw.stop()
    raise TimeoutError("the gateway never saw all replicas up")


def infer(client: grpcclient.InferenceServerClient,
          headers: dict[str, str] | None = None) -> None:  # fmt: skip
    x = grpcclient.InferInput("input", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    client.infer("mlp", [x], headers=headers)


def successes(server: LocalServer) -> int:
    c = grpcclient.InferenceServerClient(server.grpc_url)
    s = c.get_inference_statistics("mlp", as_json=True)["model_stats"][0]["inference_stats"]
    c.close()
    return int(s.get("success", {}).get("count", 0))


def test_calls_spread_over_replicas(replicas: list[LocalServer]) -> None:
    gw = start_gateway(replicas)
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
        for _ in range(40):  # one connection: the gateway balances per call, not per connection
            infer(client)
        counts = [successes(r) for r in replicas]
        assert sum(counts) == 40 and min(counts) >= 10, counts
    finally:
        gw.stop()


def test_killed_replica_is_routed_around(replicas: list[LocalServer]) -> None:
    gw = start_gateway(replicas)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    try:
        url = f"127.0.0.1:{gw.grpc_port}"
        with Client("mlp", [url], retries=[("same", 3)]) as client:
            want = client.infer({"input": x})["output"]

            def run() -> None:
                for _ in range(400):
                    try:
                        results.append(client.infer({"input": x})["output"])
                    except Exception as err:
                        errors.append(err)

            t = threading.Thread(target=run)
            t.start()
            time.sleep(0.3)
            assert replicas[0].proc is not None
            replicas[0].proc.kill()  # no drain: in-flight calls fail and the client retries
            t.join(120)
        assert errors == [] and len(results) == 400
        assert all(np.array_equal(r, want) for r in results)
        assert successes(replicas[1]) > 200  # the survivor took over
    finally:
        gw.stop()


def test_requests_without_a_valid_token_are_refused(replicas: list[LocalServer]) -> None:
    gw = start_gateway(replicas, auth="jwt", jwt_alg="HS256", jwt_key=SECRET, jwt_issuer=ISSUER,
                       jwt_audience=AUDIENCE)  # fmt: skip
    now = int(time.time())
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
        infer(client, AUTH)
        infer(client, {"authorization": f"Bearer {jwt(aud=[AUDIENCE, 'other'])}"})
        infer(client, {"authorization": f"Bearer {jwt(nbf=now - 60)}"})
        # Was: only the signature was checked, so the expired token (a year ago) passed.
        refused = [jwt("wrong-secret"), "not-a-jwt", jwt(exp=now - 365 * 86400), jwt(exp=None),
                   jwt(nbf=now + 3600), jwt(aud="another-service"), jwt(iss="https://evil/")]
        for token in [None, *refused]:
            headers = None if token is None else {"authorization": f"Bearer {token}"}
            with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
                infer(client, headers)
        http = f"http://127.0.0.1:{gw.http_port}/v2/health/ready"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(http)
        assert e.value.code == 401
        e.value.close()
        with urllib.request.urlopen(urllib.request.Request(http, headers=AUTH)) as r:
            assert r.status == 200
        assert sum(successes(r) for r in replicas) == 3  # refused calls never reached a server
    finally:
        gw.stop()


def test_admission_refuses_repository_index_over_threshold(replicas: list[LocalServer]) -> None:
    prom_port, = free_ports(1)
    prom = Prometheus([f"127.0.0.1:{r.metrics_port}" for r in replicas], prom_port,
                      interval_s=0.5).start()  # fmt: skip
    # The default query gives queue time per execution in ms; it is >= 0.1 ms here (the batcher's
    # 100 us delay), so a 0.02 ms threshold trips under any traffic.
    # A whole URL, as sites with an https Prometheus give it (host:port works too: sonic gateway).
    gw = start_gateway(replicas, prometheus=f"http://{prom.url}/", admission_threshold=0.02,
                       admission_interval_ms=300)  # fmt: skip
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
        assert client.get_model_repository_index(as_json=True)["models"]  # idle: admitted
        refused = None
        deadline = time.monotonic() + 30
        while refused is None and time.monotonic() < deadline:
            for _ in range(20):
                infer(client)
            try:
                client.get_model_repository_index()
            except InferenceServerException as err:
                refused = err
        assert refused is not None and "UNAVAILABLE" in str(refused)
        assert "saturated" in str(refused)
        infer(client)  # running jobs keep their inference
        # Refusals are counted apart, for the dashboard's admission panel.
        assert sample(f"http://127.0.0.1:{gw.stats_port}/metrics",
                      "haproxy_backend_http_requests_total", proxy="grpc_refused") >= 1
    finally:
        gw.stop()
        prom.stop()


def test_one_command_starts_the_local_gateway(repo: Path) -> None:
    import signal
    import subprocess
    import sys

    grpc_port, http_port, stats_port, prom_port = free_ports(4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sonic.cli", "gateway", f"--model-repository={repo}",
         "--replicas", "2", "--grpc-port", str(grpc_port), "--http-port", str(http_port),
         "--stats-port", str(stats_port), "--prometheus-port", str(prom_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 120
        while "ready" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "sonic gateway exited early"
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until its health checks have seen a replica up
            with contextlib.suppress(InferenceServerException):
                if client.is_server_ready():
                    break
            time.sleep(0.2)
        infer(client)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" in out


def test_the_placeholder_key_stops_the_gateway(replicas: list[LocalServer]) -> None:
    """The manifests' Secret holds "change-me" until a site replaces it: HAProxy refuses it."""
    with pytest.raises(RuntimeError, match="placeholder 'change-me'"):
        start_gateway(replicas, auth="jwt", jwt_key="change-me", jwt_issuer=ISSUER,
                      jwt_audience=AUDIENCE)  # fmt: skip

