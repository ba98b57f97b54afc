"""mdstat's numbers checked against known traffic: the simulator's own counters, the events ring,
and readers whose positions the test controls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consolidator.records import EventKind
from consolidator.ring.registry import register_reader
from consolidator.streams import open_stream_reader
from tests.feed.helpers import Feed, Rings, wait_until
from tests.pipeline import Pipeline, pause_delivered, pipeline, tails

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _mdstat(feed: Feed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdstat"), feed.name, "--config-dir", str(feed.root), *args],
        capture_output=True, text=True, timeout=60, check=False, env=os.environ,
    )  # fmt: skip


def _rows(feed: Feed, *args: str) -> dict[str, dict[str, Any]]:
    result = _mdstat(feed, "--format", "json", *args)
    assert result.returncode in (0, 1), result.stderr
    return {r["stream"]: r for r in map(json.loads, result.stdout.splitlines())}


def _sent(p: Pipeline) -> Counter[str]:
    """Frames the simulator delivered, per stream type, over every symbol."""
    total: Counter[str] = Counter()
    for symbol in p.sim.stats()["symbols"].values():
        total.update(symbol["sent"])
    return total


def _quiet(p: Pipeline) -> dict[str, int]:
    """Pause the simulator; the ring tails once everything sent has been published."""
    pause_delivered(p)
    return tails(p.feed)


def _events_since_start(p: Pipeline) -> Counter[EventKind]:
    kinds = Rings(p.feed).event_kinds()
    starts = [i for i, k in enumerate(kinds) if k == EventKind.WRITER_START]
    return Counter(kinds[starts[-1] :])


def test_mdstat_agrees_with_the_simulator_and_the_events_ring(tmp_path: Path) -> None:
    with pipeline(tmp_path, "--symbols", "3", "--rate", "600") as p:
        feed = p.feed
        wait_until(lambda: tails(feed)["trades"] > 200, 60, "trades")

        # Sequence and record counts: every trade and quote the simulator delivered, no more.
        at = _quiet(p)
        sent = _sent(p)
        rows = _rows(feed)
        assert rows["trades"]["seq"] == at["trades"] == sent["trade"]
        assert rows["quotes"]["seq"] == at["quotes"] == sent["bookTicker"]
        assert rows["depth"]["seq"] == at["depth"]
        assert all(rows[s]["rate_per_s"] == 0 for s in ("trades", "quotes", "depth"))
        kinds = _events_since_start(p)
        assert (rows["trades"]["gaps"], rows["trades"]["resyncs"]) == (0, 0)
        assert kinds[EventKind.GAP] == kinds[EventKind.RESYNC] == 0
        assert rows["trades"]["connections_up"] == kinds[EventKind.CONNECT] >= 1

        # Rate: mdstat's per-interval rates against the tails the test samples around them.
        p.sim.control(action="resume")
        wait_until(lambda: tails(feed)["trades"] > at["trades"] + 100, 30, "trades again")
        before, t0 = tails(feed), time.monotonic()
        result = _mdstat(feed, "--format", "json", "--interval", "1", "--count", "4")
        after, t1 = tails(feed), time.monotonic()
        reports = [json.loads(line) for line in result.stdout.splitlines()]
        for stream in ("trades", "quotes"):
            truth = (after[stream] - before[stream]) / (t1 - t0)
            measured = [r["rate_per_s"] for r in reports if r["stream"] == stream]
            assert len(measured) == 4
            mean = sum(measured) / len(measured)
            assert abs(mean - truth) <= 0.25 * truth, (stream, measured, truth)

        # An injected fault: one dropped depth diff is a gap and a resync, counted once each.
        p.sim.control(action="fault", spec="drop-depth,count=1")
        wait_until(lambda: _rows(feed)["depth"]["resyncs"] >= 1, 60, "the resync")
        _quiet(p)
        rows = _rows(feed)
        kinds = _events_since_start(p)
        assert rows["depth"]["gaps"] == kinds[EventKind.GAP] >= 1
        assert rows["depth"]["resyncs"] == kinds[EventKind.RESYNC] >= 1
        assert rows["trades"]["gaps"] == rows["depth"]["gaps"], "feed-wide counters"

        # A disconnect on the venue side: one reconnect per connection, all connected again.
        connections = rows["trades"]["connections_up"]
        p.sim.control(action="resume")
        p.sim.control(action="disconnect")
        wait_until(
            lambda: (r := _rows(feed)["trades"])["reconnects"] == connections
            and r["connections_up"] == connections,
            60,
            "reconnected",
        )
        kinds = _events_since_start(p)
        assert kinds[EventKind.DISCONNECT] == connections

        # Readers: a registered reader deliberately 50 trades behind is the slowest one.
        at = _quiet(p)
        wait_until(
            lambda: _rows(feed)["trades"]["slowest_reader_lag"] == 0, 30, "the flusher caught up"
        )
        rows = _rows(feed)
        assert rows["trades"]["slowest_reader"] == "flusher"
        assert rows["trades"]["slowest_reader_pid"] == p.flusher.proc.pid
        assert all(rows[s]["readers"] == 1 for s in rows), "the flusher reads every stream"
        reader = open_stream_reader(feed.shm_dir, feed.name, "trades", start=at["trades"] - 50)
        slot = register_reader(feed.shm_dir, feed.name, "trades", "laggard")
        assert slot is not None
        with reader, slot:
            batch = reader.read_batch(10)
            slot.update(reader.position, reader.lost)
            assert len(batch) == 10
            rows = _rows(feed)
            trades = rows["trades"]
            assert (trades["slowest_reader"], trades["slowest_reader_pid"]) == (
                "laggard",
                os.getpid(),
            )
            assert trades["slowest_reader_lag"] == 40 == trades["seq"] - reader.position
            assert trades["readers"] == 2
            csv = _mdstat(feed, "--format", "csv").stdout.splitlines()
            header = csv[0].split(",")
            line = dict(
                zip(header, next(c for c in csv if ",trades," in c).split(","), strict=True)
            )
            assert (line["slowest_reader"], line["slowest_reader_lag"]) == ("laggard", "40")
            text = _mdstat(feed).stdout
            assert f"laggard/{os.getpid()}" in text
        assert _rows(feed)["trades"]["slowest_reader"] == "flusher", "the laggard left"


def test_a_blocked_mdtail_falls_behind_and_mdstat_says_by_how_much(tmp_path: Path) -> None:
    """mdtail writing into a pipe nobody reads stops reading the ring: its lag grows."""
    with pipeline(tmp_path, "--symbols", "3", "--rate", "600") as p:
        feed = p.feed
        wait_until(lambda: tails(feed)["trades"] > 50, 60, "trades")
        stuck = subprocess.Popen(
            [str(BIN / "mdtail"), feed.name, "--config-dir", str(feed.root), "--format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:

            def behind() -> bool:
                trades = _rows(feed)["trades"]
                return trades["slowest_reader"] == "mdtail" and trades["slowest_reader_lag"] > 500

            wait_until(behind, 60, "mdtail to fall behind")
            _quiet(p)
            wait_until(lambda: _rows(feed)["depth"]["slowest_reader"] == "mdtail", 30, "flusher")
            rows = _rows(feed)
            for stream in ("trades", "quotes", "depth"):
                row = rows[stream]
                assert (row["slowest_reader"], row["slowest_reader_pid"]) == ("mdtail", stuck.pid)
                (entry,) = [r for r in row["reader_list"] if r["name"] == "mdtail"]
                assert entry["position"] + entry["lag"] == row["seq"]
                assert entry["lag"] == row["slowest_reader_lag"] > 0
            stuck.send_signal(signal.SIGKILL)
            stuck.wait(10)
            rows = _rows(feed)
            assert rows["trades"]["dead_readers"] == 1
            assert rows["trades"]["slowest_reader"] == "flusher", "the dead are not the slowest"
        finally:
            if stuck.poll() is None:
                stuck.kill()
            stuck.communicate()
