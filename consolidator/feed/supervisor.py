"""The life of one planned connection: reconnects with back-off, watchdog, rotation.

A `ConnectionSlot` starts from one of the protocol's `ConnectionPlan`s and keeps a connection
carrying those streams open for the writer's lifetime:

* a failed attempt or a lost connection is reported to the protocol (``on_disconnect``: the lost
  streams become GAP/RESYNC events), then a replacement (``plan_rotation``) is opened after a
  capped, jittered back-off;
* a connection with no bytes for half of ``stale_after_s`` is pinged; one with none for
  ``stale_after_s`` is dropped as stale and replaced the same way;
* make-before-break rotation, ``rotate_after_s`` (less up to 2 % jitter per connection) after it
  opened or at once when the protocol asks (`Reconnect`, e.g. serverShutdown): the replacement is
  opened and subscribed while the old one still delivers; once the venue acknowledged every
  subscription and sent a market message on it (or `READY_TIMEOUT_S` passed), the old one is
  closed and the protocol told (``on_disconnect``), which de-duplicates the overlap by id.

With redundant connections each leg of a planned connection is a slot of its own (the plan's
``leg``): its reconnects, watchdog and rotations are its own, and the protocol arbitrates
between the legs' copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from consolidator.feed.backoff import Backoff
from consolidator.feed.connection import ConnectError, FeedConnection
from consolidator.feed.counters import Counters
from consolidator.records import EventKind
from consolidator.venues.base import LEG_NAMES, ConnectionPlan, Output

__all__ = ["READY_TIMEOUT_S", "ConnectionSlot", "SlotHost", "SlotSettings"]

_log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 10.0
"""How long a replacement may take to deliver before the old connection is closed anyway."""
ROTATION_JITTER: Final = 0.02
FAILURE_LOG_S: Final = 60.0
"""Failed connection attempts of a slot are logged at most this often (each is an event)."""


class SlotHost(Protocol):
    """What a slot needs from the writer."""

    counters: Counters

    def new_connection(self, plan: ConnectionPlan) -> FeedConnection:
        """A (not yet open) connection for ``plan``, registered for control frames."""

    def forget_connection(self, conn: FeedConnection) -> None:
        """``conn`` is closed for good."""

    def on_connected(self, conn_id: int) -> Sequence[Output]:
        """``protocol.on_connected``."""

    def on_disconnect(self, conn_id: int, ts: int) -> Sequence[Output]:
        """``protocol.on_disconnect``."""

    def plan_rotation(self, conn_id: int) -> ConnectionPlan:
        """``protocol.plan_rotation``."""

    def handle(self, outputs: Sequence[Output]) -> None:
        """Dispatch protocol outputs."""

    def event(self, kind: EventKind, detail: dict[str, object]) -> None:
        """Publish a feed-wide event."""


@dataclass(frozen=True, slots=True)
class SlotSettings:
    """Timing of a slot (from the feed configuration)."""

    rotate_after_s: float
    stale_after_s: float
    ready_timeout_s: float = READY_TIMEOUT_S
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    redundant: bool = False
    """Connections have legs: CONNECT events name the leg."""


class ConnectionSlot:
    """Keeps one logical connection up (see the module docstring)."""

    def __init__(
        self,
        host: SlotHost,
        plan: ConnectionPlan,
        settings: SlotSettings,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._host = host
        self._plan = plan
        self._settings = settings
        self._rng = rng
        self._backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s, rng=rng)
        self._wake = asyncio.Event()
        self._rotate_reason: str | None = None
        self.current: FeedConnection | None = None
        self._failure_logged = -FAILURE_LOG_S

    def request_rotation(self, conn_id: int, reason: str) -> bool:
        """Rotate the connection ``conn_id`` if it is this slot's current one."""
        current = self.current
        if current is None or current.conn_id != conn_id:
            return False
        if self._rotate_reason is None:
            self._rotate_reason = reason
        self._wake.set()
        return True

    async def run(self) -> None:
        """Keep the connection up until cancelled."""
        conn = await self._connect(self._plan)
        while True:
            why = await self._watch(conn)
            if why in ("closed", "stale"):
                await self._lost(conn, why)
                conn = await self._connect(self._host.plan_rotation(conn.conn_id))
            else:
                conn = await self._rotate(conn, why)

    async def _connect(self, plan: ConnectionPlan) -> FeedConnection:
        while True:
            conn = await self._try_open(plan)
            if conn is not None:
                return conn
            await asyncio.sleep(self._backoff.next_delay())
            plan = self._host.plan_rotation(plan.conn_id)

    async def _try_open(self, plan: ConnectionPlan) -> FeedConnection | None:
        host = self._host
        counters = host.counters
        conn = host.new_connection(plan)
        counters.move(None, "connecting")
        try:
            await conn.open()
        except ConnectError as exc:
            counters.move("connecting", None)
            counters.reconnects["connect_failed"] += 1
            host.forget_connection(conn)
            detail = {"conn_id": plan.conn_id, "reason": "connect_failed", "error": str(exc)[:200]}
            host.event(EventKind.DISCONNECT, detail)
            host.handle(host.on_disconnect(plan.conn_id, time.time_ns()))
            now = time.monotonic()
            if now - self._failure_logged >= FAILURE_LOG_S:
                self._failure_logged = now
                _log.warning("connection %d failed: %s", plan.conn_id, exc)
            return None
        counters.move("connecting", "open")
        counters.leg_moved(plan.leg, 1)
        self._backoff.connected(time.monotonic())
        self.current = conn
        host.handle(host.on_connected(plan.conn_id))
        opened: dict[str, object] = {
            "conn_id": plan.conn_id,
            "url": conn.url,
            "streams": len(plan.streams),
        }
        if self._settings.redundant:
            opened["leg"] = LEG_NAMES[plan.leg]
        host.event(EventKind.CONNECT, opened)
        _log.info("connection %d open: %s, %d streams", plan.conn_id, conn.url, len(plan.streams))
        return conn

    async def _watch(self, conn: FeedConnection) -> str:
        """Wait until ``conn`` closed, went stale or is due for rotation; say which."""
        settings = self._settings
        jitter = 1.0 - ROTATION_JITTER * self._rng()
        deadline = conn.opened_at + settings.rotate_after_s * jitter
        tick = max(0.05, min(1.0, settings.stale_after_s / 4))
        closed = asyncio.ensure_future(conn.wait_closed())
        closed.add_done_callback(lambda _: self._wake.set())
        try:
            while True:
                self._wake.clear()
                if closed.done():
                    return "closed"
                if self._rotate_reason is not None:
                    reason, self._rotate_reason = self._rotate_reason, None
                    return reason
                now = time.monotonic()
                if now >= deadline:
                    return "age"
                idle = conn.idle_s(now)
                if idle >= settings.stale_after_s:
                    return "stale"
                if idle >= settings.stale_after_s / 2:
                    await conn.ping()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(tick, deadline - now)):
                        await self._wake.wait()
        finally:
            closed.cancel()

    async def _lost(self, conn: FeedConnection, why: str) -> None:
        host = self._host
        if why == "stale":
            _log.warning(
                "connection %d stale (no data for %g s): reconnecting",
                conn.conn_id,
                self._settings.stale_after_s,
            )
            conn.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await conn.wait_closed()
        self._closed(conn)
        code, reason = conn.close_info()
        key = why if why == "stale" else _close_key(code)
        host.counters.reconnects[key] += 1
        now = time.monotonic()
        detail: dict[str, object] = {
            "conn_id": conn.conn_id,
            "reason": key,
            "code": code,
            "close_reason": reason[:120],
            "age_s": round(now - conn.opened_at, 3),
        }
        host.event(EventKind.DISCONNECT, detail)
        host.handle(host.on_disconnect(conn.conn_id, time.time_ns()))
        if why != "stale":
            _log.warning("connection %d closed (%s %s): reconnecting", conn.conn_id, code, reason)
        self._backoff.disconnected(now)
        await asyncio.sleep(self._backoff.next_delay())

    async def _rotate(self, old: FeedConnection, reason: str) -> FeedConnection:
        """Make-before-break: open the replacement, wait until it delivers, close ``old``."""
        host = self._host
        started = time.monotonic()
        _log.info("rotating connection %d (%s)", old.conn_id, reason)
        old_closed = asyncio.ensure_future(old.wait_closed())
        reported = False

        def report_old() -> None:
            nonlocal reported
            if not reported:
                reported = True
                self._closed(old)
                host.handle(host.on_disconnect(old.conn_id, time.time_ns()))

        plan = host.plan_rotation(old.conn_id)
        try:
            while True:
                new = await self._try_open(plan)  # a failure to open is reported in there
                if new is not None:
                    ready = await self._until_ready(new, old_closed, report_old)
                    if new.is_open:
                        break
                    self._closed(new)
                    key = _close_key(new.close_info()[0])
                    host.counters.reconnects[key] += 1
                    host.event(EventKind.DISCONNECT, {"conn_id": new.conn_id, "reason": key})
                    host.handle(host.on_disconnect(new.conn_id, time.time_ns()))
                    self.current = old
                # An attempt that failed while the old connection was not yet reported closed
                # was forgotten by the protocol (the old one kept its streams): the next attempt
                # replaces the old connection, open or closed since. One that failed after it
                # holds the streams: the next attempt replaces that one.
                failed_after_old = reported
                if old_closed.done():
                    report_old()
                await asyncio.sleep(self._backoff.next_delay())
                # While the old connection is open, the protocol holds the newcomer's records
                # until the two overlap.
                plan = host.plan_rotation(plan.conn_id if failed_after_old else old.conn_id)
        finally:
            old_closed.cancel()
        old_closed_first = reported
        if not reported:
            await old.close()
            report_old()
        host.counters.rotations += 1
        detail: dict[str, object] = {
            "old_conn_id": old.conn_id,
            "new_conn_id": new.conn_id,
            "reason": reason,
            "ready": ready,
            "old_closed_first": old_closed_first,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        host.event(EventKind.ROTATION, detail)
        _log.info("connection %d replaced by %d", old.conn_id, new.conn_id)
        return new

    async def _until_ready(
        self, new: FeedConnection, old_closed: asyncio.Future[Any], report_old: Callable[[], None]
    ) -> bool:
        """Wait until ``new`` delivers, closes, or the timeout passes; True if it delivers.

        If the old connection closes meanwhile it is reported at once (the protocol then
        hands its streams to ``new``) and there is nothing left to wait for.
        """
        ready: asyncio.Future[Any] = asyncio.ensure_future(new.ready.wait())
        new_closed: asyncio.Future[Any] = asyncio.ensure_future(new.wait_closed())
        deadline = time.monotonic() + self._settings.ready_timeout_s
        try:
            while not ready.done() and not new_closed.done():
                waiters = {ready, new_closed}
                if not old_closed.done():
                    waiters.add(old_closed)
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                await asyncio.wait(waiters, timeout=timeout, return_when="FIRST_COMPLETED")
                if old_closed.done():
                    report_old()
                    break
        finally:
            ready.cancel()
            new_closed.cancel()
        return new.ready.is_set()

    def _closed(self, conn: FeedConnection) -> None:
        conn.abort()  # stops its control-frame sender; the transport is closed already
        self._host.counters.move("open", None)
        self._host.counters.leg_moved(conn.plan.leg, -1)
        self._host.forget_connection(conn)


def _close_key(code: int | None) -> str:
    if code is None or code == 1006:
        return "dropped"
    if code in (1000, 1001):
        return "server_close"
    return f"close_{code}"
