"""One stream's journal on the writing side: append blocks, fdatasync, rotate, survive errors.

The active segment is a plain file appended with ``pwritev`` at an offset this class tracks (the end
of the last complete block), so a failed or short write (ENOSPC, EIO) is undone by truncating back
to it, and nothing half-written is ever counted. Sequence bookkeeping:

- ``written_seq``: every seq below it has been written to the active segment or before;
- ``durable_seq``: every seq below it has also been fdatasync'd.

After a failed fdatasync the segment is abandoned at once and never synced again (the kernel may
already have dropped the dirty pages and cleared the error, so a retry could "succeed" with data
lost): it is truncated back to its durable size where possible and closed, ``written_seq`` falls
back to ``durable_seq``, and the caller rewrites from the ring (or records loss) into a new segment
that starts at ``durable_seq``. Rotation (by age or size) happens only right after a successful
sync, so a closed segment is always complete and durable before it is handed to the compressor.

`JournalCounters` are the flusher's metrics of one stream, in the feed's ``flusher.counters``
file (`consolidator.counters`): records and bytes journaled, and the fdatasync durations.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consolidator.config import FlusherConfig
from consolidator.counters import CountersFile, Histogram
from consolidator.journal.files import fsync_dir, segment_path
from consolidator.journal.recovery import StreamRecovery
from consolidator.journal.segment import (
    JournalError,
    SegmentHeader,
)
from consolidator.streams import StreamSpec

__all__ = ["FSYNC_BOUNDS_NS", "FsyncError", "JournalCounters", "JournalWriteError", "StreamJournal"]

log = logging.getLogger("consolidator.journal")

Buffer = bytes | bytearray | memoryview

FSYNC_BOUNDS_NS: Final = tuple(
    int(ms * 1_000_000)
    for ms in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
)
"""``consolidator_fsync_duration_seconds`` buckets: 100 µs to 10 s."""


class JournalCounters:
    """One stream's slots in the flusher's counters file of its feed."""

    def __init__(self, file: CountersFile, stream: str) -> None:
        labels = (("stream", stream),)
        self.words = file.words
        self.records = file.slot("consolidator_journal_records_total", labels)
        self.bytes = file.slot("consolidator_journal_bytes_total", labels)
        self.fsync: Histogram = file.histogram(
            "consolidator_fsync_duration_seconds", FSYNC_BOUNDS_NS
        )


class JournalWriteError(JournalError):
    """A write to the journal failed; nothing of it counts as written."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


class FsyncError(JournalWriteError):
    """fdatasync failed: the segment was abandoned; rewrite from ``durable_seq``."""


@dataclass
class _Segment:
    path: Path
    fd: int
    first_seq: int
    created_ns: int
    offset: int
    durable_offset: int
    blocks: int


