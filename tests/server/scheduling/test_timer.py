"""The batcher's precise timer (sonic.server.scheduling.timer) under uvloop, the server's loop."""

from __future__ import annotations

import asyncio
import os
import time

import uvloop

from sonic.server.scheduling.timer import PRECISE_FROM_S, PreciseTimer


def _run(body):  # type: ignore[no-untyped-def]
    return uvloop.run(body())


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


def test_a_batch_waits_its_delay_not_the_next_millisecond() -> None:
    """A 1.6 ms wait ends well before the 2 ms that uvloop's own timer rounds it to (the
    median of 20 waits; ``loop.call_later`` gave 2.14 ms)."""

    async def body() -> float:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        timer = PreciseTimer(loop, done.set)
        waits = []
        for _ in range(20):
            done.clear()
            t0 = time.perf_counter()
            timer.arm(0.0016)
            await done.wait()
            waits.append(time.perf_counter() - t0)
        timer.close()
        return sorted(waits)[len(waits) // 2]

    median = _run(body)
    assert 0.0016 <= median < 0.0020, median  # call_later: 2.14 ms
