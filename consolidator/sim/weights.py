"""REST request-weight accounting: 429 over the limit, 418 when ignoring a back-off."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Verdict", "WeightLimiter"]

_MAX_BAN = 3 * 86400.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of charging one request.

    Attributes:
        status: 200 (allowed), 429 (over the limit) or 418 (banned).
        used: Weight used in the current window (the ``X-MBX-USED-WEIGHT-1M`` value).
        retry_after: Seconds for ``Retry-After`` (0 when allowed).
    """

    status: int
    used: int
    retry_after: int


@dataclass(slots=True)
class _Client:
    window_start: float = -1.0
    used: int = 0
    backoff_until: float = 0.0
    ban_until: float = 0.0
    bans: int = 0


class WeightLimiter:
    """Per-IP weight windows aligned to multiples of ``window`` seconds of wall time.

    A request that takes the window over ``limit`` gets 429 with ``Retry-After`` = the
    seconds left in the window. Any request before that back-off expires gets 418 and a ban
    of ``ban_seconds`` (doubling with each further ban, capped at 3 days); requests during a
    ban get 418 with the remaining ban time.

    Args:
        limit: Weight allowed per window.
        window: Window length in seconds (60 on the real venue).
        ban_seconds: First ban length.
    """

    def __init__(self, limit: int, window: float, ban_seconds: float) -> None:
        self.limit = limit
        self.window = window
        self.ban_seconds = ban_seconds
        self._clients: dict[str, _Client] = {}
        self.counts = {"requests": 0, "429": 0, "418": 0}

    def reset(self) -> None:
        """Forget all usage, back-offs and bans."""
        self._clients.clear()

    def used(self, ip: str, now: float) -> int:
        """Weight used by ``ip`` in the current window."""
        client = self._clients.get(ip)
        if client is None or client.window_start != self._window_start(now):
            return 0
        return client.used

    def _window_start(self, now: float) -> float:
        return math.floor(now / self.window) * self.window

    def charge(self, ip: str, weight: int, now: float) -> Verdict:
        """Charge ``weight`` to ``ip`` at wall time ``now``."""
        self.counts["requests"] += 1
        client = self._clients.setdefault(ip, _Client())
        start = self._window_start(now)
        if client.window_start != start:
            client.window_start = start
            client.used = 0
        if now < client.ban_until:
            self.counts["418"] += 1
            return Verdict(418, client.used, math.ceil(client.ban_until - now))
        if now < client.backoff_until:
            client.bans += 1
            ban = min(self.ban_seconds * 2 ** (client.bans - 1), _MAX_BAN)
            client.ban_until = now + ban
            self.counts["418"] += 1
            return Verdict(418, client.used, math.ceil(ban))
        client.used += weight
        if client.used > self.limit:
            client.backoff_until = start + self.window
            self.counts["429"] += 1
            return Verdict(429, client.used, max(1, math.ceil(client.backoff_until - now)))
        return Verdict(200, client.used, 0)
