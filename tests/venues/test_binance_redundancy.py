"""Redundant connections (A/B legs): every record once, whichever leg delivers it first; a leg
that dies or lags loses nothing while the other is live; a seam where both were down is a GAP."""

from __future__ import annotations

import dataclasses
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consolidator.payloads import Depth, Event, Quote, Trade
from consolidator.records import NO_SYMBOL, EventKind
from consolidator.venues.base import (
    ConnectionPlan,
    ConnectionTable,
    Dropped,
    LegCounts,
    Output,
    SendFrame,
    VenueUsageError,
)
from consolidator.venues.binance import SPOT_LIMITS, BinanceLimits, BinanceProtocol, Market
from consolidator.venues.book_sync import SyncState

from .helpers import Interner, depth, detail, kinds, quote, snapshot, trade

ALL = ["trades", "quotes", "depth"]
TRADES, QUOTES, DEPTH = 0, 1, 2


def _ack(protocol: BinanceProtocol, plan: ConnectionPlan) -> None:
    protocol.on_connected(plan.conn_id)
    for frame in plan.subscribe_frames:
        reply = orjson.dumps({"result": None, "id": orjson.loads(frame)["id"]})
        assert kinds(protocol.on_frame(plan.conn_id, reply, 0)) == ["Event:SUBSCRIBE"]


def _legs(
    channels: list[str] = ALL, market: Market = "spot"
) -> tuple[BinanceProtocol, ConnectionPlan, ConnectionPlan]:
    """A protocol with redundancy 2 on one symbol, both legs open and subscribed (raw trades on
    USD-M too: one connection per leg)."""
    limits = dataclasses.replace(BinanceLimits.for_market(market), trade_stream="trade")
    protocol = BinanceProtocol(
        market, ["AAAUSDT"], channels, Interner(), limits=limits, redundancy=2
    )
    a, b = protocol.plan_connections()
    _ack(protocol, a)
    _ack(protocol, b)
    return protocol, a, b


def _step(step: int, usdm: bool = False) -> list[bytes]:
    """Step ``step`` of the market: one trade, one quote, one diff (ids continue step by step)."""
    if usdm:
        diff = depth("AAAUSDT", 101 + 10 * (step - 1), 100 + 10 * step, 100 + 10 * (step - 1))
    else:
        diff = depth("AAAUSDT", 100 + step, 100 + step)
    return [trade("AAAUSDT", 1000 + step), quote("AAAUSDT", 500 + 10 * step), diff]


def _sync(protocol: BinanceProtocol, conn_id: int) -> list[Output]:
    """Step 0 on ``conn_id`` and the snapshot: the book is synchronized at 100."""
    out = protocol.on_frame(conn_id, depth("AAAUSDT", 100, 100), 0)
    out += protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    assert protocol.book_state("AAAUSDT") is SyncState.SYNCED
    return out


def _published(outputs: list[Output]) -> list[tuple[str, int]]:
    out = []
    for o in outputs:
        if isinstance(o, Trade):
            out.append(("trade", o.trade_id))
        elif isinstance(o, Quote):
            out.append(("quote", o.update_id))
        elif isinstance(o, Depth) and not o.snapshot:
            out.append(("depth", o.last_update_id))
    return out


def _expected(first: int, last: int, usdm: bool = False) -> list[tuple[str, int]]:
    out = []
    for step in range(first, last + 1):
        depth_id = 100 + 10 * step if usdm else 100 + step
        out += [("trade", 1000 + step), ("quote", 500 + 10 * step), ("depth", depth_id)]
    return out


def _by_channel(outputs: list[Output]) -> dict[str, list[int]]:
    """Published ids per channel, in publication order."""
    out: dict[str, list[int]] = {"trade": [], "quote": [], "depth": []}
    for name, ident in _published(outputs):
        out[name].append(ident)
    return out


def _expected_by_channel(first: int, last: int, usdm: bool = False) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"trade": [], "quote": [], "depth": []}
    for name, ident in _expected(first, last, usdm):
        out[name].append(ident)
    return out


def _events(outputs: list[Output], kind: EventKind) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and o.kind == kind]


def _counts(protocol: BinanceProtocol, leg: int, channel: int) -> tuple[int, int, int]:
    counts = protocol.leg_counts
    at = leg * len(counts.channels) + channel
    return counts.wins[at], counts.duplicates[at], counts.lag_ns[at]


