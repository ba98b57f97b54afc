"""The order-book sync state machine, rule branch by rule branch, with hand-written frames."""

from __future__ import annotations

import dataclasses

import pytest

from consolidator.payloads import Depth, Event
from consolidator.records import EventKind
from consolidator.venues.base import Dropped, FetchSnapshot, Output, ParseError, SendFrame
from consolidator.venues.binance import SPOT_LIMITS, USDM_LIMITS, BinanceProtocol
from consolidator.venues.book_sync import BookSync, ChainRule, SyncState

from .helpers import Interner, depth, detail, kinds, snapshot

FETCH_A = FetchSnapshot("AAAUSDT", 1000, 50)


def spot(*symbols: str, **limits: int) -> BinanceProtocol:
    chosen = dataclasses.replace(SPOT_LIMITS, **limits)  # type: ignore[arg-type]
    return BinanceProtocol("spot", symbols or ("AAAUSDT",), ["depth"], Interner(), limits=chosen)


def usdm(*symbols: str) -> BinanceProtocol:
    return BinanceProtocol(
        "usdm", symbols or ("AAAUSDT",), ["depth"], Interner(), limits=USDM_LIMITS
    )


def diffs(outputs: list[Output]) -> list[tuple[int, int]]:
    return [
        (o.first_update_id, o.last_update_id)
        for o in outputs
        if isinstance(o, Depth) and not o.snapshot
    ]


def synced_spot(at: int = 100, *symbols: str) -> BinanceProtocol:
    """A spot protocol whose first symbol's book is synced at update id ``at``."""
    protocol = spot(*symbols)
    name = (symbols or ("AAAUSDT",))[0]
    protocol.on_frame(1, depth(name, at, at), 1)
    out = protocol.on_snapshot(name, snapshot(at), 2)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED"]
    return protocol


# --- spot (PROTOCOLS.md 1.5) ------------------------------------------------------------------


def test_spot_buffers_then_publishes_snapshot_synced_event_and_buffered_diffs_in_order() -> None:
    protocol = spot()
    assert protocol.on_frame(1, depth("AAAUSDT", 100, 102), 11) == [FETCH_A]
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING
    assert protocol.on_frame(1, depth("AAAUSDT", 103, 105), 12) == []
    out = protocol.on_snapshot("AAAUSDT", snapshot(101), 13)
    assert kinds(out) == ["Snapshot", "Event:BOOK_SYNCED", "Depth", "Depth"]
    snap = out[0]
    assert isinstance(snap, Depth)
    assert (snap.last_update_id, snap.ts_recv, snap.ts_event, snap.prev_update_id) == (
        101,
        13,
        0,
        None,
    )
    assert diffs(out) == [(100, 102), (103, 105)]
    assert [o.ts_recv for o in out[2:] if isinstance(o, Depth)] == [11, 12]
    assert detail(out[1]) == {"last_update_id": 101, "attempts": 1, "buffered": 2}
    assert protocol.book_state("AAAUSDT") is SyncState.SYNCED
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 106, 106), 14)) == [(106, 106)]


def test_spot_exact_boundary_u_equals_last_update_id_plus_one() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 95, 100), 1)
    protocol.on_frame(1, depth("AAAUSDT", 101, 103), 2)
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 3)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED", "Depth"]
    assert diffs(out) == [(101, 103)]


def test_spot_snapshot_older_than_first_buffered_u_is_fetched_again() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 100, 102), 1)
    assert protocol.on_snapshot("AAAUSDT", snapshot(99), 2) == [
        Dropped("snapshot_too_old", 1),
        FETCH_A,
    ]
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 3)
    assert kinds(out) == ["Snapshot", "Event:BOOK_SYNCED", "Depth"]
    assert detail(out[1])["attempts"] == 2


def test_spot_stale_and_duplicate_live_diffs_are_dropped() -> None:
    protocol = synced_spot(100)
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 101, 104), 1)) == [(101, 104)]
    assert protocol.on_frame(1, depth("AAAUSDT", 90, 99), 2) == [Dropped("stale_depth", 1)]
    assert protocol.on_frame(1, depth("AAAUSDT", 101, 104), 3) == [Dropped("stale_depth", 1)]
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 103, 106), 4)) == [(103, 106)]


