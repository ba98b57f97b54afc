"""Microstructure features of an `OrderBook` and a trade flow (definitions: DESIGN.md Part 2,
"Books and features"). ``Pb, Pa`` are the best bid and ask prices, ``Qb, Qa`` their sizes::

    midprice    = (Pb + Pa) / 2
    spread      = Pa - Pb
    spread_bps  = 1e4 * spread / midprice
    microprice  = (Pb*Qa + Pa*Qb) / (Qb + Qa)          the size-weighted mid
    imbalance_k = (sum Qb_1..k - sum Qa_1..k) / (sum Qb_1..k + sum Qa_1..k)
    e_n         = [Pb_n >= Pb_n-1] Qb_n - [Pb_n <= Pb_n-1] Qb_n-1
                  - [Pa_n <= Pa_n-1] Qa_n + [Pa_n >= Pa_n-1] Qa_n-1   (Cont, Kukanov, Stoikov 2014)
    ofi         = sum of e_n over the interval's book updates; ofi_10 = the last 10 intervals
    mlofi_m     = the same e_n on the m-th level of each side (multi-level OFI, Xu et al. 2019)
    depth_Nbps  = total size of both sides within N bps of the mid: |P - mid| <= N/1e4 * mid
    volumes     = sums of the interval's trade sizes by taker side; signed = buy - sell
    vwap        = sum(price * size) / sum(size) over the interval's trades
    returns     = ln(midprice_t / midprice_t-1);  volatility_W = sample std of the last W returns

Every value is computed exactly on the book's scaled integers and rounded once, at the end, to
the nearest float64 (Python's ``int / int`` is correctly rounded): a feature equals the float of
its exact rational value. A value that does not exist (an empty side, no trades) is None.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

from consolidator.book.book import OrderBook

__all__ = [
    "OfiTracker",
    "Rolling",
    "TradeFlow",
    "depth_within_bps",
    "imbalance",
    "imbalance_of",
    "log_return",
    "microprice",
    "midprice",
    "ofi_event",
    "scaled",
    "spread",
    "spread_bps",
]

BPS: Final = 10_000


def scaled(num: int, den: int, exp: int) -> float:
    """``num / den * 10**exp`` correctly rounded to a float (num, den integers, den > 0)."""
    power: int = 10 ** abs(exp)
    if exp >= 0:
        return (num * power) / den
    return num / (den * power)


def midprice(book: OrderBook) -> float | None:
    """(Pb + Pa) / 2."""
    top = book.top()
    if top is None:
        return None
    return scaled(top[0] + top[2], 2, book.price_exp)


def spread(book: OrderBook) -> float | None:
    """Pa - Pb."""
    top = book.top()
    if top is None:
        return None
    return scaled(top[2] - top[0], 1, book.price_exp)


def spread_bps(book: OrderBook) -> float | None:
    """1e4 * spread / midprice = 2e4 (Pa - Pb) / (Pa + Pb); None when the mid is 0."""
    top = book.top()
    if top is None or top[0] + top[2] == 0:
        return None
    pb, _, pa, _ = top
    num, den = 2 * BPS * (pa - pb), pa + pb
    return num / den if den > 0 else -num / -den


def microprice(book: OrderBook) -> float | None:
    """(Pb*Qa + Pa*Qb) / (Qb + Qa): the mid weighted towards the side with less size."""
    top = book.top()
    if top is None:
        return None
    pb, qb, pa, qa = top
    return scaled(pb * qa + pa * qb, qb + qa, book.price_exp)


def imbalance(book: OrderBook, k: int) -> float | None:
    """(sum Qb_1..k - sum Qa_1..k) / (sum Qb_1..k + sum Qa_1..k) over the best k levels."""
    return imbalance_of(book.bids(k), book.asks(k), k)


def imbalance_of(bids: list[tuple[int, int]], asks: list[tuple[int, int]], k: int) -> float | None:
    """`imbalance` over levels already read (best first; only the first ``k`` count)."""
    bid = sum(q for _, q in bids[:k])
    ask = sum(q for _, q in asks[:k])
    if not bid and not ask:
        return None
    return (bid - ask) / (bid + ask)


def depth_within_bps(book: OrderBook, bps: int) -> float | None:
    """Total size of both sides at prices P with |P - mid| <= bps/1e4 * |mid|.

    With s = Pb + Pa (twice the mid): |2P - s| * 1e4 <= bps * |s|, that is
    ceil((1e4 s - bps |s|) / 2e4) <= P <= floor((1e4 s + bps |s|) / 2e4), in integers: a price
    range, found on each side by bisection (crossed books included).
    """
    top = book.top()
    if top is None:
        return None
    s = top[0] + top[2]
    width = bps * abs(s)
    low = -((width - BPS * s) // (2 * BPS))  # ceil((BPS*s - width) / 2BPS)
    high = (BPS * s + width) // (2 * BPS)
    return scaled(book.size_between(low, high), 1, book.qty_exp)


def ofi_event(prev: tuple[int, int, int, int] | None, cur: tuple[int, int, int, int] | None) -> int:
    """e_n for one book update from ``(Pb, Qb, Pa, Qa)`` before and after (same scales).

    A side that is empty before or after contributes nothing.
    """
    if prev is None or cur is None:
        return 0
    pb0, qb0, pa0, qa0 = prev
    pb, qb, pa, qa = cur
    e = 0
    if pb >= pb0:
        e += qb
    if pb <= pb0:
        e -= qb0
    if pa <= pa0:
        e -= qa
    if pa >= pa0:
        e += qa0
    return e


def _level_event(prev: tuple[int, int] | None, cur: tuple[int, int] | None, bid: bool) -> int:
    """One side's term of e_n on a level (a missing level before or after contributes 0)."""
    if prev is None or cur is None:
        return 0
    p0, q0 = prev
    p, q = cur
    if bid:
        return (q if p >= p0 else 0) - (q0 if p <= p0 else 0)
    return (q0 if p >= p0 else 0) - (q if p <= p0 else 0)