# --- planning ---------------------------------------------------------------------------------


def test_every_connection_is_planned_once_per_leg() -> None:
    small = dataclasses.replace(SPOT_LIMITS, max_streams_per_connection=4)
    symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    protocol = BinanceProtocol("spot", symbols, ALL, Interner(), limits=small, redundancy=2)
    plans = protocol.plan_connections()
    a = [p for p in plans if p.leg == 0]
    b = [p for p in plans if p.leg == 1]
    assert len(a) == len(b) == 3
    assert [(p.path, p.streams) for p in a] == [(p.path, p.streams) for p in b]
    assert len({p.conn_id for p in plans}) == 6
    rotated = protocol.plan_rotation(b[0].conn_id)
    assert (rotated.leg, rotated.streams) == (1, b[0].streams)
    assert protocol.leg_counts.legs == 2
    assert protocol.leg_counts.channels == ("trades", "quotes", "depth")


def test_new_symbols_are_subscribed_on_both_legs() -> None:
    small = dataclasses.replace(SPOT_LIMITS, max_streams_per_connection=4)
    protocol = BinanceProtocol(
        "spot", ["AAAUSDT"], ["trades", "quotes"], Interner(), limits=small, redundancy=2
    )
    a, b = protocol.plan_connections()
    _ack(protocol, a)
    _ack(protocol, b)
    out = protocol.add_symbols(["BBBUSDT"])
    assert kinds(out) == ["Event:SYMBOL_ADDED", "SendFrame", "SendFrame"]
    frames = [o for o in out if isinstance(o, SendFrame)]
    assert {f.conn_id for f in frames} == {a.conn_id, b.conn_id}
    out = protocol.add_symbols(["CCCUSDT"])  # both connections are full: one new per leg
    plans = [o for o in out if isinstance(o, ConnectionPlan)]
    assert sorted(p.leg for p in plans) == [0, 1]
    assert plans[0].streams == plans[1].streams == ("cccusdt@bookTicker", "cccusdt@trade")


@pytest.mark.parametrize("redundancy", [0, 3, "2"])
def test_redundancy_is_1_or_2(redundancy: object) -> None:
    with pytest.raises(VenueUsageError, match="redundancy must be 1 or 2"):
        BinanceProtocol("spot", ["AAAUSDT"], ALL, Interner(), redundancy=redundancy)  # type: ignore[arg-type]


def test_the_table_refuses_a_leg_it_does_not_have() -> None:
    with pytest.raises(VenueUsageError, match="legs must be"):
        ConnectionTable(10, 10, lambda *_: b"", legs=3)
    table = ConnectionTable(10, 10, lambda *_: b"")
    with pytest.raises(VenueUsageError, match="no leg 1"):
        table.plan([("s", "/stream")], 1)


def test_leg_counts_start_at_zero() -> None:
    counts = LegCounts.zero(2, ("trades", "quotes"))
    assert counts.legs == 2
    assert counts.wins == counts.duplicates == counts.lag_ns == [0, 0, 0, 0]


# --- arbitration ------------------------------------------------------------------------------


def test_first_copy_wins_and_keeps_its_receive_time() -> None:
    protocol, a, b = _legs()
    outputs = _sync(protocol, a.conn_id)
    for step in range(1, 11):
        # Leg b is first on even steps (by 3 ms), leg a on odd ones (by 1 ms).
        first, second, lag = (b, a, 1) if step % 2 == 0 else (a, b, 3)
        for frame in _step(step):
            outputs += protocol.on_frame(first.conn_id, frame, step * 10**9)
        for frame in _step(step):
            outputs += protocol.on_frame(second.conn_id, frame, step * 10**9 + lag * 10**6)
    assert _published(outputs) == _expected(1, 10)
    for record in outputs:
        if isinstance(record, Trade | Quote) or (isinstance(record, Depth) and not record.snapshot):
            assert record.ts_recv % 10**9 == 0, "the first copy's receive time"
    for channel in (TRADES, QUOTES, DEPTH):
        # a: 5 wins (odd steps; depth also the diff before the snapshot), 5 duplicates 1 ms
        # late; b: 5 wins, 5 duplicates 3 ms late.
        wins_a = 6 if channel == DEPTH else 5
        assert _counts(protocol, 0, channel) == (wins_a, 5, 5 * 1 * 10**6)
        assert _counts(protocol, 1, channel) == (5, 5, 5 * 3 * 10**6)
    dropped = Counter(o.reason for o in outputs if isinstance(o, Dropped))
    assert dropped == {
        "duplicate_trade": 10,
        "duplicate_quote": 10,
        "stale_depth": 10,
        "depth_before_snapshot": 1,
    }