def test_spot_gap_resyncs_that_symbol_only() -> None:
    interner = Interner()
    protocol = BinanceProtocol("spot", ["AAAUSDT", "BBBUSDT"], ["depth"], interner)
    for name in ("AAAUSDT", "BBBUSDT"):
        protocol.on_frame(1, depth(name, 10, 10), 1)
        protocol.on_snapshot(name, snapshot(10), 2)
    out = protocol.on_frame(1, depth("AAAUSDT", 13, 14), 3)
    assert kinds(out) == ["Event:GAP", "Event:RESYNC", "FetchSnapshot"]
    gap, resync = out[0], out[1]
    assert isinstance(gap, Event)
    assert isinstance(resync, Event)
    assert gap.symbol_id == resync.symbol_id == interner.ids["AAAUSDT"]
    assert detail(gap) == {
        "rule": "U/u", "expected": 11, "got": 13, "first_update_id": 13, "last_update_id": 14,
    }  # fmt: skip
    assert detail(resync) == {"reason": "gap"}
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING
    assert diffs(protocol.on_frame(1, depth("BBBUSDT", 11, 12), 4)) == [(11, 12)]
    assert protocol.book_state("BBBUSDT") is SyncState.SYNCED
    assert protocol.on_frame(1, depth("AAAUSDT", 15, 15), 5) == []
    out = protocol.on_snapshot("AAAUSDT", snapshot(14), 6)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED", "Depth"]
    assert diffs(out) == [(15, 15)]


def test_spot_gap_inside_the_buffer_after_the_snapshot() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 100, 102), 1)
    protocol.on_frame(1, depth("AAAUSDT", 105, 106), 2)
    out = protocol.on_snapshot("AAAUSDT", snapshot(101), 3)
    assert kinds(out) == [
        "Snapshot",
        "Event:BOOK_SYNCED",
        "Depth",
        "Event:GAP",
        "Event:RESYNC",
        "FetchSnapshot",
    ]
    assert detail(out[3])["expected"] == 103
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING
    out = protocol.on_snapshot("AAAUSDT", snapshot(105), 4)
    assert diffs(out) == [(105, 106)]


def test_spot_hole_between_dropped_and_kept_diffs_is_a_gap_before_publishing() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 100, 101), 1)
    protocol.on_frame(1, depth("AAAUSDT", 104, 105), 2)
    out = protocol.on_snapshot("AAAUSDT", snapshot(102), 3)
    assert kinds(out) == [
        "Dropped:depth_before_snapshot",
        "Event:GAP",
        "Event:RESYNC",
        "FetchSnapshot",
    ]


def test_snapshot_newer_than_every_buffered_diff_then_live_diffs_join() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 100, 101), 1)
    out = protocol.on_snapshot("AAAUSDT", snapshot(110), 2)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED"]
    assert protocol.on_frame(1, depth("AAAUSDT", 105, 110), 3) == [Dropped("stale_depth", 1)]
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 108, 112), 4)) == [(108, 112)]


def test_buffer_is_bounded_and_keeps_the_newest_diffs() -> None:
    protocol = spot(max_buffered_diffs=3)
    assert protocol.on_frame(1, depth("AAAUSDT", 1, 1), 1) == [FETCH_A]
    for update_id in (2, 3):
        assert protocol.on_frame(1, depth("AAAUSDT", update_id, update_id), 1) == []
    out = protocol.on_frame(1, depth("AAAUSDT", 4, 4), 1)
    assert kinds(out) == ["Dropped:depth_buffer_overflow", "Event:RESYNC", "FetchSnapshot"]
    assert detail(out[1]) == {"reason": "buffer_overflow", "max_buffered": 3}
    assert protocol.on_frame(1, depth("AAAUSDT", 5, 5), 1) == [Dropped("depth_buffer_overflow", 1)]
    assert protocol.on_snapshot("AAAUSDT", snapshot(1), 2) == [
        Dropped("snapshot_too_old", 1),
        FETCH_A,
    ]
    out = protocol.on_snapshot("AAAUSDT", snapshot(3), 3)
    assert diffs(out) == [(4, 4), (5, 5)]


