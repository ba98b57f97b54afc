"""Recovery: torn tails cut at every possible point, corruption in the middle reported with file and
offset, leftovers of interrupted compression and creation cleaned up, next_seq re-derived."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from consolidator.journal.compress import (
    CancelledError,
    CompressJob,
    Compressor,
    compress_segment,
)
from consolidator.journal.cursor import JournalCursor
from consolidator.journal.files import list_segments, segment_path
from consolidator.journal.recovery import journal_end, recover_stream, scan_segment
from consolidator.journal.segment import (
    SEGMENT_HEADER_SIZE,
    JournalError,
    SegmentHeader,
    encode_fixed,
    encode_loss,
)
from consolidator.records import TRADE_DTYPE, RecordType
from consolidator.ring.reader import Loss
from tests.journal.test_segment import join, trades


def write_segment(
    directory: Path, first_seq: int, sizes: list[int], loss_at: int = -1
) -> list[int]:
    """A plain segment of blocks of ``sizes`` records (block ``loss_at`` is a LOSS block).

    Returns the block offsets, plus the file size at the end.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = segment_path(directory, first_seq)
    offsets = []
    seq = first_seq
    with open(path, "wb") as f:
        f.write(SegmentHeader(1, 1, 64, first_seq, 1, "f", "trades").pack())
        for i, n in enumerate(sizes):
            offsets.append(f.tell())
            if i == loss_at:
                f.write(join(encode_loss(seq, n, "lapped", RecordType.TRADE, 5)))
            else:
                f.write(join(encode_fixed(trades(seq, n), RecordType.TRADE)))
            seq += n
        offsets.append(f.tell())
    return offsets


def read_all(directory: Path) -> list[tuple[str, int, int]]:
    cursor = JournalCursor(directory, "beginning", TRADE_DTYPE)
    out = []
    while (item := cursor.next()) is not None:
        if isinstance(item, Loss):
            out.append(("loss", item.first_seq, item.count))
        else:
            out.append(("data", int(item["seq"][0]), len(item)))
    cursor.close()
    return out


