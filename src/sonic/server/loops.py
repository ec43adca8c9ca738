"""The running event loop, looked up once per object instead of once per request.

On Python 3.11, ``asyncio.get_running_loop()`` and ``asyncio.current_task()``
make a ``getpid()`` system call on every call (to notice a fork); the request
path asked for the loop four or five times per request, about 4% of the event
loop thread at concurrency 8 (py-spy, native transport).  Objects on that path
keep a :class:`RunningLoop` and call it instead.
"""

from __future__ import annotations

import asyncio


class RunningLoop:
    """Callable returning the running loop, cached until that loop is closed.

    Call it only from the loop's own thread (as ``get_running_loop`` requires);
    a cached loop that has since closed (a test's ``asyncio.run``) is looked up
    again.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def current_task(self) -> asyncio.Task[object] | None:
        return asyncio.current_task(self())
