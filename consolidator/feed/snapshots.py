"""Order-book snapshot requests: coalesced per symbol, fetched one at a time within the weight.

The venue protocol asks for a snapshot with `FetchSnapshot` whenever a book (re)synchronizes; a
request for a symbol already queued or in flight is coalesced with it. A failed fetch is reported
to the protocol (``on_snapshot_failed``), which asks again; that symbol's next fetch then waits
a back-off, so a symbol the venue refuses cannot spin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from consolidator.feed.backoff import Backoff
from consolidator.feed.counters import Counters
from consolidator.feed.rest import RestClient, RestError
from consolidator.venues.base import FetchSnapshot, Output

__all__ = ["SnapshotFetcher"]

_log = logging.getLogger(__name__)

RETRY_BASE_S: Final = 1.0
RETRY_CAP_S: Final = 60.0


class SnapshotFetcher:
    """Fetches depth snapshots for the protocol, one request at a time.

    Args:
        rest: the feed's REST client (it paces by weight).
        on_snapshot: ``protocol.on_snapshot`` (symbol, body, ts_recv) -> outputs.
        on_failed: ``protocol.on_snapshot_failed`` (symbol, reason) -> outputs.
        handle: takes the outputs of either (the writer's dispatcher).
        counters: the writer's counters (``snapshots`` keys: requested, coalesced, fetched,
            failed).
    """

    def __init__(
        self,
        rest: RestClient,
        on_snapshot: Callable[[str, bytes, int], Sequence[Output]],
        on_failed: Callable[[str, str], Sequence[Output]],
        handle: Callable[[Sequence[Output]], None],
        counters: Counters,
    ) -> None:
        self._rest = rest
        self._on_snapshot = on_snapshot
        self._on_failed = on_failed
        self._handle = handle
        self._counters = counters
        self._queue: dict[str, FetchSnapshot] = {}
        self._in_flight: str | None = None
        self._not_before: dict[str, float] = {}
        self._backoff: dict[str, Backoff] = {}
        self._wakeup = asyncio.Event()
        self._logged: set[str] = set()
        self.gate = asyncio.Event()
        """Set when fetching may start (the writer sets it once exchangeInfo is settled)."""

    @property
    def pending(self) -> int:
        """Requests queued or in flight."""
        return len(self._queue) + (self._in_flight is not None)

    def request(self, fetch: FetchSnapshot) -> None:
        """Queue ``fetch`` unless one for the same symbol is queued or in flight."""
        self._counters.snapshots["requested"] += 1
        if fetch.symbol in self._queue or fetch.symbol == self._in_flight:
            self._counters.snapshots["coalesced"] += 1
            return
        self._queue[fetch.symbol] = fetch
        self._wakeup.set()

    def discard(self, symbols: Sequence[str]) -> None:
        """Forget queued requests of symbols no longer carried."""
        for symbol in symbols:
            self._queue.pop(symbol, None)
            self._not_before.pop(symbol, None)
            self._backoff.pop(symbol, None)

    async def run(self) -> None:
        """Fetch until cancelled."""
        await self.gate.wait()
        while True:
            fetch = self._next()
            if fetch is None:
                delay = self._idle_delay()
                self._wakeup.clear()
                if delay is None:
                    await self._wakeup.wait()
                else:
                    try:
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                continue
            await self._fetch(fetch)

    def _next(self) -> FetchSnapshot | None:
        now = time.monotonic()
        for symbol, fetch in self._queue.items():
            if self._not_before.get(symbol, 0.0) <= now:
                del self._queue[symbol]
                return fetch
        return None

    def _idle_delay(self) -> float | None:
        if not self._queue:
            return None
        now = time.monotonic()
        return max(0.0, min(self._not_before.get(s, 0.0) for s in self._queue) - now)

    async def _fetch(self, fetch: FetchSnapshot) -> None:
        symbol = fetch.symbol
        self._in_flight = symbol
        try:
            response = await self._rest.depth(symbol, fetch.limit, fetch.weight)
        except RestError as exc:
            self._counters.snapshots["failed"] += 1
            backoff = self._backoff.setdefault(symbol, Backoff(RETRY_BASE_S, RETRY_CAP_S))
            delay = RETRY_BASE_S + backoff.next_delay()
            self._not_before[symbol] = time.monotonic() + delay
            if exc.reason not in self._logged:
                self._logged.add(exc.reason)
                _log.warning("snapshot of %s failed (retry in %.1f s): %s", symbol, delay, exc)
            self._in_flight = None
            self._handle(self._on_failed(symbol, exc.reason))
            return
        self._in_flight = None
        self._backoff.pop(symbol, None)
        self._not_before.pop(symbol, None)
        self._counters.snapshots["fetched"] += 1
        self._handle(self._on_snapshot(symbol, response.body, response.ts_recv))
