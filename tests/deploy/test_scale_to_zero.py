"""Scale to zero that wakes up: the gateway says a server is starting, the client waits for it.

The gateway (real HAProxy, the configuration the cluster runs) fronts one replica that is not
running yet, as a fleet scaled to zero is while KEDA starts its first server.  Every call gets
a retryable UNAVAILABLE that says so; a SONIC client with ``wake_timeout`` waits through the
cold start and runs its job; one without it fails at once, with the gateway's reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sonic.client import Client, NoServerError
from sonic.gateway import Gateway
from sonic.launcher import LocalServer, free_ports
from tests.conftest import write_mlp
from tests.fixtures.kustomize import K8S, by_kind, render
from tests.fixtures.metrics import sample
from tests.fixtures.tools import require

COLD_START_S = 3.0


@pytest.fixture
def cold(tmp_path: Path) -> Iterator[tuple[Gateway, LocalServer]]:
    """A gateway in front of a replica that has not started (its ports are reserved)."""
    require("haproxy")
    write_mlp(tmp_path)
    server = LocalServer(tmp_path)
    grpc_port, http_port, stats_port = free_ports(3)
    gateway = Gateway([("127.0.0.1", server.grpc_port, server.http_port)], grpc_port, http_port,
                      stats_port).start()  # fmt: skip
    try:
        yield gateway, server
    finally:
        gateway.stop()
        server.stop()


def test_while_no_server_is_up_every_call_is_told_to_retry(
    cold: tuple[Gateway, LocalServer],
) -> None:
    gateway, _ = cold
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    for call in (client.get_model_repository_index, lambda: client.is_model_ready("mlp")):
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert "scaled to zero, or starting" in err.value.message()
    # Counted apart from the servers' traffic, for the dashboard's panel.
    assert backend_requests(gateway, "grpc_no_server") == 2


def backend_requests(gateway: Gateway, backend: str) -> float:
    return sample(f"http://127.0.0.1:{gateway.stats_port}/metrics",
                  "haproxy_backend_http_requests_total", proxy=backend)


def test_a_client_with_wake_timeout_rides_through_the_cold_start(
    cold: tuple[Gateway, LocalServer],
) -> None:
    gateway, server = cold
    starter = threading.Timer(COLD_START_S, server.start)
    starter.start()
    t0 = time.monotonic()
    try:
        with Client("mlp", [f"127.0.0.1:{gateway.grpc_port}"], wake_timeout=120) as client:
            waited = time.monotonic() - t0
            x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
            out = client.infer({"input": x})
    finally:
        starter.join()
    assert waited >= COLD_START_S  # it did wait for the server, not pass by it
    assert out["output"].shape == (4, 2)


def test_without_wake_timeout_the_client_fails_at_once_with_the_reason(
    cold: tuple[Gateway, LocalServer],
) -> None:
    gateway, _ = cold
    t0 = time.monotonic()
    with pytest.raises(NoServerError, match="scaled to zero, or starting"), \
            Client("mlp", [f"127.0.0.1:{gateway.grpc_port}"]) as client:
        client.infer({"input": np.zeros((1, 64), np.float32)})
    assert time.monotonic() - t0 < 10


def test_the_scale_to_zero_component_and_its_wake_trigger(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    up = os.path.relpath(K8S, overlay)  # kustomize takes relative paths only
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{up}/overlays/cpu]\ncomponents: [{up}/components/scale-to-zero]\n")
    (so,) = by_kind(render(str(overlay)), "ScaledObject")
    assert so["spec"]["minReplicaCount"] == 0
    queue, wake = so["spec"]["triggers"]
    # The queue-time trigger has no series while nothing runs; the gateway's request rate does.
    assert "haproxy_frontend_http_requests_total" in wake["metadata"]["query"]
    assert 'proxy="grpc"' in wake["metadata"]["query"]
    assert wake["metadata"]["activationThreshold"] == "0"
    assert float(wake["metadata"]["threshold"]) > 1e5  # never asks for a second server
    assert wake["metadata"]["serverAddress"] == queue["metadata"]["serverAddress"]
