"""Waiting in tests: on a condition, with a generous deadline; never sleep and assume.

A test that needs another process (or task) to have got somewhere waits for the evidence that it
did (a ring tail, a durable position, a counter, a log line), polling it, and fails only after a
deadline long enough for a loaded two-core machine. Sleeps are for pacing (a producer's rate, a
deliberate outage or downtime, an observation window for something that must *not* happen).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["DEADLINE_S", "async_wait_until", "wait_until"]

DEADLINE_S = 60.0
"""The default deadline: generous, since a condition that holds ends the wait at once."""


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = DEADLINE_S,
    what: str = "the condition",
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` every ``interval`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = DEADLINE_S,
    what: str = "the condition",
    interval: float = 0.005,
) -> None:
    """`wait_until` inside an event loop; ``predicate`` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
