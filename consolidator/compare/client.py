"""The reference connections: the comparator's own WebSocket client (websockets), one task per
connection, reconnecting with back-off. Their disconnects are the reference's gaps: reported,
and the ids they hid are holes on the reference side (`Matcher.disconnected`), never blamed on
the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from consolidator.compare.binance_ref import BinanceReference, Connection
from consolidator.compare.matcher import REF, Matcher

__all__ = ["ReferenceClient"]

_log = logging.getLogger(__name__)

BACKOFF_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
OPEN_TIMEOUT_S: Final = 10.0
MAX_FRAME_BYTES: Final = 1 << 24


class ReferenceClient:
    """Runs the planned reference connections until ``stop`` is set.

    Args:
        base_url: the venue's WebSocket base URL (``ws://127.0.0.1:9000``).
        plan: the connections (`BinanceReference.plan`).
        parser: the reference parser.
        matcher: receives every parsed record as side `REF`.
        clock: the receive clock (ns since the epoch; the host clock the writer uses too).
    """

    def __init__(
        self,
        base_url: str,
        plan: list[Connection],
        parser: BinanceReference,
        matcher: Matcher,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.plan = plan
        self.parser = parser
        self.matcher = matcher
        self.clock = clock
        self.messages = 0
        self.connects = 0
        self.connected: set[str] = set()
        self.first_recv_ns: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Every connection, until ``stop``."""
        tasks = [
            asyncio.create_task(self._connection(path, lanes, stop)) for path, lanes in self.plan
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(
        self, path: str, lanes: list[tuple[str, str]], stop: asyncio.Event
    ) -> None:
        url = self.base_url + path
        failures = 0
        gap: dict[str, Any] | None = None
        matcher, parse, clock = self.matcher, self.parser.parse, self.clock
        add = matcher.add
        while not stop.is_set():
            reason = "closed"
            try:
                async with connect(
                    url,
                    compression=None,
                    max_size=MAX_FRAME_BYTES,
                    open_timeout=OPEN_TIMEOUT_S,
                    ping_interval=None,  # the venue pings; websockets answers
                    proxy=None,
                ) as ws:
                    self.connects += 1
                    self.connected.add(path)
                    failures = 0
                    async for frame in ws:
                        ts_recv = clock()
                        self.messages += 1
                        if gap is not None:
                            gap["to_ns"] = ts_recv
                            gap = None
                        parsed = parse(frame, ts_recv)
                        if parsed is not None:
                            if self.first_recv_ns is None:
                                self.first_recv_ns = ts_recv
                            add(REF, *parsed)
            except asyncio.CancelledError:
                raise
            except (OSError, WebSocketException, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.discard(path)
            if stop.is_set():
                return
            if gap is None:
                gap = {"kind": "disconnect", "url": path, "from_ns": clock(), "to_ns": None,
                       "reason": reason}  # fmt: skip
                matcher.reference_gaps.append(gap)
                matcher.disconnected(REF, lanes)
                _log.warning("reference connection %s lost (%s); reconnecting", path, reason)
            delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
