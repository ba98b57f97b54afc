"""Capped exponential back-off with full jitter, reset once a connection has been stable."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays before reconnect attempts: ``uniform(0, min(cap, base * 2**attempt))``.

    "Full jitter" (AWS architecture blog, "Exponential Backoff And Jitter"): many writers that
    lost their connections at the same moment do not come back in lockstep. The attempt count
    resets when the last connection stayed up for ``stable_s``.

    Args:
        base_s: the ceiling of the first delay.
        cap_s: the largest ceiling.
        stable_s: a connection that lasted this long resets the attempt count.
        rng: a uniform [0, 1) source (tests pass a seeded one).
    """

    def __init__(
        self,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        stable_s: float = 60.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base_s <= 0 or cap_s < base_s or stable_s <= 0:
            raise ValueError(f"bad back-off parameters: {base_s}, {cap_s}, {stable_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.stable_s = stable_s
        self._rng = rng
        self.attempts = 0
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        """A connection opened at ``now`` (monotonic seconds)."""
        self._up_since = now

    def disconnected(self, now: float) -> None:
        """The connection ended at ``now``: forget the failures if it had been stable."""
        if self._up_since is not None and now - self._up_since >= self.stable_s:
            self.attempts = 0
        self._up_since = None

    def ceiling(self) -> float:
        """The ceiling of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempts, 60))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        delay = self._rng() * self.ceiling()
        self.attempts += 1
        return delay
