"""Micro-benchmark: `consolidator.book.OrderBook` updates/s against a plain dict-based book.

Method: one synthetic symbol, a 1000-level snapshot a side on a 0.01 tick grid, then ``--updates``
diffs shaped like Binance ``depth@100ms`` (1 to 40 levels each, most near the top; a third of
them deletions; the mid drifts by a random walk and the levels it crosses are deleted, so the
book never crosses), generated once as `Depth` records (mantissa,
exponent levels, as the ring holds them) and fed to both books in the same run:

* ``OrderBook``: `apply` (continuity check, exact scaled-integer levels, sorted keys kept with
  ``bisect``) and then `top` (best bid and ask with sizes, what the sampler's OFI reads after
  every update).
* baseline, the plain book: two dicts price -> size keyed by the same scaled integers (no
  continuity check, no exponent handling), best bid and ask by ``max``/``min`` over the dict
  after every update.

Both are also timed reading the best 10 levels a side after every update (the baseline sorts
its dicts), and reading nothing (the cost of keeping the levels sorted and checked).
``ratio`` = OrderBook updates/s / baseline updates/s (above 1: faster). Best of ``--repeat``
runs. A live Binance spot symbol sends 10 diffs/s (USD-M up to ~100 with
``0ms``); the absolute rate says how many such symbols one core follows.

Run: ``.venv/bin/python -m tools.bench.book [--updates N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from consolidator.book.book import OrderBook, SyncRule
from consolidator.payloads import Depth, Level

PRICE_E = -2
QTY_E = -8


def workload(updates: int, seed: int = 7) -> tuple[Depth, list[Depth]]:
    """A snapshot and ``updates`` diffs that continue it (spot ids)."""
    rng = random.Random(seed)
    mid = 6_183_763  # 61837.63 in ticks
    bids: list[Level] = [(mid - 1 - i, PRICE_E, rng.randint(1, 10**8), QTY_E) for i in range(1000)]
    asks: list[Level] = [(mid + 1 + i, PRICE_E, rng.randint(1, 10**8), QTY_E) for i in range(1000)]
    snapshot = Depth(0, 0, 0, 1000, 1000, None, bids, asks, True)
    live_bids = {p for p, *_ in bids}
    live_asks = {p for p, *_ in asks}
    diffs = []
    uid = 1000
    for _ in range(updates):
        mid += rng.choice((-2, -1, 0, 0, 1, 2))
        n = min(40, 1 + int(rng.expovariate(0.15)))
        # Levels the move crossed go (as a venue's matching would remove them).
        changed_bids = {p: 0 for p in live_bids if p >= mid}
        changed_asks = {p: 0 for p in live_asks if p <= mid}
        for _ in range(n):
            depth = int(rng.expovariate(0.08))
            size = 0 if rng.random() < 0.33 else rng.randint(1, 10**8)
            if rng.random() < 0.5:
                changed_bids[mid - 1 - depth] = size
            else:
                changed_asks[mid + 1 + depth] = size
        for live, changed in ((live_bids, changed_bids), (live_asks, changed_asks)):
            for price, size in changed.items():
                if size:
                    live.add(price)
                else:
                    live.discard(price)
        first, uid = uid + 1, uid + n
        diffs.append(
            Depth(
                0, 0, 0, first, uid, None,
                [(p, PRICE_E, q, QTY_E) for p, q in sorted(changed_bids.items(), reverse=True)],
                [(p, PRICE_E, q, QTY_E) for p, q in sorted(changed_asks.items())],
            )
        )  # fmt: skip
    return snapshot, diffs


class DictBook:
    """The plain book: dicts of scaled prices to sizes, best levels found when asked."""

    def __init__(self, snapshot: Depth) -> None:
        self.bids = {p: q for p, _, q, _ in snapshot.bids}
        self.asks = {p: q for p, _, q, _ in snapshot.asks}

    def apply(self, depth: Depth) -> None:
        for side, levels in ((self.bids, depth.bids), (self.asks, depth.asks)):
            for price, _, qty, _ in levels:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)

    def top(self) -> tuple[int, int, int, int]:
        bid, ask = max(self.bids), min(self.asks)
        return bid, self.bids[bid], ask, self.asks[ask]

    def best10(self) -> tuple[list[int], list[int]]:
        return sorted(self.bids, reverse=True)[:10], sorted(self.asks)[:10]


def _time(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Print updates/s of both books, per workload, and their ratio."""
    parser = argparse.ArgumentParser(description="OrderBook vs a plain dict-based book")
    parser.add_argument("--updates", type=int, default=200_000, help="diffs per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements, best one counts")
    args = parser.parse_args()
    snapshot, diffs = workload(args.updates)
    levels = sum(len(d.bids) + len(d.asks) for d in diffs)

    def ours(read: str) -> Callable[[], None]:
        def run() -> None:
            book = OrderBook(SyncRule.SPOT)
            book.apply(snapshot)
            apply, top, bids, asks = book.apply, book.top, book.bids, book.asks
            if read == "top":
                for d in diffs:
                    apply(d)
                    top()
            elif read == "10":
                for d in diffs:
                    apply(d)
                    bids(10)
                    asks(10)
            else:
                for d in diffs:
                    apply(d)
            assert book.valid
            assert book.stats.updates == len(diffs)

        return run

    def plain(read: str) -> Callable[[], None]:
        def run() -> None:
            book = DictBook(snapshot)
            apply, top, best10 = book.apply, book.top, book.best10
            if read == "top":
                for d in diffs:
                    apply(d)
                    top()
            elif read == "10":
                for d in diffs:
                    apply(d)
                    best10()
            else:
                for d in diffs:
                    apply(d)

        return run

    # Both books must agree before they are timed.
    check, base = OrderBook(SyncRule.SPOT), DictBook(snapshot)
    check.apply(snapshot)
    for d in diffs[:2000]:
        check.apply(d)
        base.apply(d)
        assert check.top() == base.top()
        assert not check.crossed
    print(f"{len(diffs):,} diffs, {levels / len(diffs):.1f} levels a diff, 1000 levels a side")
    head = f"{'read after each update':<24} {'OrderBook upd/s':>16}"
    print(f"{head} {'dict book upd/s':>16} {'ratio':>6}")
    for read, label in (("-", "nothing"), ("top", "best bid/ask"), ("10", "best 10 a side")):
        t_ours = _time(ours(read), args.repeat)
        t_plain = _time(plain(read), args.repeat)
        rate_ours, rate_plain = len(diffs) / t_ours, len(diffs) / t_plain
        print(
            f"{label:<24} {rate_ours:>16,.0f} {rate_plain:>16,.0f} {rate_ours / rate_plain:>6.2f}"
        )


if __name__ == "__main__":
    main()