def test_unparsable_snapshot_is_a_parse_error_and_asks_again() -> None:
    protocol = spot()
    protocol.on_frame(1, depth("AAAUSDT", 1, 1), 1)
    out = protocol.on_snapshot("AAAUSDT", b"<html>busy</html>", 2)
    assert kinds(out) == ["ParseError:snapshot_json", "FetchSnapshot"]
    error = out[0]
    assert isinstance(error, ParseError)
    assert error.conn_id is None
    for body in (
        b'{"lastUpdateId":"1","bids":[],"asks":[]}',
        b'{"code":-1121,"msg":"Invalid symbol."}',
        b"[1]",
    ):
        assert kinds(protocol.on_snapshot("AAAUSDT", body, 2)) == [
            "ParseError:snapshot_field",
            "FetchSnapshot",
        ]
    assert protocol.on_snapshot_failed("AAAUSDT", "HTTP 429") == [FETCH_A]
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING


def test_snapshots_nobody_waits_for_are_dropped() -> None:
    protocol = spot()
    assert protocol.on_snapshot("AAAUSDT", snapshot(5), 1) == [Dropped("unexpected_snapshot", 1)]
    assert protocol.on_snapshot("ZZZUSDT", snapshot(5), 1) == [Dropped("unexpected_snapshot", 1)]
    assert protocol.on_snapshot_failed("AAAUSDT", "timeout") == []
    protocol = synced_spot(7)
    assert protocol.on_snapshot("AAAUSDT", snapshot(8), 1) == [Dropped("unexpected_snapshot", 1)]


# --- USD-M (PROTOCOLS.md 2.4) -----------------------------------------------------------------


def test_usdm_first_diff_brackets_the_snapshot_then_pu_chains() -> None:
    protocol = usdm()
    assert protocol.on_frame(1, depth("AAAUSDT", 90, 95, 80), 1) == [
        FetchSnapshot("AAAUSDT", 1000, 20)
    ]
    protocol.on_frame(1, depth("AAAUSDT", 97, 105, 95), 2)
    protocol.on_frame(1, depth("AAAUSDT", 108, 110, 105), 3)
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 4)
    assert kinds(out) == [
        "Dropped:depth_before_snapshot",
        "Snapshot",
        "Event:BOOK_SYNCED",
        "Depth",
        "Depth",
    ]
    assert diffs(out) == [(97, 105), (108, 110)]
    assert [o.prev_update_id for o in out if isinstance(o, Depth) and not o.snapshot] == [95, 105]
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 115, 120, 110), 5)) == [(115, 120)]


def test_usdm_diff_ending_at_last_update_id_is_kept() -> None:
    protocol = usdm()
    protocol.on_frame(1, depth("AAAUSDT", 90, 100, 80), 1)
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 2)
    assert diffs(out) == [(90, 100)]


def test_usdm_pu_break_is_a_gap() -> None:
    protocol = usdm("AAAUSDT", "BBBUSDT")
    for name in ("AAAUSDT", "BBBUSDT"):
        protocol.on_frame(1, depth(name, 90, 100, 80), 1)
        protocol.on_snapshot(name, snapshot(100), 2)
    out = protocol.on_frame(1, depth("AAAUSDT", 110, 120, 107), 3)
    assert kinds(out) == ["Event:GAP", "Event:RESYNC", "FetchSnapshot"]
    assert detail(out[0])["expected"] == 100
    assert detail(out[0])["got"] == 107
    assert diffs(protocol.on_frame(1, depth("BBBUSDT", 110, 120, 100), 4)) == [(110, 120)]


