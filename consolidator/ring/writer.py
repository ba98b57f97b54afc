"""The single writer of a ring: create or reopen the file, publish records, heartbeat.

Publishing never blocks and never makes a system call: a few stores into the mapping. Readers that
fall a whole ring behind are lapped; that is their loss to count, not the writer's problem.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from consolidator.errors import (
    RecordError,
    RingError,
    RingFormatError,
    RingFullError,
    RingLockedError,
)
from consolidator.ring.layout import (
    DESCRIPTOR,
    HEADER_SIZE,
    HEAP_ALIGN,
    MAGIC,
    OFF_TAIL,
    OFF_WRITER_PID,
    U64,
    W_HEAP_INTENT,
    W_HEARTBEAT,
    W_MAGIC,
    W_TAIL,
    W_TAIL_INTENT,
    W_WRITER_GENERATION,
    W_WRITER_PID,
    W_WRITER_START,
    W_WRITER_STATE,
    RingKind,
    RingLayout,
    WriterState,
    pack_static,
    read_layout,
    words,
)
from consolidator.shmfile import create_mapped

__all__ = ["FixedRingWriter", "RingWriter", "VariableRingWriter"]

FILE_MODE: Final = 0o640
# Pre-fault the whole mapping once, so the first lap does not pay a page fault per page.
_MAP_FLAGS: Final = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
_unpack_u64 = U64.unpack_from


class RingWriter:
    """What every ring writer does: own the file (flock), its header, heartbeat and shutdown.

    Args:
        path: the ring file (``{shm_dir}/{feed}/{stream}.ring``).
        layout: the layout wanted. An existing file with a compatible layout is reopened and its
            sequence continues; an incompatible or unreadable one is replaced by a new file (new
            epoch) that continues the old sequence, and the old one is marked superseded.
        first_seq: the lowest sequence number to continue from (e.g. the journal's next sequence
            after a reboot). A ring whose tail is below it is replaced.
        clock: nanosecond wall clock, for ``ts_commit``, epoch and heartbeat.
    """

    def __init__(
        self,
        path: Path,
        layout: RingLayout,
        *,
        first_seq: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.layout = layout
        self._clock = clock
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RingError(f"cannot create ring directory {path.parent}: {exc.strerror}") from None
        opened = self._open_existing(first_seq)
        fd, mm = opened if opened is not None else self._create(first_seq, replacing=None)
        self._fd = fd
        self._mm = mm
        self._words = w = words(mm)
        info = read_layout(mm, len(mm), path)
        self.epoch = info.epoch
        self.first_seq = info.first_seq
        self._tail: int = w[W_TAIL]
        self._intent: int = max(w[W_TAIL_INTENT], self._tail)
        self._heap_intent: int = w[W_HEAP_INTENT]
        self.generation: int = w[W_WRITER_GENERATION] + 1
        now = clock()
        w[W_WRITER_PID] = os.getpid()
        w[W_WRITER_GENERATION] = self.generation
        w[W_WRITER_START] = now
        w[W_HEARTBEAT] = now
        w[W_WRITER_STATE] = WriterState.LIVE
        self._intent_chunk = max(1, min(256, layout.capacity >> 6))
        self._mask = layout.capacity - 1

    # -- file management ----------------------------------------------------------------------

    def _open_existing(self, first_seq: int) -> tuple[int, mmap.mmap] | None:
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RingError(f"cannot open ring {self.path}: {exc.strerror}") from None
        try:
            self._lock(fd)
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, flags=_MAP_FLAGS) if size else None
            try:
                info = read_layout(mm, size, self.path) if mm is not None else None
            except RingFormatError:
                info = None
            if mm is not None and info is not None and info.layout.compatible(self.layout):
                tail = _unpack_u64(mm, OFF_TAIL)[0]
                if tail >= first_seq:
                    return fd, mm
            # Replace: continue the old sequence in a new file; mark the old one superseded.
            old_tail = _unpack_u64(mm, OFF_TAIL)[0] if mm is not None and info is not None else 0
            new_fd, new_mm = self._create(max(first_seq, old_tail), replacing=mm)
        except BaseException:
            os.close(fd)
            raise
        if mm is not None:
            mm.close()
        os.close(fd)
        return new_fd, new_mm

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = "?"
            try:
                with open(fd, "rb", closefd=False) as f:
                    f.seek(OFF_WRITER_PID)
                    pid = str(int.from_bytes(f.read(8), "little"))
            except OSError:
                pass
            raise RingLockedError(
                f"ring {self.path} is held by another writer (pid {pid})"
            ) from None

    def _create(self, first_seq: int, replacing: mmap.mmap | None) -> tuple[int, mmap.mmap]:
        layout = self.layout

        def fill(fd: int, mm: mmap.mmap) -> None:
            self._lock(fd)
            pack_static(mm, layout, self._clock(), first_seq)
            with words(mm) as w:
                w[W_TAIL_INTENT] = first_seq
                w[W_TAIL] = first_seq
                w[W_MAGIC] = MAGIC

        try:
            fd, mm = create_mapped(
                self.path, layout.file_size, fill, mode=FILE_MODE, map_flags=_MAP_FLAGS
            )
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise RingFullError(
                    f"cannot create ring {self.path}: no space for {layout.file_size} bytes "
                    f"in {self.path.parent} ({exc.strerror})"
                ) from None
            raise RingError(f"cannot create ring {self.path}: {exc.strerror}") from None
        if replacing is not None:
            with words(replacing) as w:
                w[W_WRITER_STATE] = WriterState.SUPERSEDED
        return fd, mm

    # -- state ----------------------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The sequence number the next published record gets."""
        return self._tail

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Tell readers the writer is alive. Call from the event loop, not per record."""
        self._words[W_HEARTBEAT] = self._clock() if now_ns is None else now_ns

    def close(self, state: WriterState = WriterState.STOPPED) -> None:
        """Mark the writer stopped, unmap, and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.heartbeat()
        self._words[W_WRITER_STATE] = state
        self.__dict__.pop("_slots", None)
        self.__dict__.pop("publish", None)
        self._words.release()
        self._mm.close()
        os.close(self._fd)

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PUBLISH_TEMPLATE: Final = """
def factory(mm, words, pack, clock, mask, size, chunk, tail, intent):
    def publish(ts_event, ts_recv, {body}):
        nonlocal tail, intent
        seq = tail
        if seq >= intent:
            intent = seq + chunk
            words[{w_intent}] = intent
        pack(mm, {header} + (seq & mask) * size, seq, ts_event, ts_recv, clock(), {body})
        tail = seq + 1
        words[{w_tail}] = tail
        return seq

    def sync(new_tail, new_intent):
        nonlocal tail, intent
        tail, intent = new_tail, new_intent

    def state():
        return tail, intent

    return publish, sync, state
"""


