"""When the dynamic batcher stops holding partial batches (sonic.server.scheduling.delay)."""

from __future__ import annotations

from sonic.server.scheduling.delay import FUTILE_TO_SKIP, PROBE_EVERY, DelayWatch


def futile_waits(watch: DelayWatch, n: int) -> None:
    for _ in range(n):
        watch.looked(1)
        assert watch.worth_waiting()
        watch.waited(gathered=False)


def test_waits_until_enough_waits_gathered_nothing() -> None:
    watch = DelayWatch()
    futile_waits(watch, FUTILE_TO_SKIP)
    watch.looked(1)
    assert not watch.worth_waiting()
    assert watch.skipped == 1


def test_one_lone_batch_in_probe_every_still_waits() -> None:
    watch = DelayWatch()
    futile_waits(watch, FUTILE_TO_SKIP)
    answers = []
    for _ in range(3 * PROBE_EVERY):
        watch.looked(1)
        answers.append(watch.worth_waiting())
        if answers[-1]:
            watch.waited(gathered=False)  # the probe found no company either
    assert answers.count(True) == 3
    assert answers[PROBE_EVERY - 1] and not any(answers[: PROBE_EVERY - 1])


def test_a_probe_that_gathers_restores_the_delay() -> None:
    watch = DelayWatch()
    futile_waits(watch, FUTILE_TO_SKIP)
    while not watch.worth_waiting():
        pass
    watch.waited(gathered=True)
    assert watch.futile == 0
    assert all(watch.worth_waiting() for _ in range(FUTILE_TO_SKIP))


def test_requests_queued_together_restore_the_delay() -> None:
    watch = DelayWatch()
    futile_waits(watch, FUTILE_TO_SKIP)
    watch.looked(1)
    assert not watch.worth_waiting()
    watch.looked(3)
    assert watch.worth_waiting()
    assert watch.futile == 0


def test_fixed_delay_always_waits() -> None:
    watch = DelayWatch(adaptive=False)
    futile_waits(watch, 10 * FUTILE_TO_SKIP)
    assert watch.worth_waiting()
    assert watch.skipped == 0
