"""mdcompare on the simulator over loopback, with the real writer and its rings."""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consolidator.process import stop_process
from consolidator.records import TRADE_DTYPE
from consolidator.ring.layout import HEADER_SIZE
from consolidator.ring.registry import list_readers
from consolidator.streams import ring_path
from tests.compare.rig import SYMBOLS, clean, compare, rig
from tests.feed.helpers import REPO, wait_until

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DESIGN_FIELDS = {"feed", "venue", "started_ns", "ended_ns", "overlap_ns", "streams", "latency_us",
                 "reference_gaps"}  # fmt: skip
STREAM_FIELDS = {"reference", "ring", "matched", "missing", "extra", "mismatched", "duplicates",
                 "missing_ids", "extra_ids", "mismatched_ids"}  # fmt: skip
Q_FIELDS = {"n", "p50", "p90", "p99", "p999", "max"}


def test_a_clean_run_matches_every_record_and_writes_the_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with rig(tmp_path) as r, compare(r.feed, out=out) as mdcompare:
        wait_until(lambda: r.sessions() == 2, 30, "the reference connection")
        r.wait_trades_past(max(r.trade_ids()) + 40)
        code, report, stderr = mdcompare.finish()
    assert code == 0, stderr
    assert set(report) >= DESIGN_FIELDS
    assert (report["feed"], report["venue"], report["ok"]) == ("f1", "binance", True)
    assert set(report["streams"]) == {"trades", "quotes", "depth"}
    for name, stream in report["streams"].items():
        assert set(stream) >= STREAM_FIELDS
        assert clean(stream), (name, stream)
        assert stream["matched"] > 0, name
        assert stream["reference"] == stream["ring"] == stream["matched"], name
    assert set(report["latency_us"]) == {"ring_minus_reference", "exchange_to_ring",
                                         "exchange_to_reference", "receive_to_commit"}  # fmt: skip
    for q in report["latency_us"].values():
        assert set(q) == Q_FIELDS
        assert q["n"] > 0
    assert report["reference_gaps"] == []
    pngs = ["latency_hist.png", "latency_cdf.png", "offset_timeseries.png",
            "missing_per_second.png", *(f"price_overlay-{s}.png" for s in SYMBOLS)]  # fmt: skip
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert data[12:16] == b"IHDR", name
        width, height = struct.unpack(">II", data[16:24])
        assert min(width, height) > 100, name
    for name in ("pairs-BTCUSDT.csv", "pairs-ETHUSDT.csv", "missing.csv", "extra.csv"):
        assert (out / name).read_text().startswith(("stream,", "stream,symbol")), name
    assert (out / "report.json").exists()


def test_records_dropped_on_the_writers_connection_are_named(tmp_path: Path) -> None:
    with rig(tmp_path) as r, compare(r.feed) as mdcompare:
        wait_until(lambda: r.sessions() == 2, 30, "the reference connection")
        counters = r.sim.control(action="pause")["symbols"]["BTCUSDT"]
        ids = {"trade": counters["last_trade_id"] + 3, "quote": counters["update_id"] + 3,
               "diff": counters["update_id"] + 3}  # fmt: skip
        for kind, first in ids.items():  # connection 1 is the writer's, 2 the reference's
            r.sim.control(action="fault", spec=f"drop-{kind}:BTCUSDT,id={first},conn=1")
        r.sim.control(action="resume")
        wait_until(lambda: len(r.sim.stats()["faults"]["dropped"]) == 3, 30, "the drops")
        dropped = {d["kind"]: d["id"] for d in r.sim.stats()["faults"]["dropped"]}
        wait_until(lambda: max(r.snapshots()) >= dropped["drop-diff"], 30, "the resync")
        r.wait_trades_past(dropped["drop-trade"] + 20)
        code, report, stderr = mdcompare.finish()
    assert code == 1, stderr
    assert not report["ok"]
    streams = report["streams"]
    assert streams["trades"]["missing_ids"] == [["BTCUSDT", dropped["drop-trade"]]]
    assert streams["quotes"]["missing_ids"] == [["BTCUSDT", dropped["drop-quote"]]]
    assert streams["depth"]["missing_ids"] == [["BTCUSDT", dropped["drop-diff"]]]
    for name, stream in streams.items():
        assert stream["missing"] == 1, name
        assert (stream["extra"], stream["mismatched"], stream["duplicates"]) == (0, 0, 0), name
        assert stream["matched"] > 0, name
    assert report["reference_gaps"] == []


