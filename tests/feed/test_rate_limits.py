"""REST request weight: the writer paces itself, and honours 429 Retry-After when pushed over."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from consolidator.records import EventKind

from .checks import wait_synced
from .helpers import Rings, Writer, http_status, running, wait_until

pytestmark = pytest.mark.integration


def _synced(rings: Rings) -> int:
    return Counter(rings.event_kinds())[EventKind.BOOK_SYNCED]


def _rest(sim: object) -> dict[str, int]:
    return sim.stats()["rest"]  # type: ignore[attr-defined, no-any-return]


def test_weight_budget_paces_snapshots(tmp_path: Path) -> None:
    """40 snapshots of weight 5 and a limit of 150 per minute: about 22 fit, no 429."""
    minute = int(time.time() // 60)
    fit = (135 - 21) // 5  # ping 1 + exchangeInfo 20 + 5 per snapshot within 90 % of 150
    sim_args = ["--symbols", "40", "--weight-limit", "150", "--rate", "400"]
    keys = {"venue": "binance", "symbols": "all", "channels": ["depth"], "snapshot_limit": 100}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_until(
            lambda: (rings.ready() and _synced(rings) >= fit) or int(time.time() // 60) != minute,
            60,
            "the books that fit in the budget synced",
        )
        time.sleep(1.5)  # a window in which a writer ignoring its budget would sync more
        synced = _synced(rings)
        rest = _rest(sim)
        same_window = int(time.time() // 60) == minute
        code, _ = writer.stop()
        events = rings.events()
    assert code == 0
    assert rest["429"] == 0
    assert rest["418"] == 0
    assert not [e for e in events if e.kind == EventKind.RATE_LIMITED]
    if same_window:
        assert synced == fit, synced


def test_restart_within_the_window_earns_no_429(tmp_path: Path) -> None:
    """A writer that used the window's budget stops; the next one takes over without a 429."""
    sim_args = ["--symbols", "150", "--rate", "300"]
    keys = {"venue": "binance", "symbols": "all", "channels": ["depth"]}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_until(lambda: rings.ready() and _synced(rings) >= 100, 60, "100 books synced")
        time.sleep(0.5)  # it goes on using the window's budget a little longer
        code, _ = writer.stop()
        assert code == 0
        used = _rest(sim)["requests"]
        second = Writer(feed)
        try:
            wait_until(
                lambda: Counter(rings.event_kinds())[EventKind.WRITER_START] == 2, 60, "restart"
            )
            time.sleep(2.0)  # a window for a 429 to show, were the budget not carried over
            rest = _rest(sim)
        finally:
            assert second.stop()[0] == 0
    assert used > 100
    assert rest["429"] == 0
    assert rest["418"] == 0


def _used_weight(rest_url: str, path: str) -> int:
    status, headers = http_status(rest_url + path)
    assert status == 200, (path, status)
    return int(headers["X-MBX-USED-WEIGHT-1M"])


def _fill_window(rest_url: str, limit: int) -> int:
    """Use the rest of the window's weight, exactly up to ``limit``; the weight used."""
    used = _used_weight(rest_url, "/api/v3/ping")
    for depth_limit, weight in ((5000, 250), (1000, 50), (500, 25), (100, 5)):
        while used + weight <= limit:
            used = _used_weight(rest_url, f"/api/v3/depth?symbol=BTCUSDT&limit={depth_limit}")
    while used < limit:
        used = _used_weight(rest_url, "/api/v3/ping")
    return used


def test_429_waits_retry_after_and_recovers(tmp_path: Path) -> None:
    """Another client on the same IP used the window; the writer's snapshot gets a 429, waits
    Retry-After (RATE_LIMITED event), then syncs: never a 418."""
    window = 8  # the fill, the drop and the snapshot's 429 all fall in one window, even slowly
    sim_args = ["--symbols", "4", "--weight-limit", "1000", "--weight-window", str(window)]
    keys = {"venue": "binance", "symbols": "all", "snapshot_limit": 100}
    with running(tmp_path, sim_args, **keys) as (sim, feed, writer):
        rings = Rings(feed)
        wait_synced(rings, ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ETHBTC"])
        wait_until(lambda: time.time() % window < 0.2, 60, "a fresh weight window")
        assert _fill_window(sim.rest_url, 1000) == 1000
        sim.control(action="fault", spec="drop-depth:BTCUSDT,count=1")
        wait_until(lambda: EventKind.RATE_LIMITED in rings.event_kinds(), 30, "RATE_LIMITED")
        limited_at = time.time()
        wait_until(lambda: _synced(rings) >= 5, window + 30, "BTCUSDT synced again")
        synced_at = time.time()
        rest = _rest(sim)
        code, _ = writer.stop()
        events = rings.events()
    assert code == 0
    assert rest["429"] == 1
    assert rest["418"] == 0
    limited = [json.loads(e.detail) for e in events if e.kind == EventKind.RATE_LIMITED]
    assert len(limited) == 1
    assert limited[0]["status"] == 429
    assert 1 <= limited[0]["retry_after_s"] <= window
    assert limited[0]["path"] == "/api/v3/depth"
    assert synced_at - limited_at >= limited[0]["retry_after_s"] - 1.0
    assert Counter(e.kind for e in events)[EventKind.RESYNC] == 1
