"""The order book against a simple model (dicts of Decimals), its continuity rules, its checks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from consolidator.book.book import OrderBook, SyncRule, rule_for_venue
from consolidator.payloads import Depth, Level
from consolidator.records import parse_decimal, to_decimal
from consolidator.sim.book import OrderBook as SimBook


def lv(price: str, qty: str) -> Level:
    pm, pe = parse_decimal(price)
    qm, qe = parse_decimal(qty)
    return pm, pe, qm, qe


def snap(last: int, bids: list[Level], asks: list[Level], ts: int = 0) -> Depth:
    return Depth(ts, ts, 0, last, last, None, bids, asks, True)


def diff(
    first: int,
    last: int,
    bids: list[Level] = (),  # type: ignore[assignment]
    asks: list[Level] = (),  # type: ignore[assignment]
    prev: int | None = None,
    ts: int = 0,
) -> Depth:
    return Depth(ts, ts, 0, first, last, prev, list(bids), list(asks))


# -- the model ------------------------------------------------------------------------------------

# Prices from a small grid (so updates hit existing levels), each written with its own number of
# trailing zeros: the book must treat "1.5" and "1.500" as one level and rescale exactly.
prices = st.builds(
    lambda ticks, zeros: (ticks * 10**zeros, -2 - zeros),
    st.integers(1, 60),
    st.integers(0, 3),
)
sizes = st.one_of(
    st.just((0, 0)),
    st.builds(lambda m, zeros: (m * 10**zeros, -zeros), st.integers(1, 10**6), st.integers(0, 4)),
)
levels = st.lists(st.builds(lambda p, q: (p[0], p[1], q[0], q[1]), prices, sizes), max_size=8)


def _value(m: int, e: int) -> Decimal:
    return to_decimal(m, e)


class BookMachine(RuleBasedStateMachine):
    """Snapshots, diffs that continue the book, stale and gapped diffs, invalidations: the
    book and a dict-of-Decimals model (with the rules written out again) must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(SyncRule.SPOT)
        self.model_bids: dict[Decimal, Decimal] = {}
        self.model_asks: dict[Decimal, Decimal] = {}
        self.valid = False
        self.local = 0
        self.next_id = 100

    @staticmethod
    def _set(side: dict[Decimal, Decimal], changes: list[Level]) -> None:
        for pm, pe, qm, qe in changes:
            price, qty = _value(pm, pe), _value(qm, qe)
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)

    @rule(bids=levels, asks=levels, skip=st.integers(0, 5))
    def snapshot(self, bids: list[Level], asks: list[Level], skip: int) -> None:
        last = self.next_id + skip
        self.next_id = last + 1
        self.book.apply(snap(last, bids, asks))
        self.model_bids, self.model_asks = {}, {}
        self._set(self.model_bids, bids)
        self._set(self.model_asks, asks)
        self.valid, self.local = True, last

    @rule(bids=levels, asks=levels, span=st.integers(0, 3), overlap=st.booleans())
    def continuing_diff(
        self, bids: list[Level], asks: list[Level], span: int, overlap: bool
    ) -> None:
        first = self.local + 1 - (1 if overlap and self.local else 0)
        last = max(first, self.local + 1) + span
        changed = self.book.apply(diff(first, last, bids, asks))
        assert changed == self.valid
        if self.valid:
            self._set(self.model_bids, bids)
            self._set(self.model_asks, asks)
            self.local = last
        self.next_id = max(self.next_id, last + 1)

    @rule(bids=levels, back=st.integers(0, 3))
    def stale_diff(self, bids: list[Level], back: int) -> None:
        stale = self.book.stats.non_monotonic
        last = self.local - back
        assert not self.book.apply(diff(last - 2, last, bids))
        if self.valid:
            assert self.book.stats.non_monotonic == stale + 1

    @rule(bids=levels, missed=st.integers(1, 5))
    def gapped_diff(self, bids: list[Level], missed: int) -> None:
        gaps = self.book.stats.id_gaps
        first = self.local + 1 + missed
        assert not self.book.apply(diff(first, first + 1, bids))
        if self.valid:
            assert self.book.stats.id_gaps == gaps + 1
        self.valid = False

    @rule()
    def invalidate(self) -> None:
        self.book.invalidate("GAP event")
        self.valid = False

    @invariant()
    def agrees(self) -> None:
        book = self.book
        assert book.valid == self.valid
        if not self.valid:
            return
        assert book.last_update_id == self.local
        totals = book.side_totals()
        assert book.size(totals[0]) == sum(self.model_bids.values(), Decimal(0))
        assert book.size(totals[1]) == sum(self.model_asks.values(), Decimal(0))
        for low, high in ((Decimal("0.10"), Decimal("0.30")), (Decimal("0.25"), Decimal("0.55"))):
            within = [q for p, q in (*self.model_bids.items(), *self.model_asks.items())
                      if low <= p <= high]  # fmt: skip
            scale = Decimal(10) ** -book.price_exp
            got = book.size_between(int(low * scale), int(high * scale))
            assert book.size(got) == sum(within, Decimal(0))
        bids, asks = book.levels()
        assert bids == sorted(self.model_bids.items(), reverse=True)
        assert asks == sorted(self.model_asks.items())
        top = book.top()
        if self.model_bids and self.model_asks:
            assert top is not None
            assert book.price(top[0]) == max(self.model_bids)
            assert book.size(top[3]) == self.model_asks[min(self.model_asks)]
            assert book.crossed == (max(self.model_bids) >= min(self.model_asks))
        else:
            assert top is None