class StreamJournal:
    """Appends one stream's blocks to segments under ``directory``.

    Args:
        directory: ``{state_dir}/journal/{feed}/{stream}``.
        recovery: what `recover_stream` found there (with ``repair=True``).
        on_closed: called with a closed segment and the first seq of the next one, for compression.
        fsync: the data sync call (``os.fdatasync``; tests inject failures).
        counters: where records, bytes and fdatasync durations are counted.
    """

    def __init__(
        self,
        directory: Path,
        feed: str,
        spec: StreamSpec,
        config: FlusherConfig,
        recovery: StreamRecovery,
        *,
        on_closed: Callable[[Path, int | None], None] = lambda p, s: None,
        fsync: Callable[[int], None] = os.fdatasync,
        clock: Callable[[], int] = time.time_ns,
        counters: JournalCounters | None = None,
    ) -> None:
        self.directory = directory
        self.feed = feed
        self.spec = spec
        self.config = config
        self._on_closed = on_closed
        self._fsync = fsync
        self._clock = clock
        self._counters = counters
        self.record_size = spec.dtype.itemsize if spec.dtype is not None else 0
        self.written_seq: int | None = recovery.next_seq
        self.durable_seq: int | None = recovery.next_seq
        self.written_ts = recovery.last_ts
        self.durable_ts = recovery.last_ts
        self.dirty_bytes = 0
        self.bytes_written = 0
        self.oldest_unsynced_ts = 0
        self._segment: _Segment | None = None
        active = recovery.active
        if active is not None:
            header = active.header
            if (header.kind, header.record_size) != (int(spec.kind), self.record_size):
                raise JournalError(
                    f"{active.path}: segment of kind {header.kind} with {header.record_size}-byte "
                    f"records, but stream {spec.name} has kind {int(spec.kind)} and "
                    f"{self.record_size}-byte records"
                )
            fd = os.open(active.path, os.O_WRONLY)
            try:
                self._fsync(fd)  # whatever the last run left in the page cache is now durable
            except OSError:
                os.close(fd)
                raise
            self._segment = _Segment(
                active.path,
                fd,
                header.first_seq,
                header.created_ns,
                active.end_offset,
                active.end_offset,
                active.blocks,
            )

    # -- segments ------------------------------------------------------------------------------

    @property
    def segment_path(self) -> Path | None:
        """The active segment, if one is open."""
        return self._segment.path if self._segment is not None else None

    def _create(self, first_seq: int) -> _Segment:
        path = segment_path(self.directory, first_seq)
        header = SegmentHeader(
            int(self.spec.kind),
            int(self.spec.record_type),
            self.record_size,
            first_seq,
            self._clock(),
            self.feed,
            self.spec.name,
        ).pack()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise JournalWriteError(
                f"cannot create segment {path}: {exc.strerror}", exc.errno or errno.EIO
            ) from None
        try:
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.ENOSPC, "short write")
            self._fsync(fd)
            fsync_dir(self.directory)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise JournalWriteError(
                f"cannot create segment {path}: {exc.strerror}", exc.errno or errno.EIO
            ) from None
        log.debug("%s: new segment", path)
        return _Segment(path, fd, first_seq, self._clock(), len(header), len(header), 0)

    def _close_segment(self, next_first: int | None) -> None:
        seg = self._segment
        if seg is None:
            return
        self._segment = None
        os.close(seg.fd)
        if seg.blocks:
            self._on_closed(seg.path, next_first)
        else:
            seg.path.unlink(missing_ok=True)

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        parts: Sequence[Buffer],
        first_seq: int,
        count: int,
        ts_max: int,
        *,
        loss: bool = False,
    ) -> int:
        """Append one encoded block (``count`` records from ``first_seq``); returns its bytes.

        A ``loss`` block covers ``count`` lost records: they are not counted as journaled.

        Raises:
            JournalWriteError: the write failed; the segment is as it was before the call.
            JournalError: ``first_seq`` does not continue the journal (a bug, never data).
        """
        if self.written_seq is not None and first_seq != self.written_seq:
            raise JournalError(
                f"{self.directory}: block at seq {first_seq} does not continue the journal "
                f"(next is {self.written_seq})"
            )
        seg = self._segment
        if seg is None:
            seg = self._segment = self._create(first_seq)
        size = sum(len(p) for p in parts)
        try:
            written = os.pwritev(seg.fd, parts, seg.offset)
            if written != size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, seg.offset)
            raise JournalWriteError(
                f"cannot write {seg.path} at offset {seg.offset}: {exc.strerror}",
                exc.errno or errno.EIO,
            ) from None
        seg.offset += size
        seg.blocks += 1
        if not self.dirty_bytes:
            self.oldest_unsynced_ts = ts_max
        self.dirty_bytes += size
        self.bytes_written += size
        self.written_seq = first_seq + count
        self.written_ts = ts_max
        counters = self._counters
        if counters is not None:
            w = counters.words
            w[counters.bytes] += size
            if not loss:
                w[counters.records] += count
        return size

    @property
    def dirty(self) -> bool:
        """Whether there is written data not yet synced."""
        return self.dirty_bytes > 0

    def sync(self) -> int:
        """fdatasync the active segment; returns the duration in ns.

        Raises:
            FsyncError: it failed; the segment is abandoned and ``written_seq`` is back at
                ``durable_seq``: the caller must rewrite from there.
        """
        seg = self._segment
        if seg is None or not self.dirty_bytes:
            return 0
        start = time.perf_counter_ns()
        try:
            self._fsync(seg.fd)
        except OSError as exc:
            self._abandon(seg)
            raise FsyncError(
                f"fdatasync of {seg.path} failed: {exc.strerror}; segment abandoned at offset "
                f"{seg.durable_offset}, rewriting from seq {self.durable_seq}",
                exc.errno or errno.EIO,
            ) from None
        took = time.perf_counter_ns() - start
        seg.durable_offset = seg.offset
        self.durable_seq = self.written_seq
        self.durable_ts = self.written_ts
        self.dirty_bytes = 0
        if self._counters is not None:
            self._counters.fsync.observe(took)
        return took

    def _abandon(self, seg: _Segment) -> None:
        self._segment = None
        durable = self.durable_seq if self.durable_seq is not None else seg.first_seq
        with contextlib.suppress(OSError):
            os.ftruncate(seg.fd, seg.durable_offset)
        os.close(seg.fd)
        if durable <= seg.first_seq:
            seg.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                fsync_dir(self.directory)
        else:
            self._on_closed(seg.path, durable)
        self.written_seq = self.durable_seq
        self.written_ts = self.durable_ts
        self.dirty_bytes = 0

    def rotate_due(self, now_ns: int) -> bool:
        """Whether the active segment is old or big enough to close (checked after a sync)."""
        seg = self._segment
        if seg is None or not seg.blocks or self.dirty_bytes:
            return False
        return (
            seg.offset >= self.config.segment_bytes
            or now_ns - seg.created_ns >= self.config.segment_seconds * 1_000_000_000
        )

    def rotate(self) -> None:
        """Close the (synced) active segment and start the next one.

        Raises:
            JournalWriteError: the new segment could not be created (the next append retries).
        """
        if self._segment is None or self.written_seq is None:
            return
        self._close_segment(self.written_seq)
        self._segment = self._create(self.written_seq)

    def close(self) -> None:
        """Close the active segment (it stays the active one for the next run)."""
        seg = self._segment
        if seg is not None:
            self._segment = None
            os.close(seg.fd)
