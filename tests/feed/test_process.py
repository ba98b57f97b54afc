"""``consolidator run FEED`` as a process: signals, exit codes, one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from consolidator.records import EventKind
from consolidator.ring.layout import WriterState

from .helpers import REPO, Feed, Rings, Writer, running, wait_until

pytestmark = pytest.mark.integration


def _run(feed: Feed, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "consolidator.cli.main",
            "run",
            *extra,
            "--config-dir",
            str(feed.root),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )


def test_sigterm_exits_0_within_2_s_with_writer_stop(tmp_path: Path) -> None:
    with running(
        tmp_path, ["--symbols", "4", "--rate", "5000"], venue="binance", symbols="all"
    ) as (
        _,
        feed,
        writer,
    ):
        rings = Rings(feed)
        wait_until(lambda: rings.ready() and len(rings.fixed("trades")) > 100, 30, "trades")
        code, took = writer.stop()
        assert code == 0, writer.stderr()
        assert took < 2.0
        events = rings.events()
        reader_state = rings.fixed("trades")  # still readable after the writer is gone
        from consolidator.streams import open_stream_reader

        with open_stream_reader(feed.shm_dir, feed.name, "trades") as reader:
            assert reader.writer_info().state == WriterState.STOPPED
    assert len(reader_state) > 100
    assert events[0].kind == EventKind.WRITER_START
    assert events[-1].kind == EventKind.WRITER_STOP
    detail = json.loads(events[-1].detail)
    assert detail["exit_code"] == 0
    assert detail["published"]["trades"] == len(reader_state)
    stderr = writer.stderr()
    assert "Traceback" not in stderr
    assert "stopped;" in stderr


def test_sigterm_while_the_venue_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    feed = Feed(tmp_path)
    feed.write(
        venue="binance-usdm",
        symbols=["BTCUSDT"],
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
    )
    writer = Writer(feed)
    try:
        rings = Rings(feed)
        wait_until(
            lambda: rings.ready() and Counter(rings.event_kinds())[EventKind.DISCONNECT] >= 2,
            30,
            "failed connection attempts",
        )
        assert writer.alive()
        code, took = writer.stop()
        assert code == 0
        assert took < 2.0
        kinds = rings.event_kinds()
        assert kinds[-1] == EventKind.WRITER_STOP
        assert EventKind.CONNECT not in kinds
    finally:
        writer.stop()
        feed.remove()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('venue = "binance"\nsymbols = ["BTCUSDT"]\nbogus = 1\n', "bogus: unknown key"),
        ('venue = "deribit"\nsymbols = ["BTC-PERPETUAL"]\n', "venue: the writer does not support"),
        ('venue = "binance"\nsymbols = ["BTCUSDT"]\nsnapshot_limit = 7000\n', "snapshot_limit"),
        ('venue = "binance"\nsymbols = ["BTCUSDT"]\ntrade_stream = "x"\n', "trade_stream"),
        ('venue = "binance"\nsymbols = ["BTCUSDT"]\ncompression = true\n', "compression: "),
        ('venue = "binance"\nsymbols = ["BTCUSDT"]\ndepth_speed = "250ms"\n', "depth_speed: "),
        (
            'venue = "binance"\nsymbols = ["BTCUSDT"]\nredundancy = 3\n',
            "redundancy: expected 1 or 2",
        ),
        (
            'venue = "binance"\nsymbols = ["BTCUSDT"]\nredundancy = 2\nws_url_b = "x"\n',
            "ws_url_b: expected a ws:// or wss:// URL",
        ),
        ("venue = \n", "not valid TOML"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, toml: str, message: str) -> None:
    feed = Feed(tmp_path)
    (feed.root / "feeds" / "f1.toml").write_text(toml)
    result = _run(feed, "f1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("consolidator: error: ")
    assert message in lines[0]
    assert not feed.shm_dir.exists()


def test_unknown_feed_exits_2(tmp_path: Path) -> None:
    result = _run(Feed(tmp_path), "nosuchfeed")
    assert result.returncode == 2
    assert "no such feed configuration" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_second_writer_for_a_feed_exits_1(tmp_path: Path) -> None:
    with running(tmp_path, ["--symbols", "2"], venue="binance", symbols="all") as (_, feed, w):
        rings = Rings(feed)
        wait_until(rings.ready, 30, "rings")  # created after the symbol table's lock is taken
        result = _run(feed, feed.name)
        assert w.alive()
    assert result.returncode == 1
    assert "another writer holds" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