class FixedRingWriter(RingWriter):
    """Publishes fixed-size records (trades, quotes).

    The record's first four fields are ``seq, ts_event, ts_recv, ts_commit``; the writer fills
    ``seq`` and ``ts_commit``. ``publish`` is generated for the record's field list (as
    `collections.namedtuple` does) because explicit arguments and closure cells make it about twice
    as fast as a generic ``*args`` method with attribute state.
    """

    publish: Callable[..., int]
    """``publish(ts_event, ts_recv, *fields_after_ts_commit) -> seq``: publish one record."""

    def __init__(
        self,
        path: Path,
        layout: RingLayout,
        record: Callable[..., None],
        dtype: np.dtype[np.void],
        *,
        first_seq: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if layout.kind is not RingKind.FIXED or dtype.itemsize != layout.slot_size:
            raise RingFormatError(f"{path}: record size {dtype.itemsize} != slot size")
        names = dtype.names or ()
        if names[:4] != ("seq", "ts_event", "ts_recv", "ts_commit"):
            raise RingFormatError(
                f"record must start with seq, ts_event, ts_recv, ts_commit: {names}"
            )
        super().__init__(path, layout, first_seq=first_seq, clock=clock)
        self._dtype = dtype
        # Raw-bytes view: assigning a void dtype is one memcpy; a structured one goes per field.
        self._raw_dtype = np.dtype(f"V{layout.slot_size}")
        self._slots = np.frombuffer(self._mm, self._raw_dtype, layout.capacity, HEADER_SIZE)
        source = _PUBLISH_TEMPLATE.format(
            body=", ".join(names[4:]),
            header=HEADER_SIZE,
            w_intent=W_TAIL_INTENT,
            w_tail=W_TAIL,
        )
        namespace: dict[str, Any] = {}
        exec(source, namespace)
        self.publish, self._sync, self._state = namespace["factory"](
            self._mm,
            self._words,
            record,
            clock,
            self._mask,
            layout.slot_size,
            self._intent_chunk,
            self._tail,
            self._intent,
        )

    @property
    def next_seq(self) -> int:
        """The sequence number the next published record gets."""
        state: tuple[int, int] = self._state()
        return state[0]

    def publish_batch(self, records: np.ndarray) -> int:
        """Publish a structured array of records; fills its ``seq`` and ``ts_commit`` in place.

        Returns the sequence number of the first record.
        """
        if records.dtype != self._dtype:
            raise RecordError(f"batch dtype {records.dtype} does not match the ring's record")
        state: tuple[int, int] = self._state()
        tail, intent = state
        first = tail
        step = max(1, self.layout.capacity // 2)
        w = self._words
        for lo in range(0, len(records), step):
            chunk = records[lo : lo + step]
            n = len(chunk)
            chunk["seq"] = np.arange(tail, tail + n, dtype=np.uint64)
            chunk["ts_commit"] = self._clock()
            if tail + n > intent:
                intent = tail + n + self._intent_chunk
                w[W_TAIL_INTENT] = intent
            start = tail & self._mask
            first_part = min(n, self.layout.capacity - start)
            raw = np.ascontiguousarray(chunk).view(self._raw_dtype)
            self._slots[start : start + first_part] = raw[:first_part]
            if first_part < n:
                self._slots[: n - first_part] = raw[first_part:]
            tail += n
            w[W_TAIL] = tail
        self._sync(tail, intent)
        return first


class VariableRingWriter(RingWriter):
    """Publishes variable-length payloads (depth, snapshots, events, raw frames)."""

    def __init__(
        self,
        path: Path,
        layout: RingLayout,
        *,
        first_seq: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if layout.kind is not RingKind.VARIABLE:
            raise RingFormatError(f"{path}: not a variable ring layout")
        super().__init__(path, layout, first_seq=first_seq, clock=clock)
        mm = self._mm
        self._heap_tail = 0
        if self._tail > self.first_seq:
            last = self._tail - 1
            seq, pos, _, length, _, _ = DESCRIPTOR.unpack_from(
                mm, HEADER_SIZE + (last & self._mask) * DESCRIPTOR.size
            )
            if seq != last:
                raise RingFormatError(f"{path}: descriptor of seq {last} holds seq {seq}")
            self._heap_tail = _align(pos + length)
        self._heap_size = layout.heap_size
        self._heap_mask = layout.heap_size - 1
        self._heap_off = layout.heap_offset
        self._heap_chunk = max(HEAP_ALIGN, layout.heap_size >> 6)
        self._max_payload = layout.max_payload
        self.publish, self._state = _variable_publisher(self, self._tail, self._heap_tail)

    publish: Callable[..., int]
    """``publish(record_type, payload, flags=0) -> seq``: publish one payload.

    Raises:
        RecordError: the payload is larger than a quarter of the heap.
    """

    @property
    def next_seq(self) -> int:
        """The sequence number the next published record gets."""
        return self._state()


def _variable_publisher(
    ring: VariableRingWriter, tail: int, heap_tail: int
) -> tuple[Callable[..., int], Callable[[], int]]:
    """``publish`` of a variable ring, with its state in closure cells (about a third cheaper
    per record than a method reading it from the instance), and a function returning the tail.

    Publication order (see ring/layout.py): heap intent and tail intent first, then the payload,
    then its descriptor, then the tail.
    """
    mm = ring._mm
    w = ring._words
    clock = ring._clock
    pack_descriptor = DESCRIPTOR.pack_into
    descriptors = HEADER_SIZE
    descriptor_size = DESCRIPTOR.size
    mask = ring._mask
    intent = ring._intent
    intent_chunk = ring._intent_chunk
    heap_intent = ring._heap_intent
    heap_chunk = ring._heap_chunk
    heap_size = ring._heap_size
    heap_mask = ring._heap_mask
    heap_off = ring._heap_off
    max_payload = ring._max_payload
    name = ring.path.name
    w_heap_intent, w_tail_intent, w_tail = W_HEAP_INTENT, W_TAIL_INTENT, W_TAIL

    def publish(record_type: int, payload: bytes | bytearray | memoryview, flags: int = 0) -> int:
        nonlocal tail, intent, heap_tail, heap_intent
        n = len(payload)
        if n > max_payload:
            raise RecordError(
                f"{name}: record of {n} bytes exceeds the ring's limit of {max_payload} bytes"
            )
        seq = tail
        pos = heap_tail
        end = pos + n
        if end > heap_intent:
            heap_intent = end + heap_chunk
            w[w_heap_intent] = heap_intent
        if seq >= intent:
            intent = seq + intent_chunk
            w[w_tail_intent] = intent
        start = pos & heap_mask
        at = heap_off + start
        room = heap_size - start
        if n <= room:
            mm[at : at + n] = payload
        else:
            view = memoryview(payload)
            mm[at : heap_off + heap_size] = view[:room]
            mm[heap_off : heap_off + n - room] = view[room:]
        pack_descriptor(
            mm, descriptors + (seq & mask) * descriptor_size, seq, pos, clock(), n, record_type,
            flags,
        )  # fmt: skip
        heap_tail = (end + 7) & ~7
        tail = seq + 1
        w[w_tail] = tail
        return seq

    def state() -> int:
        return tail

    return publish, state


def _align(value: int) -> int:
    return (value + HEAP_ALIGN - 1) & ~(HEAP_ALIGN - 1)
