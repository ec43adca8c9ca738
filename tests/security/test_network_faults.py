"""A job's requests through a faulty network: delay, packet loss and a partition, in a network
namespace the test makes itself, against a real ``sonic serve``.

This kernel has no ``netem`` queueing discipline (``tc qdisc add ... netem`` answers
"Specified qdisc kind is unknown"), so the faults are made with what it has: nftables
drops packets to and from the server's port at random (loss) or all of them (a
partition), and a proxy in the job delays every chunk (latency).  The job
(tests.security.netjob) must end with every event answered once, with its own values,
and no call may outlast its deadlines: attempts x per-attempt timeout, plus slack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonic.gateway import GATEWAY_DIR, Gateway, backends_config
from sonic.launcher import LocalServer, free_ports
from sonic.zoo.examples import identity_model, write_model
from tests.fixtures.tools import require

TIMEOUT_S = 2.0
RETRIES = 8
EVENTS = 120


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"sonic-faults-{os.getpid()}"
    require("nft", "ip")
    try:
        _run("ip", "netns", "add", name)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create a network namespace here: {err.stderr.strip()}")
    try:
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        _run("ip", "netns", "exec", name, "nft", "add", "table", "inet", "faults")
        _run("ip", "netns", "exec", name, "nft", "add", "chain", "inet", "faults", "input",
             "{ type filter hook input priority 0; }")  # fmt: skip
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def server(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("faults-repo")
    write_model(identity_model("FP32"), repo, "identity_fp32")
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "sonic.cli", "serve"]
    with LocalServer(repo, "--busy-poll-us=0", command=command) as s:
        yield s


def _rules(namespace: str, ports: int | list[int], verdict: str) -> None:
    """Replace the chain's rules: ``verdict`` for TCP to and from ``ports``."""
    _run("ip", "netns", "exec", namespace, "nft", "flush", "chain", "inet", "faults", "input")
    listed = "{ " + ", ".join(map(str, ports if isinstance(ports, list) else [ports])) + " }"
    if verdict:
        for way in ("dport", "sport"):
            _run("ip", "netns", "exec", namespace, "nft", "add", "rule", "inet", "faults",
                 "input", "tcp", way, listed, *verdict.split())  # fmt: skip


def _job(namespace: str, target: str, *extra: str, during: Any = None) -> dict[str, Any]:
    cmd = ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.security.netjob",
           f"--server={target}", f"--events={EVENTS}",
           f"--timeout={TIMEOUT_S}", f"--retries={RETRIES}", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started", proc.stderr.read() if proc.stderr else ""
    if during is not None:
        during()
    try:
        out, err = proc.communicate(timeout=240)  # before pytest-timeout (300 s) ends the test
    except subprocess.TimeoutExpired:  # show where the job is stuck (netjob dumps its stacks)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        out, err = proc.communicate()
        stuck = f"the job did not finish in 240 s; its threads:\n{err[-20000:]}"
        raise AssertionError(stuck) from None
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def _check(result: dict[str, Any]) -> None:
    assert not result["failures"], result["failures"]
    assert result["answered"] == list(range(EVENTS)), "lost events"
    assert not result["wrong"], f"events answered with another event's values: {result['wrong']}"
    # One attempt may end at its deadline and every retry too; nothing waits past that.
    assert result["slowest_s"] < (RETRIES + 1) * TIMEOUT_S + 1, result["slowest_s"]
    assert result["executed"] >= EVENTS


@pytest.mark.parametrize("fault", ["delay 50 ms", "loss 1%", "loss 5%"])
def test_a_job_rides_through_delay_and_loss(namespace: str, server: LocalServer,
                                            fault: str) -> None:  # fmt: skip
    extra: tuple[str, ...] = ()
    if fault.startswith("delay"):
        extra = ("--delay-ms=50",)
        _rules(namespace, server.grpc_port, "")
    else:
        percent = int(fault.split()[1].rstrip("%"))
        _rules(namespace, server.grpc_port, f"numgen random mod 100 < {percent} drop")
    try:
        result = _job(namespace, server.grpc_url, *extra)
    finally:
        _rules(namespace, server.grpc_port, "")
    print(json.dumps({k: v for k, v in result.items() if k != "answered"}))
    _check(result)
    if fault.startswith("delay"):
        assert result["slowest_s"] >= 0.1  # two 50 ms crossings at least: the delay was there


def test_a_job_rides_through_a_partition(namespace: str, server: LocalServer) -> None:
    """Every packet to and from the server dropped for 5 s in the middle of the job."""

    def partition() -> None:
        time.sleep(0.5)
        _rules(namespace, server.grpc_port, "drop")
        time.sleep(5)
        _rules(namespace, server.grpc_port, "")

    # 4 workers, 200 ms between a worker's events: the job spans about 6 s without faults.
    result = _job(namespace, server.grpc_url, "--pace-ms=200", during=partition)
    print(json.dumps({k: v for k, v in result.items() if k != "answered"}))
    _check(result)
    assert result["slowest_s"] > 3  # some events waited out the partition


class _GatewayIn(Gateway):
    """The gateway (HAProxy, deploy/k8s/base/gateway) run inside the namespace."""

    namespace = ""

    def _launch(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self._log = (self.workdir / "haproxy.log").open("wb")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, "haproxy", *args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def start(self) -> Gateway:
        backends = self.workdir / "backends.cfg"
        backends.write_text(backends_config(self.replicas))
        self._launch(["-db", "-f", str(GATEWAY_DIR / "haproxy.cfg"), "-f", str(backends)],
                     env=self.env())  # fmt: skip
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.grpc_port}), 1)"
        for _ in range(100):
            if subprocess.run(["ip", "netns", "exec", self.namespace, sys.executable, "-c",
                               probe], capture_output=True).returncode == 0:  # fmt: skip
                time.sleep(2)  # its health checks: every replica seen up (rise 2, 500 ms)
                return self
            time.sleep(0.1)
        raise TimeoutError(f"haproxy did not listen:\n{self.logs()[-2000:]}")


def test_the_gateway_routes_around_a_partitioned_replica(
    namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two replicas behind the gateway; one is cut off (both ports) for 5 s mid-job."""
    require("haproxy")
    repo = tmp_path_factory.mktemp("gateway-repo")
    write_model(identity_model("FP32"), repo, "identity_fp32")
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "sonic.cli", "serve"]
    with LocalServer(repo, "--busy-poll-us=0", command=command) as a, \
            LocalServer(repo, "--busy-poll-us=0", command=command) as b:  # fmt: skip
        gw = _GatewayIn([("127.0.0.1", r.grpc_port, r.http_port) for r in (a, b)],
                        *free_ports(3))  # fmt: skip
        gw.namespace = namespace
        gw.start()
        try:

            def partition() -> None:
                time.sleep(0.5)
                _rules(namespace, [a.grpc_port, a.http_port], "drop")
                time.sleep(5)
                _rules(namespace, [a.grpc_port, a.http_port], "")

            result = _job(namespace, f"127.0.0.1:{gw.grpc_port}", "--pace-ms=200",
                          f"--count-at={a.grpc_url},{b.grpc_url}", during=partition)
        finally:
            gw.stop()
    print(json.dumps({k: v for k, v in result.items() if k != "answered"}))
    _check(result)
