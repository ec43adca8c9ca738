"""The dynamic batcher's rules on a fake clock: which batch forms, and when.

``test_dynamic_batching.py`` checks the same rules through a real server and wall-clock
bounds; here the batcher's clock is a number the test sets, so each rule is checked at
the exact nanosecond where it changes its answer, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvloop

from sonic.backends.base import BackendInstance, IOSpec
from sonic.errors import Unavailable
from sonic.repository.config import parse_config
from sonic.server.scheduling.instances import InstancePool
from sonic.server.scheduling.scheduler import BatchShape, DynamicBatcher, WorkItem
from sonic.server.statistics import ModelStatistics

US = 1000  # ns


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def batcher(dynamic_batching: str, max_batch_size: int = 8) -> DynamicBatcher:
    config = parse_config(f'name: "m"\nmax_batch_size: {max_batch_size}\n'
                          f"dynamic_batching {{ {dynamic_batching} }}", "m")  # fmt: skip
    b = DynamicBatcher(InstancePool([], "m"), ModelStatistics("m", "1"), BatchShape(), config)
    b.clock = Clock()
    return b


def queue(b: DynamicBatcher, loop: asyncio.AbstractEventLoop, rows: int, at_us: int = 0, *,
          priority: int = 0, deadline_us: int = 0,
          key: tuple[object, ...] = ()) -> WorkItem:  # fmt: skip
    """What execute() queues, without running the loop."""
    item = WorkItem({}, [], rows, at_us * US, loop.create_future(), priority or b.default_level,
                    deadline_us * US, key)  # fmt: skip
    b.queues[item.priority].append(item)
    b.pending += 1
    return item


def form(b: DynamicBatcher, at_us: int) -> list[int] | None:
    """The rows of each request in the batch sent at ``at_us``, or None: keep waiting."""
    b.clock.now = at_us * US  # type: ignore[attr-defined]
    b._expire(b.clock())
    batch = b._candidates()
    cut = b._cut(batch) if batch else []
    return None if cut is None else [it.rows for it in cut]


def test_a_partial_batch_waits_for_the_oldest_request_s_delay(
    loop: asyncio.AbstractEventLoop,
) -> None:
    b = batcher("max_queue_delay_microseconds: 100")
    queue(b, loop, 1, at_us=0)
    queue(b, loop, 2, at_us=40)
    assert form(b, 99) is None
    assert form(b, 100) == [1, 2]  # the delay counts from the oldest, not the newest


def test_a_full_batch_goes_at_once(loop: asyncio.AbstractEventLoop) -> None:
    b = batcher("max_queue_delay_microseconds: 100000")
    for rows in (4, 4, 1):
        queue(b, loop, rows)
    assert form(b, 0) == [4, 4]  # max_batch_size 8 reached: the third request waits


def test_no_delay_sends_whatever_is_queued(loop: asyncio.AbstractEventLoop) -> None:
    b = batcher("")
    queue(b, loop, 1)
    assert form(b, 0) == [1]


def test_the_largest_preferred_size_goes_at_once_smaller_ones_wait(
    loop: asyncio.AbstractEventLoop,
) -> None:
    b = batcher("preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100",
                max_batch_size=16)  # fmt: skip
    for _ in range(3):
        queue(b, loop, 1)
    assert form(b, 0) is None  # 2 is preferred, but 4 may still form
    assert form(b, 100) == [1, 1]  # after the delay: the largest preferred size formed, not 3
    queue(b, loop, 1)
    assert form(b, 0) == [1, 1, 1, 1]  # the largest preferred size: no wait


def test_higher_priority_first_then_arrival(loop: asyncio.AbstractEventLoop) -> None:
    b = batcher("priority_levels: 2 default_priority_level: 2", max_batch_size=2)
    queue(b, loop, 1, priority=2)
    queue(b, loop, 1, priority=2)
    urgent = queue(b, loop, 1, at_us=5, priority=1)
    cut = b._cut(b._candidates())
    assert cut is not None and cut[0] is urgent and len(cut) == 2


def test_requests_of_other_shapes_are_not_merged(loop: asyncio.AbstractEventLoop) -> None:
    b = batcher("")
    queue(b, loop, 1, key=(("x", (16,)),))
    queue(b, loop, 1, key=(("x", (32,)),))
    queue(b, loop, 1, key=(("x", (16,)),))
    assert form(b, 0) == [1]  # the longest compatible prefix, in order


def test_a_queue_timeout_rejects_at_its_deadline(loop: asyncio.AbstractEventLoop) -> None:
    b = batcher("max_queue_delay_microseconds: 1000 default_queue_policy { "
                "default_timeout_microseconds: 50 }")
    item = queue(b, loop, 1, deadline_us=50)
    assert form(b, 49) is None and not item.future.done()
    assert form(b, 50) == []  # expired: nothing is left to send
    with pytest.raises(Unavailable, match="Request timeout expired"):
        item.future.result()
    assert b.pending == 0


def test_delay_on_timeout_moves_the_request_behind_the_others(
    loop: asyncio.AbstractEventLoop,
) -> None:
    b = batcher("default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 50 }",
                max_batch_size=1)  # fmt: skip
    late = queue(b, loop, 1, deadline_us=50)
    other = queue(b, loop, 1, at_us=10)
    b.clock.now = 60 * US  # type: ignore[attr-defined]
    b._expire(b.clock())
    assert list(b.queues[1]) == [other, late] and late.deadline_ns == 0
    assert not late.future.done()


class _Sleepy(BackendInstance):
    """An instance whose one call takes 0.3 s on its thread."""

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        return [], []

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        time.sleep(0.3)
        return {"y": inputs["x"] * 2}


def test_closing_during_an_execution_lets_its_requests_finish() -> None:
    """A single-instance batcher runs each batch in its own loop task; closing the model then
    must not cancel the batch running, only end the loop after it."""
    config = parse_config('name: "m"\nmax_batch_size: 8\ndynamic_batching { }', "m")
    inst = _Sleepy("m", config, Path("."), None)  # type: ignore[arg-type]
    b = DynamicBatcher(InstancePool([inst], "m"), ModelStatistics("m", "1"), BatchShape(), config)

    async def scenario() -> np.ndarray:
        running = b.submit({"x": np.ones((1, 1), np.float32)}, ["y"], 1)
        await asyncio.sleep(0.1)  # executing
        queued = b.submit({"x": np.ones((1, 1), np.float32)}, ["y"], 1)  # waits for the instance
        b.close()
        with pytest.raises(Unavailable, match="unloaded"):
            await queued.future
        return (await running.future).outputs["y"]

    assert asyncio.run(scenario()).tolist() == [[2.0]]
    assert b._loop_task is not None and b._loop_task.done()


class _Arrivals(BackendInstance):
    """A fast instance during whose call a request "arrives": its pipe becomes readable."""

    inline_ok = True
    write_fd = -1

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        return [], []

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        if self.write_fd >= 0:
            os.write(self.write_fd, b"x")
        return {"y": inputs["x"] * 2}


def test_an_answer_does_not_wait_behind_the_requests_read_meanwhile() -> None:
    """Under uvloop a future's done callbacks run on the loop's next pass, after it polls for
    I/O: an answer waited behind the decoding of every request read during its execution.
    ``WorkItem.then`` callbacks run as the execution is delivered; a failing one is reported
    to the loop and the batcher goes on."""
    config = parse_config('name: "m"\nmax_batch_size: 8\ndynamic_batching { }', "m")
    inst = _Arrivals("m", config, Path("."), None)  # type: ignore[arg-type]
    b = DynamicBatcher(InstancePool([inst], "m"), ModelStatistics("m", "1"), BatchShape(), config)
    order: list[str] = []
    reported: list[dict[str, object]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context))
        b.pool._call_ns = 0.0  # a short call's estimate: it runs inline, as under load
        read_fd, inst.write_fd = os.pipe()
        loop.add_reader(read_fd, lambda: order.append(f"read {os.read(read_fd, 1)!r}"))
        item = b.submit({"x": np.ones((1, 1), np.float32)}, ["y"], 1)
        item.then(lambda f: order.append(f"then {f.result().outputs['y'].tolist()}"))
        item.future.add_done_callback(lambda _: order.append("done callback"))
        failing = b.submit({"x": np.ones((1, 1), np.float32)}, ["y"], 1)
        failing.then(lambda _: 1 / 0)
        await asyncio.sleep(0.05)
        later = b.submit({"x": np.full((1, 1), 3, np.float32)}, ["y"], 1)
        assert (await later.future).outputs["y"].tolist() == [[6.0]]
        loop.remove_reader(read_fd)
        os.close(read_fd)
        os.close(inst.write_fd)
        b.close()

    uvloop.run(scenario())
    assert order[:3] == ["then [[2.0]]", "read b'x'", "done callback"], order
    assert [type(c["exception"]) for c in reported] == [ZeroDivisionError], reported
