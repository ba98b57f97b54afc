"""The matcher's classification rules, fed by hand (no processes)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from consolidator.compare.binance_ref import BinanceReference
from consolidator.compare.matcher import REF, RING, Matcher
from consolidator.compare.model import Rec, decimal_pair, pair_text

S = 1_000_000_000
SYM = "BTCUSDT"


def dec(text: str) -> tuple[int, int]:
    return decimal_pair(Decimal(text))


def trade(key: int, t: int, price: str = "100.5", commit: int = 0) -> Rec:
    return Rec(key, key, 5, t, commit, (dec(price), dec("1"), "buy"))


def diff(first: int, last: int, t: int) -> Rec:
    return Rec(last, first, 5, t, 0, (first, None, ((dec("1"), dec("2")),), ()))


def test_pairs_match_by_id_and_exact_value() -> None:
    m = Matcher(S)
    for key in range(1, 6):
        m.add(REF, "trades", SYM, trade(key, key))
    for key in range(1, 6):
        price = "100.50" if key != 3 else "100.6"  # same value spelled otherwise; one differs
        m.add(RING, "trades", SYM, trade(key, key + 10, price, commit=key + 11))
    m.sweep(100 * S, final=True)
    c = m.counts["trades"]
    assert (c.matched, c.mismatched, c.missing, c.extra) == (4, 1, 0, 0)
    assert c.mismatched_ids == [[SYM, 3]]
    assert c.mismatches[0]["fields"] == {"price": {"reference": "100.5", "ring": "100.6"}}
    assert m.ring_minus_reference.quantiles_us()["p50"] == 0.01  # 10 ns later on the ring
    assert m.failed()


def test_missing_extra_and_duplicates_only_once_out_of_the_grace_window() -> None:
    m = Matcher(S, ref_sequenced=True)
    for key in (1, 2, 3, 5):
        m.add(REF, "trades", SYM, trade(key, 0))
    for key in (1, 2, 3, 3, 4):
        m.add(RING, "trades", SYM, trade(key, 0))
    m.sweep(S // 2)  # younger than the grace window: nothing judged yet
    assert m.counts["trades"].missing == m.counts["trades"].extra == 0
    m.sweep(2 * S)
    c = m.counts["trades"]
    # 4 is a hole in the reference's own sequence, so the ring's 4 is not blamed
    assert (c.matched, c.missing, c.extra, c.duplicates) == (3, 1, 0, 1)
    assert (c.missing_ids, c.duplicate_ids, c.not_seen_by_reference) == ([[SYM, 5]], [[SYM, 3]], 1)


def test_a_late_counterpart_turns_missing_into_matched() -> None:
    m = Matcher(S)
    m.add(REF, "trades", SYM, trade(1, 0))
    m.add(RING, "trades", SYM, trade(1, 0))
    m.add(REF, "trades", SYM, trade(2, 0))
    m.sweep(2 * S)
    assert m.counts["trades"].missing == 1
    m.add(RING, "trades", SYM, trade(2, 3 * S))
    c = m.counts["trades"]
    assert (c.missing, c.matched, c.late, c.missing_ids) == (0, 2, 1, [])


def test_overlap_starts_at_the_later_first_id_and_young_records_are_in_flight() -> None:
    m = Matcher(S)
    for key in (1, 2, 3):
        m.add(RING, "trades", SYM, trade(key, 0))
    m.add(REF, "trades", SYM, trade(3, 0))
    m.add(REF, "trades", SYM, trade(4, 10 * S))  # received within the grace window of the end
    m.sweep(10 * S, final=True)
    c = m.counts["trades"]
    assert (c.matched, c.before_overlap, c.in_flight, c.missing, c.extra) == (1, 2, 1, 0, 0)


def test_depth_replaced_by_a_snapshot_is_resynced_but_a_declared_gap_is_missing() -> None:
    m = Matcher(S)
    for first in range(10, 70, 10):  # reference diffs [10,19] [20,29] ... [60,69]
        m.add(REF, "depth", SYM, diff(first, first + 9, 0))
    m.add(RING, "depth", SYM, diff(10, 19, 0))
    m.hole(RING, "depth", SYM, 20, 29)  # the writer's GAP: expected U=20, got U=30
    m.snapshot(RING, "depth", SYM, 49)  # its resync: diffs up to 49 replaced by a snapshot
    m.add(RING, "depth", SYM, diff(50, 59, 0))
    m.add(RING, "depth", SYM, diff(60, 69, 0))
    m.sweep(2 * S, final=True)
    c = m.counts["depth"]
    assert (c.matched, c.missing, c.resynced, c.extra) == (3, 1, 2, 0)
    assert c.missing_ids == [[SYM, 29]]


def test_a_reference_disconnect_hides_the_rings_records() -> None:
    m = Matcher(S, ref_sequenced=True)
    m.add(REF, "trades", SYM, trade(1, 0))
    m.disconnected(REF, [("trades", SYM)])
    m.add(REF, "trades", SYM, trade(5, 0))
    for key in range(1, 6):
        m.add(RING, "trades", SYM, trade(key, 0))
    m.sweep(2 * S, final=True)
    c = m.counts["trades"]
    assert (c.matched, c.not_seen_by_reference, c.extra, c.missing) == (2, 3, 0, 0)
    assert not m.failed()


def test_the_reference_parser_reads_binance_frames_exactly() -> None:
    ref = BinanceReference("spot", "trade")
    plan = ref.plan([SYM], ["trades", "quotes", "depth"])
    assert plan == [
        (
            "/stream?streams=btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms",
            [("trades", SYM), ("quotes", SYM), ("depth", SYM)],
        )
    ]
    frame = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":2,"s":"BTCUSDT","t":7,'
             b'"p":"61837.63000000","q":"0.001","T":1,"m":true,"M":true}}')  # fmt: skip
    parsed = ref.parse(frame, 99)
    values = ((6183763, -2), (1, -3), "sell")
    assert parsed == ("trades", SYM, Rec(7, 7, 1_000_000, 99, 0, values))
    depth = (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":3,"s":"BTCUSDT",'
             b'"U":5,"u":8,"b":[["1.0","0"]],"a":[]}}')  # fmt: skip
    stream, _, rec = ref.parse(depth, 1) or ("", "", None)
    assert stream == "depth"
    assert rec is not None
    assert (rec.key, rec.first, rec.ts_event) == (8, 5, 3_000_000)
    assert rec.values == (5, None, (((1, 0), (0, 0)),), ())
    for bad in (b"{", b'{"stream":"btcusdt@trade","data":{"t":1}}', b'{"result":null,"id":1}'):
        assert ref.parse(bad, 1) is None
    assert ref.unparsed == 2


def test_decimal_pairs_are_canonical_and_exact() -> None:
    assert dec("61837.63000000") == dec("61837.63") == (6183763, -2)
    assert dec("0.00000000") == dec("0") == (0, 0)
    assert dec("1200") == (12, 2)
    assert dec("-0.0150") == (-15, -3)
    assert dec("123456789012345678901234567890.1") == (1234567890123456789012345678901, -1)
    assert pair_text((6183763, -2)) == "61837.63"
    assert pair_text((12, 2)) == "1200"


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{0,12})?\Z")
    | st.from_regex(r"\A-?[0-9]{1,5}(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,2})?\Z")
)
def test_the_reference_fast_decimal_path_agrees_with_decimal(text: str) -> None:
    ref = BinanceReference("spot", "trade")
    assert ref._dec(text) == decimal_pair(Decimal(text))
