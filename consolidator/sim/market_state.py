"""Mutable per-symbol state of the synthetic market."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from consolidator.sim.book import OrderBook
from consolidator.sim.symbols import SymbolSpec

__all__ = ["DepthTracker", "SymbolState"]

_NOTIONAL = 5000.0


@dataclass(slots=True)
class DepthTracker:
    """Levels changed since the last diff event of one (symbol, interval).

    Attributes:
        state: The symbol.
        interval_ms: Emission interval.
        last_u: ``u`` of the previous event (or the counter when tracking started).
        names: Subscribed stream names sharing this interval.
        bids: Bid prices changed in the current interval.
        asks: Ask prices changed in the current interval.
        first_id: First update id of the current interval (0 = no change yet).
    """

    state: SymbolState
    interval_ms: int
    last_u: int
    names: list[str] = field(default_factory=list)
    bids: set[int] = field(default_factory=set)
    asks: set[int] = field(default_factory=set)
    first_id: int = 0


class SymbolState:
    """Book, counters and stream names of one symbol.

    The initial book has ``levels`` price levels per side around the reference price (a
    few ticks missing at random), sized so a level is worth a few thousand quote units.

    Args:
        spec: The symbol.
        rng: Seeded generator (shared by the market).
        levels: Initial levels per side.
    """

    __slots__ = (
        "agg_id",
        "bbo",
        "book",
        "events",
        "last_txn_ms",
        "max_qty",
        "mean_qty",
        "s_agg",
        "s_bt",
        "s_trade",
        "sent",
        "spec",
        "status",
        "trackers",
        "trade_id",
        "update_id",
    )

    def __init__(self, spec: SymbolSpec, rng: random.Random, levels: int) -> None:
        self.spec = spec
        self.status = "TRADING"
        self.book = OrderBook()
        self.update_id = rng.randrange(10**8, 10**10)
        self.trade_id = rng.randrange(10**6, 10**9)
        self.agg_id = rng.randrange(10**6, 10**9)
        self.trackers: list[DepthTracker] = []
        self.bbo: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.last_txn_ms = 0
        price = spec.ref_ticks * spec.tick / 10**spec.price_decimals
        step = spec.step / 10**spec.qty_decimals
        self.mean_qty = max(1, min(10**12, round(_NOTIONAL / max(price * step, 1e-18))))
        self.max_qty = self.mean_qty * 50
        prefix = spec.stream_prefix
        self.s_trade = f"{prefix}@trade"
        self.s_agg = f"{prefix}@aggTrade"
        self.s_bt = f"{prefix}@bookTicker"
        self.events: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        ref = spec.ref_ticks
        for i in range(levels):
            bid = ref - 1 - i
            if bid >= 1 and (i == 0 or rng.random() < 0.85):
                self.book.bids.set(bid, max(1, int(rng.expovariate(1.0) * self.mean_qty)))
            if i == 0 or rng.random() < 0.85:
                self.book.asks.set(ref + 1 + i, max(1, int(rng.expovariate(1.0) * self.mean_qty)))
