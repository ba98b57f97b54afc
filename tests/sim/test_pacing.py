"""The pacer: sub-millisecond waits on a timerfd, never early."""

from __future__ import annotations

import asyncio
import time

from consolidator.sim.pacing import Pacer

from .helpers import run


def test_sleep_until_never_returns_before_the_deadline() -> None:
    async def scenario() -> None:
        pacer = Pacer()
        try:
            assert pacer.precise
            start = time.monotonic_ns()
            for i in range(1, 200):
                deadline = start + i * 150_000  # every 150 us
                await pacer.sleep_until(deadline)
                assert time.monotonic_ns() >= deadline
            far = time.monotonic_ns() + 5_000_000  # past the coarse-sleep threshold
            await pacer.sleep_until(far)
            assert time.monotonic_ns() >= far
        finally:
            pacer.close()

    run(scenario())


def test_a_past_deadline_yields_once_and_returns() -> None:
    async def scenario() -> None:
        pacer = Pacer()
        ran: list[bool] = []
        try:
            asyncio.get_running_loop().call_soon(ran.append, True)
            await pacer.sleep_until(time.monotonic_ns() - 1)
            assert ran == [True]
        finally:
            pacer.close()

    run(scenario())
