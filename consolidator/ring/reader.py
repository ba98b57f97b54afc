"""Lock-free ring readers: batch (numpy) and per-record, with exact loss accounting.

A reader never writes to the ring. It copies, then re-validates against the writer's intent words
(see `consolidator.ring.layout`), so it never returns a torn record. A reader that fell more than a
ring behind is *lapped*: it records a `Loss` with the exact sequence range it skipped, counts it,
and continues from a valid position. Loss is not an error.

Readers follow the ring across writer restarts (same file, sequence continues) and across the file
being replaced (a new epoch renamed into place): the old mapping is drained first, then the reader
switches to the new file and carries on at its sequence number.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np

from consolidator.errors import RingError, RingFormatError
from consolidator.ring.layout import (
    DESCRIPTOR,
    DESCRIPTOR_DTYPE,
    HEADER_SIZE,
    W_HEAP_INTENT,
    W_HEARTBEAT,
    W_TAIL,
    W_TAIL_INTENT,
    W_WRITER_GENERATION,
    W_WRITER_PID,
    W_WRITER_START,
    W_WRITER_STATE,
    HeaderInfo,
    RingKind,
    WriterState,
    read_layout,
    words,
)

__all__ = [
    "FixedRingReader",
    "Loss",
    "RingReader",
    "VarRecord",
    "VariableRingReader",
    "WriterInfo",
    "open_reader",
]

REPLACEMENT_CHECK_NS: Final = 200_000_000


@dataclass(frozen=True)
class Loss:
    """Records ``first_seq .. first_seq + count - 1`` were lost to this reader."""

    first_seq: int
    count: int
    reason: str = "lapped"


@dataclass(frozen=True)
class WriterInfo:
    """The writer-owned header words."""

    pid: int
    generation: int
    start_ns: int
    heartbeat_ns: int
    state: WriterState


class VarRecord(NamedTuple):
    """One record of a variable ring."""

    seq: int
    record_type: int
    ts_commit: int
    flags: int
    payload: bytes


_STRUCT_CODES: Final = {"u8": "Q", "i8": "q", "u4": "I", "i4": "i", "u2": "H", "i2": "h",
                        "u1": "B", "i1": "b"}  # fmt: skip


def struct_of(dtype: np.dtype[np.void]) -> struct.Struct:
    """The little-endian struct of a packed record dtype (integer fields only, no gaps)."""
    fields: Mapping[str, Any] = dtype.fields or {}
    codes = []
    offset = 0
    for name in dtype.names or ():
        field, at = fields[name][0], fields[name][1]
        code = _STRUCT_CODES.get(f"{field.kind}{field.itemsize}")
        if code is None or at != offset:
            raise RingFormatError(f"no struct for record field {name!r} ({field}) at {at}")
        codes.append(code)
        offset += field.itemsize
    if offset != dtype.itemsize:
        raise RingFormatError(f"record dtype has trailing padding: {dtype}")
    return struct.Struct("<" + "".join(codes))


def _map_readonly(path: Path) -> tuple[mmap.mmap, int, HeaderInfo]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise RingError(f"ring {path} does not exist (is the writer running?)") from None
    except OSError as exc:
        raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_size == 0:
            raise RingFormatError(f"{path}: not a ring file (empty)")
        mm = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        info = read_layout(mm, st.st_size, path)
    except BaseException:
        mm.close()
        raise
    return mm, st.st_ino, info


class RingReader:
    """Position, loss accounting, writer liveness and file-replacement handling.

    Args:
        path: the ring file.
        start: ``"oldest"`` (the oldest record still held), ``"tail"`` (only new records), or a
            sequence number (clamped into what the ring holds; anything older counts as loss).
        clock: nanosecond wall clock (for heartbeat age and replacement checks).
    """

    kind: RingKind = RingKind.FIXED

    def __init__(
        self,
        path: Path,
        *,
        start: str | int = "tail",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self._clock = clock
        self.lost = 0
        self.losses: list[Loss] = []
        self._attach(*_map_readonly(path))
        if self.layout.kind is not self.kind:
            raise RingFormatError(
                f"{path}: a {self.layout.kind.name.lower()} ring, not {self.kind.name.lower()}"
            )
        self._next_check = 0
        tail = self.tail()
        if start == "tail":
            self.position = tail
        elif start == "oldest":
            self.position = self.oldest()
        elif isinstance(start, int):
            self.position = min(max(start, self.first_seq), tail)
            if start < self.first_seq:
                self._lose(start, self.first_seq - start, "before ring")
        else:
            raise ValueError(f"start must be 'oldest', 'tail' or a sequence number: {start!r}")

    def _attach(self, mm: mmap.mmap, inode: int, info: HeaderInfo) -> None:
        self._mm = mm
        self._words = words(mm)
        self._inode = inode
        self.layout = info.layout
        self.epoch = info.epoch
        self.first_seq = info.first_seq
        self.capacity = info.layout.capacity
        self._mask = info.layout.capacity - 1
        self._on_attach()

    def _on_attach(self) -> None:
        """Build the views a subclass needs over a fresh mapping."""

    # -- header ---------------------------------------------------------------------------------

    def tail(self) -> int:
        """Sequence number one past the last published record."""
        value: int = self._words[W_TAIL]
        return value

    def oldest(self) -> int:
        """The oldest sequence number the ring still holds (approximately, it moves)."""
        intent: int = self._words[W_TAIL_INTENT]
        return min(max(self.first_seq, intent - self.capacity), self.tail())

    def available(self) -> int:
        """Records published but not yet read by this reader."""
        return max(0, self.tail() - self.position)

    def writer_info(self) -> WriterInfo:
        """The writer's pid, generation, start time, heartbeat and state."""
        w = self._words
        pid, generation, start_ns, heartbeat_ns, state = (
            w[W_WRITER_PID],
            w[W_WRITER_GENERATION],
            w[W_WRITER_START],
            w[W_HEARTBEAT],
            w[W_WRITER_STATE],
        )
        try:
            state = WriterState(state)
        except ValueError:
            state = WriterState.NONE
        return WriterInfo(pid, generation, start_ns, heartbeat_ns, state)

    def writer_alive(self, max_age_ns: int = 3_000_000_000) -> bool:
        """Whether the writer is live and its heartbeat is younger than ``max_age_ns``."""
        info = self.writer_info()
        return info.state is WriterState.LIVE and self._clock() - info.heartbeat_ns < max_age_ns

    # -- losses ---------------------------------------------------------------------------------

    def _lose(self, first_seq: int, count: int, reason: str = "lapped") -> None:
        if count > 0:
            self.lost += count
            self.losses.append(Loss(first_seq, count, reason))

    def drain_losses(self) -> list[Loss]:
        """Losses since the last call, oldest first. They precede the records read after them."""
        out, self.losses = self.losses, []
        return out

    def _resume_after_lap(self) -> int:
        """Where a lapped reader continues: a little past the oldest record, to get ahead."""
        intent: int = self._words[W_TAIL_INTENT]
        oldest = max(self.first_seq, intent - self.capacity)
        return min(oldest + (self.capacity >> 4), self.tail())

    # -- replacement ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Call when idle: switch to a replacement file once this one is drained.

        Returns True if the reader switched files.
        """
        if self.position < self.tail():
            return False
        superseded = self._words[W_WRITER_STATE] == WriterState.SUPERSEDED
        now = self._clock()
        if not superseded and now < self._next_check:
            return False
        self._next_check = now + REPLACEMENT_CHECK_NS
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if inode == self._inode and not superseded:
            return False
        try:
            mm, inode, info = _map_readonly(self.path)
        except RingError:
            return False
        if inode == self._inode:
            mm.close()
            return False
        if info.layout.kind is not self.kind:
            mm.close()
            raise RingFormatError(f"{self.path}: replaced by a ring of another kind")
        old, old_words = self._mm, self._words
        self._attach(mm, inode, info)  # rebinds the numpy views, releasing the old mapping's
        old_words.release()
        old.close()
        if self.position < self.first_seq:
            self._lose(self.position, self.first_seq - self.position, "ring replaced")
            self.position = self.first_seq
        return True

    def wait(self, timeout_s: float, *, spin_s: float = 20e-6, max_sleep_s: float = 250e-6) -> bool:
        """Wait for new records with a back-off poller: spin briefly, then sleep up to max_sleep_s.

        Returns True when records are available, False on timeout.
        """
        tail = self.tail
        if tail() > self.position:
            return True
        start = time.perf_counter()
        deadline = start + timeout_s
        spin_until = start + spin_s
        sleep = 10e-6
        while True:
            now = time.perf_counter()
            if tail() > self.position:
                return True
            if now >= deadline:
                self.refresh()
                return tail() > self.position
            if now >= spin_until:
                time.sleep(sleep)
                sleep = min(sleep * 2, max_sleep_s)
                if sleep >= max_sleep_s:
                    self.refresh()

    def close(self) -> None:
        """Unmap the ring (numpy views over the mapping are dropped first)."""
        for name in ("_slots", "_descs", "_heap"):
            self.__dict__.pop(name, None)
        self._words.release()
        self._mm.close()

    def __enter__(self) -> RingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FixedRingReader(RingReader):
    """Reads fixed-size records: batches as numpy structured arrays, or one record at a time."""

    kind = RingKind.FIXED

    def __init__(
        self,
        path: Path,
        dtype: np.dtype[np.void],
        record: struct.Struct | None = None,
        *,
        start: str | int = "tail",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.dtype = dtype
        self._struct = record or struct_of(dtype)
        super().__init__(path, start=start, clock=clock)
        if self.layout.slot_size != dtype.itemsize:
            raise RingFormatError(
                f"{path}: slot size {self.layout.slot_size} does not match record size "
                f"{dtype.itemsize}"
            )

    def _on_attach(self) -> None:
        # Copy slots as raw bytes ("V64"), then view them as records: numpy copies a structured
        # dtype field by field, several times slower than the plain memcpy of a void dtype.
        self._raw_dtype = np.dtype(f"V{self.layout.slot_size}")
        self._slots = np.frombuffer(self._mm, self._raw_dtype, self.capacity, HEADER_SIZE)
        self._size = self.layout.slot_size

    def read_batch(self, max_records: int = 65536) -> np.ndarray:
        """Copy up to ``max_records`` new records; never returns a torn one.

        Losses found on the way are in `drain_losses` and precede the returned records.
        """
        w = self._words
        tail: int = w[W_TAIL]
        r = self.position
        if r >= tail:
            return np.empty(0, self.dtype)
        low: int = w[W_TAIL_INTENT] - self.capacity
        if r < low:
            resume = self._resume_after_lap()
            self._lose(r, resume - r)
            r = resume
            tail = w[W_TAIL]
        n = min(tail - r, max_records, self.capacity)
        if n <= 0:
            self.position = r
            return np.empty(0, self.dtype)
        start = r & self._mask
        if start + n <= self.capacity:
            raw = self._slots[start : start + n].copy()
        else:
            raw = np.concatenate((self._slots[start:], self._slots[: start + n - self.capacity]))
        out = raw.view(self.dtype)
        low = w[W_TAIL_INTENT] - self.capacity
        if r < low:
            bad = min(n, low - r)
            self._lose(r, bad)
            out = out[bad:]
        self.position = r + n
        if len(out) and (
            int(out["seq"][0]) != r + n - len(out) or int(out["seq"][-1]) != r + n - 1
        ):
            raise RingFormatError(
                f"{self.path}: slot sequence mismatch near seq {r}: n={n} got "
                f"{int(out['seq'][0])}..{int(out['seq'][-1])} ({len(out)} records), "
                f"intent={w[W_TAIL_INTENT]} tail={self.tail()}"
            )
        return out

    def read_one(self) -> tuple[int, ...] | None:
        """The next record as a tuple of its fields (``seq`` first), or None if there is none."""
        w = self._words
        while True:
            r = self.position
            if r >= w[W_TAIL]:
                return None
            record: tuple[int, ...] = self._struct.unpack_from(
                self._mm, HEADER_SIZE + (r & self._mask) * self._size
            )
            if r >= w[W_TAIL_INTENT] - self.capacity:
                self.position = r + 1
                return record
            resume = self._resume_after_lap()
            self._lose(r, resume - r)
            self.position = resume


class VariableRingReader(RingReader):
    """Reads variable-length records (depth, snapshots, events, raw frames)."""

    kind = RingKind.VARIABLE

    def _on_attach(self) -> None:
        layout = self.layout
        self._descs = np.frombuffer(self._mm, DESCRIPTOR_DTYPE, self.capacity, HEADER_SIZE)
        self._heap = np.frombuffer(self._mm, np.uint8, layout.heap_size, layout.heap_offset)
        self._heap_size = layout.heap_size
        self._heap_mask = layout.heap_size - 1

    def _resume_after_lap(self) -> int:
        """Past the oldest record whose descriptor and payload are both still intact."""
        w = self._words
        tail = self.tail()
        lo = max(self.first_seq, w[W_TAIL_INTENT] - self.capacity)
        heap_low = w[W_HEAP_INTENT] - self._heap_size
        heap_low += self._heap_size >> 4
        hi = tail
        while lo < hi:
            mid = (lo + hi) // 2
            seq, pos, *_ = DESCRIPTOR.unpack_from(self._mm, HEADER_SIZE + (mid & self._mask) * 32)
            if seq != mid or pos < heap_low:
                lo = mid + 1
            else:
                hi = mid
        return min(max(lo, super()._resume_after_lap()), tail)

    def _copy_heap(self, pos: int, length: int) -> np.ndarray:
        start = pos & self._heap_mask
        if start + length <= self._heap_size:
            return self._heap[start : start + length].copy()
        return np.concatenate((self._heap[start:], self._heap[: start + length - self._heap_size]))

    def read_batch(self, max_records: int = 4096, max_bytes: int = 1 << 22) -> list[VarRecord]:
        """Copy up to ``max_records`` new records (about ``max_bytes`` of payload at most).

        Losses found on the way are in `drain_losses` and precede the returned records.
        """
        w = self._words
        tail: int = w[W_TAIL]
        r = self.position
        if r >= tail:
            return []
        if r < w[W_TAIL_INTENT] - self.capacity:
            resume = self._resume_after_lap()
            self._lose(r, resume - r)
            r = resume
            tail = w[W_TAIL]
        n = min(tail - r, max_records, self.capacity)
        if n <= 0:
            self.position = r
            return []
        start = r & self._mask
        if start + n <= self.capacity:
            descs = self._descs[start : start + n].copy()
        else:
            descs = np.concatenate((self._descs[start:], self._descs[: start + n - self.capacity]))
        # Descriptors first: those the writer may have overwritten form a prefix.
        bad = min(n, max(0, w[W_TAIL_INTENT] - self.capacity - r))
        pos = descs["heap_pos"].astype(np.int64)
        ends = pos + descs["length"]
        if bad < n:
            # Payload bytes: only the newest heap_size bytes can still be intact.
            newest = int(ends[-1])
            bad = max(bad, int(np.searchsorted(pos[bad:], newest - self._heap_size)) + bad)
        if bad < n and int(ends[-1]) - int(pos[bad]) > max_bytes:
            over = int(np.searchsorted(ends[bad:], int(pos[bad]) + max_bytes, side="right"))
            n = bad + max(1, over)
        records: list[VarRecord] = []
        if bad < n:
            first_pos = int(pos[bad])
            heap = self._copy_heap(first_pos, int(ends[n - 1]) - first_pos)
            heap_low = w[W_HEAP_INTENT] - self._heap_size
            bad += int(np.searchsorted(pos[bad:n], heap_low))
            if bad < n:
                if int(descs["seq"][bad]) != r + bad or int(descs["seq"][n - 1]) != r + n - 1:
                    raise RingFormatError(f"{self.path}: descriptor sequence mismatch near seq {r}")
                raw = heap.tobytes()
                records = [
                    VarRecord(sq, t, c, f, raw[p - first_pos : p - first_pos + ln])
                    for sq, p, c, ln, t, f in descs[bad:n].tolist()
                ]
        self._lose(r, min(bad, n))
        self.position = r + n
        return records

    def read_one(self) -> VarRecord | None:
        """The next record, or None if there is none."""
        batch = self.read_batch(1)
        while not batch and self.position < self.tail():
            batch = self.read_batch(1)
        return batch[0] if batch else None


def open_reader(path: Path, dtype: np.dtype[np.void] | None = None, **kwargs: object) -> RingReader:
    """Open the right reader for a ring file: fixed (needs ``dtype``) or variable."""
    mm, _, info = _map_readonly(path)
    mm.close()
    if info.layout.kind is RingKind.VARIABLE:
        return VariableRingReader(path, **kwargs)  # type: ignore[arg-type]
    if dtype is None:
        raise RingFormatError(f"{path}: a fixed ring needs a record dtype to read")
    return FixedRingReader(path, dtype, **kwargs)  # type: ignore[arg-type]
