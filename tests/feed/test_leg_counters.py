"""The legs' counters: copied from the protocol's counts into the counters file, read back by
mdstat's model and exported as Prometheus metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consolidator.counters import read_counters
from consolidator.exporter import FeedCollector
from consolidator.feed.counters import LAG_WINDOW_S, Counters
from consolidator.status import LegStatus
from consolidator.streams import write_feed_meta
from consolidator.venues.base import LegCounts

CHANNELS = ("trades", "quotes", "depth")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = Path("/dev/shm") / f"legtest-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()


def test_leg_counts_reach_the_file_mdstat_and_the_exporter(shm_dir: Path) -> None:
    counters = Counters.create(shm_dir, "f1", "binance")
    legs = counters.enable_legs(2, CHANNELS)
    counts = LegCounts.zero(2, CHANNELS)
    counters.leg_moved(0, 1)
    counters.leg_moved(1, 1)
    counters.leg_moved(1, -1)
    legs.update(counts, 100.0)  # opens the first lag window
    # trades: a won 7 and lost 3 copies 2 ms late each; b won 3 and lost 7 copies, 1 ms late
    # each; quotes: only b, all won.
    counts.wins[0], counts.duplicates[0], counts.lag_ns[0] = 7, 3, 6_000_000
    counts.wins[3], counts.duplicates[3], counts.lag_ns[3] = 3, 7, 7_000_000
    counts.wins[4] = 5
    legs.update(counts, 100.0 + LAG_WINDOW_S / 2)
    snap = read_counters(shm_dir, "f1")
    assert snap is not None
    trades = {s.leg: s for s in LegStatus.of_stream(snap, "trades")}
    assert (trades["a"].connections, trades["a"].wins, trades["a"].duplicates) == (1, 7, 3)
    assert (trades["b"].connections, trades["b"].wins, trades["b"].duplicates) == (0, 3, 7)
    assert trades["a"].lag_s == trades["b"].lag_s == 0.0, "the window is not over yet"
    legs.update(counts, 100.0 + LAG_WINDOW_S)
    snap = read_counters(shm_dir, "f1")
    assert snap is not None
    trades = {s.leg: s for s in LegStatus.of_stream(snap, "trades")}
    assert trades["a"].lag_s == pytest.approx(0.0006)  # 6 ms over 10 copies
    assert trades["b"].lag_s == pytest.approx(0.0007)
    quotes = {s.leg: s for s in LegStatus.of_stream(snap, "quotes")}
    assert (quotes["a"].wins, quotes["b"].wins, quotes["b"].lag_s) == (0, 5, 0.0)
    assert LegStatus.of_stream(snap, "events") == []
    # A window without copies keeps the last lag.
    legs.update(counts, 100.0 + 3 * LAG_WINDOW_S)
    again = read_counters(shm_dir, "f1")
    assert again is not None
    assert again.value("consolidator_leg_lag_seconds", leg="a", channel="trades") == 600_000
    assert "legs a: 1 conns, 7 wins, 3 dups; b: 0 conns, 8 wins, 7 dups" in counters.status(0, 1)

    write_feed_meta(shm_dir, "f1", "binance")
    samples = {
        (s.name, s.labels.get("leg"), s.labels.get("channel")): s.value
        for family in FeedCollector(shm_dir).collect()
        for s in family.samples
        if s.name.startswith("consolidator_leg_")
    }
    assert samples[("consolidator_leg_wins_total", "a", "trades")] == 7
    assert samples[("consolidator_leg_duplicates_total", "b", "trades")] == 7
    assert samples[("consolidator_leg_lag_seconds", "b", "trades")] == pytest.approx(0.0007)
    assert samples[("consolidator_leg_connections", "a", None)] == 1
    counters.close()


def test_without_legs_nothing_is_allocated(shm_dir: Path) -> None:
    counters = Counters.create(shm_dir, "f1", "binance")
    counters.leg_moved(0, 1)
    snap = read_counters(shm_dir, "f1")
    assert snap is not None
    assert not [m for m in snap.metrics if m.name.startswith("consolidator_leg_")]
    assert LegStatus.of_stream(snap, "trades") == []
    counters.close()