def test_a_leg_that_lags_has_every_copy_dropped_and_takes_over_where_it_is() -> None:
    protocol, a, b = _legs()
    outputs = _sync(protocol, a.conn_id)
    for step in range(1, 21):  # a leads; b is 5 steps behind
        for frame in _step(step):
            outputs += protocol.on_frame(a.conn_id, frame, 0)
        if step > 5:
            for frame in _step(step - 5):
                outputs += protocol.on_frame(b.conn_id, frame, 0)
    assert _counts(protocol, 1, TRADES)[:2] == (0, 15)
    outputs += protocol.on_disconnect(a.conn_id, 0)  # a dies; b still has steps 16..20 to go
    for step in range(16, 31):
        for frame in _step(step):
            outputs += protocol.on_frame(b.conn_id, frame, 0)
    assert _published(outputs) == _expected(1, 30)
    assert not _events(outputs, EventKind.GAP)
    assert not _events(outputs, EventKind.RESYNC)
    assert _counts(protocol, 1, TRADES)[:2] == (10, 20)


@pytest.mark.parametrize("dead", [0, 1])
def test_a_dead_leg_loses_nothing_and_its_replacement_joins_on_overlap(dead: int) -> None:
    protocol, a, b = _legs()
    legs = [a, b]
    outputs = _sync(protocol, a.conn_id)
    for step in range(1, 6):
        for leg in legs:
            for frame in _step(step):
                outputs += protocol.on_frame(leg.conn_id, frame, 0)
    assert protocol.on_disconnect(legs[dead].conn_id, 0) == [], "covered: nothing lost"
    wins_before = _counts(protocol, dead, TRADES)[0]
    replacement = protocol.plan_rotation(legs[dead].conn_id)
    assert replacement.leg == dead
    _ack(protocol, replacement)
    live = legs[1 - dead]
    for step in range(6, 9):  # the survivor alone
        for frame in _step(step):
            outputs += protocol.on_frame(live.conn_id, frame, 0)
    # The replacement subscribed at step 10 and is ahead: it is held until the survivor gets
    # there, then both are live.
    for step in range(10, 13):
        for frame in _step(step):
            held = protocol.on_frame(replacement.conn_id, frame, 0)
            assert not _published(held)
            outputs += held
    for step in range(9, 16):
        for frame in _step(step):
            outputs += protocol.on_frame(live.conn_id, frame, 0)
        if step >= 13:
            for frame in _step(step):
                outputs += protocol.on_frame(replacement.conn_id, frame, 0)
    assert _by_channel(outputs) == _expected_by_channel(1, 15)
    assert not _events(outputs, EventKind.GAP)
    assert _counts(protocol, dead, TRADES)[0] - wins_before == 3, "its held steps 10..12 won"


def test_both_legs_down_then_back_is_one_gap_per_lost_stream_as_with_one_connection() -> None:
    protocol, a, b = _legs()
    outputs = _sync(protocol, a.conn_id)
    for step in range(1, 4):
        for leg in (a, b):
            for frame in _step(step):
                outputs += protocol.on_frame(leg.conn_id, frame, 0)
    first = protocol.on_disconnect(a.conn_id, 7)
    assert first == [], "b still covers every stream"
    second = protocol.on_disconnect(b.conn_id, 8)
    assert kinds(second) == ["Event:GAP", "Event:RESYNC", "Event:GAP"]
    assert detail(second[2]) == {
        "reason": "disconnect",
        "conn_id": b.conn_id,
        "streams": 2,
        "channels": ["quotes", "trades"],
    }
    assert [e.symbol_id for e in second if isinstance(e, Event)][2] == NO_SYMBOL
    again = [protocol.plan_rotation(a.conn_id), protocol.plan_rotation(b.conn_id)]
    for plan in again:
        _ack(protocol, plan)
    out: list[Output] = []
    for step in (7, 8):  # steps 4..6 happened while both were down
        for plan in again:
            for frame in _step(step)[:2]:
                out += protocol.on_frame(plan.conn_id, frame, 0)
    assert not _events(out, EventKind.GAP), "reported once, at the disconnect"
    assert _by_channel(out) == {"trade": [1007, 1008], "quote": [570, 580], "depth": []}


