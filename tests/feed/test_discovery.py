"""``symbols = "all"``: TRADING symbols from exchangeInfo, listings and delistings followed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from consolidator.records import EventKind

from .checks import trade_ids, wait_synced
from .helpers import Rings, running, wait_until

pytestmark = pytest.mark.integration


def test_listings_are_subscribed_and_delistings_dropped(tmp_path: Path) -> None:
    sim_args = ["--symbols", "BTCUSDT,ETHUSDT", "--rate", "1500"]
    keys = {"venue": "binance", "symbols": "all", "rediscover_s": 0.5}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, ["BTCUSDT", "ETHUSDT"])
        # Delisting first: one rediscovery or two, the unsubscribe comes before the subscribe.
        sim.control(action="delist", symbol="ETHUSDT")
        sim.control(action="list", symbol="XRPUSDT")
        wait_synced(rings, ["BTCUSDT", "XRPUSDT"])
        wait_until(lambda: "XRPUSDT" in trade_ids(rings), 30, "XRPUSDT trades")
        wait_until(
            lambda: EventKind.SYMBOL_REMOVED in rings.event_kinds(), 30, "ETHUSDT to be dropped"
        )
        removed_at = len(rings.fixed("trades"))
        # A while of trades after the removal (none of them ETHUSDT's).
        wait_until(lambda: len(rings.fixed("trades")) >= removed_at + 200, 60, "more trades")
        names = rings.names()
        late = rings.fixed("trades")[removed_at:]
        events = rings.events()
        code, _ = writer.stop()
        wait_until(lambda: sim.stats()["connections"]["open"] == 0, 30, "the sim to see it go")
        stats = sim.stats()
    assert code == 0
    assert not any(names[s] == "ETHUSDT" for s in late["symbol_id"].tolist())
    added = [names[e.symbol_id] for e in events if e.kind == EventKind.SYMBOL_ADDED]
    removed = [names[e.symbol_id] for e in events if e.kind == EventKind.SYMBOL_REMOVED]
    assert added == ["XRPUSDT"]
    assert removed == ["ETHUSDT"]
    assert Counter(e.kind for e in events)[EventKind.CONNECT] == 1
    subscribes = [json.loads(e.detail) for e in events if e.kind == EventKind.SUBSCRIBE]
    assert [s["method"] for s in subscribes] == ["subscribe", "unsubscribe", "subscribe"]
    assert all(s["ok"] for s in subscribes)
    assert stats["connections"]["open"] == 0