def _rewrite_trade(ring: Path, trade_id: int) -> None:
    """Add one to the price mantissa of the ring's trade ``trade_id`` (a test tool)."""
    fd = os.open(ring, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    with mm:
        size = TRADE_DTYPE.itemsize
        price_at = TRADE_DTYPE.fields["price_m"][1]  # type: ignore[index]
        id_at = TRADE_DTYPE.fields["trade_id"][1]  # type: ignore[index]
        for offset in range(HEADER_SIZE, len(mm) - size + 1, size):
            if struct.unpack_from("<Q", mm, offset + id_at)[0] == trade_id:
                (price,) = struct.unpack_from("<q", mm, offset + price_at)
                struct.pack_into("<q", mm, offset + price_at, price + 1)
                return
    raise AssertionError(f"trade {trade_id} not in {ring}")


def test_a_value_changed_in_the_ring_is_mismatched(tmp_path: Path) -> None:
    with rig(tmp_path) as r, compare(r.feed) as mdcompare:
        wait_until(lambda: r.sessions() == 2, 30, "the reference connection")
        target = r.sim.control(action="pause")["symbols"]["BTCUSDT"]["last_trade_id"] + 2
        # The comparator is frozen while the writer publishes the trade and the tool rewrites
        # it, so it reads the changed record (its reference frames wait in the socket).
        mdcompare.proc.send_signal(signal.SIGSTOP)
        try:
            r.sim.control(action="resume")
            r.wait_trades_past(target)
            _rewrite_trade(ring_path(r.feed.shm_dir, r.feed.name, "trades"), target)
        finally:
            mdcompare.proc.send_signal(signal.SIGCONT)
        r.wait_trades_past(target + 20)
        code, report, stderr = mdcompare.finish()
    assert code == 1, stderr
    trades = report["streams"]["trades"]
    assert trades["mismatched_ids"] == [["BTCUSDT", target]]
    (diff,) = trades["mismatches"]
    assert set(diff["fields"]) == {"price"}
    assert (trades["missing"], trades["extra"], trades["duplicates"]) == (0, 0, 0)
    assert clean(report["streams"]["quotes"])
    assert clean(report["streams"]["depth"])


def test_a_reference_disconnect_is_the_references_gap(tmp_path: Path) -> None:
    with rig(tmp_path) as r, compare(r.feed) as mdcompare:
        wait_until(lambda: r.sessions() == 2, 30, "the reference connection")
        r.sim.control(action="fault", spec="reset,conn=2")  # the reference's connection
        wait_until(lambda: r.sim.stats()["connections"]["total"] >= 3, 30, "the reconnect")
        wait_until(lambda: r.sessions() == 2, 30, "the reference connection again")
        r.wait_trades_past(max(r.trade_ids()) + 30)
        code, report, stderr = mdcompare.finish()
    assert code == 0, (stderr, report["streams"])
    (gap,) = report["reference_gaps"]
    assert gap["kind"] == "disconnect"
    assert gap["to_ns"] > gap["from_ns"]
    for name, stream in report["streams"].items():
        assert clean(stream), (name, stream)
        assert stream["matched"] > 0, name


def test_two_captures_of_one_venue_match_live_and_in_their_journals(tmp_path: Path) -> None:
    from tests.feed.helpers import Feed, Writer

    with rig(tmp_path) as r:
        second = Feed(r.feed.root, name="f2", shm_dir=r.feed.shm_dir)
        second.write(venue="binance", symbols=["BTCUSDT", "ETHUSDT"], ws_url=r.sim.ws_url,
                     rest_url=r.sim.rest_url)  # fmt: skip
        writer = Writer(second)
        flusher = subprocess.Popen(
            [sys.executable, "-m", "consolidator.cli.main", "flusher", "--config-dir",
             str(r.feed.root)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: r.sessions() == 2, 30, "the second writer")
            since = datetime.now(UTC).isoformat()
            with compare(r.feed, "--against", "f2") as mdcompare:
                names = lambda: {e.name for e in list_readers(r.feed.shm_dir, "f1")}  # noqa: E731
                wait_until(lambda: "mdcompare" in names(), 30, "mdcompare")
                r.wait_trades_past(max(r.trade_ids()) + 40)
                code, report, stderr = mdcompare.finish()
            until = datetime.now(UTC).isoformat()
            journal = r.feed.root / "state" / "journal"
            wait_until(lambda: (journal / "f2" / "trades").is_dir(), 30, "the journals")
            time.sleep(1.0)  # the flusher's last fsync (every 100 ms) is behind us
            args = ["--against", "f2", "--journal", "--since", since, "--until", until]
            with compare(r.feed, *args) as past:
                past_code, past_report, past_stderr = past.finish(interrupt=False)
        finally:
            writer.stop()
            stop_process(flusher)
    assert code == 0, (stderr, report["streams"])
    assert report["against"] == "f2"
    assert report["reference"] is None
    for name in ("trades", "quotes"):
        assert report["streams"][name]["matched"] > 0, name
        assert clean(report["streams"][name]), name
    assert past_code == 0, (past_stderr, past_report["streams"])
    for name, stream in past_report["streams"].items():
        assert stream["matched"] > 0, name
        assert clean(stream), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "no such feed configuration"),
        (["f1", "--grace", "x"], "--grace"),
        (["f1", "--duration", "-1"], "--duration"),
        (["f1", "--journal"], "--against"),
        (["f1", "--against", "f1"], "same feed"),
        (["f1", "--symbol", "ETHUSDT"], "does not carry it"),
        (["f1", "--symbol", "NOSUCH", "--stream", "trades", "--ws-url", "http://x"], "--ws-url"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "f1.toml").write_text('venue = "binance"\nsymbols = ["BTCUSDT"]\n')
    (tmp_path / "consolidator.toml").write_text(f'shm_dir = "{tmp_path / "shm"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "consolidator.cli.mdcompare", *args, "--config-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # argparse's usage, then one error line
    assert last.startswith("mdcompare: error:")
    assert message in last
    assert "Traceback" not in proc.stderr


def test_unknown_feed_rings_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "f1.toml").write_text('venue = "binance"\nsymbols = ["BTCUSDT"]\n')
    (tmp_path / "consolidator.toml").write_text(f'shm_dir = "{tmp_path / "shm"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "consolidator.cli.mdcompare", "f1", "--config-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"mdcompare: error: no feed 'f1' under {tmp_path / 'shm'} "
        "(is its writer running?)"
    )


def test_help_and_version() -> None:
    from consolidator import __version__

    base = [sys.executable, "-m", "consolidator.cli.mdcompare"]
    helped = subprocess.run(
        [*base, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0
    for option in ("--against", "--journal", "--grace", "--out", "--ws-url"):
        assert option in helped.stdout
    version = subprocess.run(
        [*base, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.stdout == f"mdcompare {__version__}\n"
