"""The feed writer process: rings, venue protocol, connections, REST, timers, shutdown.

`FeedWriter.run` creates the rings first (readers may attach before the venue answers), then
reads exchangeInfo (the weight limits, and the symbols when ``symbols = "all"``), plans the
connections with the venue protocol and keeps each up with a `ConnectionSlot`. A loop timer
heartbeats every ring every `HEARTBEAT_S`; another logs a status line every `STATUS_S`. With
``symbols = "all"`` the instrument list is read again every ``rediscover_s``: new TRADING symbols
are subscribed, symbols no longer TRADING dropped (SYMBOL_ADDED / SYMBOL_REMOVED events).

`stop` (SIGTERM, SIGINT) cancels the tasks, closes the connections (at most `CLOSE_TIMEOUT_S`),
publishes WRITER_STOP and closes the rings.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Final

from consolidator import __version__
from consolidator.config import FeedConfig, GlobalConfig
from consolidator.errors import ConfigError
from consolidator.feed.backoff import Backoff
from consolidator.feed.connection import FeedConnection
from consolidator.feed.counters import Counters
from consolidator.feed.cpus import isolated_cpus
from consolidator.feed.http import HttpClient
from consolidator.feed.publisher import Publisher, open_rings
from consolidator.feed.rest import RestClient, RestError
from consolidator.feed.snapshots import SnapshotFetcher
from consolidator.feed.supervisor import ConnectionSlot, SlotSettings
from consolidator.journal.history import next_seq, restore_symbols
from consolidator.journal.reserve import SequenceReservation
from consolidator.notify import Notifier
from consolidator.records import NO_SYMBOL, EventKind
from consolidator.ring.registry import make_registry_dir
from consolidator.ring.writer import RingWriter
from consolidator.streams import ring_path, write_feed_meta
from consolidator.symbols import SymbolTable
from consolidator.venues.base import (
    ConnectionPlan,
    FetchSnapshot,
    Output,
    Reconnect,
    SendFrame,
    VenueUsageError,
)
from consolidator.venues.binance import (
    LEG_CHANNELS,
    BinanceLimits,
    BinanceProtocol,
    Market,
    depth_stream,
)

__all__ = ["CLOSE_TIMEOUT_S", "HEARTBEAT_S", "STATUS_S", "FeedWriter", "market_of"]

_log = logging.getLogger(__name__)

HEARTBEAT_S: Final = 0.1
STATUS_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 1.0
NOTIFY_STATUS_S: Final = 2.0
"""How often the sd_notify STATUS line (``systemctl status``) is refreshed."""
LIMITS_WAIT_S: Final = 10.0
"""How long snapshot fetching waits for exchangeInfo (the weight limits) with a fixed list."""
MAX_NAME_BYTES: Final = 62
_MARKETS: Final[dict[str, Market]] = {"binance": "spot", "binance-usdm": "usdm"}


def market_of(feed: FeedConfig) -> Market:
    """The Binance market of ``feed``.

    Raises:
        ConfigError: a venue the writer does not drive yet.
    """
    market = _MARKETS.get(feed.venue)
    if market is None:
        raise ConfigError(
            f"{feed.path}: venue: the writer does not support {feed.venue!r} yet "
            f"({', '.join(_MARKETS)})"
        )
    return market


def _limits(feed: FeedConfig, market: Market) -> BinanceLimits:
    try:
        depth_stream(market, feed.depth_speed)  # config.py checked it against DEPTH_SPEEDS
    except VenueUsageError as exc:
        raise ConfigError(f"{feed.path}: depth_speed: {exc}") from None
    try:
        limits = BinanceLimits.for_market(market, feed.snapshot_limit, feed.depth_speed)
    except VenueUsageError as exc:
        raise ConfigError(f"{feed.path}: snapshot_limit: {exc}") from None
    if feed.trade_stream is not None:
        limits = dataclasses.replace(limits, trade_stream=feed.trade_stream)  # type: ignore[arg-type]
    return limits


def _usable(name: str) -> bool:
    return (
        bool(name)
        and name.isprintable()
        and not any(c in name for c in '/@" ')
        and len(name.encode()) <= MAX_NAME_BYTES
    )


class FeedWriter:
    """The writer of one feed.

    Args:
        config: the global configuration.
        feed: this writer's feed.
        notifier: sd_notify (READY once the rings are open, WATCHDOG and STATUS from the loop
            timer, STOPPING on `stop`); by default from the environment systemd sets.

    Raises:
        ConfigError: (at construction) a venue or setting the writer cannot use.
    """

    def __init__(
        self, config: GlobalConfig, feed: FeedConfig, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.feed = feed
        self.notifier = Notifier() if notifier is None else notifier
        self.market = market_of(feed)
        self.limits = _limits(feed, self.market)
        for name in feed.symbols or ():
            if not _usable(name):
                raise ConfigError(f"{feed.path}: symbols: not a Binance symbol name: {name!r}")
        self.counters = Counters()  # private memory until `run` creates the shared file
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: list[ConnectionSlot] = []
        self._conns: dict[int, FeedConnection] = {}
        self._protocol: BinanceProtocol | None = None
        self._publisher: Publisher | None = None
        self._reservation: SequenceReservation | None = None
        self._rings: dict[str, RingWriter] = {}
        self._settings = SlotSettings(
            feed.rotate_after_s, feed.stale_after_s, redundant=feed.redundancy > 1
        )
        self._timer: asyncio.TimerHandle | None = None
        self._last_status = (time.monotonic(), 0)
        self._last_notify = (time.monotonic(), 0)
        self._unknown_conn_logged = False
        self._fetcher: SnapshotFetcher | None = None
        self._info_task: asyncio.Future[None] | None = None

    # -- the process ------------------------------------------------------------------------

    def stop(self, exit_code: int = 0) -> None:
        """Ask the writer to stop (signal handlers, fatal task errors)."""
        self.exit_code = max(self.exit_code, exit_code)
        if not self._stop.is_set():
            self.notifier.stopping(f"stopping (exit code {self.exit_code})")
        self._stop.set()

    async def run(self) -> int:
        """Run until `stop`; returns the exit code."""
        feed = self.feed
        shm_dir = self.config.shm_dir
        if feed.cpu is not None:
            try:
                os.sched_setaffinity(0, {feed.cpu})
            except OSError as exc:
                raise ConfigError(
                    f"{feed.path}: cpu: cannot pin to core {feed.cpu}: {exc}"
                ) from None
            isolated = isolated_cpus()
            if feed.cpu not in isolated:
                _log.warning(
                    "pinned to core %d, which is not isolated (isolated cores: %s); "
                    "other tasks may run there (kernel parameter isolcpus=)",
                    feed.cpu,
                    ",".join(map(str, sorted(isolated))) or "none",
                )
        # After a reboot (rings gone, journal kept) the symbol ids and every stream's sequence
        # continue from the journal; with rings still in place both are no-ops.
        # A new ring also starts above any durable sequence reservation, so numbers that were in
        # flight when a crash took the rings are never used twice (journal/reserve.py).
        state_dir = self.config.state_dir
        restore_symbols(state_dir, shm_dir, feed.name)
        reservation = self._reservation = SequenceReservation(state_dir, feed.name)
        symbols = SymbolTable(shm_dir / feed.name / "symbols")  # locked: one writer per feed
        make_registry_dir(shm_dir, feed.name)  # before the rings: their readers find it
        rings: dict[str, RingWriter] = {}
        try:
            # After the symbol table's lock: a second writer of the feed must not replace it.
            self.counters = Counters.create(shm_dir, feed.name, feed.venue)
            if feed.redundancy > 1:
                self.counters.enable_legs(feed.redundancy, LEG_CHANNELS)
            rings = open_rings(
                shm_dir,
                feed.name,
                feed.streams,
                feed.ring_scale,
                lambda stream: self._first_seq(stream, reservation),
            )
            self._rings = rings
            try:
                reservation.reserve_now(self._tails())
            except OSError as exc:
                _log.warning("no sequence reservation under %s: %s", state_dir, exc)
            write_feed_meta(shm_dir, feed.name, feed.venue)
        except BaseException:
            for ring in rings.values():
                ring.close()
            self.counters.close()
            symbols.close()
            raise
        publisher = self._publisher = Publisher(rings, _no_frames, self, self.counters)
        http = HttpClient(feed.rest_url)
        rest = RestClient(
            http, self.market, self.limits.rest_weight_per_minute, self.counters, self._rate_limited
        )
        try:
            publisher.event(EventKind.WRITER_START, self._start_detail())
            self._tick()
            _log.info(
                "feed %s (%s): rings open under %s", feed.name, feed.venue, shm_dir / feed.name
            )
            # Ready once the rings are open: an exchange outage is not a start failure.
            self.notifier.ready(f"rings open under {shm_dir / feed.name}; connecting")
            await self._main(rest, symbols)
        finally:
            await self._shutdown(rest)
            symbols.close()
        return self.exit_code

    async def _main(self, rest: RestClient, symbols: SymbolTable) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            discover = asyncio.ensure_future(self._discover(rest))
            await asyncio.wait({stop, discover}, return_when="FIRST_COMPLETED")
            if not discover.done():
                discover.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await discover
                return
            names = discover.result()
            protocol = self._protocol = BinanceProtocol(
                self.market,
                names,
                self.feed.channels,
                symbols.intern,
                limits=self.limits,
                redundancy=self.feed.redundancy,
            )
            assert self._publisher is not None
            self._publisher.on_frame = protocol.on_frame
            fetcher = self._fetcher = SnapshotFetcher(
                rest, protocol.on_snapshot, protocol.on_snapshot_failed, self.handle, self.counters
            )
            self._spawn(fetcher.run(), "snapshots")
            self._spawn(self._open_gate(fetcher, rest), "limits")
            for plan in protocol.plan_connections():
                self.open_connection(plan)
            if self.feed.symbols is None:
                self._spawn(self._rediscover(rest), "rediscovery")
            _log.info("%d symbols on %d connections", len(names), len(self._slots))
            await stop
        finally:
            stop.cancel()

    async def _discover(self, rest: RestClient) -> list[str]:
        """The symbols to carry: the configured list, or every TRADING one (retrying)."""
        if self.feed.symbols is not None:
            self._info_task = asyncio.ensure_future(self._read_limits(rest))
            return list(self.feed.symbols)
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                info = await rest.exchange_info()
            except RestError as exc:
                delay = backoff.next_delay() + 1.0
                _log.warning("exchangeInfo failed (retry in %.1f s): %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            names = [n for n in info.trading if _usable(n)]
            skipped = len(info.trading) - len(names)
            if skipped:
                _log.warning("%d TRADING symbols with unusable names skipped", skipped)
            if names:
                return names
            _log.warning("exchangeInfo lists no TRADING symbol; asking again in 60 s")
            await asyncio.sleep(60.0)

    async def _read_limits(self, rest: RestClient) -> None:
        """With a fixed list: exchangeInfo once, for the weight limits and a sanity check."""
        try:
            info = await rest.exchange_info()
        except RestError as exc:
            _log.warning("exchangeInfo failed, pacing REST by the default limit: %s", exc)
            return
        assert self.feed.symbols is not None
        absent = [s for s in self.feed.symbols if info.statuses.get(s) != "TRADING"]
        if absent:
            _log.warning("configured symbols not TRADING on the venue: %s", ", ".join(absent[:20]))

    async def _open_gate(self, fetcher: SnapshotFetcher, rest: RestClient) -> None:
        task = self._info_task
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LIMITS_WAIT_S):
                    await asyncio.shield(task)
        fetcher.gate.set()
        _log.info("REST weight limits: %s", rest.budget.limits)

    async def _rediscover(self, rest: RestClient) -> None:
        protocol = self._protocol
        assert protocol is not None
        while True:
            await asyncio.sleep(self.feed.rediscover_s)
            try:
                info = await rest.exchange_info()
            except RestError as exc:
                _log.warning("rediscovery failed, keeping the symbols: %s", exc)
                continue
            trading = [n for n in info.trading if _usable(n)]
            carried = set(protocol.symbols)
            wanted = set(trading)
            added = [n for n in trading if n not in carried]
            removed = [n for n in protocol.symbols if n not in wanted]
            if removed:
                assert self._fetcher is not None
                self._fetcher.discard(removed)
                self.handle(protocol.remove_symbols(removed))
            if added:
                self.handle(protocol.add_symbols(added))
            if added or removed:
                _log.info("rediscovery: %d symbols added, %d removed", len(added), len(removed))

    async def _shutdown(self, rest: RestClient) -> None:
        if self._timer is not None:
            self._timer.cancel()
        tasks: list[asyncio.Future[None]] = list(self._tasks)
        for task in tasks:
            task.cancel()
        info_task = self._info_task
        if info_task is not None:
            info_task.cancel()
            tasks.append(info_task)
        await asyncio.gather(*tasks, return_exceptions=True)
        conns = list(self._conns.values())
        if conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.gather(*(c.close(CLOSE_TIMEOUT_S) for c in conns))
            for conn in conns:
                conn.abort()
                self.counters.move("open" if conn.opened_at else "connecting", None)
                if conn.opened_at:
                    self.counters.leg_moved(conn.plan.leg, -1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):
                await rest.close()
        publisher = self._publisher
        if publisher is None:
            return
        for conn in conns:
            publisher.event(
                EventKind.DISCONNECT, {"conn_id": conn.conn_id, "reason": "writer_stop"}
            )
        publisher.flush_parse_errors()
        publisher.event(EventKind.WRITER_STOP, self._stop_detail())
        publisher.heartbeat()
        if self._reservation is not None:
            self._reservation.release(self._tails())
        publisher.close()
        self.counters.close()
        _log.info("stopped; %s", self.counters.status(*self._status_base()))

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.error("task %s failed: %s: %s", task.get_name(), type(exc).__name__, exc)
            self.stop(1)

    # -- timers ------------------------------------------------------------------------------

    def _tick(self) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        publisher.heartbeat()
        if self._reservation is not None:
            self._reservation.check(self._tails())
        notifier = self.notifier
        notifier.ping_if_due()
        now = time.monotonic()
        legs, protocol = self.counters.legs, self._protocol
        if legs is not None and protocol is not None:
            legs.update(protocol.leg_counts, now)
        if notifier.enabled and now - self._last_notify[0] >= NOTIFY_STATUS_S:
            notifier.status(self._notify_status(now))
        if now - self._last_status[0] >= STATUS_S:
            publisher.flush_parse_errors()
            _log.info("status: %s", self.counters.status(*self._status_base()))
            self._last_status = (now, self.counters.total_messages())
        self._timer = asyncio.get_running_loop().call_later(HEARTBEAT_S, self._tick)

    def _notify_status(self, now: float) -> str:
        """E.g. "3/3 conns up, 41.0k msg/s, lag 2 ms, 2 gaps, 0 resyncs"."""
        c = self.counters
        then, before = self._last_notify
        total = c.total_messages()
        self._last_notify = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        shown = f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
        lag_ns = None if self._publisher is None else self._publisher.exchange_lag_ns
        lag = "" if lag_ns is None or rate == 0 else f"lag {lag_ns / 1e6:.0f} ms, "
        return (
            f"{c.connections['open']}/{len(self._slots)} conns up, {shown} msg/s, {lag}"
            f"{c.gaps} gaps, {c.resyncs} resyncs"
        )

    def _first_seq(self, stream: str, reservation: SequenceReservation) -> int:
        """Where ``stream``'s ring starts if it has to be created.

        A ring that survived (a writer restart) keeps its own tail. A missing one (a reboot) starts
        after the journal and above the reservation: nothing that may have been published before
        gets its number again.
        """
        state_dir, feed = self.config.state_dir, self.feed.name
        journal_next = next_seq(state_dir, feed, stream)
        if ring_path(self.config.shm_dir, feed, stream).exists():
            return journal_next
        return reservation.start_of(stream, journal_next)

    def _tails(self) -> dict[str, int]:
        return {stream: ring.next_seq for stream, ring in self._rings.items()}

    def _status_base(self) -> tuple[int, float]:
        then, total = self._last_status
        return total, time.monotonic() - then

    def _start_detail(self) -> dict[str, object]:
        feed = self.feed
        return {
            "pid": os.getpid(),
            "version": __version__,
            "venue": feed.venue,
            "symbols": "all" if feed.symbols is None else len(feed.symbols),
            "channels": list(feed.channels),
            "raw": feed.raw,
            "trade_stream": self.limits.trade_stream,
            "redundancy": feed.redundancy,
        }

    def _stop_detail(self) -> dict[str, object]:
        c = self.counters
        return {
            "pid": os.getpid(),
            "exit_code": self.exit_code,
            "messages": c.total_messages(),
            "published": dict(c.records_published),
            "bytes": c.bytes_received,
            "gaps": c.gaps,
            "resyncs": c.resyncs,
            "rotations": c.rotations,
            "parse_errors": dict(c.parse_errors),
            "drops": dict(c.drops),
            "reconnects": dict(c.reconnects),
            "snapshots": dict(c.snapshots),
            "rate_limited": c.rate_limited,
            "internal_errors": c.internal_errors,
            **self._legs_detail(),
        }

    def _legs_detail(self) -> dict[str, object]:
        """With legs: ``{"legs": {"a": {"wins": {channel: n}, "duplicates": {...}}, ...}}``."""
        legs, protocol = self.counters.legs, self._protocol
        if legs is None or protocol is None:
            return {}
        legs.update(protocol.leg_counts, time.monotonic())
        return {
            "legs": {
                name: {"wins": dict(legs.wins[leg]), "duplicates": dict(legs.duplicates[leg])}
                for leg, name in enumerate(legs.names)
            }
        }

    def _rate_limited(self, detail: dict[str, object]) -> None:
        if self._publisher is not None:
            self._publisher.event(EventKind.RATE_LIMITED, detail)

    # -- what slots and the publisher call -----------------------------------------------------

    def handle(self, outputs: Sequence[Output]) -> None:
        """Dispatch protocol outputs (publisher)."""
        if outputs and self._publisher is not None:
            self._publisher.handle(outputs)

    def event(self, kind: EventKind, detail: dict[str, object]) -> None:
        """Publish a feed-wide event."""
        if self._publisher is not None:
            self._publisher.event(kind, detail, NO_SYMBOL)

    def new_connection(self, plan: ConnectionPlan) -> FeedConnection:
        """A connection for ``plan``, registered for control frames."""
        assert self._protocol is not None
        assert self._publisher is not None
        conn = FeedConnection(
            plan,
            self.feed.ws_url_b if plan.leg else self.feed.ws_url,
            self._publisher.on_message,
            self._protocol.new_pacer(),
            max_size=self.limits.max_frame_bytes * 16,
            batch_done=self._publisher.end_batch,
            on_sink_error=self._publisher.sink_failed,
        )
        self._conns[plan.conn_id] = conn
        return conn

    def forget_connection(self, conn: FeedConnection) -> None:
        """``conn`` is closed for good."""
        if self._conns.get(conn.conn_id) is conn:
            del self._conns[conn.conn_id]

    def on_connected(self, conn_id: int) -> Sequence[Output]:
        """The protocol's ``on_connected``."""
        assert self._protocol is not None
        return self._protocol.on_connected(conn_id)

    def on_disconnect(self, conn_id: int, ts: int) -> Sequence[Output]:
        """The protocol's ``on_disconnect``."""
        assert self._protocol is not None
        return self._protocol.on_disconnect(conn_id, ts)

    def plan_rotation(self, conn_id: int) -> ConnectionPlan:
        """The protocol's ``plan_rotation``."""
        assert self._protocol is not None
        return self._protocol.plan_rotation(conn_id)

    def fetch_snapshot(self, request: FetchSnapshot) -> None:
        """Queue a snapshot fetch."""
        assert self._fetcher is not None
        self._fetcher.request(request)

    def send_frame(self, request: SendFrame) -> None:
        """Send a control frame on its connection (paced there)."""
        conn = self._conns.get(request.conn_id)
        if conn is None or not conn.is_open:
            self.counters.drops["control_frame_unsent"] += 1
            return
        conn.send_control(request.data)

    def reconnect(self, request: Reconnect) -> None:
        """Rotate the connection at once (make-before-break)."""
        for slot in self._slots:
            if slot.request_rotation(request.conn_id, request.reason):
                return
        if not self._unknown_conn_logged:
            self._unknown_conn_logged = True
            _log.info(
                "reconnect request for connection %d, which is being replaced", request.conn_id
            )

    def open_connection(self, plan: ConnectionPlan) -> None:
        """Keep a new connection up for ``plan``."""
        slot = ConnectionSlot(self, plan, self._settings)
        self._slots.append(slot)
        self._spawn(slot.run(), f"conn-{plan.conn_id}")


def _no_frames(conn_id: int, frame: bytes, ts_recv: int) -> list[Output]:
    return []