def test_usdm_snapshot_before_the_first_buffered_diff_is_fetched_again() -> None:
    protocol = usdm()
    protocol.on_frame(1, depth("AAAUSDT", 105, 110, 101), 1)
    out = protocol.on_snapshot("AAAUSDT", snapshot(100), 2)
    assert out == [Dropped("snapshot_unusable", 1), FetchSnapshot("AAAUSDT", 1000, 20)]
    assert protocol.book_state("AAAUSDT") is SyncState.BUFFERING


def test_usdm_live_diff_that_cannot_join_the_published_snapshot_resyncs() -> None:
    protocol = usdm()
    protocol.on_frame(1, depth("AAAUSDT", 90, 95, 80), 1)
    assert kinds(protocol.on_snapshot("AAAUSDT", snapshot(200), 2))[-1] == "Event:BOOK_SYNCED"
    out = protocol.on_frame(1, depth("AAAUSDT", 205, 210, 199), 3)
    assert kinds(out) == ["Event:RESYNC", "FetchSnapshot"]
    assert detail(out[0]) == {"reason": "snapshot_unjoinable"}


def test_usdm_live_diff_joins_a_snapshot_newer_than_the_buffer() -> None:
    protocol = usdm()
    protocol.on_frame(1, depth("AAAUSDT", 90, 95, 80), 1)
    protocol.on_snapshot("AAAUSDT", snapshot(200), 2)
    assert protocol.on_frame(1, depth("AAAUSDT", 150, 160, 140), 3) == [Dropped("stale_depth", 1)]
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 190, 210, 170), 4)) == [(190, 210)]
    assert diffs(protocol.on_frame(1, depth("AAAUSDT", 215, 220, 210), 5)) == [(215, 220)]


# --- the engine alone: a previous-id chain with in-band snapshots (the Deribit shape) ----------


def test_chain_rule_with_in_band_snapshots() -> None:
    requests: list[Output] = [SendFrame(1, b"resubscribe")]
    book = BookSync("BTC-PERPETUAL", 7, ChainRule(), lambda: requests, in_band_snapshots=True)

    def change(change_id: int, prev: int) -> Depth:
        return Depth(0, 0, 7, change_id, change_id, prev, [], [])

    out: list[Output] = []
    book.on_snapshot(Depth(0, 0, 7, 10, 10, None, [], [], True), out)
    book.on_diff(change(11, 10), out)
    book.on_diff(change(11, 10), out)
    book.on_diff(change(13, 12), out)
    assert kinds(out) == [
        "Snapshot",
        "Event:BOOK_SYNCED",
        "Depth",
        "Dropped:stale_depth",
        "Event:GAP",
        "Event:RESYNC",
        "SendFrame",
    ]
    out.clear()
    book.on_snapshot(Depth(0, 0, 7, 20, 20, None, [], [], True), out)
    book.on_diff(change(21, 20), out)
    assert kinds(out) == ["Dropped:depth_before_snapshot", "Snapshot", "Event:BOOK_SYNCED", "Depth"]
    out.clear()
    book.reset("disconnect", 99, out)
    assert kinds(out) == ["Event:GAP", "Event:RESYNC"]
    assert detail(out[0]) == {"reason": "disconnect", "last_update_id": 21}
    assert book.state is SyncState.IDLE
    assert book.local_update_id is None
    out.clear()
    book.reset("disconnect", 99, out)
    assert out == []


def test_gap_events_carry_the_symbol_id_and_the_diff_time() -> None:
    protocol = synced_spot(5, "ZZZUSDT")
    out = protocol.on_frame(1, depth("ZZZUSDT", 9, 9), 1)
    events = [o for o in out if isinstance(o, Event)]
    assert [e.kind for e in events] == [EventKind.GAP, EventKind.RESYNC]
    assert {(e.symbol_id, e.ts_event) for e in events} == {(0, 1_600_000_000_000_000_000)}


@pytest.mark.parametrize("max_buffered", [0, -1])
def test_book_sync_rejects_a_useless_buffer(max_buffered: int) -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        BookSync("X", 0, ChainRule(), list, max_buffered=max_buffered)
