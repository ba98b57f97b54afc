"""History and live as one stream (in-process writer and flusher, stepped deterministically)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from consolidator.journal.files import list_segments, stream_dir
from consolidator.journal.history import HistoryReader, Item
from consolidator.journal.position import StreamState, read_positions
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.ring.reader import Loss
from tests.journal.helpers import FEED, read_journal, verify
from tests.journal.proc import raw_payload, trade_fields
from tests.journal.rig import Rig
from tests.wait import wait_until


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def collect(reader: HistoryReader, until: int) -> list[Item]:
    """Read until the reader's position reaches ``until``."""
    out: list[Item] = []
    deadline = time.monotonic() + 30
    while reader.position < until:
        item = reader.read()
        if item is None:
            assert time.monotonic() < deadline, f"stuck at {reader.position}"
            reader.wait(0.01)
            continue
        out.append(item)
    return out


def check_trades(items: list[Item], first: int, end: int) -> None:
    """Records ``first .. end-1``, each once, in order, with the right content; no loss."""
    expected = first
    for item in items:
        assert not isinstance(item, Loss), item
        assert isinstance(item, np.ndarray)
        seqs = item["seq"].astype(np.int64)
        assert np.array_equal(seqs, np.arange(expected, expected + len(item))), expected
        for row in item[:: max(1, len(item) // 16)].tolist():
            assert tuple(row[1:3]) == trade_fields(row[0])[:2]
        expected += len(item)
    assert expected == end


def test_positions_published_after_sync(rig: Rig) -> None:
    rig.start_flusher()
    rig.publish(3000)
    rig.flush()
    pos = read_positions(rig.shm, FEED)
    assert pos is not None
    assert pos.flusher_alive()
    trades = pos.streams["trades"]
    assert trades.durable_seq == trades.written_seq == 3000
    assert trades.state is StreamState.OK
    assert trades.present
    assert trades.fsyncs > 0
    assert trades.bytes_written > 3000 * 64
    assert trades.synced_at_ns > 0
    assert trades.durable_ts_ns > 0
    assert trades.lost_records == 0
    assert not pos.streams["quotes"].present
    assert load_symbols(symbols_path(rig.state, FEED)) == ["S0"]
    rig.stop_flusher()
    stopped = read_positions(rig.shm, FEED)
    assert stopped is not None
    assert not stopped.flusher_alive()


def test_history_by_seq_time_and_from_the_beginning_across_compressed_segments(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, segment_bytes=64 << 10, compress=True)
    try:
        flusher = rig.start_flusher()
        for _ in range(20):
            rig.publish(1000)
            rig.flush()
        directory = stream_dir(rig.state, FEED, "trades")
        wait_until(
            lambda: sum(not s.compressed for s in list_segments(directory)) <= 1,
            60,
            "every closed segment compressed",
        )
        assert flusher.compressor is not None
        assert flusher.compressor.done >= 10
        verify(rig.state, rig.ends)
        with HistoryReader(rig.state, rig.shm, FEED, "trades", start=12345, live=False) as r:
            check_trades(list(r.items()), 12345, 20_000)
        all_items = read_journal(rig.state, "trades")
        assert all_items.records == 20_000
        with HistoryReader(rig.state, rig.shm, FEED, "trades", live=False) as r:
            rows = np.concatenate([i for i in r.items() if isinstance(i, np.ndarray)])
        since = int(rows["ts_commit"][7777])
        want = int(rows["seq"][np.flatnonzero(rows["ts_commit"] >= since)[0]])
        with HistoryReader(rig.state, rig.shm, FEED, "trades", since_ns=since, live=False) as r:
            items = list(r.items())
        check_trades(items, want, 20_000)
        with HistoryReader(rig.state, rig.shm, FEED, "raw", start=100, live=False) as r:
            records = [rec for item in r.items() for rec in item]  # type: ignore[union-attr]
        assert [rec.seq for rec in records] == list(range(100, 5000))
        assert all(rec.payload == raw_payload(rec.seq) for rec in records)
    finally:
        rig.close()


def test_history_crosses_into_the_live_ring_without_gap_or_duplicate(rig: Rig) -> None:
    rig.start_flusher()
    rig.publish(5000)
    rig.flush()
    rig.publish(3000)  # in the ring only
    with HistoryReader(rig.state, rig.shm, FEED, "trades") as reader:
        items = collect(reader, 8000)
        assert reader.attached
        assert (reader.from_journal, reader.from_ring) == (5000, 3000)
        rig.publish(2000)
        rig.flush()
        items += collect(reader, 10_000)
    check_trades(items, 0, 10_000)


def test_the_beginning_of_an_empty_journal_is_the_rings_first_record(rig: Rig) -> None:
    rig.publish(10)  # no flusher has run: no journal, no position file
    with HistoryReader(rig.state, rig.shm, FEED, "trades") as reader:
        items = collect(reader, 10)
        assert reader.attached
    check_trades(items, 0, 10)


def test_a_lapped_live_reader_goes_back_to_the_journal(tmp_path: Path) -> None:
    rig = Rig(tmp_path, capacity=1024)
    try:
        rig.start_flusher()
        rig.publish(500)
        rig.flush()
        with HistoryReader(rig.state, rig.shm, FEED, "trades") as reader:
            items = collect(reader, 500)
            reader.read()
            assert reader.attached
            for _ in range(10):  # 5000 records through a 1024-slot ring; the flusher keeps up
                rig.publish(500)
                rig.flush()
            items += collect(reader, 5500)
            assert reader.from_journal > 500, "it went back to the journal"
        check_trades(items, 0, 5500)
    finally:
        rig.close()


def test_without_a_flusher_a_lapped_live_reader_reports_the_ring_loss(tmp_path: Path) -> None:
    rig = Rig(tmp_path, capacity=1024)
    try:
        rig.start_flusher()
        rig.publish(100)
        rig.flush()
        rig.stop_flusher()
        with HistoryReader(rig.state, rig.shm, FEED, "trades") as reader:
            collect(reader, 100)
            reader.read()
            assert reader.attached
            rig.publish(3000)
            items = collect(reader, 3100)
        losses = [i for i in items if isinstance(i, Loss)]
        assert len(losses) == 1
        assert losses[0].first_seq == 100
        data = [i for i in items if not isinstance(i, Loss)]
        check_trades(data, losses[0].first_seq + losses[0].count, 3100)
    finally:
        rig.close()


def test_the_flusher_records_exactly_what_the_ring_lost_while_it_was_down(tmp_path: Path) -> None:
    rig = Rig(tmp_path, capacity=1024)
    try:
        rig.publish(5000)  # no flusher yet: the ring keeps only the last ~1024
        rig.start_flusher()
        rig.flush()
        covs = verify(rig.state, rig.ends, allow_loss=True)
        (first, count, reason), *rest = covs["trades"].losses
        assert not rest
        assert (first, reason) == (0, "lapped")
        assert 5000 - 1024 <= count <= 5000 - 1024 + 16, count  # oldest, less the writer's intent
        pos = read_positions(rig.shm, FEED)
        assert pos is not None
        assert pos.streams["trades"].lost_records == count
        assert pos.streams["trades"].loss_events == 1
    finally:
        rig.close()


def test_fsync_failure_abandons_the_segment_and_rewrites_from_the_ring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[int, int]] = []
    failed: list[tuple[int, int]] = []

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        assert key not in failed, "an fsync is never retried on a file whose fsync failed"
        calls.append(key)
        if len(calls) == 12:
            failed.append(key)
            raise OSError(5, "Input/output error")
        os.fdatasync(fd)

    rig = Rig(tmp_path, fsync=fsync)
    try:
        rig.start_flusher()
        for _ in range(12):
            rig.publish(700)
            rig.flush()
        assert failed
        verify(rig.state, rig.ends)
        pos = read_positions(rig.shm, FEED)
        assert pos is not None
        assert sum(pos.streams[s].fsync_errors for s in ("trades", "raw")) == 1
        assert all(pos.streams[s].state is StreamState.OK for s in ("trades", "raw"))
        assert "failed: Input/output error; segment abandoned at offset" in caplog.text
        counts = [len(list_segments(stream_dir(rig.state, FEED, s))) for s in ("trades", "raw")]
        assert sorted(counts) == [1, 2], "the failed stream continued in a new segment"
    finally:
        rig.close()


def test_new_feeds_are_discovered_while_running(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    other = None
    try:
        flusher = rig.start_flusher()
        flusher.step()
        from consolidator.streams import open_stream_writer

        other = open_stream_writer(rig.shm, "late-feed", "events")
        other.publish(5, b"hello")  # type: ignore[call-arg]
        for _ in range(100):
            flusher.step()
            if ("late-feed", "events") in flusher.tasks:
                break
        flusher.sync()
        assert ("late-feed", "events") in flusher.tasks
        flusher.step()
        flusher.sync()
        with HistoryReader(rig.state, rig.shm, "late-feed", "events", live=False) as r:
            records = [rec for item in r.items() for rec in item]  # type: ignore[union-attr]
        assert [(rec.seq, rec.payload) for rec in records] == [(0, b"hello")]
    finally:
        if other is not None:
            other.close()
        rig.close()
