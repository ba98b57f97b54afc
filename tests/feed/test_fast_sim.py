"""The writer against the fast simulator: every book syncs, and at the unlimited rate no gap.

The books sync at a paced rate first (as in the benchmark): at the unlimited rate the frames in
flight (socket buffers, several MB) hold more diffs per symbol, for a few symbols, than the
writer buffers while its snapshot is on the way, so it could not join before overflowing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from consolidator.records import EventKind

from .checks import check_depth_chain, checkpoint, kinds, trade_ids, wait_synced
from .helpers import Rings, running, wait_until

pytestmark = pytest.mark.integration

SYMBOLS = [f"S{i:04d}USDT" for i in range(1, 17)]


@pytest.mark.parametrize("venue", ["binance", "binance-usdm"])
def test_writer_syncs_every_book_with_no_gap(tmp_path: Path, venue: str) -> None:
    usdm = venue == "binance-usdm"
    sim_args = ["--mode", "fast", "--venue", venue, "--symbols", ",".join(SYMBOLS),
                "--rate", "5000", "--weight-limit", "1000000"]  # fmt: skip
    with running(tmp_path, sim_args, venue=venue, symbols=SYMBOLS) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, SYMBOLS, timeout=60)
        checkpoint(sim, rings, SYMBOLS)
        sim.control(action="rate", rate=0)  # unlimited
        wait_until(lambda: sim.stats()["fast"]["round"] >= 1, 60, "the cycle's end passed")
        time.sleep(0.5)
        checkpoint(sim, rings, SYMBOLS)
        sim.control(action="pause")
        code, _ = writer.stop()
        assert code == 0, writer.stderr()
        counted = kinds(rings)
        depth = rings.depth()
        trades = trade_ids(rings)
        quotes = rings.fixed("quotes")
    assert counted[EventKind.BOOK_SYNCED] == len(SYMBOLS)
    assert counted[EventKind.GAP] == 0
    assert counted[EventKind.RESYNC] == 0
    assert check_depth_chain(depth, usdm) == len(SYMBOLS)
    assert sorted(trades) == sorted(SYMBOLS)
    for symbol, ids in trades.items():
        assert np.all(np.diff(ids) == 1), f"{symbol}: trade ids not consecutive"
    for symbol_id in np.unique(quotes["symbol_id"]):
        ids = quotes["update_id"][quotes["symbol_id"] == symbol_id]
        assert np.all(np.diff(ids) > 0), "quote update ids not increasing"
