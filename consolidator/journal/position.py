"""The flusher's durable position per stream, published in ``{shm_dir}/{feed}/durable``.

A small shared-memory file that the flusher (its only writer) updates after every fdatasync, and
that readers (mdstat, the exporter, history readers) map read-only. Layout, little-endian::

    offset  size  field
    ------  ----  ----------------  ----------------------------------------------------------
       0      8   magic             "CNSLDURA", written LAST on creation
       8      4   version           POSITION_VERSION
      12      4   slot_count        len(streams.STREAMS) slots follow
      16      4   slot_size         128
      20      4   (reserved)
      24      8   flusher_pid
      32      8   flusher_start_ns
      40      8   heartbeat_ns      refreshed by the flusher's loop (about every 100 ms)
      48      8   flusher_state     0 none, 1 running, 2 stopped cleanly
     128    128   slot 0            one per stream, in `consolidator.streams.STREAMS` order
     ...

    slot (128 bytes; every field a u64 word)
       0 durable_seq        every seq < durable_seq is in the journal and fdatasync'd (data/loss)
       8 durable_ts_ns      ts_commit of the newest durable record (0: none yet)
      16 synced_at_ns       wall time at which that fdatasync returned
      24 written_seq        every seq < written_seq has been written (maybe not yet durable)
      32 state              `StreamState`
      40 lost_records       records recorded as lost in the journal (LOSS blocks), total
      48 loss_events        LOSS blocks written
      56 write_errors       failed writes (ENOSPC, EIO, ...)
      64 fsync_errors       failed fdatasyncs (each abandons a segment)
      72 bytes_written      journal bytes written
      80 fsyncs             fdatasyncs done
      88 fsync_ns           duration of the last fdatasync
      96 last_errno         errno of the last error (0: none)
     104 ring_tail          the ring's tail when last read
     112 present            1 when this stream has a ring and a journal

Each word is stored through a ``memoryview`` cast to ``'Q'``: one aligned 8-byte store, never
``struct.pack_into`` (which zero-fills its target first, so a reader could see a transient 0).
Only the flusher writes, so no word is shared between writers; a reader reads each word whole
(x86-64), though two words read one after the other may come from different updates.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consolidator.journal.segment import JournalError
from consolidator.shmfile import create_mapped, map_readonly
from consolidator.streams import STREAMS

__all__ = [
    "FILE_NAME",
    "POSITION_VERSION",
    "DurablePosition",
    "FlusherState",
    "PositionFile",
    "StreamDurable",
    "StreamState",
    "durable_lag_ns",
    "read_positions",
]

FILE_NAME: Final = "durable"
MAGIC: Final = int.from_bytes(b"CNSLDURA", "little")
POSITION_VERSION: Final = 1
HEADER_SIZE: Final = 128
SLOT_SIZE: Final = 128
FILE_SIZE: Final = 4096
STREAM_INDEX: Final = {name: i for i, name in enumerate(STREAMS)}
_HEAD: Final = struct.Struct("<QIII")

W_MAGIC, W_PID, W_START, W_HEARTBEAT, W_STATE = 0, 3, 4, 5, 6
FIELDS: Final = (
    "durable_seq",
    "durable_ts_ns",
    "synced_at_ns",
    "written_seq",
    "state",
    "lost_records",
    "loss_events",
    "write_errors",
    "fsync_errors",
    "bytes_written",
    "fsyncs",
    "fsync_ns",
    "last_errno",
    "ring_tail",
    "present",
)
F: Final = {name: i for i, name in enumerate(FIELDS)}


class StreamState(enum.IntEnum):
    """A stream's journaling state (the ``state`` word)."""

    NONE = 0
    OK = 1
    NO_SPACE = 2
    IO_ERROR = 3
    FSYNC_FAILED = 4
    SEQ_REGRESSED = 5
    RING_ERROR = 6


class FlusherState(enum.IntEnum):
    """The ``flusher_state`` word."""

    NONE = 0
    RUNNING = 1
    STOPPED = 2


@dataclass(frozen=True)
class StreamDurable:
    """One stream's slot, as read."""

    durable_seq: int
    durable_ts_ns: int
    synced_at_ns: int
    written_seq: int
    state: StreamState
    lost_records: int
    loss_events: int
    write_errors: int
    fsync_errors: int
    bytes_written: int
    fsyncs: int
    fsync_ns: int
    last_errno: int
    ring_tail: int
    present: bool


@dataclass(frozen=True)
class DurablePosition:
    """The whole file, as read."""

    flusher_pid: int
    flusher_start_ns: int
    heartbeat_ns: int
    flusher_state: FlusherState
    streams: dict[str, StreamDurable]

    def flusher_alive(self, now_ns: int | None = None, max_age_ns: int = 3_000_000_000) -> bool:
        """Whether a flusher is running and its heartbeat is fresh."""
        now = time.time_ns() if now_ns is None else now_ns
        return self.flusher_state is FlusherState.RUNNING and now - self.heartbeat_ns < max_age_ns


