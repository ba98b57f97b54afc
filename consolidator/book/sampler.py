"""Books and features sampled on an exchange-time grid: the rows of ``export --stream book``.

The time rule (DESIGN.md, "Books and features"): the row of a symbol at time T (a multiple of
the interval, exchange time) shows the book after every depth record with ``ts_event <= T``,
and is emitted only while the book is valid; while it is not, the row at T is a gap row
(``gap = True``, no levels, no derived values: never interpolated).

Records come in the feed's commit order. A record takes effect at its *effective time*:

* a depth record or snapshot with an exchange time: its ``ts_event``;
* a snapshot without one (a Binance spot REST snapshot): waits, and takes effect with the
  symbol's next timed depth record (the diff that joins it): until then the symbol's rows keep
  what the book was (invalid, at a resync), so the rows of an outage are gap rows however long
  the snapshot took;
* an invalidation (GAP/RESYNC event, writer start/stop, a loss of depth or events records): at
  the feed's exchange clock, the latest ``ts_event`` of any depth record so far (the last time
  the feed was known good; event times are local clock and may be far from exchange time, e.g.
  in a replay of old traffic).

Effective times never go backwards per symbol (a late record counts at the symbol's latest time).
Before a record takes effect at t, the symbol's rows for every T < t are emitted with the book as
it is; `finish` emits the rows up to the end. A symbol's first row is at the first multiple of the
interval at or after its first effective time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from consolidator.book.book import OrderBook, SyncRule
from consolidator.book.features import (
    OfiTracker,
    Rolling,
    depth_within_bps,
    imbalance_of,
    log_return,
    microprice,
    midprice,
    spread,
    spread_bps,
)
from consolidator.payloads import Depth

__all__ = ["BookRow", "BookSampler", "BookValues", "book_values"]

OFI_WINDOW = 10
VOLATILITY_WINDOWS = (20, 100)
MLOFI_LEVELS = 5


class BookValues(NamedTuple):
    """What a valid book shows now: its best levels (scaled integers) and derived values."""

    last_update_id: int
    price_exp: int
    qty_exp: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    midprice: float | None
    spread: float | None
    spread_bps: float | None
    microprice: float | None
    imbalance_1: float | None
    imbalance_5: float | None
    imbalance_10: float | None
    depth_10bps: float | None
    depth_50bps: float | None


def book_values(book: OrderBook, depth: int) -> BookValues:
    """The levels (best ``depth`` of each side) and the derived values of a book now."""
    n = max(depth, 10)
    bids, asks = book.bids(n), book.asks(n)
    return BookValues(
        book.last_update_id,
        book.price_exp,
        book.qty_exp,
        bids[:depth],
        asks[:depth],
        midprice(book),
        spread(book),
        spread_bps(book),
        microprice(book),
        imbalance_of(bids, asks, 1),
        imbalance_of(bids, asks, 5),
        imbalance_of(bids, asks, 10),
        depth_within_bps(book, 10),
        depth_within_bps(book, 50),
    )


class BookRow(NamedTuple):
    """One symbol's row at ``ts``: the book (None in a gap row) and the interval's values."""

    ts: int
    symbol_id: int
    values: BookValues | None
    ofi: float | None
    ofi_10: float | None
    mlofi: list[float] | None
    returns: float | None
    volatility_20: float | None
    volatility_100: float | None

    @property
    def gap(self) -> bool:
        """True when the book was not valid at ``ts``."""
        return self.values is None


@dataclass
class _Symbol:
    symbol_id: int
    book: OrderBook
    ofi: OfiTracker
    next_ts: int | None = None
    last_t: int = 0
    version: int = 0
    cached: tuple[int, BookValues] | None = None
    waiting: list[Depth] = field(default_factory=list)  # snapshots without a time yet
    prev_mid: float | None = None
    ofi_window: Rolling = field(default_factory=lambda: Rolling(OFI_WINDOW))
    volatility: tuple[Rolling, ...] = field(
        default_factory=lambda: tuple(Rolling(w) for w in VOLATILITY_WINDOWS)
    )


class BookSampler:
    """Every symbol's book of one feed, sampled every ``interval_ns`` of exchange time.

    Args:
        rule: the feed's continuity rule.
        interval_ns: the sampling interval.
        depth: levels per side in a row.
        emit: receives each row, per symbol in time order.
        symbols: only these symbol ids (None: all).
        until_ns: no rows after this time.
        mlofi_levels: levels of the multi-level OFI (1: the OFI only, cheaper).
    """

    def __init__(
        self,
        rule: SyncRule,
        interval_ns: int,
        depth: int,
        emit: Callable[[BookRow], None],
        *,
        symbols: set[int] | None = None,
        until_ns: int | None = None,
        mlofi_levels: int = MLOFI_LEVELS,
    ) -> None:
        if interval_ns <= 0:
            raise ValueError(f"interval must be positive: {interval_ns} ns")
        self.rule = rule
        self.interval_ns = interval_ns
        self.depth = depth
        self.emit = emit
        self.symbols = symbols
        self.until_ns = until_ns
        self.mlofi_levels = mlofi_levels
        self.clock = 0  # the feed's exchange clock: the latest depth ts_event seen
        self.books: dict[int, _Symbol] = {}

    def book(self, symbol_id: int) -> OrderBook | None:
        """The book of a symbol, if it has had any record."""
        state = self.books.get(symbol_id)
        return None if state is None else state.book

    def on_depth(self, depth: Depth) -> None:
        """One depth record or snapshot, in commit order."""
        ts = depth.ts_event
        self.clock = max(ts, self.clock)
        sid = depth.symbol_id
        if self.symbols is not None and sid not in self.symbols:
            return
        state = self.books.get(sid)
        if state is None:
            state = self.books[sid] = _Symbol(
                sid, OrderBook(self.rule), OfiTracker(self.mlofi_levels)
            )
        if not ts:
            state.waiting.append(depth)
            return
        self._advance(state, ts)
        self._take_waiting(state)
        self._apply(state, depth)

    def _apply(self, state: _Symbol, depth: Depth) -> None:
        book = state.book
        if book.apply(depth):
            state.version += 1
            if depth.snapshot:
                state.ofi.reset(book)
            else:
                state.ofi.update(book)
        elif not book.valid:
            state.ofi.reset(None)

    def _take_waiting(self, state: _Symbol) -> None:
        waiting = state.waiting
        if waiting:
            state.waiting = []
            for depth in waiting:
                self._apply(state, depth)

    def invalidate(self, symbol_id: int | None, reason: str) -> None:
        """Updates were lost for one symbol (None: every symbol): invalid until a snapshot."""
        if symbol_id is None:
            targets = list(self.books.values())
        else:
            state = self.books.get(symbol_id)
            targets = [] if state is None else [state]
        for state in targets:
            self._advance(state, self.clock or None)
            self._take_waiting(state)
            if state.book.valid:
                state.version += 1
            state.book.invalidate(reason)
            state.ofi.reset(None)

    def finish(self, end_ns: int | None = None) -> None:
        """Emit every symbol's rows up to ``end_ns`` (default: the feed's exchange clock)."""
        end = self.clock if end_ns is None else end_ns
        for state in self.books.values():
            self._advance(state, end + 1)
            self._take_waiting(state)

    def _advance(self, state: _Symbol, t: int | None) -> None:
        """Emit the symbol's rows for every T < t (t None: no time known yet)."""
        if t is None:
            return
        t = max(t, state.last_t)
        state.last_t = t
        step = self.interval_ns
        if state.next_ts is None:
            state.next_ts = -(-t // step) * step
            return
        until = self.until_ns
        while state.next_ts < t:
            if until is not None and state.next_ts > until:
                return
            self.emit(self._row(state, state.next_ts))
            state.next_ts += step

    def _row(self, state: _Symbol, ts: int) -> BookRow:
        book = state.book
        values: BookValues | None = None
        if book.valid:
            cached = state.cached
            if cached is not None and cached[0] == state.version:
                values = cached[1]
            else:
                values = book_values(book, self.depth)
                state.cached = (state.version, values)
        ofi_sum, mlofi = state.ofi.take()
        if values is None:
            ofi: float | None = None
            mid = None
            levels: list[float] | None = None
        else:
            ofi, mid, levels = ofi_sum, values.midprice, mlofi
        ret = log_return(state.prev_mid, mid)
        state.prev_mid = mid
        state.ofi_window.push(ofi)
        vols = []
        for window in state.volatility:
            window.push(ret)
            vols.append(window.std())
        return BookRow(
            ts, state.symbol_id, values, ofi, state.ofi_window.sum(), levels, ret, vols[0], vols[1]
        )
