"""mdstat on the real pipeline: simulator -> writer -> flusher, and as a health check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.feed.helpers import Feed, wait_until
from tests.pipeline import fsyncs, pipeline, tails

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _mdstat(feed: Feed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdstat"), "--config-dir", str(feed.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ,
    )


def test_mdstat_numbers_and_health_on_a_live_pipeline(tmp_path: Path) -> None:
    with pipeline(tmp_path, "--symbols", "3", "--rate", "400") as p:
        feed = p.feed
        wait_until(lambda: tails(feed)["trades"] > 100, 30, "trades")
        wait_until(lambda: fsyncs(feed) > 0, 60, "the flusher to journal trades")
        result = _mdstat(feed, feed.name, "--format", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = {r["stream"]: r for r in map(json.loads, result.stdout.splitlines())}
        assert set(rows) == {"trades", "quotes", "depth", "raw", "events"}
        trades = rows["trades"]
        assert trades["writer"] == "alive"
        assert trades["pid"] == p.writer.proc.pid
        assert trades["connections_up"] == 1
        assert trades["gaps"] == 0
        assert trades["rate_per_s"] > 0
        assert trades["seq"] >= 100
        assert trades["reach_s"] is not None
        assert trades["reach_s"] >= trades["last_publish_age_s"]
        assert trades["durable_lag_s"] is not None
        assert trades["durable_lag_s"] < 5
        # A disconnect on the venue side shows up in the counters.
        p.sim.control(action="disconnect")
        wait_until(
            lambda: json.loads(_mdstat(feed, feed.name, "--format", "json").stdout.splitlines()[0])[
                "reconnects"
            ]
            >= 1,
            30,
            "reconnect counted",
        )
        csv_out = _mdstat(feed, "--format", "csv", "--interval", "0.3", "--count", "2")
        lines = csv_out.stdout.splitlines()
        assert lines[0].startswith("feed,stream,writer,pid")
        assert len(lines) == 1 + 2 * 5, "a header, then one line per stream per interval"
        # A dead writer: exit 1.
        p.writer.proc.send_signal(signal.SIGKILL)
        p.writer.proc.wait(10)
        wait_until(lambda: _mdstat(feed, feed.name).returncode == 1, 30, "unhealthy")
        out = _mdstat(feed, feed.name, "--format", "json").stdout
        assert all(json.loads(line)["writer"] != "alive" for line in out.splitlines())


def test_mdstat_unknown_feed_is_exit_2(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    result = _mdstat(feed, "nope")
    assert result.returncode == 2
    assert "no feed 'nope'" in result.stderr
