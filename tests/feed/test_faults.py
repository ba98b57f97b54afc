"""Synthetic market under injected faults: the books stay right and every gap is announced."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consolidator.payloads import Event
from consolidator.records import EventKind

from .checks import (
    check_depth_chain,
    check_trades_complete,
    checkpoint,
    stop_detail,
    trade_ids,
    truth_trades,
    wait_synced,
)
from .helpers import Rings, running, wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ETHBTC"]
USDM_SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]


def _applied(sim: Any, kind: str) -> int:
    return int(sim.stats()["faults"]["applied"].get(kind, 0))


def _run_fault(
    tmp_path: Path, venue: str, fault: str, kind: str, count: int, **feed_keys: Any
) -> tuple[list[Event], dict[str, Any], dict[str, list[int]], dict[str, list[int]]]:
    """Run the fault to completion, checkpoint twice, stop; the events, what the writer
    counted, its trades and the truth."""
    symbols = USDM_SYMBOLS if venue == "binance-usdm" else SYMBOLS
    truth_path = tmp_path / "truth.jsonl"
    sim_args = [
        "--venue",
        venue,
        "--symbols",
        ",".join(symbols),
        "--rate",
        "2000",
        "--truth-log",
        str(truth_path),
    ]
    keys: dict[str, Any] = {"venue": venue, "symbols": symbols, **feed_keys}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, symbols)
        sim.control(action="fault", spec=fault)
        wait_until(lambda: _applied(sim, kind) >= count, 60, f"{fault} applied {count} times")
        time.sleep(0.5)  # pacing: the flow goes on past the faults (what follows waits for its own)
        if kind in ("stall", "reset"):
            wait_until(
                lambda: Counter(rings.event_kinds())[EventKind.CONNECT] >= 2, 60, "a reconnect"
            )
        wait_synced(rings, symbols)
        checkpoint(sim, rings, symbols)
        time.sleep(0.3)  # pacing: more flow between the two checkpoints
        wait_synced(rings, symbols)
        checkpoint(sim, rings, symbols)
        sim.control(action="pause")
        code, took = writer.stop()
        assert code == 0, writer.stderr()
        assert took < 2.0
        assert "Traceback" not in writer.stderr()
        detail = stop_detail(rings)
        published = trade_ids(rings)
        depth = rings.depth()
        events = rings.events()
    truth = truth_trades(truth_path, "agg_id" if venue == "binance-usdm" else "trade_id")
    check_depth_chain(depth, venue == "binance-usdm")
    assert detail["internal_errors"] == 0
    return events, detail, published, truth


@pytest.mark.parametrize("venue", ["binance", "binance-usdm"])
def test_dropped_depth_is_a_gap_and_a_resync(tmp_path: Path, venue: str) -> None:
    events, detail, published, truth = _run_fault(
        tmp_path, venue, "drop-depth,count=3", "drop-depth", 3
    )
    # A drop right after a snapshot, before a diff joined it, is "snapshot_unjoinable": a
    # RESYNC without a GAP (nothing after the snapshot was published yet).
    assert detail["gaps"] >= 1
    assert detail["resyncs"] >= 3
    check_trades_complete(published, truth)


def test_duplicates_are_dropped_not_published(tmp_path: Path) -> None:
    _, detail, published, truth = _run_fault(
        tmp_path, "binance", "duplicate,prob=0.2,count=60", "duplicate", 60
    )
    assert sum(detail["drops"].get(k, 0) for k in ("duplicate_trade", "duplicate_quote")) > 0
    assert detail["gaps"] == 0
    assert not detail["parse_errors"]
    check_trades_complete(published, truth)


def test_reordered_frames_resync_the_book(tmp_path: Path) -> None:
    _, detail, published, _ = _run_fault(
        tmp_path, "binance", "reorder,prob=0.2,count=40", "reorder", 40
    )
    for symbol, ids in published.items():
        assert len(ids) == len(set(ids)), symbol
        assert ids == sorted(ids), symbol
    assert detail["gaps"] == detail["resyncs"]


def test_malformed_frames_are_counted_and_skipped(tmp_path: Path) -> None:
    events, detail, published, truth = _run_fault(
        tmp_path, "binance", "malformed,count=9", "malformed", 9
    )
    errors = detail["parse_errors"]
    assert sum(errors.values()) == 9, errors
    assert errors.get("json") == 3
    # "types" frames are field_type errors, or unknown_event on a bookTicker stream (e=trade)
    assert errors.get("unknown_event", 0) >= 3
    assert errors.get("unknown_event", 0) + errors.get("field_type", 0) == 6
    events = [e for e in events if e.kind == EventKind.PARSE_ERROR]
    assert {json.loads(e.detail)["kind"] for e in events} == set(errors)
    assert detail["gaps"] == 0
    check_trades_complete(published, truth)


def test_stalled_connection_is_replaced(tmp_path: Path) -> None:
    events, detail, published, _ = _run_fault(
        tmp_path, "binance", "stall", "stall", 1, stale_after_s=1.0
    )
    assert detail["reconnects"].get("stale") == 1
    disconnects = [json.loads(e.detail) for e in events if e.kind == EventKind.DISCONNECT]
    assert any(d["reason"] == "stale" for d in disconnects)
    assert Counter(e.kind for e in events)[EventKind.GAP] >= len(SYMBOLS)
    for symbol, ids in published.items():
        assert len(ids) == len(set(ids)), symbol


def test_reset_connection_is_replaced(tmp_path: Path) -> None:
    events, detail, published, _ = _run_fault(tmp_path, "binance", "reset", "reset", 1)
    assert sum(detail["reconnects"].values()) == 1
    assert Counter(e.kind for e in events)[EventKind.CONNECT] == 2
    assert Counter(e.kind for e in events)[EventKind.GAP] >= len(SYMBOLS)
    for symbol, ids in published.items():
        assert len(ids) == len(set(ids)), symbol
