"""Run an attack against a real server while a probe measures what the other clients feel.

The probe asks ``/v2/health/ready`` every 50 ms and records the slowest answer;
the server's resident memory is sampled at the same time.  An attack passes
when the slowest probe stays under :data:`PROBE_LIMIT_S` and the memory grows
by less than :data:`MEMORY_LIMIT_MB` (the issue's generous bounds).
"""

from __future__ import annotations

import http.client
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


def under_attack(server: LocalServer, attack: Callable[[], Any]) -> Felt:
    """Run ``attack()`` while probing ``server``; what the probe felt, and the attack's result."""
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    host, port = server.http_url.split(":")
    base = _rss_tree(proc)
    peak, slowest = base, 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal peak, slowest
        while not done.is_set():
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                conn.request("GET", "/v2/health/ready")
                status = conn.getresponse().status
            finally:
                conn.close()
            slowest = max(slowest, time.perf_counter() - t0)
            assert status == 200, f"health answered {status} during the attack"
            peak = max(peak, _rss_tree(proc))
            time.sleep(0.05)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            probe()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        result = attack()
        time.sleep(0.2)
    finally:
        done.set()
        thread.join(60)
    if errors:
        raise errors[0]
    assert server.proc.poll() is None, f"the server died:\n{server.log()[-3000:]}"
    return Felt(slowest, (peak - base) / 2**20, result)


def assert_unharmed(felt: Felt) -> None:
    assert felt.slowest_probe_s < PROBE_LIMIT_S, felt
    assert felt.memory_growth_mb < MEMORY_LIMIT_MB, felt
