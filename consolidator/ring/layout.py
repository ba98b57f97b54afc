"""The binary layout of a ring file, and header access shared by the writer and the readers.

A ring is one file under ``{shm_dir}/{feed}/{stream}.ring``: a 4 KiB header, then ``capacity``
fixed-size slots, then (variable rings only) a byte heap. All integers are little-endian. ::

    offset  size  field              meaning
    ------  ----  -----------------  ---------------------------------------------------------
       0      8   magic "CNSLRING"   written LAST on creation: a reader never sees half a header
       8      4   version            LAYOUT_VERSION; readers refuse any other
      12      4   header_size        4096
      16      4   kind               1 = fixed records, 2 = variable records (slot + heap)
      20      4   record_type        records.RecordType of fixed records; 0 for variable rings
      24      4   slot_size          bytes per slot (fixed: the record; variable: descriptor)
      28      4   (reserved)
      32      8   capacity           slots, a power of two
      40      8   heap_size          heap bytes, a power of two (0 for fixed rings)
      48      8   epoch              creation time in ns: identifies this file's incarnation
      56      8   first_seq          sequence number of the first record of this file
      64     32   feed               UTF-8, NUL padded
      96     32   stream             UTF-8, NUL padded
     --- writer-owned, rewritten on every writer (re)start and heartbeat --------------------------
     128      8   writer_pid
     136      8   writer_generation  +1 on every writer open: readers see restarts
     144      8   writer_start_ns
     152      8   heartbeat_ns       refreshed by the writer's event loop (not per record)
     160      8   writer_state       0 none, 1 live, 2 stopped cleanly, 3 superseded by a new file
     --- hot control words, one cache line, stored by the writer only -----------------------------
     256      8   tail_intent        the writer may be writing any seq < tail_intent
     264      8   heap_intent        ... and any heap byte position < heap_intent
     272      8   tail               commit: every seq < tail is published
    4096          slots[capacity]    slot of seq s is at 4096 + (s % capacity) * slot_size
    4096 + capacity * slot_size      heap[heap_size] (variable rings only)

Fixed slot: the record itself, whose first 32 bytes are ``seq, ts_event, ts_recv, ts_commit``
(`consolidator.records`). Variable slot, the 32-byte descriptor::

     0 seq u8    8 heap_pos u8 (monotonic byte position)    16 ts_commit i8
    24 length u4    28 record_type u2    30 flags u2

and its payload is ``length`` bytes at heap position ``heap_pos`` (stored at
``heap_pos % heap_size``, wrapping to the heap's start; positions advance in multiples of 8).

**Publication protocol.** The writer (one process per ring, held by ``flock``) publishes by
(1) storing ``tail_intent`` (and ``heap_intent``) beyond what it is about to write, (2) writing the
slot (and payload), (3) storing ``tail``. A reader (4) loads ``tail``, (5) copies the records below
it, then (6) loads ``tail_intent``/``heap_intent`` again and keeps only records that the writer
cannot have touched: ``seq >= tail_intent - capacity`` and ``heap_pos >= heap_intent - heap_size``.
Everything else is a loss the reader counts; it never returns a torn record. A per-slot commit word
alone could not catch a copy torn by an overwrite that begins after the word was checked.

This ordering argument needs stores to become visible in program order and loads not to pass
earlier loads: true on x86-64 (TSO), which is what this runs on. Each control word is an aligned
8-byte integer stored and loaded through a ``memoryview`` cast to ``'Q'`` (`words`): CPython does
that with one 8-byte ``memcpy``, a single store. ``struct.pack_into`` must NOT be used for control
words: it zero-fills its target before packing (``s_pack_internal`` memsets), so a reader can see a
transient 0 (found by the multi-process stress test: a zero ``tail_intent`` let a torn record
through). Floats are never used for control words.

The writer may store ``tail_intent`` a few records ahead (in chunks) to save stores; readers then
treat a few more records as overwritten than strictly were, which is still exact loss accounting.
"""

from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np

from consolidator.errors import RingFormatError

__all__ = [
    "DESCRIPTOR",
    "DESCRIPTOR_DTYPE",
    "HEADER_SIZE",
    "LAYOUT_VERSION",
    "MAGIC",
    "RingKind",
    "RingLayout",
    "WriterState",
    "read_layout",
    "words",
]

MAGIC: Final = int.from_bytes(b"CNSLRING", "little")
LAYOUT_VERSION: Final = 1
HEADER_SIZE: Final = 4096
HEAP_ALIGN: Final = 8

OFF_MAGIC: Final = 0
OFF_WRITER_PID: Final = 128
OFF_WRITER_GENERATION: Final = 136
OFF_WRITER_START: Final = 144
OFF_HEARTBEAT: Final = 152
OFF_WRITER_STATE: Final = 160
OFF_TAIL_INTENT: Final = 256
OFF_HEAP_INTENT: Final = 264
OFF_TAIL: Final = 272

W_MAGIC: Final = OFF_MAGIC // 8
W_WRITER_PID: Final = OFF_WRITER_PID // 8
W_WRITER_GENERATION: Final = OFF_WRITER_GENERATION // 8
W_WRITER_START: Final = OFF_WRITER_START // 8
W_HEARTBEAT: Final = OFF_HEARTBEAT // 8
W_WRITER_STATE: Final = OFF_WRITER_STATE // 8
W_TAIL_INTENT: Final = OFF_TAIL_INTENT // 8
W_HEAP_INTENT: Final = OFF_HEAP_INTENT // 8
W_TAIL: Final = OFF_TAIL // 8

