"""A timer precise to microseconds, for the dynamic batcher's ``max_queue_delay_microseconds``.

uvloop's timers are libuv's, which count whole milliseconds: a partial batch held for a 600 us
delay waited 944 us per request, and for 1.5 ms 2.3 ms (one request at a time through
tritonclient), where Triton holds it for the delay as configured.  A delay under half a
millisecond rounds down to no wait at all, so the loop re-checks the batch on every pass and
ends it on time (at the cost of polling); from half a millisecond up, :class:`PreciseTimer`
arms a Linux ``timerfd`` on the monotonic clock, in nanoseconds, and the loop's poller wakes
on it.  Where timerfd is missing (not Linux) it falls back to ``call_later``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Callable
from typing import Any

#: Below this a delay stays with the loop's own timer (it rounds to "now", and the caller
#: re-checks on the next pass): a timerfd there would add the kernel's timer slack (50 us).
PRECISE_FROM_S = 0.0005
_CLOCK_MONOTONIC = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(_Itimerspec), ctypes.c_void_p]  # fmt: skip
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class PreciseTimer:
    """Calls ``callback`` on ``loop`` once the delay given to :meth:`arm` has passed; one call
    pending at a time (arming again replaces it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
        self.loop = loop
        self.callback = callback
        self._fd = -1
        self._armed = False
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, delay_s: float) -> None:
        self.cancel()
        if delay_s >= PRECISE_FROM_S and self._open():
            self._set(delay_s)
            self._armed = True
        else:
            self._handle = self.loop.call_later(delay_s, self.callback)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._armed:
            self._armed = False
            self._set(0.0)  # disarms

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> bool:
        if self._fd < 0 and _LIBC is not None:
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self.loop.add_reader(fd, self._fired)
        return self._fd >= 0

    def _set(self, delay_s: float) -> None:
        seconds = int(delay_s)
        value = _Timespec(seconds, int((delay_s - seconds) * 1e9))
        _LIBC.timerfd_settime(self._fd, 0, ctypes.byref(_Itimerspec(_Timespec(0, 0), value)),
                              None)  # fmt: skip

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:  # re-armed or cancelled after it expired: nothing is due
            return
        if self._armed:
            self._armed = False
            self.callback()
