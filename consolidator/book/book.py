"""An L2 order book rebuilt from a feed's snapshot and depth records, exact and self-checking.

Prices and sizes are scaled integers: a side maps ``price_m`` to ``qty_m`` at the book's
``price_exp`` and ``qty_exp`` (``price = price_m * 10**price_exp``), the finest exponents seen so
far; a record with a finer one rescales the book once (exactly: multiplying by a power of ten).
No float ever holds a price or a size, so every level reads back as the decimal the venue sent.

Each side is a dict (price key -> size) plus a sorted list of its keys, best first (bid keys are
stored negated, so both lists ascend from the best level): an update is one dict operation and,
when a level appears or goes, one ``bisect`` insertion or deletion.

The book knows when it is valid, and is never silently wrong::

    state     input                                           result
    --------  ----------------------------------------------  ------------------------------------
    any       snapshot (last id L)                            levels = snapshot, VALID at L
    INVALID   diff                                            ignored (counted)
    VALID     diff older than the book (u <= local; USD-M     dropped, ``non_monotonic`` counted
              join: u < L)
    VALID     diff that does not continue the book (rule)     INVALID, ``id_gaps`` counted
    VALID     diff that continues the book                    applied (``crossed`` counted if the
                                                              best bid is then >= the best ask)
    any       `invalidate` (GAP/RESYNC event, ring loss)      INVALID until the next snapshot

Continuity rules (`SyncRule`), with L the snapshot's id and ``local`` the last applied ``u``:

* SPOT (Binance spot): the first diff after the snapshot has ``U <= L+1 <= u``; each next one
  ``U <= local + 1`` (``U == local + 1`` on a clean stream).
* FUTURES (Binance USD-M): the first diff has ``U <= L <= u``; each next one ``pu == local``.
* CHAIN (Deribit change ids; ``U = u = change_id``, ``pu = prev_change_id``): ``pu == local``
  from the snapshot on.

The book consumes `consolidator.payloads.Depth` records, never venue frames: it is an
independent check of what the writer published.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Final

from consolidator.payloads import Depth, Level
from consolidator.records import to_decimal

__all__ = [
    "BookStats",
    "OrderBook",
    "SyncRule",
    "rule_for_venue",
]


class SyncRule(enum.Enum):
    """How a venue's depth update ids chain after a snapshot."""

    SPOT = "U/u"
    FUTURES = "pu"
    CHAIN = "prev"


_VENUE_RULES: Final = {
    "binance": SyncRule.SPOT,
    "binance-us": SyncRule.SPOT,
    "binance-usdm": SyncRule.FUTURES,
    "binance-coinm": SyncRule.FUTURES,
    "deribit": SyncRule.CHAIN,
}


def rule_for_venue(venue: str) -> SyncRule:
    """The continuity rule of a feed's venue (DESIGN.md ``venue`` values); SPOT if unknown."""
    return _VENUE_RULES.get(venue, SyncRule.SPOT)


