"""Short calls of a single-instance model run on the event-loop thread; others never do."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement
from sonic.repository.autocomplete import IOSpec
from sonic.server.scheduling.instances import INLINE_BELOW_NS, InstancePool


class Recorder(BackendInstance):
    """Records which thread each call ran on; sleeps ``delay_s`` per call."""

    backend_name = "recorder"
    default_filename = "none"
    platform = "recorder"
    inline_ok: ClassVar[bool] = True

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__("m", mc.ModelConfig(name="m"), Path("."), InstancePlacement("m_0"))
        self.delay_s = delay_s
        self.threads: list[int] = []

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        return [], []

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        return {}


def _calls(pool: InstancePool, n: int, alone: bool = True) -> int:
    """Run n calls through the pool; return the event-loop thread's id."""

    async def main() -> int:
        inst = pool.instances[0]
        for _ in range(n):
            await pool.run(inst, lambda i: i.execute({}, []), alone)
        return threading.get_ident()

    try:
        return asyncio.run(main())
    finally:
        pool.close()


def test_fast_single_instance_moves_inline_after_warm_up() -> None:
    rec = Recorder()
    loop_thread = _calls(InstancePool([rec], "m"), 30)
    assert rec.threads[0] != loop_thread  # warm-up calls go to the instance thread
    assert rec.threads[-1] == loop_thread  # then short calls run inline


def test_calls_while_other_requests_wait_stay_on_the_instance_thread() -> None:
    # Under load the loop keeps reading requests into the queue (where queue time sees them).
    rec = Recorder()
    loop_thread = _calls(InstancePool([rec], "m"), 30, alone=False)
    assert loop_thread not in rec.threads


def test_where_waiting_requests_are_stamped_calls_run_inline_under_load() -> None:
    # The native transport reads and stamps requests while the loop runs a call: their wait
    # is queue time anyway (tests/server/frontends/test_grpc_native.py).
    rec = Recorder()
    loop_thread = _calls(InstancePool([rec], "m", inline_under_load=True), 30, alone=False)
    assert rec.threads[0] != loop_thread and rec.threads[-1] == loop_thread


def test_slow_calls_stay_on_the_instance_thread() -> None:
    rec = Recorder(delay_s=2 * INLINE_BELOW_NS / 1e9)
    loop_thread = _calls(InstancePool([rec], "m"), 15)
    assert loop_thread not in rec.threads


def test_several_instances_never_run_inline() -> None:
    a, b = Recorder(), Recorder()
    loop_thread = _calls(InstancePool([a, b], "m"), 30)
    assert loop_thread not in a.threads


def test_backends_that_run_user_code_never_run_inline() -> None:
    class UserCode(Recorder):
        inline_ok = False

    rec = UserCode()
    loop_thread = _calls(InstancePool([rec], "m"), 30)
    assert loop_thread not in rec.threads