U64: Final = struct.Struct("<Q")
STATIC: Final = struct.Struct("<QIIIIII QQQQ 32s32s")
WRITER_INFO: Final = struct.Struct("<QQQQQ")
DESCRIPTOR: Final = struct.Struct("<QQqIHH")
DESCRIPTOR_DTYPE: Final = np.dtype(
    [
        ("seq", "<u8"),
        ("heap_pos", "<u8"),
        ("ts_commit", "<i8"),
        ("length", "<u4"),
        ("record_type", "<u2"),
        ("flags", "<u2"),
    ]
)


class RingKind(enum.IntEnum):
    """Fixed-size records in the slots, or descriptors in the slots and payloads in a heap."""

    FIXED = 1
    VARIABLE = 2


class WriterState(enum.IntEnum):
    """The ``writer_state`` header word."""

    NONE = 0
    LIVE = 1
    STOPPED = 2
    SUPERSEDED = 3


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class RingLayout:
    """The static part of a ring header: what a writer asks for and a reader checks."""

    kind: RingKind
    record_type: int
    slot_size: int
    capacity: int
    heap_size: int = 0
    feed: str = ""
    stream: str = ""

    def __post_init__(self) -> None:
        if not _is_pow2(self.capacity):
            raise RingFormatError(f"capacity must be a power of two: {self.capacity}")
        if self.slot_size < 8 or self.slot_size % 8:
            raise RingFormatError(f"slot size must be a positive multiple of 8: {self.slot_size}")
        if self.kind is RingKind.VARIABLE:
            if self.slot_size != DESCRIPTOR.size:
                raise RingFormatError(f"variable ring slot size must be {DESCRIPTOR.size}")
            if not _is_pow2(self.heap_size) or self.heap_size < 4096:
                raise RingFormatError(f"heap size must be a power of two >= 4096: {self.heap_size}")
        elif self.heap_size:
            raise RingFormatError(f"a fixed ring has no heap: heap_size={self.heap_size}")
        for name in (self.feed, self.stream):
            if len(name.encode()) > 32:
                raise RingFormatError(f"feed and stream names are at most 32 bytes: {name!r}")

    @property
    def slots_offset(self) -> int:
        """Byte offset of slot 0."""
        return HEADER_SIZE

    @property
    def heap_offset(self) -> int:
        """Byte offset of the heap."""
        return HEADER_SIZE + self.capacity * self.slot_size

    @property
    def file_size(self) -> int:
        """Total size of the ring file in bytes."""
        return self.heap_offset + self.heap_size

    @property
    def max_payload(self) -> int:
        """The largest variable payload accepted: a quarter of the heap."""
        return self.heap_size // 4

    def compatible(self, other: RingLayout) -> bool:
        """Whether a file with layout ``other`` can be reused as this layout."""
        return (
            self.kind,
            self.record_type,
            self.slot_size,
            self.capacity,
            self.heap_size,
        ) == (other.kind, other.record_type, other.slot_size, other.capacity, other.heap_size)


def words(buf: mmap.mmap) -> memoryview:
    """The mapping as 8-byte words: single-store writes and single-load reads of control words."""
    return memoryview(buf).cast("Q")


def pack_static(buf: mmap.mmap, layout: RingLayout, epoch: int, first_seq: int) -> None:
    """Write the static header fields, except the magic (the caller writes it last)."""
    STATIC.pack_into(
        buf,
        0,
        0,
        LAYOUT_VERSION,
        HEADER_SIZE,
        layout.kind,
        layout.record_type,
        layout.slot_size,
        0,
        layout.capacity,
        layout.heap_size,
        epoch,
        first_seq,
        layout.feed.encode(),
        layout.stream.encode(),
    )


@dataclass(frozen=True)
class HeaderInfo:
    """A ring header as read from a file."""

    layout: RingLayout
    epoch: int
    first_seq: int


def read_layout(buf: mmap.mmap | bytes, file_size: int, where: object) -> HeaderInfo:
    """Parse and validate the static header of a ring.

    Raises:
        RingFormatError: wrong magic or version, or a layout inconsistent with the file size.
    """
    if file_size < HEADER_SIZE:
        raise RingFormatError(f"{where}: not a ring file (only {file_size} bytes)")
    (magic, version, header_size, kind, record_type, slot_size, _, capacity, heap_size, epoch,
     first_seq, feed, stream) = STATIC.unpack_from(buf, 0)  # fmt: skip
    if magic != MAGIC:
        raise RingFormatError(f"{where}: not a consolidator ring (bad magic {magic:#018x})")
    if version != LAYOUT_VERSION:
        raise RingFormatError(
            f"{where}: ring layout version {version} is not supported "
            f"(this build reads version {LAYOUT_VERSION})"
        )
    if header_size != HEADER_SIZE:
        raise RingFormatError(f"{where}: unexpected header size {header_size}")
    try:
        layout = RingLayout(
            RingKind(kind),
            record_type,
            slot_size,
            capacity,
            heap_size,
            feed.rstrip(b"\0").decode("utf-8", "replace"),
            stream.rstrip(b"\0").decode("utf-8", "replace"),
        )
    except (ValueError, RingFormatError) as exc:
        raise RingFormatError(f"{where}: corrupt ring header: {exc}") from None
    if layout.file_size != file_size:
        raise RingFormatError(
            f"{where}: corrupt ring header: layout needs {layout.file_size} bytes, "
            f"file has {file_size}"
        )
    return HeaderInfo(layout, epoch, first_seq)
