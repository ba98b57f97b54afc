"""The time rule of book rows: the book after every record with ts_event <= T; gaps as gap rows."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from consolidator.book.book import SyncRule
from consolidator.book.sampler import BookRow, BookSampler
from consolidator.payloads import Depth
from consolidator.records import to_decimal
from tests.book.test_book import lv

STEP = 100


def _d(sym: int, ts: int, first: int, last: int, bids: list[tuple[str, str]]) -> Depth:
    return Depth(ts, ts, sym, first, last, None, [lv(p, q) for p, q in bids], [lv("50", "1")])


def _s(sym: int, ts: int, last: int, bids: list[tuple[str, str]]) -> Depth:
    return Depth(ts, ts, sym, last, last, None, [lv(p, q) for p, q in bids], [lv("50", "1")], True)


def _run(records: list[Depth | int | None], end: int) -> list[BookRow]:
    """Feed records and invalidations (a symbol id, or None for every symbol)."""
    rows: list[BookRow] = []
    sampler = BookSampler(SyncRule.SPOT, STEP, 5, rows.append)
    for record in records:
        if isinstance(record, Depth):
            sampler.on_depth(record)
        else:
            sampler.invalidate(record, "GAP event")
    sampler.finish(end)
    return rows


def _bids(row: BookRow) -> list[tuple[Decimal, Decimal]]:
    assert row.values is not None
    v = row.values
    return [(to_decimal(p, v.price_exp), to_decimal(q, v.qty_exp)) for p, q in v.bids]


def test_rows_show_the_book_after_records_at_or_before_t_and_gaps_after_a_gap() -> None:
    rows = _run(
        [
            _s(0, 0, 10, [("10", "1")]),  # a spot REST snapshot: no exchange time
            _d(0, 150, 11, 11, [("10", "2")]),  # first time known: rows start at 200
            _d(0, 230, 12, 12, [("10", "3")]),
            _d(0, 300, 13, 13, [("10", "4")]),  # at T = 300 exactly: in the row of 300
            _d(0, 420, 14, 14, [("10", "5")]),
            0,  # a GAP event: at the feed's clock (420)
            _d(0, 610, 20, 20, [("10", "6")]),  # ignored: the book waits for a snapshot
            _s(0, 0, 30, [("11", "1")]),  # resync: takes effect with the diff that joins it
            _d(0, 720, 31, 31, [("11", "2")]),
        ],
        end=900,
    )
    got = [(r.ts, r.gap, None if r.gap else _bids(r)[0][1]) for r in rows]
    assert got == [
        (200, False, 2),
        (300, False, 4),
        (400, False, 4),
        (500, True, None),  # invalid from 420
        (600, True, None),
        (700, True, None),  # the snapshot's time is not known before 720
        (800, False, 2),
        (900, False, 2),
    ]
    assert rows[0].values is not None
    assert rows[0].values.last_update_id == 11
    assert rows[4].ofi is None
    assert rows[4].returns is None


def test_a_feed_wide_loss_invalidates_every_symbol_and_symbols_keep_their_own_rows() -> None:
    rows = _run(
        [
            _s(0, 100, 1, [("10", "1")]),
            _s(1, 100, 1, [("20", "1")]),
            _d(1, 250, 2, 2, [("20", "2")]),
            None,  # loss: every book, at the clock (250)
            _s(1, 260, 5, [("21", "1")]),
        ],
        end=400,
    )
    by = {(r.symbol_id, r.ts): r.gap for r in rows}
    assert by == {
        (0, 100): False, (0, 200): False, (0, 300): True, (0, 400): True,
        (1, 100): False, (1, 200): False, (1, 300): False, (1, 400): False,
    }  # fmt: skip


def test_rows_stop_at_until_and_ofi_is_summed_per_interval() -> None:
    rows: list[BookRow] = []
    sampler = BookSampler(SyncRule.SPOT, STEP, 5, rows.append, until_ns=300)
    sampler.on_depth(_s(0, 100, 1, [("10", "1")]))
    sampler.on_depth(_d(0, 110, 2, 2, [("10", "3")]))  # e = +2
    sampler.on_depth(_d(0, 120, 3, 3, [("10", "2")]))  # e = -1
    sampler.on_depth(_d(0, 210, 4, 4, [("10", "5")]))  # e = +3
    sampler.finish(1000)
    assert [(r.ts, r.ofi) for r in rows] == [(100, 0.0), (200, 1.0), (300, 3.0)]
    assert rows[-1].ofi_10 is None  # fewer than 10 intervals


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 130), st.integers(1, 30), st.integers(0, 9)),
        min_size=1,
        max_size=30,
    )
)
def test_rows_equal_an_independent_rebuild_at_every_sample_time(
    steps: list[tuple[int, int, int]],
) -> None:
    """Diffs at non-decreasing times (several per interval, some at the same time, some on a
    multiple of the interval): each row equals the model's book after the diffs with ts <= T."""
    ts = 1000
    records: list[Depth] = [_s(0, ts, 0, [("1", "1")])]
    timeline: list[tuple[int, int, int]] = []
    for n, (dt, price, qty) in enumerate(steps, start=1):
        ts += dt
        records.append(_d(0, ts, n, n, [(str(price), str(qty))]))
        timeline.append((ts, price, qty))
    end = ts + 250
    rows = _run(list(records), end)
    assert [r.ts for r in rows] == list(range(1000, end + 1, STEP))
    for row in rows:
        model = {Decimal(1): Decimal(1)}
        for t, price, qty in timeline:
            if t <= row.ts:
                if qty:
                    model[Decimal(price)] = Decimal(qty)
                else:
                    model.pop(Decimal(price), None)
        assert _bids(row) == sorted(model.items(), reverse=True)[:5], row.ts