class OfiTracker:
    """Sums e_n (level 1) and the multi-level e_n (levels 1..``levels``) over book updates.

    Call `update` after every change of a valid book, `reset` when it goes invalid or is
    replaced by a snapshot (the next update is then measured from that state), and `take` at the
    end of each interval: it returns the sums in size units and starts new ones. Sums are exact
    integers at the finest size exponent seen; a book whose exponents got finer (a rescale) has
    the remembered state rescaled with it.
    """

    def __init__(self, levels: int = 5) -> None:
        self.levels = levels
        self._prev: tuple[int, int, int, int] | None = None
        self._prev_bids: list[tuple[int, int]] = []
        self._prev_asks: list[tuple[int, int]] = []
        self._exps: tuple[int, int] | None = None  # None: no state to measure from
        self._ofi = 0
        self._mlofi = [0] * levels
        self._acc_exp = 0

    def reset(self, book: OrderBook | None = None) -> None:
        """Measure the next update from ``book`` as it is now (None: from nothing)."""
        if book is None:
            self._exps = None
            return
        self._exps = (book.price_exp, book.qty_exp)
        self._prev = book.top()
        self._prev_bids = book.bids(self.levels)
        self._prev_asks = book.asks(self.levels)

    def update(self, book: OrderBook) -> None:
        """Add the e_n of the change from the remembered state to ``book`` now."""
        exps = (book.price_exp, book.qty_exp)
        if exps != self._exps and not self._rescale(exps):
            self.reset(book)
            return
        qty_exp = exps[1]
        if qty_exp < self._acc_exp:
            factor = 10 ** (self._acc_exp - qty_exp)
            self._ofi *= factor
            self._mlofi = [v * factor for v in self._mlofi]
            self._acc_exp = qty_exp
        unit = 10 ** (qty_exp - self._acc_exp)
        cur = book.top()
        ofi = ofi_event(self._prev, cur) * unit
        self._ofi += ofi
        n = self.levels
        if n == 1:  # multi-level OFI of one level is the OFI
            self._mlofi[0] += ofi
            self._prev = cur
            return
        bids, asks = book.bids(n), book.asks(n)
        pb, pa = self._prev_bids, self._prev_asks
        mlofi = self._mlofi
        for m in range(n):
            e = _level_event(
                pb[m] if m < len(pb) else None, bids[m] if m < len(bids) else None, True
            )
            e += _level_event(
                pa[m] if m < len(pa) else None, asks[m] if m < len(asks) else None, False
            )
            if e:
                mlofi[m] += e * unit
        self._prev, self._prev_bids, self._prev_asks = cur, bids, asks

    def take(self) -> tuple[float, list[float]]:
        """(ofi, [mlofi_1, ...]) summed since the last take, as floats in size units."""
        exp = self._acc_exp
        out = scaled(self._ofi, 1, exp), [scaled(v, 1, exp) for v in self._mlofi]
        self._ofi = 0
        self._mlofi = [0] * self.levels
        return out

    def _rescale(self, exps: tuple[int, int]) -> bool:
        """Bring the remembered state to finer exponents; False if there is none to bring."""
        if self._exps is None:
            return False
        (old_p, old_q), (new_p, new_q) = self._exps, exps
        if new_p > old_p or new_q > old_q:
            return False
        fp, fq = 10 ** (old_p - new_p), 10 ** (old_q - new_q)
        if self._prev is not None:
            pb, qb, pa, qa = self._prev
            self._prev = (pb * fp, qb * fq, pa * fp, qa * fq)
        self._prev_bids = [(p * fp, q * fq) for p, q in self._prev_bids]
        self._prev_asks = [(p * fp, q * fq) for p, q in self._prev_asks]
        self._exps = exps
        return True