def test_a_seam_where_the_live_leg_left_before_the_other_overlapped_is_a_gap() -> None:
    protocol, a, b = _legs(["trades"])
    outputs: list[Output] = []
    for trade_id in range(1001, 1006):
        outputs += protocol.on_frame(a.conn_id, trade("AAAUSDT", trade_id), 0)
    outputs += protocol.on_disconnect(b.conn_id, 0)
    again = protocol.plan_rotation(b.conn_id)
    _ack(protocol, again)
    for trade_id in range(1009, 1012):  # b's replacement starts at 1009, a is stuck at 1005
        outputs += protocol.on_frame(again.conn_id, trade("AAAUSDT", trade_id), 0)
    assert [i for _, i in _published(outputs)] == list(range(1001, 1006))
    out = protocol.on_disconnect(a.conn_id, 0)  # a dies: 1006..1008 were never received
    assert kinds(out) == ["Event:GAP", "Trade", "Trade", "Trade"]
    assert detail(out[0]) == {
        "stream": "trades",
        "reason": "failover",
        "expected": 1006,
        "got": 1009,
    }


def test_a_seam_without_held_records_is_checked_at_the_next_trade() -> None:
    protocol, a, b = _legs(["trades"])
    protocol.on_frame(a.conn_id, trade("AAAUSDT", 1001), 0)
    assert protocol.on_disconnect(a.conn_id, 0) == [], "b covers the stream"
    out = protocol.on_frame(b.conn_id, trade("AAAUSDT", 1004), 0)
    assert kinds(out) == ["Event:GAP", "Trade"]
    assert detail(out[0])["expected"] == 1002
    assert kinds(protocol.on_frame(b.conn_id, trade("AAAUSDT", 1005), 0)) == ["Trade"]


def test_usdm_legs_keep_the_pu_chain() -> None:
    protocol, a, b = _legs(["depth"], "usdm")
    outputs = protocol.on_frame(a.conn_id, depth("AAAUSDT", 91, 100, 90), 0)
    outputs += protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    # a delivers step s at 10 s; b lags 25 until step 10, then catches up and leads.
    schedule = [(10 * s, a.conn_id, s) for s in range(1, 30)]
    at = 0
    for s in range(1, 30):
        at = max(at + 1, 10 * s + (25 if s <= 10 else -5))
        schedule.append((at, b.conn_id, s))
    for _, conn_id, step in sorted(schedule):
        outputs += protocol.on_frame(conn_id, _step(step, usdm=True)[2], 0)
    # The diff that spans the snapshot's id is published first (USD-M joins it).
    assert _by_channel(outputs)["depth"] == [100 + 10 * s for s in range(30)]
    assert not _events(outputs, EventKind.GAP)
    assert _counts(protocol, 1, DEPTH)[0] > 10, "b led at the end"


def test_a_frame_from_a_reported_closed_connection_is_dropped() -> None:
    protocol, a, b = _legs(["trades"])
    protocol.on_frame(a.conn_id, trade("AAAUSDT", 1001), 0)
    protocol.on_disconnect(a.conn_id, 0)
    assert protocol.on_frame(a.conn_id, trade("AAAUSDT", 1002), 0) == [
        Dropped("closed_connection", 1)
    ]
    assert _published(protocol.on_frame(b.conn_id, trade("AAAUSDT", 1002), 0)) == [("trade", 1002)]


