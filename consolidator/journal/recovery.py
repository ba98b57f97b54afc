"""Recovery: scan segments, cut torn tails, report corruption, re-derive the journal's end.

A crash (``kill -9``, power loss) can leave the active segment with a *torn tail*: a last block
whose header or payload is incomplete, or whose CRC fails, with nothing valid after it. Recovery
truncates it (the records it held are read again from the ring, or recorded as lost if the ring no
longer has them). Bad bytes *followed by valid blocks* are not a torn tail but corruption in the
middle: they are reported with the file and offset (`Corruption`), never skipped silently; the
flusher seals that segment and continues in a new one, and readers return the hole as an explicit
loss naming file and offset.

A segment abandoned after an fsync error may end in blocks that the next segment (which starts at
the last durable sequence number) rewrote: a segment's blocks at or past the first sequence number
of the next segment are an *overlap* and are ignored (cut when the segment is compressed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from consolidator.journal.files import (
    End,
    SegmentFile,
    SegmentSource,
    find_next_block,
    fsync_dir,
    list_segments,
    stream_dir,
)
from consolidator.journal.segment import (
    SEGMENT_HEADER_SIZE,
    JournalError,
    JournalFormatError,
    SegmentHeader,
)

__all__ = [
    "Corruption",
    "SegmentScan",
    "StreamRecovery",
    "journal_end",
    "next_seq",
    "recover_stream",
    "remove_leftovers",
    "scan_segment",
]

log = logging.getLogger("consolidator.journal")


@dataclass(frozen=True)
class Corruption:
    """Bad bytes at ``offset`` of ``path``, with valid blocks after them (at ``resume_offset``)."""

    path: Path
    offset: int
    reason: str
    resume_offset: int
    lost_first_seq: int
    lost_count: int

    def __str__(self) -> str:
        return (
            f"{self.path}: corrupt block at offset {self.offset} ({self.reason}); "
            f"valid data resumes at offset {self.resume_offset}; sequence numbers "
            f"{self.lost_first_seq}..{self.lost_first_seq + self.lost_count - 1} are unreadable"
        )


@dataclass
class SegmentScan:
    """What a scan of one segment found."""

    path: Path
    header: SegmentHeader
    first_seq: int
    next_seq: int
    """One past the last valid block (the first seq if there is none)."""
    end_offset: int
    """Offset just past the last valid block: where appending would continue."""
    file_size: int
    blocks: int = 0
    last_ts: int = 0
    torn_reason: str | None = None
    """Why the bytes from ``end_offset`` to ``file_size`` are not a valid block, if any."""
    overlap_offset: int | None = None
    """Offset of the first block at or past ``limit_seq`` (ignored: the next segment has it)."""
    corruptions: list[Corruption] = field(default_factory=list)

    @property
    def torn_bytes(self) -> int:
        """Bytes after the last valid block (0 for a clean end)."""
        return self.file_size - self.end_offset


def scan_segment(path: Path, limit_seq: int | None = None) -> SegmentScan:
    """Validate every block of a plain segment.

    Args:
        path: the segment.
        limit_seq: the next segment's first sequence number: blocks at or past it are overlap.

    Raises:
        JournalFormatError: the segment header is bad (the whole file is unusable).
    """
    with SegmentSource(path) as src:
        header = src.header
        scan = SegmentScan(path, header, header.first_seq, header.first_seq, src.offset, src.size())
        expected = header.first_seq
        while True:
            item = src.next()
            if isinstance(item, End):
                if item.reason is None:
                    break
                found = find_next_block(path, item.offset)
                if found is None or (limit_seq is not None and found[1].first_seq >= limit_seq):
                    scan.torn_reason = item.reason
                    break
                offset, nxt = found
                scan.corruptions.append(
                    Corruption(
                        path,
                        item.offset,
                        item.reason,
                        offset,
                        expected,
                        max(0, nxt.first_seq - expected),
                    )
                )
                src.seek(offset)
                expected = nxt.first_seq
                continue
            block = item.header
            if limit_seq is not None and block.first_seq >= limit_seq:
                scan.overlap_offset = item.offset
                break
            if block.first_seq != expected:
                scan.corruptions.append(
                    Corruption(
                        path,
                        item.offset,
                        f"block starts at seq {block.first_seq}, expected {expected}",
                        item.offset,
                        expected,
                        max(0, block.first_seq - expected),
                    )
                )
            expected = block.end_seq
            scan.next_seq = expected
            scan.end_offset = src.offset
            scan.blocks += 1
            scan.last_ts = block.ts_max
        return scan


def remove_leftovers(directory: Path) -> list[str]:
    """Remove temporary files and plain segments that have a complete compressed copy.

    Returns what was removed (names), for the log.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        path = directory / name
        if (name.startswith(".") and name.endswith(".tmp")) or (
            name.endswith(".seg") and (directory / f"{name}.zst").exists()
        ):
            path.unlink(missing_ok=True)
            removed.append(name)
    if removed:
        fsync_dir(directory)
    return removed


