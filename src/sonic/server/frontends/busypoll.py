"""Busy polling: keep the event loop awake for a moment after each request.

A request that reaches a sleeping server pays two thread wake-ups before any
Python runs: grpc's poller thread wakes in ``epoll_wait`` and then wakes the
event loop, asleep in its own ``epoll_wait``.  A CMSSW job that sends one
event after another arrives every few hundred microseconds, just after the
loop went to sleep.  Like Linux's ``net.core.busy_poll``, the loop instead keeps polling
(a callback that reschedules itself, so the loop polls with a zero timeout)
for ``--busy-poll-us`` after the last request started or finished, and then
sleeps as before: an idle server uses no CPU, a loaded one is awake anyway,
and only the gaps shorter than the window are spent spinning, on one core.
That removes the loop's wake-up (and keeps its core out of idle states):
``benchmarks/busy_poll.py`` measures what it buys and costs (on the 2-core
development VM, 160 us of median latency at concurrency 1).

It does not spin while more than one request is in flight (``crowded``): then
the others' arrivals and completions wake the loop anyway.  Nor for
:data:`COMPANY_S` after a request arrived while another was in flight: a client
that keeps several requests out leaves gaps between one batch's answers and the
next arrivals, and spinning there cost server CPU for throughput lost in this
machine's noise (``benchmarks/commits_ab.py``, the rule against spinning in
those gaps, 2026-12-02: 218 -> 152 us of server CPU per request at concurrency
8 for 1.06x the requests/s, 459 -> 422 us at batch 64, concurrency 4, where
throughput moved both ways between runs; concurrency 1 unchanged).  So the loop
spins for clients that send one request after another, the case it is for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: After a request arrived while another was in flight, this long without spinning: the
#: client keeps several requests out, and their arrivals wake the loop anyway.
COMPANY_S = 0.05


class BusyPoll:
    """Keeps the running loop polling until ``window_s`` after the last :meth:`touch`."""

    def __init__(self, window_s: float, crowded: Callable[[], bool] = lambda: False) -> None:
        self.window_s = window_s
        #: True while spinning is not needed (several requests in flight).
        self.crowded = crowded
        #: Loop passes spent polling (tests and diagnostics).
        self.passes = 0
        self._last = 0.0
        self._company = -COMPANY_S
        self._loop: asyncio.AbstractEventLoop | None = None

    def company(self) -> None:
        """A request arrived while another was in flight."""
        self._company = time.perf_counter()

    def touch(self) -> None:
        """Mark activity; call on the event-loop thread."""
        if self.window_s <= 0 or self.crowded():
            return
        now = time.perf_counter()
        if now - self._company < COMPANY_S:
            return
        self._last = now
        if self._loop is None or self._loop.is_closed():  # not polling (or a loop since closed)
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        assert self._loop is not None
        now = time.perf_counter()
        if (now - self._last < self.window_s and now - self._company >= COMPANY_S
                and not self._loop.is_closed() and not self.crowded()):
            self.passes += 1
            self._loop.call_soon(self._poll)
        else:
            self._loop = None

    @property
    def polling(self) -> bool:
        return self._loop is not None