class TradeFlow:
    """Taker buy and sell volume and the notional of one interval's trades, exact.

    Sizes are integers at ``10**qty_exp`` and notionals at ``10**(price_exp + qty_exp)``, the
    finest exponents added so far (a finer one rescales the sums, exactly).
    """

    __slots__ = ("buy", "count", "notional", "price_exp", "qty_exp", "sell")

    def __init__(self) -> None:
        self.buy = 0
        self.sell = 0
        self.notional = 0
        self.count = 0
        self.price_exp = 0
        self.qty_exp = 0

    def add(self, price_m: int, price_e: int, qty_m: int, qty_e: int, buy: bool) -> None:
        """One trade (the taker bought when ``buy``)."""
        if qty_e < self.qty_exp:
            factor = 10 ** (self.qty_exp - qty_e)
            self.buy *= factor
            self.sell *= factor
            self.notional *= factor
            self.qty_exp = qty_e
        if price_e < self.price_exp:
            self.notional *= 10 ** (self.price_exp - price_e)
            self.price_exp = price_e
        qty = qty_m * 10 ** (qty_e - self.qty_exp)
        if buy:
            self.buy += qty
        else:
            self.sell += qty
        self.notional += price_m * 10 ** (price_e - self.price_exp) * qty
        self.count += 1

    def values(self) -> tuple[float, float, float, float | None]:
        """(taker_buy_volume, taker_sell_volume, signed_volume, vwap) as floats; no trades:
        volumes 0 and vwap None."""
        qe = self.qty_exp
        total = self.buy + self.sell
        vwap = scaled(self.notional, total, self.price_exp) if total else None
        return (
            scaled(self.buy, 1, qe),
            scaled(self.sell, 1, qe),
            scaled(self.buy - self.sell, 1, qe),
            vwap,
        )


def log_return(prev_mid: float | None, mid: float | None) -> float | None:
    """ln(mid / prev_mid); None when either is missing or not positive."""
    if prev_mid is None or mid is None or prev_mid <= 0 or mid <= 0:
        return None
    return math.log(mid / prev_mid)


class Rolling:
    """The last ``window`` values of a series (None for a missing one): sum and sample std.

    Both are None until the window is full of present values (pandas' ``rolling(W)``, whose
    ``min_periods`` defaults to the window).
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1: {window}")
        self.window = window
        self._values: deque[float | None] = deque(maxlen=window)
        self._missing = 0

    def push(self, value: float | None) -> None:
        """Append one value (None: missing), dropping the oldest beyond the window."""
        values = self._values
        if len(values) == self.window and values[0] is None:
            self._missing -= 1
        values.append(value)
        if value is None:
            self._missing += 1

    def _full(self) -> list[float] | None:
        if len(self._values) < self.window or self._missing:
            return None
        return [v for v in self._values if v is not None]

    def sum(self) -> float | None:
        """The sum of the window (math.fsum: exactly rounded)."""
        values = self._full()
        return None if values is None else math.fsum(values)

    def std(self) -> float | None:
        """The sample standard deviation (ddof=1) of the window; None for a window of 1."""
        values = self._full()
        if values is None or len(values) < 2:
            return None
        mean = math.fsum(values) / len(values)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