@dataclass
class StreamRecovery:
    """The state of a stream's journal after recovery."""

    directory: Path
    segments: list[SegmentFile]
    next_seq: int | None
    """One past the last seq the journal holds (None: the journal is empty)."""
    last_ts: int = 0
    active: SegmentScan | None = None
    """The last segment if appending may continue in it (plain, no corruption)."""
    closed: list[SegmentFile] = field(default_factory=list)
    """Plain segments before the last: to be compressed."""
    corruptions: list[Corruption] = field(default_factory=list)
    truncated: list[tuple[Path, int, int, str]] = field(default_factory=list)
    """Torn tails cut: (path, offset, bytes, reason)."""


def _last_of_compressed(segment: SegmentFile) -> tuple[int, int]:
    """Next seq and last ts of a compressed segment (decompresses it)."""
    with SegmentSource(segment.path) as src:
        next_seq, last_ts = src.header.first_seq, 0
        while True:
            item = src.next()
            if isinstance(item, End):
                if item.reason is not None:
                    raise JournalFormatError(
                        f"{segment.path}: bad block at uncompressed offset {item.offset}: "
                        f"{item.reason}"
                    )
                return next_seq, last_ts
            next_seq = item.header.end_seq
            last_ts = item.header.ts_max


def _is_stillborn(path: Path) -> bool:
    """A segment whose creation was cut short: shorter than a header, or all zeros."""
    with open(path, "rb") as f:
        data = f.read(SEGMENT_HEADER_SIZE + 1)
    return len(data) < SEGMENT_HEADER_SIZE or not any(data)


def recover_stream(directory: Path, *, repair: bool) -> StreamRecovery:
    """Find a stream journal's end; with ``repair``, cut a torn tail off the last segment.

    Raises:
        JournalFormatError: a segment header is unreadable (not a half-created last segment).
    """
    if repair:
        for name in remove_leftovers(directory):
            log.info("%s: removed leftover %s", directory, name)
    segments = list_segments(directory)
    if repair and segments and not segments[-1].compressed and _is_stillborn(segments[-1].path):
        log.warning("%s: removed an incompletely created segment", segments[-1].path)
        segments[-1].path.unlink()
        fsync_dir(directory)
        segments.pop()
    rec = StreamRecovery(directory, segments, None)
    if not segments:
        return rec
    last = segments[-1]
    rec.closed = [s for s in segments[:-1] if not s.compressed]
    if last.compressed:
        rec.next_seq, rec.last_ts = _last_of_compressed(last)
        return rec
    scan = scan_segment(last.path)
    rec.next_seq, rec.last_ts = scan.next_seq, scan.last_ts
    rec.corruptions = scan.corruptions
    if scan.torn_bytes:
        reason = scan.torn_reason or "trailing bytes"
        rec.truncated.append((last.path, scan.end_offset, scan.torn_bytes, reason))
        if repair:
            with open(last.path, "r+b") as f:
                f.truncate(scan.end_offset)
                os.fsync(f.fileno())
            scan.file_size = scan.end_offset
    if scan.corruptions:
        rec.closed.append(last)
    else:
        rec.active = scan
    return rec


def next_seq(state_dir: Path, feed: str, stream: str) -> int:
    """The journal's last sequence number + 1 (0 for a stream with no journal).

    A writer that starts after a reboot (rings gone, journal intact) creates its rings with
    ``first_seq=next_seq(...)`` so sequence numbers continue. Read-only: safe while the flusher
    runs (its answer is then at most the ring's tail, which a reopened ring keeps anyway).

    Raises:
        JournalError: the journal cannot be read.
    """
    return journal_end(stream_dir(state_dir, feed, stream))


def journal_end(directory: Path) -> int:
    """`next_seq` of a stream's journal directory."""
    try:
        segments = list_segments(directory)
        while segments:
            last = segments[-1]
            try:
                if last.compressed:
                    return _last_of_compressed(last)[0]
                if _is_stillborn(last.path):
                    segments.pop()
                    continue
                return scan_segment(last.path).next_seq
            except FileNotFoundError:
                segments = list_segments(directory)  # compressed meanwhile: list again
        return 0
    except JournalFormatError:
        raise
    except OSError as exc:
        raise JournalError(f"cannot read the journal in {directory}: {exc}") from None