def test_torn_tail_is_cut_at_every_possible_point(tmp_path: Path) -> None:
    src = tmp_path / "src"
    offsets = write_segment(src, 0, [3, 5, 2], loss_at=1)
    ends = {offsets[0]: 0, offsets[1]: 3, offsets[2]: 8, offsets[3]: 10}
    original = segment_path(src, 0).read_bytes()
    for cut in range(SEGMENT_HEADER_SIZE, len(original) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        segment_path(d, 0).write_bytes(original[:cut])
        rec = recover_stream(d, repair=True)
        good = max(o for o in ends if o <= cut)
        assert rec.next_seq == ends[good], cut
        assert not rec.corruptions, cut
        assert segment_path(d, 0).stat().st_size == good, cut
        assert rec.active is not None
        assert rec.active.end_offset == good
        assert journal_end(d) == ends[good]
        shutil.rmtree(d)


def test_corruption_in_the_middle_is_reported_with_file_and_offset(tmp_path: Path) -> None:
    d = tmp_path / "s"
    offsets = write_segment(d, 100, [4, 4, 4, 4])
    path = segment_path(d, 100)
    with open(path, "r+b") as f:
        f.seek(offsets[1] + 64 + 10)
        f.write(b"\x99")
    scan = scan_segment(path)
    assert len(scan.corruptions) == 1
    bad = scan.corruptions[0]
    assert (bad.offset, bad.resume_offset, bad.lost_first_seq, bad.lost_count) == (
        offsets[1], offsets[2], 104, 4,
    )  # fmt: skip
    assert f"{path}: corrupt block at offset {offsets[1]} (CRC mismatch)" in str(bad)
    rec = recover_stream(d, repair=True)
    assert rec.next_seq == 116, "the end is after the valid blocks that follow"
    assert rec.active is None, "a corrupt segment is sealed: appending goes to a new one"
    assert path.stat().st_size == offsets[-1], "nothing cut"
    items = read_all(d)
    assert items[1] == ("loss", 104, 4)
    assert [i for i in items if i[0] == "data"] == [("data", 100, 4), ("data", 108, 4),
                                                    ("data", 112, 4)]  # fmt: skip
    cursor = JournalCursor(d, 104, TRADE_DTYPE)
    loss = cursor.next()
    cursor.close()
    assert isinstance(loss, Loss)
    assert f"corrupt journal: {path} offset {offsets[1]}: CRC mismatch" == loss.reason


def test_a_half_created_segment_is_removed_and_leftovers_cleaned(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_segment(d, 0, [5])
    segment_path(d, 5).write_bytes(b"")  # crashed right after creating the next segment
    (d / ".00000000000000000000.seg.zst.tmp").write_bytes(b"partial")
    rec = recover_stream(d, repair=True)
    assert rec.next_seq == 5
    assert [s.first_seq for s in list_segments(d)] == [0]
    assert not (d / ".00000000000000000000.seg.zst.tmp").exists()


def test_compression_interrupted_after_rename_keeps_the_compressed_copy(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_segment(d, 0, [5, 5])
    write_segment(d, 10, [5])
    plain = segment_path(d, 0)
    saved = plain.read_bytes()
    compressed = compress_segment(CompressJob(plain, 10))
    plain.write_bytes(saved)  # as if the crash came before the plain file was removed
    rec = recover_stream(d, repair=True)
    assert not plain.exists()
    assert compressed.exists()
    assert rec.next_seq == 15
    assert read_all(d) == [("data", 0, 5), ("data", 5, 5), ("data", 10, 5)]


def test_compression_cancelled_or_cut_short_raises_its_own_error_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    """Stopping the flusher mid-compression is a CancelledError (which the compressor thread
    handles), not zstd's complaint about the frame's pledged size (which killed the thread)."""
    d = tmp_path / "s"
    write_segment(d, 0, [4096] * 5)  # 1.3 MB: more than one CHUNK goes in before the stop
    plain = segment_path(d, 0)
    before = sorted(p.name for p in d.iterdir())
    asked = itertools.count()
    with pytest.raises(CancelledError, match=str(plain)):
        compress_segment(CompressJob(plain, None), cancelled=lambda: next(asked) > 0)
    assert sorted(p.name for p in d.iterdir()) == before
    compressor = Compressor()
    asked = itertools.count()
    compressor._stop.is_set = lambda: next(asked) > 0  # type: ignore[method-assign]
    compressor._do(CompressJob(plain, None))  # returns: the job is abandoned, not an error
    assert (compressor.done, compressor.errors) == (0, 0)
    assert sorted(p.name for p in d.iterdir()) == before
    compressor.stop()


def test_overlap_left_by_an_abandoned_segment_is_read_once(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_segment(d, 0, [5, 5, 5])  # 0..14, but only 0..9 were durable when fsync failed
    write_segment(d, 10, [5, 5])  # rewritten from the ring: 10..19
    assert read_all(d) == [("data", 0, 5), ("data", 5, 5), ("data", 10, 5), ("data", 15, 5)]
    final = compress_segment(CompressJob(segment_path(d, 0), 10))
    assert scan_segment(segment_path(d, 10)).next_seq == 20
    assert read_all(d)[:2] == [("data", 0, 5), ("data", 5, 5)]
    assert final.name.endswith(".seg.zst")


def test_a_segment_corrupt_in_the_middle_is_not_compressed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    offsets = write_segment(d, 0, [5, 5, 5])
    path = segment_path(d, 0)
    with open(path, "r+b") as f:
        f.seek(offsets[1] + 3)
        f.write(b"!")
    with pytest.raises(JournalError, match=f"not compressing {path}: .* offset {offsets[1]}"):
        compress_segment(CompressJob(path, None))
    assert path.exists()
    assert not path.with_name(path.name + ".zst").exists()


def test_corrupt_compressed_segment_becomes_a_loss_naming_the_file(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_segment(d, 0, [50, 50])
    write_segment(d, 100, [10])
    zst = compress_segment(CompressJob(segment_path(d, 0), 100))
    data = bytearray(zst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zst.write_bytes(bytes(data))
    items = read_all(d)
    losses = [i for i in items if i[0] == "loss"]
    assert losses
    assert losses[-1][1] + losses[-1][2] == 100
    assert items[-1] == ("data", 100, 10)
    cursor = JournalCursor(d, 0, TRADE_DTYPE)
    reasons = []
    while (item := cursor.next()) is not None:
        if isinstance(item, Loss):
            reasons.append(item.reason)
    cursor.close()
    assert any(str(zst) in r and "corrupt compressed data" in r for r in reasons), reasons


def test_next_seq_of_empty_and_compressed_journals(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert journal_end(d) == 0
    write_segment(d, 40, [3, 4])
    compress_segment(CompressJob(segment_path(d, 40), None))
    assert journal_end(d) == 47
