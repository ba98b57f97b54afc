"""Book and feature rows of ``consolidator export``: the sampler over a feed's depth and events,
joined with the trade flow of each interval.

Depth records and events are merged in commit order (both rings are stamped by the writer's one
clock; an event committed at the same nanosecond as a depth record goes first: a GAP precedes
the snapshot that ends it). Events that make books invalid: GAP and RESYNC (a symbol's, or
feed-wide when they concern depth), WRITER_START/STOP and LOSS (every symbol); a loss of depth
or events records invalidates every book too.

Trades are bucketed by exchange time into the interval that ends at or after them
(``(T - interval, T]``). Feature rows wait until the trades stream has been read past their time
by `TRADE_SLACK_NS` (streams are read side by side), so trades that arrive a little after the
depth that follows them still count; one later than that is counted as late, never silently
moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from consolidator.book.book import SyncRule
from consolidator.book.features import TradeFlow
from consolidator.book.sampler import MLOFI_LEVELS, BookRow, BookSampler
from consolidator.export.columns import decimal_from_ints, strings, timestamps
from consolidator.export.inputs import StreamInput
from consolidator.export.schema import BOOK_DERIVED, level_columns
from consolidator.payloads import decode_depth, decode_event
from consolidator.records import NO_SYMBOL, EventKind, RecordType, Side
from consolidator.ring.reader import Loss, VarRecord

__all__ = ["BookEvent", "BookExport", "load_events"]

TRADE_SLACK_NS: Final = 2_000_000_000
ROWS_PER_WRITE: Final = 10_000
_INVALIDATING: Final = frozenset(
    {EventKind.GAP, EventKind.RESYNC, EventKind.WRITER_START, EventKind.WRITER_STOP, EventKind.LOSS}
)


@dataclass(frozen=True)
class BookEvent:
    """An event that makes books invalid: ``symbol_id`` None for every symbol."""

    ts_commit: int
    symbol_id: int | None
    reason: str


def _book_event(record: VarRecord) -> BookEvent | None:
    if record.record_type != RecordType.EVENT:
        return None
    event = decode_event(record.payload)
    if event.kind not in _INVALIDATING:
        return None
    name = event.kind.name.lower() if isinstance(event.kind, EventKind) else str(event.kind)
    if event.symbol_id != NO_SYMBOL:
        return BookEvent(record.ts_commit, event.symbol_id, name)
    if event.kind in (EventKind.GAP, EventKind.RESYNC) and "depth" not in event.detail:
        return None  # a feed-wide gap of the trades or quotes streams
    return BookEvent(record.ts_commit, None, name)


def load_events(source: StreamInput | None) -> list[BookEvent]:
    """The events of the range that make books invalid, in commit order.

    A loss of event records is itself one: it counts at the commit time of the next event read
    (of the last one, when the loss comes last).
    """
    out: list[BookEvent] = []
    if source is None:
        return out
    lost = False
    last_commit = 0
    for item in source.items():
        if isinstance(item, Loss):
            lost = True
            continue
        assert not isinstance(item, np.ndarray)
        for record in item:
            last_commit = record.ts_commit
            if lost:
                out.append(BookEvent(record.ts_commit, None, "lost events"))
                lost = False
            event = _book_event(record)
            if event is not None:
                out.append(event)
    if lost:
        out.append(BookEvent(last_commit, None, "lost events"))
    return out


class _Trades:
    """The trades stream read alongside the depth, bucketed per symbol and interval."""

    def __init__(
        self,
        source: StreamInput | None,
        interval_ns: int,
        symbols: set[int] | None,
        since_ns: int | None,
    ) -> None:
        self.items = source.items() if source is not None else iter(())
        self.interval = interval_ns
        self.symbols = symbols
        self.since = since_ns if since_ns is not None else -(2**63)
        self.buckets: dict[tuple[int, int], TradeFlow] = {}
        self.watermark = 0
        self.done = source is None
        self.released: dict[int, int] = {}
        self.late = 0

    def read_past(self, ts: int) -> None:
        """Read until a trade later than ``ts`` has been seen (or the stream's end)."""
        while not self.done and self.watermark <= ts:
            item = next(self.items, None)
            if item is None:
                self.done = True
            elif isinstance(item, np.ndarray):
                self._add(item)

    def _add(self, batch: np.ndarray) -> None:
        if self.symbols is not None:
            batch = batch[np.isin(batch["symbol_id"], list(self.symbols))]
        if not len(batch):
            return
        ts = np.where(batch["ts_event"] != 0, batch["ts_event"], batch["ts_recv"])
        self.watermark = max(self.watermark, int(ts.max()))
        step = self.interval
        buckets = (-(-ts // step)) * step
        columns = (batch["symbol_id"], buckets, batch["price_m"], batch["price_e"],
                   batch["qty_m"], batch["qty_e"], batch["side"])  # fmt: skip
        for sid, bucket, pm, pe, qm, qe, side in zip(*(c.tolist() for c in columns), strict=True):
            if bucket < self.since:
                continue  # before the rows written
            if bucket <= self.released.get(sid, -1):
                self.late += 1
                continue
            flow = self.buckets.get((sid, bucket))
            if flow is None:
                flow = self.buckets[(sid, bucket)] = TradeFlow()
            flow.add(pm, pe, qm, qe, side == Side.BUY)

    def take(self, symbol_id: int, ts: int) -> TradeFlow | None:
        """The trades of ``(ts - interval, ts]``; the bucket is closed from now on."""
        self.released[symbol_id] = ts
        return self.buckets.pop((symbol_id, ts), None)


def _floats(values: list[float | None]) -> pa.Array:
    return pa.array(values, pa.float64())


class BookExport:
    """Sample a feed's books (and features) and hand the rows, as columns, to ``write``.

    Args:
        write: receives ``(columns, partition_ns)`` batches.
        names: symbol id -> name.
        features: add the trade-flow and rolling columns (the features stream).
        since_ns, until_ns: the rows' time range (inclusive); rows before ``since_ns`` are
            computed (rolling values need them) but not written.
    """

    def __init__(
        self,
        write: Callable[[dict[str, Any], np.ndarray], None],
        *,
        feed: str,
        venue: str,
        names: Callable[[int], str],
        rule: SyncRule,
        interval_ns: int,
        depth: int,
        features: bool,
        symbols: set[int] | None,
        since_ns: int | None,
        until_ns: int | None,
    ) -> None:
        self.write = write
        self.feed = feed
        self.venue = venue
        self.names = names
        self.depth = depth
        self.features = features
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.interval_ns = interval_ns
        self.symbols = symbols
        self.sampler = BookSampler(
            rule,
            interval_ns,
            depth,
            self._row,
            symbols=symbols,
            until_ns=until_ns,
            mlofi_levels=MLOFI_LEVELS if features else 1,
        )
        self.pending: list[BookRow] = []
        self.rows = 0
        self.gap_rows = 0
        self.trades: _Trades | None = None

    def _row(self, row: BookRow) -> None:
        if self.since_ns is not None and row.ts < self.since_ns:
            return
        self.pending.append(row)

    def run(self, depth: StreamInput, events: list[BookEvent], trades: StreamInput | None) -> None:
        """Read the depth to its end, merging ``events``; write every row."""
        if self.features:
            self.trades = _Trades(trades, self.interval_ns, self.symbols, self.since_ns)
        sampler = self.sampler
        ev = 0
        n_events = len(events)
        for item in depth.items():
            if isinstance(item, Loss):
                sampler.invalidate(None, f"lost {item.count} depth records")
                continue
            assert not isinstance(item, np.ndarray)
            for record in item:
                while ev < n_events and events[ev].ts_commit <= record.ts_commit:
                    self._event(events[ev])
                    ev += 1
                snapshot = record.record_type == RecordType.SNAPSHOT
                if snapshot or record.record_type == RecordType.DEPTH:
                    sampler.on_depth(decode_depth(record.payload, snapshot))
            if len(self.pending) >= ROWS_PER_WRITE:
                self._flush(final=False)
        while ev < n_events:
            self._event(events[ev])
            ev += 1
        end = sampler.clock if self.until_ns is None else min(self.until_ns, sampler.clock)
        sampler.finish(end)
        self._flush(final=True)

    def _event(self, event: BookEvent) -> None:
        self.sampler.invalidate(event.symbol_id, event.reason)

    def _flush(self, final: bool) -> None:
        rows = self.pending
        if not rows:
            return
        flows: list[TradeFlow | None] | None = None
        if self.trades is not None:
            trades = self.trades
            if final:
                trades.read_past(2**63 - 2)
            else:
                trades.read_past(max(r.ts for r in rows) + TRADE_SLACK_NS)
            flows = [trades.take(r.symbol_id, r.ts) for r in rows]
        self.pending = []
        self.rows += len(rows)
        self.gap_rows += sum(1 for r in rows if r.values is None)
        ts = np.array([r.ts for r in rows], dtype="<i8")
        self.write(self.columns(rows, flows), ts)

    @property
    def late_trades(self) -> int:
        """Trades that came after their interval's row was written (not counted in it)."""
        return 0 if self.trades is None else self.trades.late

    def columns(self, rows: list[BookRow], flows: list[TradeFlow | None] | None) -> dict[str, Any]:
        """The book (and features) columns of ``rows``."""
        n = len(rows)
        values = [r.values for r in rows]
        names = self.names
        cols: dict[str, Any] = {
            "ts": timestamps(np.array([r.ts for r in rows], dtype="<i8")),
            "feed": strings(self.feed, n),
            "venue": strings(self.venue, n),
            "symbol": pa.array([names(r.symbol_id) for r in rows], pa.string()),
            "last_update_id": pa.array(
                [None if v is None else v.last_update_id for v in values], pa.uint64()
            ),
            "gap": pa.array([v is None for v in values], pa.bool_()),
        }
        price_exps = [0 if v is None else v.price_exp for v in values]
        qty_exps = [0 if v is None else v.qty_exp for v in values]
        names_iter = iter(level_columns(self.depth))
        for i in range(self.depth):
            for side in ("bids", "asks"):
                levels = [None if v is None else getattr(v, side) for v in values]
                px = [lv[i][0] if lv is not None and i < len(lv) else None for lv in levels]
                sz = [lv[i][1] if lv is not None and i < len(lv) else None for lv in levels]
                cols[next(names_iter)] = decimal_from_ints(px, price_exps)
                cols[next(names_iter)] = decimal_from_ints(sz, qty_exps)
        for name in BOOK_DERIVED:
            if name in ("ofi", "ofi_10"):
                cols[name] = _floats([getattr(r, name) for r in rows])
            else:
                cols[name] = _floats([None if v is None else getattr(v, name) for v in values])
        if flows is not None:
            trade = [f.values() if f is not None else (0.0, 0.0, 0.0, None) for f in flows]
            for k, name in enumerate(
                ("taker_buy_volume", "taker_sell_volume", "signed_volume", "vwap")
            ):
                cols[name] = _floats([t[k] for t in trade])
            for name in ("returns", "volatility_20", "volatility_100"):
                cols[name] = _floats([getattr(r, name) for r in rows])
            for m in range(MLOFI_LEVELS):
                cols[f"mlofi_{m + 1}"] = _floats(
                    [None if r.mlofi is None else r.mlofi[m] for r in rows]
                )
        return cols