@dataclass
class BookStats:
    """What one book has seen: the checks it made and what they found."""

    snapshots: int = 0
    updates: int = 0
    levels: int = 0
    ignored: int = 0
    non_monotonic: int = 0
    id_gaps: int = 0
    crossed: int = 0
    invalidations: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class OrderBook:
    """One symbol's L2 book (see the module docstring for the validity table).

    Args:
        rule: the venue's continuity rule.
    """

    __slots__ = (
        "_ask_keys",
        "_asks",
        "_bid_keys",
        "_bids",
        "_joined",
        "_totals",
        "last_update_id",
        "price_exp",
        "qty_exp",
        "reason",
        "rule",
        "stats",
        "valid",
    )

    def __init__(self, rule: SyncRule = SyncRule.SPOT) -> None:
        self.rule = rule
        self.stats = BookStats()
        self.valid = False
        self.reason = "waiting for snapshot"
        self.last_update_id = 0
        self.price_exp = 0
        self.qty_exp = 0
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._bid_keys: list[int] = []  # negated prices, ascending: best (highest) bid first
        self._ask_keys: list[int] = []  # prices, ascending: best (lowest) ask first
        self._totals = [0, 0]  # total size of the bids, of the asks
        self._joined = False

    # -- input -----------------------------------------------------------------------------------

    def apply(self, depth: Depth) -> bool:
        """Take a snapshot or a diff; True when the book changed (and is valid)."""
        if depth.snapshot:
            self.load_snapshot(depth.last_update_id, depth.bids, depth.asks)
            return True
        stats = self.stats
        if not self.valid:
            stats.ignored += 1
            return False
        verdict = self._verdict(depth)
        if verdict is not _APPLY:
            if verdict is _STALE:
                stats.non_monotonic += 1
            else:
                stats.id_gaps += 1
                self.invalidate(f"update id gap at {depth.first_update_id}")
            return False
        if depth.bids:
            self._update(depth.bids, self._bids, self._bid_keys, -1)
        if depth.asks:
            self._update(depth.asks, self._asks, self._ask_keys, 1)
        self.last_update_id = depth.last_update_id
        self._joined = True
        stats.updates += 1
        stats.levels += len(depth.bids) + len(depth.asks)
        bid_keys, ask_keys = self._bid_keys, self._ask_keys
        if bid_keys and ask_keys and -bid_keys[0] >= ask_keys[0]:
            stats.crossed += 1
        return True

    def load_snapshot(
        self, last_update_id: int, bids: Sequence[Level], asks: Sequence[Level]
    ) -> None:
        """Replace the book with a snapshot at ``last_update_id``; the book is then valid."""
        levels = [*bids, *asks]
        if levels:
            self.price_exp = min(pe for _, pe, _, _ in levels)
            self.qty_exp = min(qe for _, _, _, qe in levels)
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()
        self._totals = [0, 0]
        self._update(bids, self._bids, self._bid_keys, -1)
        self._update(asks, self._asks, self._ask_keys, 1)
        self.last_update_id = last_update_id
        self.valid = True
        self.reason = ""
        self._joined = False
        self.stats.snapshots += 1

    def invalidate(self, reason: str) -> None:
        """Updates were lost (GAP/RESYNC event, ring loss): invalid until the next snapshot."""
        if self.valid:
            self.stats.invalidations += 1
        self.valid = False
        self.reason = reason

    def _verdict(self, depth: Depth) -> object:
        local = self.last_update_id
        last = depth.last_update_id
        rule = self.rule
        if rule is SyncRule.SPOT:
            if last <= local:
                return _STALE
            return _GAP if depth.first_update_id > local + 1 else _APPLY
        if rule is SyncRule.FUTURES and not self._joined:
            if last < local:
                return _STALE
            return _APPLY if depth.first_update_id <= local else _GAP
        if last <= local:
            return _STALE
        return _APPLY if depth.prev_update_id == local else _GAP

    def _update(
        self, levels: Sequence[Level], book: dict[int, int], keys: list[int], sign: int
    ) -> None:
        """Set each level's size (0 deletes it); ``sign`` -1 stores bid keys negated."""
        side = 0 if sign < 0 else 1
        total = self._totals[side]
        price_exp, qty_exp = self.price_exp, self.qty_exp
        for pm, pe, qm, qe in levels:
            price_m, qty_m = pm, qm
            if pe != price_exp:
                price_m = self._price_key(pm, pe)
                price_exp = self.price_exp
            if qe != qty_exp:
                self._totals[side] = total
                qty_m = self._qty(qm, qe)
                qty_exp = self.qty_exp
                total = self._totals[side]
            key = price_m if sign > 0 else -price_m
            if qty_m > 0:
                old = book.get(key)
                if old is None:
                    insort(keys, key)
                    total += qty_m
                else:
                    total += qty_m - old
                book[key] = qty_m
            else:
                old = book.pop(key, None)
                if old is not None:
                    del keys[bisect_left(keys, key)]
                    total -= old
        self._totals[side] = total

    def _price_key(self, price_m: int, exp: int) -> int:
        """``price_m * 10**exp`` at the book's price exponent, rescaling the book if finer."""
        if exp > self.price_exp:
            up: int = 10 ** (exp - self.price_exp)
            return price_m * up
        factor: int = 10 ** (self.price_exp - exp)
        for book, keys in ((self._bids, self._bid_keys), (self._asks, self._ask_keys)):
            scaled = {k * factor: q for k, q in book.items()}
            book.clear()
            book.update(scaled)
            keys[:] = [k * factor for k in keys]
        self.price_exp = exp
        return price_m

    def _qty(self, qty_m: int, exp: int) -> int:
        """``qty_m * 10**exp`` at the book's size exponent, rescaling the book if finer."""
        if exp > self.qty_exp:
            up: int = 10 ** (exp - self.qty_exp)
            return qty_m * up
        factor: int = 10 ** (self.qty_exp - exp)
        for book in (self._bids, self._asks):
            for key in book:
                book[key] *= factor
        self._totals = [t * factor for t in self._totals]
        self.qty_exp = exp
        return qty_m

    # -- reading ---------------------------------------------------------------------------------

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask."""
        return bool(self._bid_keys and self._ask_keys and -self._bid_keys[0] >= self._ask_keys[0])

    def depth_counts(self) -> tuple[int, int]:
        """How many bid and ask levels the book holds."""
        return len(self._bid_keys), len(self._ask_keys)

    def top(self) -> tuple[int, int, int, int] | None:
        """``(bid_price, bid_size, ask_price, ask_size)``, scaled; None if a side is empty."""
        bid_keys, ask_keys = self._bid_keys, self._ask_keys
        if not bid_keys or not ask_keys:
            return None
        bid, ask = bid_keys[0], ask_keys[0]
        return -bid, self._bids[bid], ask, self._asks[ask]

    def bids(self, n: int | None = None) -> list[tuple[int, int]]:
        """The best ``n`` (all when None) bids as ``(price, size)`` scaled integers, best first."""
        book = self._bids
        keys = self._bid_keys if n is None else self._bid_keys[:n]
        return [(-k, book[k]) for k in keys]

    def asks(self, n: int | None = None) -> list[tuple[int, int]]:
        """The best ``n`` (all when None) asks as ``(price, size)`` scaled integers, best first."""
        book = self._asks
        keys = self._ask_keys if n is None else self._ask_keys[:n]
        return [(k, book[k]) for k in keys]

    def size_between(self, low: int, high: int) -> int:
        """Total size of the levels of both sides priced in ``[low, high]`` (scaled integers).

        Sums the shorter of the levels inside and those outside (the side's total, kept on
        every update, minus what is outside): a range that holds most of the book costs little.
        """
        total = 0
        for keys, book, side_total, lo, hi in (
            (self._bid_keys, self._bids, self._totals[0], -high, -low),  # bid keys are negated
            (self._ask_keys, self._asks, self._totals[1], low, high),
        ):
            start, end = bisect_left(keys, lo), bisect_right(keys, hi)
            get = book.__getitem__
            if end - start <= len(keys) - (end - start):
                total += sum(map(get, keys[start:end]))
            else:
                total += side_total - sum(map(get, keys[:start])) - sum(map(get, keys[end:]))
        return total

    def side_totals(self) -> tuple[int, int]:
        """Total size of the bids and of the asks (scaled integers)."""
        return self._totals[0], self._totals[1]

    def iter_bids(self) -> Iterator[tuple[int, int]]:
        """Every bid, best first (do not change the book while iterating)."""
        book = self._bids
        return ((-k, book[k]) for k in self._bid_keys)

    def iter_asks(self) -> Iterator[tuple[int, int]]:
        """Every ask, best first (do not change the book while iterating)."""
        book = self._asks
        return ((k, book[k]) for k in self._ask_keys)

    def price(self, value: int) -> Decimal:
        """A scaled price as its exact `Decimal`."""
        return to_decimal(value, self.price_exp)

    def size(self, value: int) -> Decimal:
        """A scaled size as its exact `Decimal`."""
        return to_decimal(value, self.qty_exp)

    def levels(self, n: int | None = None) -> tuple[list[tuple[Decimal, Decimal]], ...]:
        """The best ``n`` bids and asks as exact decimals (for people and tests, not hot paths)."""
        to = self._decimal_pair
        return [to(p, q) for p, q in self.bids(n)], [to(p, q) for p, q in self.asks(n)]

    def _decimal_pair(self, price: int, size: int) -> tuple[Decimal, Decimal]:
        return to_decimal(price, self.price_exp), to_decimal(size, self.qty_exp)


_APPLY: Final = object()
_STALE: Final = object()
_GAP: Final = object()