def test_a_live_copy_of_a_taken_id_is_dropped_unparsed() -> None:
    protocol, a, b = _legs()
    _sync(protocol, a.conn_id)
    for frame in _step(1):
        protocol.on_frame(a.conn_id, frame, 0)
        protocol.on_frame(b.conn_id, frame, 0)  # b joins
    late = {"e": "trade", "E": 1, "s": "AAAUSDT", "t": 1001, "p": "not a price"}
    frame = orjson.dumps({"stream": "aaausdt@trade", "data": late})
    assert protocol.on_frame(b.conn_id, frame, 5) == [Dropped("duplicate_trade", 1)]
    late["t"] = 1002  # a new id is parsed: the error shows
    frame = orjson.dumps({"stream": "aaausdt@trade", "data": late})
    assert kinds(protocol.on_frame(b.conn_id, frame, 5)) == ["ParseError:missing_field"]
    diff = depth("AAAUSDT", 101, 101, bids=[("x", "1")])
    assert protocol.on_frame(b.conn_id, diff, 5) == [Dropped("stale_depth", 1)]
    assert protocol.on_frame(b.conn_id, quote("AAAUSDT", 510), 5) == [Dropped("duplicate_quote", 1)]


def test_usdm_diff_ending_at_a_fresh_snapshot_id_is_still_joined() -> None:
    protocol, a, b = _legs(["depth"], "usdm")
    protocol.on_frame(a.conn_id, depth("AAAUSDT", 80, 90, 79), 0)
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED"]
    joining = protocol.on_frame(a.conn_id, depth("AAAUSDT", 95, 100, 90), 0)
    assert _by_channel(joining)["depth"] == [100], "U <= lastUpdateId <= u: applied"
    assert protocol.on_frame(b.conn_id, depth("AAAUSDT", 95, 100, 90), 0) == [
        Dropped("stale_depth", 1)
    ]


# --- any interleaving -------------------------------------------------------------------------

STEPS = 12


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[bool, int, int, list[tuple[str, int]]]:
    """Leg a delivers steps 1..STEPS; leg b's first connection steps 1..k, then it drops, and its
    replacement delivers steps m..STEPS. Each connection in order; the merge is arbitrary, except
    that leg a has delivered its first step before b's first connection drops (a leg lagging by
    more than the other's whole outage makes that a seam where both were down)."""
    usdm = draw(st.booleans())
    k = draw(st.integers(0, STEPS))
    m = draw(st.integers(1, STEPS))
    queues = {"a": list(range(1, STEPS + 1)), "b1": list(range(1, k + 1)), "b2": []}
    schedule: list[tuple[str, int]] = []
    dropped = False
    while queues["a"] or queues["b1"] or not dropped or queues["b2"]:
        choices = [name for name, queue in queues.items() if queue]
        if not dropped and not queues["b1"] and queues["a"][:1] != [1]:
            choices.append("drop")
        pick = draw(st.sampled_from(sorted(choices)))
        if pick == "drop":
            dropped = True
            schedule.append(("drop", 0))
            queues["b2"] = list(range(m, STEPS + 1))
        else:
            schedule.append((pick, queues[pick].pop(0)))
    return usdm, k, m, schedule


@settings(max_examples=300, deadline=None)
@given(_schedules())
def test_any_interleaving_of_two_legs_yields_every_record_once(
    case: tuple[bool, int, int, list[tuple[str, int]]],
) -> None:
    usdm, _, _, schedule = case
    market: Market = "usdm" if usdm else "spot"
    protocol, a, b = _legs(ALL, market)
    if usdm:
        outputs = protocol.on_frame(a.conn_id, depth("AAAUSDT", 91, 100, 90), 0)
        outputs += protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    else:
        outputs = _sync(protocol, a.conn_id)
    conns = {"a": a.conn_id, "b1": b.conn_id}
    copies = 0
    for name, step in schedule:
        if name == "drop":
            outputs += protocol.on_disconnect(b.conn_id, 0)
            replacement = protocol.plan_rotation(b.conn_id)
            _ack(protocol, replacement)
            conns["b2"] = replacement.conn_id
            continue
        for frame in _step(step, usdm):
            outputs += protocol.on_frame(conns[name], frame, step)
            copies += 1
    expected = _expected_by_channel(1, STEPS, usdm)
    if usdm:
        expected["depth"].insert(0, 100)  # the diff spanning the snapshot's id
    assert _by_channel(outputs) == expected
    assert not _events(outputs, EventKind.GAP)
    assert not _events(outputs, EventKind.RESYNC)
    counts = protocol.leg_counts
    assert sum(counts.wins) == 3 * STEPS + 1  # and the diff before the snapshot
    # Held copies of the connection that dropped are forgotten, neither won nor duplicate.
    assert sum(counts.wins) + sum(counts.duplicates) <= copies + 1
