"""Redundant connections (``redundancy = 2``) against the simulator: every record once, a dead or
stalled leg loses nothing while the other is up, both legs down at once is a GAP as with one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consolidator.cli.mdstat import main as mdstat_main
from consolidator.payloads import Event
from consolidator.records import NO_SYMBOL, EventKind

from .checks import (
    check_depth_chain,
    check_trades_complete,
    checkpoint,
    stop_detail,
    trade_ids,
    truth_trades,
    wait_synced,
)
from .helpers import Feed, Rings, Sim, Writer, running, wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ETHBTC"]


def _sessions(sim: Sim) -> list[int]:
    return sorted(s["id"] for s in sim.stats()["connections"]["sessions"])


def _connects(rings: Rings) -> list[dict[str, Any]]:
    return [json.loads(e.detail) for e in rings.events() if e.kind == EventKind.CONNECT]


def _applied(sim: Sim, kind: str) -> int:
    return int(sim.stats()["faults"]["applied"].get(kind, 0))


def _finish(
    sim: Sim, rings: Rings, writer: Writer, truth_path: Path, complete: bool = True
) -> tuple[list[Event], dict[str, Any], dict[str, list[int]]]:
    """Checkpoint the books, pause, wait for every trade, stop: events, stop detail, trades
    (checked against the truth when ``complete``)."""
    wait_synced(rings, SYMBOLS)
    checkpoint(sim, rings, SYMBOLS)
    paused = sim.control(action="pause")
    last = {s: paused["symbols"][s]["last_trade_id"] for s in SYMBOLS}
    wait_until(
        lambda: all(trade_ids(rings)[s][-1:] == [last[s]] for s in SYMBOLS),
        10,
        "every trade up to the pause",
    )
    code, _ = writer.stop()
    assert code == 0, writer.stderr()
    assert "Traceback" not in writer.stderr()
    events = rings.events()
    check_depth_chain(rings.depth(), usdm=False)
    published = trade_ids(rings)
    if complete:
        counts = check_trades_complete(published, truth_trades(truth_path))
        assert all(n > 10 for n in counts.values()), counts
    return events, stop_detail(rings), published


def test_a_dead_then_a_stalled_leg_lose_nothing(tmp_path: Path, capsys: Any) -> None:
    truth_path = tmp_path / "truth.jsonl"
    sim = Sim(tmp_path, "--symbols", ",".join(SYMBOLS), "--rate", "2000", "--truth-log",
              str(truth_path))  # fmt: skip
    feed = Feed(tmp_path)
    writer: Writer | None = None
    try:
        # Leg b goes to the same simulator under another name (two simulators cannot produce
        # the same trades: their markets run on their own clocks).
        port = sim.ws_url.rsplit(":", 1)[1]
        feed.write(
            venue="binance", symbols=SYMBOLS, redundancy=2, stale_after_s=1.0, ws_url=sim.ws_url,
            ws_url_b=f"ws://localhost:{port}", rest_url=sim.rest_url,
        )  # fmt: skip
        writer = Writer(feed)
        rings = Rings(feed)
        wait_synced(rings, SYMBOLS)
        wait_until(lambda: len(_sessions(sim)) == 2, 10, "both legs connected")
        connects = _connects(rings)
        assert sorted(c["leg"] for c in connects) == ["a", "b"]
        assert {c["leg"]: c["url"].split("/")[2] for c in connects} == {
            "a": sim.ws_url.split("/")[2],
            "b": f"localhost:{port}",
        }
        first, second = _sessions(sim)
        sim.control(action="fault", spec=f"reset,conn={first}")
        wait_until(lambda: _applied(sim, "reset") == 1, 10, "one leg reset")
        wait_until(lambda: len(_connects(rings)) >= 3, 10, "the leg reconnected")
        wait_synced(rings, SYMBOLS)
        checkpoint(sim, rings, SYMBOLS)
        sim.control(action="fault", spec=f"stall,conn={second}")
        wait_until(lambda: len(_connects(rings)) >= 4, 10, "the stalled leg replaced")
        assert mdstat_main(["f1", "--config-dir", str(feed.root), "--format", "json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        events, detail, _ = _finish(sim, rings, writer, truth_path)
    finally:
        if writer is not None:
            writer.stop()
        sim.stop()
        feed.remove()
    kinds = Counter(e.kind for e in events)
    assert kinds[EventKind.GAP] == 0, [e.detail for e in events if e.kind == EventKind.GAP]
    assert kinds[EventKind.RESYNC] == 0
    assert detail["reconnects"] == {"dropped": 1, "stale": 1}
    legs = detail["legs"]
    for channel in ("trades", "quotes", "depth"):
        for leg in ("a", "b"):
            assert legs[leg]["wins"][channel] > 0, (leg, channel, legs)
            assert legs[leg]["duplicates"][channel] > 0, (leg, channel, legs)
    published = detail["published"]["trades"]
    assert legs["a"]["wins"]["trades"] + legs["b"]["wins"]["trades"] == published
    drops = detail["drops"]
    assert drops["duplicate_trade"] == sum(legs[g]["duplicates"]["trades"] for g in "ab")
    trades_row = next(r for r in rows if r["stream"] == "trades")
    assert [leg["leg"] for leg in trades_row["legs"]] == ["a", "b"]
    assert sum(leg["connections"] for leg in trades_row["legs"]) == 2
    assert next(r for r in rows if r["stream"] == "events")["legs"] == []


def test_both_legs_down_at_once_is_a_gap(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    sim_args = ["--symbols", ",".join(SYMBOLS), "--rate", "2000", "--truth-log", str(truth_path)]
    keys = {"venue": "binance", "symbols": SYMBOLS, "redundancy": 2}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, SYMBOLS)
        wait_until(lambda: len(_sessions(sim)) == 2, 10, "both legs connected")
        sim.control(action="disconnect")
        wait_until(lambda: len(_connects(rings)) >= 4, 10, "both legs reconnected")
        events, detail, published = _finish(sim, rings, writer, truth_path, complete=False)
    gaps = [json.loads(e.detail) for e in events if e.kind == EventKind.GAP]
    feed_wide = [
        g
        for g, e in zip(gaps, [e for e in events if e.kind == EventKind.GAP], strict=True)
        if e.symbol_id == NO_SYMBOL
    ]
    assert [g["reason"] for g in feed_wide] == ["disconnect"], gaps
    assert feed_wide[0]["channels"] == ["quotes", "trades"]
    assert detail["resyncs"] >= len(SYMBOLS)
    assert sorted(detail["reconnects"].items()) == [("server_close", 2)]
    for ids in published.values():
        assert len(ids) == len(set(ids))
