"""Run an attack against a real server while a probe measures what the other clients feel.

The probe, a process of its own, asks ``/v2/health/ready`` every 50 ms and records the
slowest answer; the server's resident memory is sampled at the same time.  An attack passes
when the slowest probe stays under :data:`PROBE_LIMIT_S` and the memory grows
by less than :data:`MEMORY_LIMIT_MB` (the issue's generous bounds).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from sonic.launcher import LocalServer

PROBE_LIMIT_S = 0.5
MEMORY_LIMIT_MB = 400


@dataclass
class Felt:
    slowest_probe_s: float
    memory_growth_mb: float
    result: Any


def _rss_tree(proc: psutil.Process) -> int:
    """The server's memory, its gRPC front ends and backend stubs included."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


#: The probe, in a process of its own: the attack runs in the test's process, and a probe
#: thread there waits for the GIL whenever the attack holds it (building a 60 MiB BYTES
#: tensor takes over half a second), which showed up as the server's latency.  It prints
#: "ready" after its first answer, then its slowest answer in seconds once stdin closes.
_PROBE = """
import http.client, select, sys, time
host, port, slowest = sys.argv[1], int(sys.argv[2]), 0.0
while True:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", "/v2/health/ready")
        status = conn.getresponse().status
    finally:
        conn.close()
    if status != 200:
        sys.exit(f"health answered {status} during the attack")
    if not slowest:
        print("ready", flush=True)
    slowest = max(slowest, time.perf_counter() - t0)
    if select.select([sys.stdin], [], [], 0.05)[0]:
        break
print(slowest, flush=True)
"""


def under_attack(server: LocalServer, attack: Callable[[], Any]) -> Felt:
    """Run ``attack()`` while probing ``server``; what the probe felt, and the attack's result."""
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    host, port = server.http_url.split(":")
    base = _rss_tree(proc)
    peak = base
    done = threading.Event()

    def sample_memory() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _rss_tree(proc))

    probe = subprocess.Popen([sys.executable, "-c", _PROBE, host, port], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert probe.stdout is not None
    memory = threading.Thread(target=sample_memory, daemon=True)
    memory.start()
    try:
        assert probe.stdout.readline().strip() == "ready", probe.communicate()[1]
        result = attack()
        time.sleep(0.2)
    finally:
        done.set()
        memory.join(60)
        out, err = probe.communicate("stop\n", timeout=60)
    assert probe.returncode == 0, err
    assert server.proc.poll() is None, f"the server died:\n{server.log()[-3000:]}"
    return Felt(float(out), (peak - base) / 2**20, result)


def assert_unharmed(felt: Felt) -> None:
    assert felt.slowest_probe_s < PROBE_LIMIT_S, felt
    assert felt.memory_growth_mb < MEMORY_LIMIT_MB, felt
