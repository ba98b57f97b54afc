"""Make-before-break rotation loses and duplicates nothing, against the simulator's truth log."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPOT = ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ETHBTC"]
USDM = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
ROTATIONS = 5


def _rotations(rings: Rings) -> int:
    return Counter(rings.event_kinds())[EventKind.ROTATION]


@pytest.mark.parametrize(
    ("scenario", "venue", "sim_extra", "feed_extra"),
    [
        # The writer rotates on its own, well before the venue's cut.
        ("age", "binance", ["--max-conn-age", "6"], {"rotate_after_s": 0.8}),
        # The same with redundant connections: each leg rotates on its own.
        ("age", "binance", ["--max-conn-age", "6"], {"rotate_after_s": 0.8, "redundancy": 2}),
        # The venue announces the cut (serverShutdown) 1.5 s ahead; the writer rotates at once.
        ("notice", "binance-usdm", ["--max-conn-age", "2.5", "--shutdown-notice", "1.5"], {}),
        # serverShutdown on demand (control action), with the cut 1 s later.
        ("control", "binance", [], {}),
    ],
)
def test_rotation_loses_and_duplicates_nothing(
    tmp_path: Path, scenario: str, venue: str, sim_extra: list[str], feed_extra: dict[str, Any]
) -> None:
    usdm = venue == "binance-usdm"
    symbols = USDM if usdm else SPOT
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
        *sim_extra,
    ]
    keys = {"venue": venue, "symbols": symbols, **feed_extra}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, symbols)
        if scenario == "control":
            for done in range(1, ROTATIONS + 1):
                sim.control(action="shutdown", close_after=1.0)
                wait_until(lambda: _rotations(rings) >= done, 30, f"rotation {done}")  # noqa: B023
        else:
            wait_until(lambda: _rotations(rings) >= ROTATIONS, 60, f"{ROTATIONS} rotations")
        wait_synced(rings, symbols)
        checkpoint(sim, rings, symbols)
        paused = sim.control(action="pause")
        last_key = "last_agg_id" if usdm else "last_trade_id"
        last = {s: paused["symbols"][s][last_key] for s in symbols}
        wait_until(
            lambda: all(trade_ids(rings)[s][-1:] == [last[s]] for s in symbols),
            30,
            "every trade up to the pause",
        )
        code, _ = writer.stop()
        assert code == 0, writer.stderr()
        published = trade_ids(rings)
        events = rings.events()
        depth = rings.depth()
        detail = stop_detail(rings)
    truth = truth_trades(truth_path, "agg_id" if usdm else "trade_id")
    counts = check_trades_complete(published, truth)
    assert all(n > 10 for n in counts.values()), counts
    kinds = Counter(e.kind for e in events)
    assert kinds[EventKind.ROTATION] >= ROTATIONS
    assert kinds[EventKind.GAP] == 0, [e.detail for e in events if e.kind == EventKind.GAP]
    assert kinds[EventKind.RESYNC] == 0
    rotations = [json.loads(e.detail) for e in events if e.kind == EventKind.ROTATION]
    assert all(r["ready"] and not r["old_closed_first"] for r in rotations), rotations
    if scenario != "age":
        assert kinds[EventKind.SERVER_SHUTDOWN] >= ROTATIONS
        assert all(r["reason"] == "server_shutdown" for r in rotations)
    check_depth_chain(depth, usdm)
    assert detail["reconnects"] == {}
    assert "Traceback" not in writer.stderr()