TestBookModel = BookMachine.TestCase
TestBookModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# -- continuity rules, one case each ------------------------------------------------------------


def test_spot_first_diff_must_span_the_snapshot_id_plus_one() -> None:
    book = OrderBook(SyncRule.SPOT)
    book.apply(snap(100, [lv("10", "1")], [lv("11", "1")]))
    assert not book.apply(diff(95, 100, [lv("10", "5")]))  # u <= L: older than the snapshot
    assert book.stats.non_monotonic == 1
    assert book.valid
    assert book.apply(diff(99, 103, [lv("10", "2")]))  # U <= L+1 <= u: joins
    assert book.apply(diff(104, 104, [lv("10", "3")]))  # U == previous u + 1
    assert book.levels()[0] == [(Decimal("10"), Decimal("3"))]
    assert not book.apply(diff(106, 107, [lv("10", "4")]))  # 105 missed
    assert not book.valid
    assert book.stats.id_gaps == 1
    assert not book.apply(diff(108, 108, [lv("10", "4")]))  # ignored until a snapshot
    assert book.stats.ignored == 1
    book.apply(snap(200, [lv("9", "1")], []))
    assert book.valid
    assert book.levels() == ([(Decimal(9), Decimal(1))], [])


def test_spot_first_diff_starting_after_snapshot_plus_one_is_a_gap() -> None:
    book = OrderBook(SyncRule.SPOT)
    book.apply(snap(100, [], []))
    assert not book.apply(diff(102, 105))
    assert not book.valid


def test_usdm_first_diff_spans_the_snapshot_id_then_pu_chains() -> None:
    book = OrderBook(SyncRule.FUTURES)
    book.apply(snap(100, [lv("10", "1")], []))
    assert not book.apply(diff(90, 99, prev=89))  # u < L
    assert book.apply(diff(98, 100, [lv("10", "2")], prev=97))  # U <= L <= u
    assert book.apply(diff(101, 110, [lv("10", "3")], prev=100))  # pu == previous u
    assert not book.apply(diff(115, 120, prev=112))  # pu != previous u
    assert not book.valid
    assert book.stats.id_gaps == 1


def test_usdm_first_diff_beyond_the_snapshot_is_a_gap() -> None:
    book = OrderBook(SyncRule.FUTURES)
    book.apply(snap(100, [], []))
    assert not book.apply(diff(101, 105, prev=100))
    assert not book.valid


