"""The batcher's precise timer (sonic.server.scheduling.timer) under uvloop, the server's loop."""

from __future__ import annotations

import asyncio
import os
import time

import uvloop

from sonic.server.scheduling.timer import PRECISE_FROM_S, PreciseTimer
from tests.fixtures.waiting import wall_clock


def _run(body):  # type: ignore[no-untyped-def]
    return uvloop.run(body())


@wall_clock
def test_it_fires_once_after_the_delay_and_not_when_cancelled() -> None:
    async def body() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = PreciseTimer(loop, lambda: fired.append(time.perf_counter()))
        t0 = time.perf_counter()
        timer.arm(0.0015)  # a timerfd: above PRECISE_FROM_S
        timer.arm(0.0015)  # arming again replaces the pending call
        await asyncio.sleep(0.05)
        timer.arm(0.0015)
        timer.cancel()  # cancelled: never fires
        timer.arm(PRECISE_FROM_S / 2)  # below the threshold: the loop's own timer
        await asyncio.sleep(0.05)
        fds = len(os.listdir("/proc/self/fd"))
        timer.close()
        return [f - t0 for f in fired], fds - len(os.listdir("/proc/self/fd"))

    times, closed = _run(body)
    assert len(times) == 2  # one from the two arms, none from the cancelled one, one short
    assert 0.0015 <= times[0] < 0.04
    assert closed == 1  # close() gives the timerfd back


@wall_clock
def test_a_batch_waits_its_delay_not_the_next_millisecond() -> None:
    """A 1.6 ms wait ends before the 2 ms that uvloop's own timer rounds it to.

    Measured side by side with ``loop.call_later``, alternating, because a loaded machine
    adds the same wake-up delay to both: an absolute bound (the median under 2 ms) failed
    CI at 2.03 ms. Here: precise 1.77-2.4 ms (median 1.85), call_later 1.5-7.4 ms (median
    2.2; it can also fire early, from the loop's cached clock)."""

    async def body() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        timer = PreciseTimer(loop, done.set)
        arms = (timer.arm, lambda delay: loop.call_later(delay, done.set))
        precise: list[float] = []
        coarse: list[float] = []
        for _ in range(20):
            for arm, waits in zip(arms, (precise, coarse), strict=True):
                done.clear()
                t0 = time.perf_counter()
                arm(0.0016)
                await done.wait()
                waits.append(time.perf_counter() - t0)
        timer.close()
        return sorted(precise), sorted(coarse)

    precise, coarse = _run(body)
    assert precise[0] >= 0.0016, precise  # never early
    assert precise[0] < 0.0020, precise  # under the millisecond grid
    assert precise[10] < coarse[10], (precise, coarse)  # and sooner than call_later's median