def durable_lag_ns(slot: StreamDurable, now_ns: int) -> int:
    """How far durability trails the ring (``consolidator_flusher_durable_lag_seconds``).

    0 when everything the ring held at the flusher's last read is durable; otherwise the age of the
    newest durable record, an upper bound on the age of the oldest record not yet durable (or, with
    nothing durable yet, the time since the last fdatasync).
    """
    if slot.durable_seq >= slot.ring_tail:
        return 0
    since = slot.durable_ts_ns or slot.synced_at_ns
    return max(0, now_ns - since) if since else 0


def _slot_word(stream: str, field: str) -> int:
    return (HEADER_SIZE + STREAM_INDEX[stream] * SLOT_SIZE) // 8 + F[field]


class PositionFile:
    """The flusher's side: create or reopen the file, store words."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        try:
            self._fd, self._mm = self._open()
        except OSError as exc:
            raise JournalError(f"cannot create {path}: {exc.strerror}") from None
        self._w = memoryview(self._mm).cast("Q")
        now = time.time_ns()
        self._w[W_PID] = os.getpid()
        self._w[W_START] = now
        self._w[W_HEARTBEAT] = now
        self._w[W_STATE] = FlusherState.RUNNING

    def _open(self) -> tuple[int, mmap.mmap]:
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            pass
        else:
            if os.fstat(fd).st_size == FILE_SIZE:
                mm = mmap.mmap(fd, FILE_SIZE)
                magic, version, slots, slot_size = _HEAD.unpack_from(mm, 0)
                if (magic, version, slots, slot_size) == (
                    MAGIC, POSITION_VERSION, len(STREAMS), SLOT_SIZE,
                ):  # fmt: skip
                    return fd, mm
                mm.close()
            os.close(fd)
        path.parent.mkdir(parents=True, exist_ok=True)

        def fill(_fd: int, mm: mmap.mmap) -> None:
            _HEAD.pack_into(mm, 0, 0, POSITION_VERSION, len(STREAMS), SLOT_SIZE)
            with memoryview(mm).cast("Q") as w:
                w[W_MAGIC] = MAGIC

        fd, mm = create_mapped(path, FILE_SIZE, fill)
        return fd, mm

    def heartbeat(self, now_ns: int) -> None:
        """Tell readers the flusher is alive."""
        self._w[W_HEARTBEAT] = now_ns

    def set(self, stream: str, field: str, value: int) -> None:
        """Store one word of a stream's slot."""
        self._w[_slot_word(stream, field)] = value

    def add(self, stream: str, field: str, value: int = 1) -> None:
        """Add to a counter word of a stream's slot."""
        i = _slot_word(stream, field)
        self._w[i] = self._w[i] + value

    def get(self, stream: str, field: str) -> int:
        """Load one word of a stream's slot."""
        value: int = self._w[_slot_word(stream, field)]
        return value

    def close(self, state: FlusherState = FlusherState.STOPPED) -> None:
        """Mark the flusher stopped and unmap."""
        if self._fd < 0:
            return
        self._w[W_HEARTBEAT] = time.time_ns()
        self._w[W_STATE] = state
        self._w.release()
        self._mm.close()
        os.close(self._fd)
        self._fd = -1


def read_positions(shm_dir: Path, feed: str) -> DurablePosition | None:
    """The feed's durable positions, or None if no flusher has published any."""
    path = shm_dir / feed / FILE_NAME
    try:
        mm = map_readonly(path, FILE_SIZE, FILE_SIZE)
    except FileNotFoundError:
        return None
    if mm is None:
        return None
    try:
        return _parse(mm)
    finally:
        mm.close()


def _parse(mm: mmap.mmap) -> DurablePosition | None:
    words = memoryview(mm).cast("Q")
    try:
        return _parse_words(words)
    finally:
        words.release()


def _parse_words(words: memoryview) -> DurablePosition | None:
    if int(words[W_MAGIC]) != MAGIC:
        return None
    version, slots, slot_size = struct.unpack("<III", words[1:3].tobytes()[:12])
    if version != POSITION_VERSION or slot_size != SLOT_SIZE:
        return None
    streams: dict[str, StreamDurable] = {}
    for name, index in STREAM_INDEX.items():
        if index >= slots:
            break
        base = (HEADER_SIZE + index * SLOT_SIZE) // 8
        values = [int(words[base + i]) for i in range(len(FIELDS))]
        try:
            state = StreamState(values[F["state"]])
        except ValueError:
            state = StreamState.NONE
        values[F["state"]] = state
        fields = dict(zip(FIELDS, values, strict=True))
        fields["present"] = bool(fields["present"])
        streams[name] = StreamDurable(**fields)  # type: ignore[arg-type]
    try:
        fstate = FlusherState(int(words[W_STATE]))
    except ValueError:
        fstate = FlusherState.NONE
    return DurablePosition(
        int(words[W_PID]), int(words[W_START]), int(words[W_HEARTBEAT]), fstate, streams
    )
