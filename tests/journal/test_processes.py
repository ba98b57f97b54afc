"""Real processes: history->live crossing while the writer publishes, and corrupted journal bytes
found, reported with file and offset, and read around as explicit losses."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from consolidator.journal.files import Block, SegmentSource, list_segments, stream_dir
from consolidator.journal.history import HistoryReader
from consolidator.journal.recovery import scan_segment
from consolidator.journal.segment import BLOCK_HEADER_SIZE, MAX_BLOCK_BYTES, SEGMENT_HEADER_SIZE
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.ring.reader import Loss
from tests.journal.helpers import (
    FEED,
    Env,
    durable,
    finish,
    first_line,
    read_journal,
    stop,
    verify,
    wait_durable,
)
from tests.journal.proc import raw_payload, trade_ok
from tests.wait import wait_until

pytestmark = pytest.mark.integration


def _ends(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in json.loads(out.splitlines()[-1])["end"].items()}


def test_history_to_live_while_the_writer_publishes_no_gap_no_duplicate(env: Env) -> None:
    flusher = env.flusher()
    # The writer publishes until the readers have crossed into the ring (then it is stopped):
    # however slowly they get there, it still publishes. The ring holds 13 s of it.
    writer = env.writer(2_000_000, 10_000, "--capacity", str(1 << 17))
    first_line(writer)
    wait_until(  # something in the journal, to be read from there first
        lambda: bool(d := durable(env)) and all(slot.durable_seq > 0 for slot in d.values()),
        60,
        "the flusher to journal records of both streams",
    )
    readers = {s: HistoryReader(env.state, env.shm, FEED, s) for s in ("trades", "raw")}
    expected = {"trades": 0, "raw": 0}
    bad: list[str] = []
    ends: dict[str, int] | None = None
    deadline = time.monotonic() + 120
    try:
        while ends is None or any(expected[s] < ends[s] for s in readers):
            assert time.monotonic() < deadline, (expected, ends)
            if writer.returncode is None and all(r.from_ring > 0 for r in readers.values()):
                writer.send_signal(signal.SIGTERM)
                ends = _ends(finish(writer)[0])
            elif ends is None and writer.poll() is not None:
                ends = _ends(finish(writer)[0])
            got = 0
            for stream, reader in readers.items():
                item = reader.read()
                if item is None:
                    continue
                got += 1
                assert not isinstance(item, Loss), (stream, item)
                if isinstance(item, np.ndarray):
                    seqs = [int(s) for s in item["seq"]]
                    bad += [
                        f"trade {r[0]}"
                        for r in item.tolist()
                        if not trade_ok(r, f"S{r[0] // 5000}")
                    ]
                else:
                    seqs = [r.seq for r in item]
                    bad += [f"raw {r.seq}" for r in item if r.payload != raw_payload(r.seq)]
                assert seqs == list(range(expected[stream], expected[stream] + len(seqs))), stream
                expected[stream] += len(seqs)
            if not got:
                time.sleep(0.002)
        assert not bad, bad[:5]
        for stream, reader in readers.items():
            assert reader.from_journal > 0, (stream, "read from the journal")
            assert reader.from_ring > 0, (stream, "crossed over into the ring")
    finally:
        for reader in readers.values():
            reader.close()
    assert stop(flusher)[0] == 0


def _blocks(path: Path) -> list[tuple[int, int, int]]:
    """(offset, payload length, end seq) of each block of a segment."""
    out = []
    with SegmentSource(path) as src:
        while isinstance(got := src.next(), Block):
            out.append((got.offset, len(got.payload), got.header.end_seq))
    return out


def _damage(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


# Stage 1's segment size: more than three of the largest blocks (MAX_BLOCK_BYTES of payload), so
# every segment closed by size holds at least four blocks, however the flusher's timing cut them.
SEGMENT_BYTES = 1 << 20


def _publish(env: Env, count: int) -> dict[str, int]:
    """Run a writer (continuing the journal's sequence) to its end; wait until all is durable."""
    writer = env.writer(count, 40_000, "--restore")
    first_line(writer)
    ends = _ends(finish(writer)[0])
    wait_durable(env, ends)
    return ends


def _inner_block(path: Path, pick: int) -> tuple[int, int]:
    """(offset, payload length) of block ``pick`` of a segment, which must not be its last block:
    a bad last block, with no valid block after it, is a torn tail (cut), not corruption."""
    blocks = _blocks(path)
    assert pick < len(blocks) - 1, (path, len(blocks), pick)
    offset, length, _ = blocks[pick]
    return offset, length


def test_corrupted_journal_bytes_are_detected_and_reported_with_file_and_offset(env: Env) -> None:
    assert 3 * (BLOCK_HEADER_SIZE + MAX_BLOCK_BYTES) + SEGMENT_HEADER_SIZE < SEGMENT_BYTES
    env.write_config(compress=False, segment_bytes=SEGMENT_BYTES)
    flusher = env.flusher()
    assert flusher.stderr is not None
    assert "started" in flusher.stderr.readline()
    # Four runs of more than SEGMENT_BYTES each: each ends with at least one rotation (the segment
    # synced last holds the whole run unless one happened earlier), so at least five segments.
    for _ in range(4):
        _publish(env, 17_000)
    assert stop(flusher)[0] == 0
    # Two more runs appended to the last (active) segment, without rotating it away: the first
    # run's blocks end before the second's begin (it was all durable before the second started).
    env.write_config(compress=False)
    flusher = env.flusher()
    first_run = _publish(env, 1_500)
    _publish(env, 1_500)
    assert stop(flusher)[0] == 0
    segments = list_segments(stream_dir(env.state, FEED, "trades"))
    assert len(segments) >= 4
    closed, active = segments[1].path, segments[-1].path
    # Block sizes follow the flusher's timing: damage a byte inside each chosen payload, in a block
    # that valid blocks follow (in the active segment: the first run's last block).
    closed_at, closed_len = _inner_block(closed, 2)
    ends_first = [i for i, (_, _, end) in enumerate(_blocks(active)) if end == first_run["trades"]]
    assert len(ends_first) == 1, (active, first_run)
    active_at, active_len = _inner_block(active, ends_first[0])
    _damage(closed, closed_at + BLOCK_HEADER_SIZE + closed_len // 2)
    _damage(active, active_at + BLOCK_HEADER_SIZE + min(7, active_len - 1))
    scan = scan_segment(closed)
    assert [c.offset for c in scan.corruptions] == [closed_at]
    flusher = env.flusher()
    writer = env.writer(5_000, 40_000, "--restore")
    first_line(writer)
    ends = _ends(finish(writer)[0])
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    assert code == 0, err
    assert f"{active}: corrupt block at offset {active_at} (CRC mismatch)" in err
    cov = read_journal(env.state, "trades")
    assert not cov.bad, cov.bad[:3]
    assert cov.end == ends["trades"]
    reasons = [reason for _, _, reason in cov.losses]
    assert any(f"{closed} offset {closed_at}" in r for r in reasons), reasons
    assert any(f"{active} offset {active_at}" in r for r in reasons), reasons
    assert sum(n for _, n, _ in cov.losses) + cov.records == ends["trades"]
    verify(env.state, {"raw": ends["raw"]})
    assert load_symbols(symbols_path(env.state, FEED))
