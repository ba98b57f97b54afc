"""Features equal their DESIGN.md formulas, computed here again with exact fractions."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from consolidator.book.book import OrderBook
from consolidator.book.features import (
    OfiTracker,
    Rolling,
    TradeFlow,
    depth_within_bps,
    imbalance,
    log_return,
    microprice,
    midprice,
    ofi_event,
    spread,
    spread_bps,
)
from consolidator.records import parse_decimal
from tests.book.test_book import diff, lv, snap

F = Fraction


def _book(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> OrderBook:
    book = OrderBook()
    book.apply(snap(1, [lv(p, q) for p, q in bids], [lv(p, q) for p, q in asks]))
    return book


HAND = _book(
    [("100.10", "2"), ("100.05", "1.5"), ("99.90", "4"), ("99.00", "10"), ("95", "7")],
    [("100.20", "1"), ("100.25", "3.25"), ("100.40", "2"), ("101.50", "6"), ("110", "1")],
)


def test_hand_made_book_top_features() -> None:
    pb, qb, pa, qa = F("100.10"), F(2), F("100.20"), F(1)
    mid = (pb + pa) / 2
    assert midprice(HAND) == float(mid) == 100.15
    assert spread(HAND) == float(pa - pb)
    assert spread_bps(HAND) == float(10_000 * (pa - pb) / mid)
    assert microprice(HAND) == float((pb * qa + pa * qb) / (qb + qa))
    assert imbalance(HAND, 1) == float(F(2 - 1, 2 + 1))
    sb5, sa5 = F(2) + F("1.5") + 4 + 10 + 7, F(1) + F("3.25") + 2 + 6 + 1
    assert imbalance(HAND, 5) == float((sb5 - sa5) / (sb5 + sa5))
    assert imbalance(HAND, 10) == imbalance(HAND, 5)  # only 5 levels a side


def test_hand_made_book_depth_within_bps() -> None:
    mid = F("100.15")
    for bps in (10, 50, 100, 1000):
        width = mid * bps / 10_000
        expected = sum(
            (F(q) for p, q in [("100.10", "2"), ("100.05", "1.5"), ("99.90", "4"),
                               ("99.00", "10"), ("95", "7"), ("100.20", "1"), ("100.25", "3.25"),
                               ("100.40", "2"), ("101.50", "6"), ("110", "1")]
             if abs(F(p) - mid) <= width),
            F(0),
        )  # fmt: skip
        assert depth_within_bps(HAND, bps) == float(expected), bps
    # 10 bps of 100.15 is 0.10015: 100.05 is 0.10 away (in), 100.25 also 0.10 (in)
    assert depth_within_bps(HAND, 10) == 2 + 1.5 + 1 + 3.25


def test_a_level_exactly_at_the_limit_is_within() -> None:
    book = _book([("99", "1"), ("98.99", "5")], [("101", "2")])  # mid 100: 1 % = 100 bps
    assert depth_within_bps(book, 100) == 3
    assert depth_within_bps(book, 99) == 0


def test_empty_sides_have_no_features() -> None:
    book = _book([("1", "1")], [])
    assert midprice(book) is None
    assert spread(book) is None
    assert microprice(book) is None
    assert depth_within_bps(book, 10) is None
    assert imbalance(book, 1) == 1.0
    assert imbalance(_book([], []), 5) is None


decimals = st.builds(lambda m, e: (m, e), st.integers(1, 10**9), st.integers(-8, 2)).map(
    lambda me: str(Decimal(me[0]).scaleb(me[1]))
)


@settings(max_examples=60, deadline=None)
@given(
    bids=st.lists(st.tuples(decimals, decimals), min_size=1, max_size=12),
    asks=st.lists(st.tuples(decimals, decimals), min_size=1, max_size=12),
)
def test_features_equal_the_formulas_on_random_books(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]]
) -> None:
    book = _book(bids, asks)
    model_b = sorted({F(p): F(q) for p, q in bids}.items(), reverse=True)
    model_a = sorted({F(p): F(q) for p, q in asks}.items())
    (pb, qb), (pa, qa) = model_b[0], model_a[0]
    mid = (pb + pa) / 2
    assert midprice(book) == float(mid)
    assert spread(book) == float(pa - pb)
    assert spread_bps(book) == float(10_000 * (pa - pb) / mid)
    assert microprice(book) == float((pb * qa + pa * qb) / (qb + qa))
    for k in (1, 5, 10):
        sb = sum(q for _, q in model_b[:k])
        sa = sum(q for _, q in model_a[:k])
        assert imbalance(book, k) == float((sb - sa) / (sb + sa))
    for bps in (10, 50):
        width = mid * bps / 10_000
        within = sum((q for p, q in [*model_b, *model_a] if abs(p - mid) <= width), F(0))
        assert depth_within_bps(book, bps) == float(within)


def _e(prev: tuple[str, ...], cur: tuple[str, ...]) -> Fraction:
    """e_n written out from the DESIGN.md formula with Fractions."""
    pb0, qb0, pa0, qa0 = map(F, prev)
    pb, qb, pa, qa = map(F, cur)
    return (pb >= pb0) * qb - (pb <= pb0) * qb0 - (pa <= pa0) * qa + (pa >= pa0) * qa0


def test_ofi_event_cases() -> None:
    cases = [
        (("10.0", "5", "11.0", "5"), ("10.0", "7", "11.0", "5")),  # bid size up: +2
        (("10.0", "5", "11.0", "5"), ("10.5", "1", "11.0", "5")),  # bid price up: +1
        (("10.0", "5", "11.0", "5"), ("9.5", "3", "11.0", "5")),  # bid price down: -5
        (("10.0", "5", "11.0", "5"), ("10.0", "5", "10.5", "2")),  # ask price down: -2
        (("10.0", "5", "11.0", "5"), ("10.0", "5", "11.5", "9")),  # ask price up: +5
        (("10.0", "5", "11.0", "5"), ("10.0", "5", "11.0", "1")),  # ask size down: +4
    ]
    for prev, cur in cases:
        prev_book, cur_book = _book([prev[:2]], [prev[2:]]), _book([cur[:2]], [cur[2:]])
        a, b = prev_book.top(), cur_book.top()
        assert a is not None
        assert b is not None
        assert prev_book.price_exp == cur_book.price_exp  # one scale
        got = ofi_event(a, b) * F(10) ** cur_book.qty_exp
        assert got == _e(prev, cur), (prev, cur)
    assert ofi_event(None, (1, 1, 2, 2)) == 0


def test_ofi_tracker_sums_e_n_over_updates_and_across_a_rescale() -> None:
    book = OrderBook()
    tracker = OfiTracker(levels=2)
    book.apply(snap(1, [lv("10", "5"), lv("9", "1")], [lv("11", "5"), lv("12", "2")]))
    tracker.reset(book)
    tops = [("10", "5", "11", "5")]
    updates = [
        diff(2, 2, [lv("10", "7")]),
        diff(3, 3, [lv("10.5", "1")]),  # finer price exponent: the book rescales
        diff(4, 4, [], [lv("11", "0.25")]),  # finer size exponent
        diff(5, 5, [lv("10.5", "0"), lv("10", "0")]),  # best bid falls to 9
    ]
    for update in updates:
        assert book.apply(update)
        tracker.update(book)
        top = book.top()
        assert top is not None
        p, q = book.price_exp, book.qty_exp
        tops.append(
            tuple(str(v * Decimal(10) ** e) for v, e in zip(top, (p, q, p, q), strict=True))
        )
    expected = sum((_e(a, b) for a, b in itertools.pairwise(tops)), F(0))
    ofi, mlofi = tracker.take()
    assert ofi == float(expected)
    assert mlofi[0] == ofi
    assert tracker.take() == (0.0, [0.0, 0.0])


def test_trade_flow_is_exact() -> None:
    flow = TradeFlow()
    trades = [("100.5", "0.1", True), ("100.25", "0.30", False), ("101", "2", True)]
    for price, qty, buy in trades:
        flow.add(*parse_decimal(price), *parse_decimal(qty), buy)
    buy_v, sell_v, signed, vwap = flow.values()
    assert (buy_v, sell_v, signed) == (2.1, 0.3, float(F("2.1") - F("0.3")))
    notional = sum(F(p) * F(q) for p, q, _ in trades)
    assert vwap == float(notional / F("2.4"))
    assert TradeFlow().values() == (0.0, 0.0, 0.0, None)


def test_returns_and_rolling_std_match_the_statistics_module() -> None:
    mids = [100.0, 100.5, 100.25, 101.0, 100.75, 100.8]
    rets = [log_return(a, b) for a, b in itertools.pairwise(mids)]
    assert rets[0] == math.log(100.5 / 100.0)
    window = Rolling(3)
    for r in rets:
        window.push(r)
    assert window.std() == statistics.stdev([r for r in rets[-3:] if r is not None])
    window.push(None)
    assert window.std() is None
    assert window.sum() is None
    assert log_return(None, 1.0) is None
