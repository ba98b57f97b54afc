"""``consolidator export`` of feeds written straight into rings (known content, chosen times):
gap rows where the feed had gaps, an interrupted export, one-line usage errors."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consolidator.cli.main import main
from consolidator.export.files import PartitionedWriter
from consolidator.export.progress import Progress
from consolidator.payloads import Depth
from consolidator.records import TRADE_DTYPE, EventKind, Side
from tests.export.helpers import MS, RingFeed, export, level, parquet_glob
from tests.feed.helpers import REPO, Feed, wait_until

pytestmark = pytest.mark.integration

BASE = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
HOUR = 3_600_000_000_000


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    feed = Feed(tmp_path)
    try:
        yield feed
    finally:
        feed.remove()


def _diff(sym: int, ms: int, uid: int, bid: str, qty: str) -> Depth:
    return Depth(BASE + ms * MS, 0, sym, uid, uid, None, [level(bid, qty)], [level("11", "1")])


def _snapshot(sym: int, uid: int, bid: str) -> Depth:
    return Depth(0, 0, sym, uid, uid, None, [level(bid, "1")], [level("11", "1")], True)


def test_gap_rows_where_the_feed_had_a_gap_never_interpolated(feed: Feed) -> None:
    rings = RingFeed(feed, "binance", ["AAA", "BBB"])
    a, b = rings.ids["AAA"], rings.ids["BBB"]
    commit = BASE  # commit times (local clock) 1 us apart, a little after the exchange times
    rings.event(commit, EventKind.WRITER_START)
    for sym in (a, b):
        commit += 1
        rings.depth(commit, _snapshot(sym, 100, "10"))
    uid = {a: 100, b: 100}
    for ms in range(50, 2001, 50):
        for sym in (a, b):
            if sym == a and 1000 < ms < 1620:
                continue  # AAA is out of sync from its gap at 1000 ms to its resync
            if sym == a and ms == 1650:
                commit += 1  # the new snapshot, then the diff that joins it
                rings.depth(commit, _snapshot(a, 500, "9"))
                uid[a] = 500
            uid[sym] += 1
            commit = max(commit, BASE + ms * MS) + 1000
            rings.depth(commit, _diff(sym, ms, uid[sym], "10" if ms < 1000 else "9", str(ms)))
        if ms == 1000:
            commit += 1
            rings.event(commit, EventKind.GAP, "AAA")
            rings.event(commit + 1, EventKind.RESYNC, "AAA")
            commit += 1
    rings.close()
    out = feed.root / "out"
    done = export(feed.root, feed.name, "--stream", "book", "--depth", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = duckdb.sql(
        f"select symbol, (epoch_ns(ts) - {BASE}) // 1000000, gap, last_update_id, bid_px_01, "
        f"bid_sz_01, ask_px_02, midprice from '{parquet_glob(out, feed.name, 'book')}' "
        "order by symbol, ts"
    ).fetchall()
    aaa = [r[1:] for r in rows if r[0] == "AAA"]
    assert [t for t, *_ in aaa] == list(range(100, 2001, 100))
    gaps = [t for t, gap, *_ in aaa if gap]
    # Invalid from the feed's clock when the GAP came (1000 ms) until the diff that joins the
    # new snapshot (1650 ms).
    assert gaps == list(range(1000, 1601, 100))
    for t, gap, last, px, sz, ask2, mid in aaa:
        if gap:
            assert (last, px, sz, ask2, mid) == (None, None, None, None, None)
        else:
            assert str(sz) == f"{t // 50 * 50}.000000000000000000"  # the last diff at or before t
            assert px is not None
            assert ask2 is None  # one ask level: level 2 is empty (null, not zero)
    assert [r[2] for r in rows if r[0] == "BBB"] == [False] * 20

    # --since/--until (exchange time, inclusive) and --symbol: the same rows, cut
    cut = feed.root / "cut"
    since, until = str(BASE + 550 * MS), "2024-01-01T00:00:01.5"
    done = export(feed.root, feed.name, "--stream", "book", "--stream", "depth", "--symbol",
                  "AAA", "--since", since, "--until", until, "--out", str(cut))  # fmt: skip
    assert done.returncode == 0, done.stderr
    book = duckdb.sql(
        f"select (epoch_ns(ts) - {BASE}) // 1000000, gap from "
        f"'{parquet_glob(cut, feed.name, 'book')}' order by ts"
    ).fetchall()
    assert book == [(t, gap) for t, gap, *_ in aaa if 550 <= t <= 1500]
    depth = duckdb.sql(
        f"select distinct symbol, min(epoch_ns(ts_event)), max(epoch_ns(ts_event)) from "
        f"'{parquet_glob(cut, feed.name, 'depth')}' where type = 'depth' group by symbol"
    ).fetchall()
    assert depth == [("AAA", BASE + 550 * MS, BASE + 1000 * MS)]  # none while out of sync


def test_the_progress_bar_shows_rows_bytes_and_eta_on_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress(out, enabled=True)
    bar.started -= 10  # ten seconds in, a quarter done: 30 s to go
    bar.update("f1 trades", 0.25, 123_456, 12_345_678, force=True)
    bar.done()
    line = out.getvalue()
    assert "25%" in line
    assert "123,456 rows" in line
    assert "12.3 MB" in line
    assert "ETA 0:00:30" in line
    assert line.endswith("\n")
    quiet = io.StringIO()
    Progress(quiet, enabled=False).update("f1 trades", 0.5, 1, 1, force=True)
    assert quiet.getvalue() == ""


def _trades(n: int, span_ns: int) -> np.ndarray:
    records = np.zeros(n, TRADE_DTYPE)
    ts = BASE + np.arange(n, dtype=np.int64) * (span_ns // n)
    records["ts_event"] = ts
    records["ts_recv"] = ts
    records["trade_id"] = np.arange(n)
    records["price_m"] = 6_183_763 + np.arange(n) % 100
    records["price_e"] = -2
    records["qty_m"] = 1 + np.arange(n) % 5000
    records["qty_e"] = -3
    records["side"] = np.where(np.arange(n) % 2, Side.BUY, Side.SELL)
    return records


def test_an_interrupted_export_leaves_only_complete_files(feed: Feed) -> None:
    rings = RingFeed(feed, "binance", ["AAA"])
    n, hours = 240_000, 24
    rings.trades(BASE, _trades(n, hours * HOUR))
    rings.close()
    out = feed.root / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "consolidator.cli.main", "export", feed.name,
         "--config-dir", str(feed.root), "--stream", "trades", "--format", "csv",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    base = out / f"feed={feed.name}" / "stream=trades"
    try:
        # Once some hours are complete and others half written, interrupt.
        wait_until(
            lambda: len(list(base.glob("*/*/part-*.csv"))) >= 2 or proc.poll() is not None,
            60,
            "complete files",
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err  # interrupted (not finished before the signal)
    assert err.strip().splitlines() == [
        "consolidator export: interrupted; unfinished files deleted, complete ones kept"
    ]
    assert not [p for p in out.rglob("*") if p.is_file() and not p.name.startswith("part-")]
    complete = sorted(base.glob("*/*/part-*.csv"))
    assert 2 <= len(complete) < hours
    per_hour = n // hours
    for path in complete:
        hour = int(path.parent.name.removeprefix("hour="))
        ids = duckdb.sql(f"select trade_id from read_csv('{path}') order by 1").fetchall()
        assert [i for (i,) in ids] == list(range(hour * per_hour, (hour + 1) * per_hour)), path


def test_the_writer_s_abort_deletes_only_unfinished_files(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    writer = PartitionedWriter(tmp_path, "f", "s", schema, "parquet", row_group=4, max_open=1)
    writer.write({"x": pa.array(range(10))}, np.full(10, BASE))
    writer.write({"x": pa.array(range(10, 13))}, np.full(3, BASE + HOUR))  # completes hour 0
    assert len(list(tmp_path.rglob("*.tmp"))) == 1
    writer.abort()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["part-0.parquet"]
    table = pq.read_table(files[0])
    assert table.column("x").to_pylist() == list(range(10))
    assert [table.num_rows for table in pq.ParquetFile(files[0]).iter_batches(batch_size=4)] == [
        4, 4, 2
    ]  # fmt: skip
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 3


@pytest.fixture(scope="module")
def small_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    """A feed with ten trades and an events ring, no quotes or depth."""
    feed = Feed(tmp_path_factory.mktemp("usage"))
    rings = RingFeed(feed, "binance", ["AAA"])
    rings.trades(BASE + HOUR, _trades(10, HOUR))
    rings.close()
    (feed.shm_dir / feed.name / "depth.ring").unlink()
    try:
        yield feed
    finally:
        feed.remove()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nofeed"], "no feed 'nofeed'"),
        (["FEED", "--interval", "10 ms"], "--interval: expected a positive duration"),
        (["FEED", "--interval", "0s"], "--interval: expected a positive duration"),
        (["FEED", "--since", "yesterday"], "--since: expected an ISO-8601 time or nanoseconds"),
        (["FEED", "--since", "2024-01-02", "--until", "2024-01-01"], "is before --since"),
        (["FEED", "--symbol", "NOPE"], "symbol 'NOPE' has never been seen"),
        (["FEED", "--stream", "book"], "has no 'depth' stream"),
        (["FEED", "--depth", "0"], "--depth must be 1..99"),
        (["FEED", "--format", "xlsx"], "invalid choice"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    small_feed: Feed, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    feed = small_feed
    args = [feed.name if a == "FEED" else a for a in args]
    try:
        code = main(["export", *args, "--config-dir", str(feed.root)])
    except SystemExit as exc:  # argparse's own errors exit by themselves
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert message in lines[-1]  # one line (after argparse's usage, for argparse's errors)
    assert lines[-1].startswith("consolidator export: error: "), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    assert "Traceback" not in err


def test_without_stream_the_record_streams_the_feed_has(
    small_feed: Feed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The feed has trades and events but no quotes or depth: trades are exported, no error."""
    code = main(["export", small_feed.name, "--config-dir", str(small_feed.root),
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""
    streams = sorted(p.name for p in (tmp_path / f"feed={small_feed.name}").iterdir())
    assert streams == ["stream=trades"]
    trades = parquet_glob(tmp_path, small_feed.name, "trades")
    assert duckdb.sql(f"select count(*) from '{trades}'").fetchall() == [(10,)]
