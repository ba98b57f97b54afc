"""One stream in the flusher: its ring reader, its journal, its error state and back-off.

`StreamTask.pump` reads the ring in batches (never per record) and appends blocks; losses the
reader reports (lapped, ring replaced) become LOSS blocks. On a write error the reader is rewound to
what the journal holds, the state is published (position file) and logged once per episode, and the
task retries with exponential back-off. A reader behind the ring's oldest record (the flusher was
down, slow, or the disk was full for longer than the ring lasts) records exactly the range the
ring no longer holds as a LOSS block and continues at the oldest record.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Callable
from typing import IO, Final

import numpy as np

from consolidator.errors import RingError
from consolidator.journal.appender import FsyncError, JournalWriteError, StreamJournal
from consolidator.journal.position import PositionFile, StreamState
from consolidator.journal.segment import (
    MAX_BLOCK_BYTES,
    JournalError,
    encode_fixed,
    encode_loss,
    encode_variable,
)
from consolidator.ring.reader import FixedRingReader, RingReader, VariableRingReader, VarRecord
from consolidator.streams import StreamSpec

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "StreamTask"]

log = logging.getLogger("consolidator.flusher")

BATCH_FIXED: Final = 65536
BATCH_VARIABLE: Final = 4096
BATCH_BYTES: Final = 4 << 20
BACKOFF_MIN_S: Final = 0.05
BACKOFF_MAX_S: Final = 1.0
RING_RETRY_S: Final = 1.0
EPISODE_QUIET_S: Final = 1.0


def _split_fixed(batch: np.ndarray, max_bytes: int) -> list[np.ndarray]:
    per = max(1, max_bytes // batch.dtype.itemsize)
    return [batch[i : i + per] for i in range(0, len(batch), per)]


def _split_variable(records: list[VarRecord], max_bytes: int) -> list[list[VarRecord]]:
    """Cut ``records`` into runs of about ``max_bytes`` (payloads plus 16-byte entries)."""
    sizes = np.fromiter((len(r.payload) for r in records), np.int64, len(records)) + 16
    ends = np.cumsum(sizes)
    if int(ends[-1]) <= max_bytes:
        return [records]
    out: list[list[VarRecord]] = []
    start = 0
    while start < len(records):
        base = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, base + max_bytes, side="right"))
        stop = max(stop, start + 1)
        out.append(records[start:stop])
        start = stop
    return out


class StreamTask:
    """Copies one ring into one stream journal."""

    def __init__(
        self,
        feed: str,
        spec: StreamSpec,
        journal: StreamJournal,
        position: PositionFile,
        open_ring: Callable[[], RingReader],
        clock: Callable[[], int],
    ) -> None:
        self.feed = feed
        self.spec = spec
        self.stream = spec.name
        self.name = f"{feed}/{spec.name}"
        self.journal = journal
        self.position = position
        self._open_ring = open_ring
        self._clock = clock
        self.reader: RingReader | None = None
        self.resume_at: int | None = None
        self.state = StreamState.OK
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN_S
        self.episode_start: float | None = None
        self.ok_since: float | None = None
        self.failures = 0
        self.synced_to = journal.durable_seq or 0
        pos = position
        pos.set(self.stream, "present", 1)
        pos.set(self.stream, "durable_seq", journal.durable_seq or 0)
        pos.set(self.stream, "written_seq", journal.written_seq or 0)
        pos.set(self.stream, "durable_ts_ns", journal.durable_ts)
        self._reopen()

    def _set_state(self, state: StreamState) -> None:
        self.state = state
        self.position.set(self.stream, "state", state)

    # -- the ring ------------------------------------------------------------------------------

    def _reopen(self) -> None:
        try:
            reader = self._open_ring()
        except RingError as exc:
            if self.state is not StreamState.RING_ERROR:
                log.warning("%s: cannot open the ring: %s (retrying)", self.name, exc)
            self._set_state(StreamState.RING_ERROR)
            self.retry_at = time.monotonic() + RING_RETRY_S
            return
        self.reader = reader
        self._set_state(StreamState.OK)
        self._attach(reader)

    def _attach(self, reader: RingReader) -> None:
        journal_next = self.journal.written_seq
        tail = reader.tail()
        if journal_next is None:
            self.resume_at = reader.first_seq
            where = "empty journal"
        else:
            self.resume_at = journal_next
            where = f"journal next {journal_next}"
            if journal_next > tail:
                self._set_state(StreamState.SEQ_REGRESSED)
                log.error(
                    "%s: the ring's sequence (tail %d) is behind the journal's (next %d): was the "
                    "writer started without first_seq=next_seq(...)? Journaling resumes at seq %d",
                    self.name, tail, journal_next, journal_next,
                )  # fmt: skip
        log.info(
            "%s: journaling from seq %d (%s; ring holds %d..%d)",
            self.name, self.resume_at, where, reader.oldest(), tail,
        )  # fmt: skip

    def _reposition(self, reader: RingReader) -> None:
        """Apply ``resume_at``: continue there, or record what the ring no longer has."""
        seq = self.resume_at
        if seq is None:
            return
        if seq < reader.first_seq:
            self._append_loss(seq, reader.first_seq - seq, "before ring")
            seq = reader.first_seq
        reader.position = seq
        self.resume_at = None

    def pending(self) -> bool:
        """Whether the ring holds records not yet journaled (or a rewind is pending)."""
        reader = self.reader
        return reader is not None and (self.resume_at is not None or reader.available() > 0)

    def pump(self, batches: int) -> int:
        """Read up to ``batches`` batches from the ring into the journal; returns records moved."""
        reader = self.reader
        if reader is None:
            self._reopen()
            return 0
        moved = 0
        try:
            self._reposition(reader)
            for _ in range(batches):
                oldest = reader.oldest()
                if reader.position < oldest:
                    # Lapped: record exactly what the ring no longer holds and continue at its
                    # oldest record (the reader's own lap recovery would skip a margin more).
                    self._append_loss(reader.position, oldest - reader.position, "lapped")
                    reader.position = oldest
                batch: np.ndarray | list[VarRecord]
                if isinstance(reader, FixedRingReader):
                    batch = reader.read_batch(BATCH_FIXED)
                else:
                    assert isinstance(reader, VariableRingReader)
                    batch = reader.read_batch(BATCH_VARIABLE, BATCH_BYTES)
                for loss in reader.drain_losses():
                    self._append_loss(loss.first_seq, loss.count, loss.reason)
                if not len(batch):
                    if not moved and reader.position >= reader.tail():
                        reader.refresh()
                    break
                self._append_records(batch)
                moved += len(batch)
        except JournalWriteError as exc:
            self.failed(exc)
            self.position.set(self.stream, "ring_tail", reader.tail())
            return moved
        except RingError as exc:
            self._ring_failed(exc)
            return moved
        if self.episode_start is not None:
            self._quiet_pass()
        tail = reader.tail()
        if self.state is StreamState.SEQ_REGRESSED and tail >= (self.journal.written_seq or 0):
            log.info("%s: the ring's sequence has caught up with the journal", self.name)
            self._set_state(StreamState.OK)
        self.position.set(self.stream, "ring_tail", tail)
        return moved

    # -- appending -----------------------------------------------------------------------------

    def _append_records(self, batch: np.ndarray | list[VarRecord]) -> None:
        journal = self.journal
        rtype = int(self.spec.record_type)
        written = 0
        if isinstance(batch, np.ndarray):
            for part in _split_fixed(batch, MAX_BLOCK_BYTES):
                first = int(part["seq"][0])
                written += journal.append(
                    encode_fixed(part, rtype), first, len(part), int(part["ts_commit"][-1])
                )
        else:
            for chunk in _split_variable(batch, MAX_BLOCK_BYTES):
                written += journal.append(
                    encode_variable(chunk, rtype), chunk[0].seq, len(chunk), chunk[-1].ts_commit
                )
        self.position.add(self.stream, "bytes_written", written)
        self.position.set(self.stream, "written_seq", journal.written_seq or 0)

    def _append_loss(self, first: int, count: int, reason: str) -> None:
        journal = self.journal
        if count <= 0:
            return
        if journal.written_seq is not None and first != journal.written_seq:
            raise JournalError(
                f"{self.name}: loss at seq {first} does not continue the journal "
                f"(next is {journal.written_seq})"
            )
        block = encode_loss(first, count, reason, int(self.spec.record_type), self._clock())
        journal.append(block, first, count, journal.written_ts, loss=True)
        pos = self.position
        pos.add(self.stream, "lost_records", count)
        pos.add(self.stream, "loss_events")
        pos.set(self.stream, "written_seq", journal.written_seq or 0)
        log.warning(
            "%s: %d records lost, seq %d..%d (%s): recorded in the journal",
            self.name, count, first, first + count - 1, reason,
        )  # fmt: skip

    def _quiet_pass(self) -> None:
        """A pass without error during an error episode: it ends after EPISODE_QUIET_S of those
        (a nearly full disk lets a small block through now and then: still the same episode)."""
        if self.state not in (StreamState.NO_SPACE, StreamState.IO_ERROR):
            return
        now = time.monotonic()
        if self.ok_since is None:
            self.ok_since = now
        elif now - self.ok_since >= EPISODE_QUIET_S:
            self._recovered()

    # -- errors --------------------------------------------------------------------------------

    def failed(self, exc: JournalWriteError) -> None:
        """A write or an fdatasync failed: publish, log once per episode, rewind, back off."""
        if isinstance(exc, FsyncError):
            state = StreamState.FSYNC_FAILED
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            state = StreamState.NO_SPACE
        else:
            state = StreamState.IO_ERROR
        pos = self.position
        pos.add(self.stream, "fsync_errors" if isinstance(exc, FsyncError) else "write_errors")
        pos.set(self.stream, "last_errno", exc.errno)
        pos.set(self.stream, "written_seq", self.journal.written_seq or 0)
        self.failures += 1
        self.ok_since = None
        if self.episode_start is None or isinstance(exc, FsyncError):
            log.error("%s: %s; retrying with back-off", self.name, exc)
            if self.episode_start is None:
                self.episode_start = time.monotonic()
        self._set_state(state)
        self.resume_at = self.journal.written_seq
        if self.resume_at is None and self.reader is not None:
            self.resume_at = self.reader.first_seq
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def _recovered(self) -> None:
        started = self.episode_start if self.episode_start is not None else time.monotonic()
        log.info(
            "%s: journal writable again after %.1f s (%d failed attempts)",
            self.name, time.monotonic() - started, self.failures,
        )  # fmt: skip
        self.episode_start = None
        self.ok_since = None
        self.failures = 0
        self.backoff = BACKOFF_MIN_S
        self._set_state(StreamState.OK)

    def _ring_failed(self, exc: RingError) -> None:
        log.error("%s: ring error: %s; reopening the ring", self.name, exc)
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.resume_at = self.journal.written_seq
        self._set_state(StreamState.RING_ERROR)
        self.retry_at = time.monotonic() + RING_RETRY_S

    # -- syncing -------------------------------------------------------------------------------

    def sync(self, sync_log: IO[str] | None) -> None:
        """fdatasync the journal, publish the durable position, rotate when due."""
        journal = self.journal
        before = self.synced_to
        oldest_ts = journal.oldest_unsynced_ts
        try:
            took = journal.sync()
        except FsyncError as exc:
            self.failed(exc)
            return
        now = self._clock()
        durable = journal.durable_seq or 0
        self.synced_to = durable
        if self.state is StreamState.FSYNC_FAILED:
            self._recovered()
        pos = self.position
        pos.set(self.stream, "durable_ts_ns", journal.durable_ts)
        pos.set(self.stream, "synced_at_ns", now)
        pos.set(self.stream, "durable_seq", durable)
        pos.add(self.stream, "fsyncs")
        pos.set(self.stream, "fsync_ns", took)
        if sync_log is not None:
            line = {"t": now, "feed": self.feed, "stream": self.stream, "from": before,
                    "to": durable, "oldest_ts": oldest_ts, "fsync_ns": took}  # fmt: skip
            sync_log.write(json.dumps(line) + "\n")
            sync_log.flush()
        if journal.rotate_due(now):
            try:
                journal.rotate()
                log.info("%s: rotated to %s", self.name, journal.segment_path)
            except JournalWriteError as exc:
                log.warning("%s: %s (the next write retries)", self.name, exc)

    def close(self) -> None:
        """Close the ring reader and the journal's segment."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.journal.close()
