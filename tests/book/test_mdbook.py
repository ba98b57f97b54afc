"""``mdbook FEED SYMBOL``: the simulator's own book, live through the writer's rings; the invalid
state when there is no snapshot or after a gap; usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from consolidator.book.book import SyncRule
from consolidator.book.live import LiveBook
from consolidator.cli.mdbook import main as mdbook_main
from consolidator.payloads import Depth
from consolidator.records import EventKind
from tests.export.helpers import RingFeed, level
from tests.feed.helpers import REPO, Feed, Rings, running, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _mdbook(feed: Feed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdbook"), feed.name, *args, "--config-dir", str(feed.root)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip


def _plain(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def test_mdbook_shows_the_simulators_book(tmp_path: Path) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    with running(tmp_path, ["--symbols", ",".join(symbols), "--rate", "400"],
                 venue="binance", symbols=symbols) as (sim, feed, writer):  # fmt: skip
        rings = Rings(feed)
        wait_until(
            lambda: rings.ready()
            and Counter(rings.event_kinds())[EventKind.BOOK_SYNCED] >= len(symbols),
            30,
            f"books synced ({writer.stderr()})",
        )
        wait_until(lambda: len(rings.depth()) > 20, 30, "depth updates")
        sim.control(action="pause")  # the simulator sends its pending diffs, then stops
        truth = sim.book("BTCUSDT")
        sid = {v: k for k, v in rings.names().items()}["BTCUSDT"]
        live = LiveBook(feed.shm_dir, feed.name, sid, SyncRule.SPOT, trades=0)
        try:

            def caught_up() -> bool:
                live.poll()
                return live.valid and live.book.last_update_id == truth["lastUpdateId"]

            wait_until(caught_up, 20, "the writer to publish the simulator's last diff")
        finally:
            live.close()
        shown = _mdbook(feed, "BTCUSDT", "--once", "--format", "json", "--depth", "20")
        text = _mdbook(feed, "BTCUSDT", "--once", "--depth", "5")
    assert shown.returncode == 0, shown.stderr
    obj: dict[str, Any] = json.loads(shown.stdout)
    assert obj["valid"] is True
    assert obj["gap"] is False
    assert obj["last_update_id"] == truth["lastUpdateId"]
    for i, (price, qty) in enumerate(truth["bids"][:20], start=1):
        assert (obj[f"bid_px_{i:02d}"], obj[f"bid_sz_{i:02d}"]) == (_plain(price), _plain(qty))
    for i, (price, qty) in enumerate(truth["asks"][:20], start=1):
        assert (obj[f"ask_px_{i:02d}"], obj[f"ask_sz_{i:02d}"]) == (_plain(price), _plain(qty))
    best_bid, best_ask = Fraction(truth["bids"][0][0]), Fraction(truth["asks"][0][0])
    assert obj["midprice"] == float((best_bid + best_ask) / 2)  # exact, then rounded once
    assert obj["trades"], "the last trades"
    assert text.returncode == 0, text.stderr
    assert f"last update {truth['lastUpdateId']}" in text.stdout
    assert _plain(truth["bids"][0][0]) in text.stdout
    assert "book invalid" not in text.stdout


@pytest.fixture
def ring_feed(tmp_path: Path) -> Iterator[tuple[Feed, RingFeed]]:
    feed = Feed(tmp_path)
    rings = RingFeed(feed, "binance", ["AAA"])
    try:
        yield feed, rings
    finally:
        rings.close()
        feed.remove()


def _run(capsys: pytest.CaptureFixture[str], feed: Feed, *args: str) -> tuple[int, str, str]:
    """mdbook in this process (the same code as the command; a process costs a second)."""
    try:
        code = mdbook_main([feed.name, *args, "--config-dir", str(feed.root)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _diff(uid: int, bid: str) -> Depth:
    return Depth(uid * 1000, uid * 1000, 0, uid, uid, None, [level(bid, "1")], [])


def test_mdbook_says_invalid_without_a_snapshot_and_after_a_gap(
    ring_feed: tuple[Feed, RingFeed], capsys: pytest.CaptureFixture[str]
) -> None:
    feed, rings = ring_feed
    rings.depth(1, _diff(5, "10"))  # diffs, but the symbol's snapshot is not in the ring
    code, out, _ = _run(capsys, feed, "AAA", "--once")
    assert code == 0
    assert "book invalid: waiting for snapshot" in out
    obj = json.loads(_run(capsys, feed, "AAA", "--once", "--format", "json")[1])
    assert (obj["valid"], obj["gap"], obj["bid_px_01"]) == (False, True, None)
    rings.depth(2, Depth(0, 0, 0, 5, 5, None, [level("9", "2")], [level("11", "1")], True))
    rings.depth(3, _diff(6, "9.5"))
    obj = json.loads(_run(capsys, feed, "AAA", "--once", "--format", "json")[1])
    assert (obj["valid"], obj["bid_px_01"], obj["bid_sz_01"]) == (True, "9.5", "1")
    rings.event(4, EventKind.GAP, "AAA")
    _, out, _ = _run(capsys, feed, "AAA", "--once")
    assert "book invalid" in out
    assert "waiting for snapshot" in out
    assert "9.5" not in out  # an invalid book shows no levels


def test_mdbook_usage_errors(
    ring_feed: tuple[Feed, RingFeed], capsys: pytest.CaptureFixture[str]
) -> None:
    feed, _ = ring_feed
    for args, message in (
        (["NOPE"], "mdbook: error: symbol 'NOPE' has never been seen"),
        (["AAA", "--depth", "0"], "mdbook: error: --depth must be 1..99"),
    ):
        code, _, err = _run(capsys, feed, *args)
        assert code == 2
        assert message in err.splitlines()[-1]
        assert "Traceback" not in err
    code, _, err = _run(capsys, Feed(feed.root, name="nofeed", shm_dir=feed.shm_dir), "AAA")
    assert code == 2
    assert err.startswith("mdbook: error: no feed 'nofeed'")
