"""``mdtail --since``: the journal, then the live ring, with no gap and no duplicate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.feed.helpers import Feed, Writer, wait_until
from tests.pipeline import (
    Flusher,
    pause_delivered,
    pipeline,
    tails,
    wait_flusher_progress,
    wait_rings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _mdtail(feed: Feed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdtail"), feed.name, "--config-dir", str(feed.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ,
    )


@pytest.fixture(scope="module")
def history(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Feed, Path, dict[str, int]]]:
    """A feed with a journal that spans a writer restart and an orderly reboot."""
    tmp = tmp_path_factory.mktemp("since")
    truth = tmp / "truth.jsonl"
    with pipeline(tmp, "--symbols", "3", "--rate", "300", "--truth-log", str(truth)) as p:
        feed = p.feed
        wait_until(lambda: tails(feed)["trades"] > 60, 30, "trades")
        p.writer.proc.send_signal(signal.SIGKILL)  # a writer restart
        p.writer.proc.wait(10)
        p.writer = Writer(feed)
        floor = tails(feed)["trades"] + 60
        wait_until(lambda: tails(feed)["trades"] > floor, 30, "trades again")
        wait_flusher_progress(feed)  # the flusher is up (and handles SIGTERM)
        assert p.writer.stop()[0] == 0  # an orderly reboot: writer, flusher, shm wiped
        assert p.flusher.stop() == 0
        shutil.rmtree(feed.shm_dir)
        p.writer = Writer(feed)
        wait_rings(feed)
        p.flusher = Flusher(feed)
        floor = tails(feed)["trades"] + 60
        wait_until(lambda: tails(feed)["trades"] > floor, 30, "trades after reboot")
        pause_delivered(p)
        yield feed, truth, tails(feed)


def test_since_beginning_reads_journal_then_live_each_trade_once(
    history: tuple[Feed, Path, dict[str, int]],
) -> None:
    feed, truth_log, tails = history
    result = _mdtail(feed, "--since", "beginning", "--no-follow", "--format", "json",
                     "--stream", "trades")  # fmt: skip
    assert result.returncode == 0, result.stderr
    trades = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["seq"] for t in trades] == list(range(tails["trades"])), "no gap, no duplicate"
    truth = {
        (t["symbol"], t["trade_id"]): t for t in map(json.loads, truth_log.read_text().splitlines())
    }
    keys = [(t["symbol"], t["trade_id"]) for t in trades]
    assert len(set(keys)) == len(keys)
    for t in trades:
        made = truth[(t["symbol"], t["trade_id"])]
        assert Decimal(t["price"]) == Decimal(made["price"])
        assert Decimal(t["qty"]) == Decimal(made["qty"])
        assert t["side"] == made["side"]
        assert "e" not in t["price"]


def test_since_a_sequence_number_and_a_time(history: tuple[Feed, Path, dict[str, int]]) -> None:
    feed, _, tails = history
    middle = tails["trades"] // 2
    result = _mdtail(feed, "--since", str(middle), "--no-follow", "--format", "json",
                     "--stream", "trades")  # fmt: skip
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == list(
        range(middle, tails["trades"])
    )
    everything = [json.loads(line) for line in _mdtail(
        feed, "--since", "beginning", "--no-follow", "--format", "json", "--stream", "trades"
    ).stdout.splitlines()]  # fmt: skip
    pivot = everything[middle]["ts_commit"]
    iso = datetime.fromtimestamp(pivot // 10**9, UTC).isoformat()
    result = _mdtail(feed, "--since", iso, "--no-follow", "--format", "json", "--stream", "trades")
    got = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [t for t in everything if t["ts_commit"] >= (pivot // 10**9) * 10**9]
    assert [t["seq"] for t in got] == [t["seq"] for t in expected]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--since", "yesterday"], "expected 'beginning', a sequence number or an ISO-8601"),
        (["--since", "5"], "needs exactly one --stream"),
        (["--since", "beginning", "-n", "3"], "cannot be combined"),
    ],
)
def test_bad_since_is_one_line_exit_2(
    history: tuple[Feed, Path, dict[str, int]], args: list[str], match: str
) -> None:
    result = _mdtail(history[0], *args, "--no-follow")
    assert result.returncode == 2
    assert match in result.stderr
    assert len(result.stderr.splitlines()) == 1
