"""Sub-millisecond waits in the event loop, so the simulator can send each event when it is due.

asyncio's and uvloop's timers have millisecond resolution (epoll's timeout, libuv's loop clock):
a market paced with ``asyncio.sleep`` sends everything due within a millisecond in one burst. A
venue sends each message when it happens. `Pacer` waits on a Linux ``timerfd`` (CLOCK_MONOTONIC,
absolute deadline, nanosecond resolution) that the event loop watches like a socket: the loop
sleeps in epoll and wakes when the deadline passes, with no spinning. Deadlines are
``time.monotonic_ns()`` values (the same clock). Where ``timerfd`` is unavailable (not Linux), it
falls back to ``asyncio.sleep``. The process's timer slack is lowered to 1 us (``prctl``; the
default, 50 us, would make every wake that much late).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import time
from typing import Final

__all__ = ["Pacer"]

_CLOCK_MONOTONIC: Final = 1
_TFD_NONBLOCK: Final = 0o4000
_TFD_CLOEXEC: Final = 0o2000000
_TFD_TIMER_ABSTIME: Final = 1
_PR_SET_TIMERSLACK: Final = 29
_SLACK_NS: Final = 1_000
_COARSE_NS: Final = 3_000_000
"""Waits longer than this sleep on the loop's own timer first (to 2 ms before the deadline)."""


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.restype = ctypes.c_int
        libc.timerfd_settime.restype = ctypes.c_int
        libc.prctl(_PR_SET_TIMERSLACK, _SLACK_NS, 0, 0, 0)
    except (OSError, AttributeError):
        return None
    return libc


class Pacer:
    """Waits until a ``time.monotonic_ns()`` deadline with sub-millisecond precision.

    Create it inside the running loop; `close` it when done. One waiter at a time.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._libc = _libc()
        self._fd = -1
        self._waiter: asyncio.Future[None] | None = None
        if self._libc is not None:
            fd = int(self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
            if fd >= 0:
                self._fd = fd
                self._loop.add_reader(fd, self._fired)

    @property
    def precise(self) -> bool:
        """Whether waits use the timerfd (False: the loop's millisecond timers)."""
        return self._fd >= 0

    def _fired(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._fd, 8)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep_until(self, deadline_ns: int) -> None:
        """Return at ``deadline_ns`` (monotonic) or soon after; at once (after one loop turn) if
        it has passed."""
        remaining = deadline_ns - time.monotonic_ns()
        if remaining <= 0:
            await asyncio.sleep(0)
            return
        if remaining > _COARSE_NS:
            await asyncio.sleep((remaining - 2_000_000) / 1e9)
        if self._fd < 0 or self._libc is None:
            await asyncio.sleep(max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))
            return
        spec = _Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        """Stop watching and close the timerfd."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