def test_chain_rule_follows_prev_change_id_from_the_snapshot() -> None:
    book = OrderBook(rule_for_venue("deribit"))
    book.apply(snap(500, [lv("100.5", "10")], [lv("101", "3")]))
    assert book.apply(diff(507, 507, [lv("100.5", "0")], prev=500))
    assert book.levels()[0] == []
    assert not book.apply(diff(507, 507, prev=500))  # the same change again
    assert book.stats.non_monotonic == 1
    assert book.valid
    assert not book.apply(diff(530, 530, prev=520))
    assert not book.valid
    # In-band snapshots restart the book whatever its state.
    book.apply(snap(600, [lv("99", "1")], []))
    assert book.valid
    assert book.last_update_id == 600


def test_rules_by_venue() -> None:
    assert rule_for_venue("binance") is SyncRule.SPOT
    assert rule_for_venue("binance-usdm") is SyncRule.FUTURES
    assert rule_for_venue("deribit") is SyncRule.CHAIN


def test_crossed_books_are_counted_not_hidden() -> None:
    book = OrderBook()
    book.apply(snap(1, [lv("10", "1")], [lv("11", "1")]))
    assert book.apply(diff(2, 2, [lv("11.5", "1")]))
    assert book.crossed
    assert book.stats.crossed == 1
    assert book.apply(diff(3, 3, [lv("11.5", "0")]))
    assert not book.crossed
    assert book.stats.crossed == 1


def test_a_finer_exponent_rescales_exactly() -> None:
    book = OrderBook()
    book.apply(snap(1, [lv("10.5", "2"), lv("10", "1.0")], [lv("11", "3")]))
    assert book.price_exp == -1
    book.apply(diff(2, 2, [lv("10.25", "0.001")], [lv("11.00", "0")]))
    assert (book.price_exp, book.qty_exp) == (-2, -3)
    assert book.levels() == (
        [(Decimal("10.5"), Decimal(2)), (Decimal("10.25"), Decimal("0.001")), (Decimal(10), 1)],
        [],
    )
    assert book.stats.as_dict()["updates"] == 1


@pytest.mark.parametrize("n", [0, 1, 3])
def test_best_n_levels(n: int) -> None:
    book = OrderBook()
    book.apply(snap(1, [lv("1", "1"), lv("3", "1"), lv("2", "1")], [lv("5", "1"), lv("4", "2")]))
    assert [p for p, _ in book.bids(n)] == [3, 2, 1][:n]
    assert [p for p, _ in book.asks(n)] == [4, 5][:n]


# -- against the simulator's own book ------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(1, 400), st.integers(0, 50)),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 12),
)
def test_the_book_follows_the_simulators_book(
    changes: list[tuple[bool, int, int]], batch: int
) -> None:
    """The simulator's book takes level changes one by one; ours gets them as depth diffs of
    ``batch`` changes (the last size of a level wins, as in a venue's diff). Prices are ticks of
    0.01, sizes steps of 0.001; the best 20 levels must match after every diff."""
    sim = SimBook()
    book = OrderBook(SyncRule.SPOT)
    book.apply(snap(1, [], []))
    uid = 1
    for start in range(0, len(changes), batch):
        part = changes[start : start + batch]
        net: dict[tuple[bool, int], int] = {}
        for is_bid, tick, qty in part:
            price = tick if is_bid else tick + 400  # bids below asks: an uncrossed book
            sim.side(is_bid).set(price, qty)
            net[(is_bid, price)] = qty
        bids = [(p, -2, q, -3) for (is_bid, p), q in net.items() if is_bid]
        asks = [(p, -2, q, -3) for (is_bid, p), q in net.items() if not is_bid]
        uid += 1
        assert book.apply(diff(uid, uid, bids, asks))
        assert book.bids(20) == sim.bids.top(20)
        assert book.asks(20) == sim.asks.top(20)
        assert (book.price_exp, book.qty_exp) == (-2, -3)
