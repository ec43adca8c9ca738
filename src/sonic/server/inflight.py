"""Requests begun and not yet answered: what a drain waits for.

The data plane counts them to finish accepted requests on SIGTERM, and each
model version to unload only once its last request is answered; both need
the count and a wake-up when it reaches zero, so that drains wait on an
event rather than polling.
"""

from __future__ import annotations

import asyncio


class InFlight:
    """A count of requests in flight, with an event set while it is zero."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()  # bound to a loop at first wait (3.10+), not here
        self._idle.set()

    def begin(self, n: int = 1) -> None:
        self.count += n
        self._idle.clear()

    def end(self, n: int = 1) -> None:
        self.count -= n
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once nothing is in flight."""
        await self._idle.wait()
