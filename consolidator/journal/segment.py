"""The journal's on-disk format: segment files made of CRC-checked blocks of records.

A stream's journal is a directory ``{state_dir}/journal/{feed}/{stream}/`` of segment files named
by the sequence number of their first record, ``{first_seq:020d}.seg``; a closed segment may be
replaced by ``{first_seq:020d}.seg.zst``, the same bytes compressed with zstd (frame checksum on).
All integers are little-endian. A segment is a 128-byte header followed by blocks::

    segment header (128 bytes)
    offset  size  field
    ------  ----  --------------  ------------------------------------------------------------
       0      8   magic           "CNSLJSEG"
       8      4   version         SEGMENT_VERSION; readers refuse any other
      12      4   header_size     128
      16      4   kind            1 = fixed records (trades, quotes), 2 = variable records
      20      4   record_type     the stream's `consolidator.records.RecordType`
      24      4   record_size     bytes per fixed record; 0 for variable streams
      28      4   (reserved, 0)
      32      8   first_seq       sequence number of the first record this segment holds
      40      8   created_ns      wall-clock creation time (rotation by age)
      48     32   feed            UTF-8, NUL padded
      80     32   stream          UTF-8, NUL padded
     112     12   (reserved, 0)
     124      4   header_crc      zlib.crc32 of bytes 0..123

    block header (64 bytes), then ``length`` payload bytes, then zeros up to a multiple of 8
    offset  size  field
    ------  ----  --------------  ------------------------------------------------------------
       0      4   magic           "CJBK"
       4      2   block_type      1 = DATA, 2 = LOSS
       6      2   record_type     the stream's record type (as in the segment header)
       8      4   record_size     DATA of a fixed stream: bytes per record; otherwise 0
      12      4   length          payload bytes (before padding)
      16      8   first_seq       DATA: seq of the first record; LOSS: first lost seq
      24      8   count           DATA: records in the block; LOSS: records lost
      32      8   ts_min          smallest ts_commit in the block (LOSS: when it was recorded)
      40      8   ts_max          largest ts_commit in the block (LOSS: same as ts_min)
      48      4   reason          LOSS: a `LossReason` code; DATA: 0
      52      8   (reserved, 0)
      60      4   crc             zlib.crc32 (IEEE 802.3 polynomial) of header bytes 0..59,
                                  continued over the payload and its padding

    DATA payload, fixed stream:    ``count`` records exactly as in the ring (`records.TRADE` ...)
    DATA payload, variable stream: ``count`` 16-byte entries, then the payloads back to back:
        entry:  0 ts_commit i8    8 length u4    12 record_type u2    14 flags u2
    LOSS payload:                  the reason as UTF-8 text ("lapped", "before ring", ...)

The records of a block are consecutive: block ``b`` holds ``b.first_seq .. b.first_seq+count-1``.
Blocks of a stream, across its segments in name order, cover consecutive sequence ranges with
neither gap nor overlap (data or explicit loss), so the journal's next sequence number is the end of
its last valid block. One CRC per block (not per record) keeps the cost at one ``zlib.crc32`` pass
over the bytes; a torn or corrupt block is found by its magic, length or CRC.
"""

from __future__ import annotations

import enum
import mmap
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from consolidator.errors import ConsolidatorError
from consolidator.ring.reader import Loss, VarRecord

__all__ = [
    "BLOCK_HEADER",
    "BLOCK_HEADER_SIZE",
    "BLOCK_MAGIC",
    "ENTRY_DTYPE",
    "MAX_BLOCK_BYTES",
    "SEGMENT_HEADER",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "SEGMENT_VERSION",
    "BlockHeader",
    "BlockType",
    "JournalError",
    "JournalFormatError",
    "LossReason",
    "SegmentHeader",
    "block_ok",
    "crc_ok",
    "decode_fixed",
    "decode_loss",
    "decode_variable",
    "encode_fixed",
    "encode_loss",
    "encode_variable",
    "padded",
    "parse_block_header",
]

SEGMENT_MAGIC: Final = b"CNSLJSEG"
SEGMENT_VERSION: Final = 1
SEGMENT_HEADER_SIZE: Final = 128
SEGMENT_HEADER: Final = struct.Struct("<8sIIIIII QQ 32s32s 12x")  # 124 bytes, then the CRC
_U32: Final = struct.Struct("<I")

BLOCK_MAGIC: Final = b"CJBK"
BLOCK_HEADER_SIZE: Final = 64
BLOCK_HEADER: Final = struct.Struct("<4sHHII QQqqI 8x")  # 60 bytes, then the CRC
BLOCK_CRC_OFFSET: Final = 60
MAX_BLOCK_BYTES: Final = 256 << 10
"""Blocks are cut at about this many payload bytes (a single larger record gets its own block)."""
MAX_PAYLOAD: Final = 1 << 30
"""Sanity bound on a block's payload length: anything larger is corruption."""

Bytes = bytes | bytearray | memoryview | mmap.mmap
"""Anything a block can be parsed from."""

ENTRY_DTYPE: Final = np.dtype(
    [("ts_commit", "<i8"), ("length", "<u4"), ("record_type", "<u2"), ("flags", "<u2")]
)
_ZEROS: Final = bytes(8)


class JournalError(ConsolidatorError):
    """The journal cannot be read or written (the message names the file)."""


class JournalFormatError(JournalError):
    """A segment file has a bad header, or a corrupt block (the message names file and offset)."""


class BlockType(enum.IntEnum):
    """The ``block_type`` field."""

    DATA = 1
    LOSS = 2


class LossReason(enum.IntEnum):
    """The ``reason`` code of a LOSS block (the payload holds the text)."""

    OTHER = 0
    LAPPED = 1
    BEFORE_RING = 2
    RING_REPLACED = 3
    CORRUPT = 4

    @classmethod
    def of(cls, text: str) -> LossReason:
        """The code for a reason text as ring readers spell it."""
        return {
            "lapped": cls.LAPPED,
            "before ring": cls.BEFORE_RING,
            "ring replaced": cls.RING_REPLACED,
        }.get(text, cls.OTHER)


def padded(length: int) -> int:
    """``length`` rounded up to a multiple of 8."""
    return (length + 7) & ~7


# ----------------------------------------------------------------------------------------------
# Segment header


@dataclass(frozen=True)
class SegmentHeader:
    """The 128-byte header of a segment."""

    kind: int
    record_type: int
    record_size: int
    first_seq: int
    created_ns: int
    feed: str
    stream: str

    def pack(self) -> bytes:
        """The header's bytes, CRC included."""
        body = SEGMENT_HEADER.pack(
            SEGMENT_MAGIC,
            SEGMENT_VERSION,
            SEGMENT_HEADER_SIZE,
            self.kind,
            self.record_type,
            self.record_size,
            0,
            self.first_seq,
            self.created_ns,
            self.feed.encode(),
            self.stream.encode(),
        )
        return body + _U32.pack(zlib.crc32(body))

    @classmethod
    def unpack(cls, data: Bytes, where: object) -> SegmentHeader:
        """Parse and check a segment header.

        Raises:
            JournalFormatError: short, bad magic, version or CRC.
        """
        if len(data) < SEGMENT_HEADER_SIZE:
            raise JournalFormatError(
                f"{where}: offset 0: segment header truncated ({len(data)} of "
                f"{SEGMENT_HEADER_SIZE} bytes)"
            )
        (magic, version, size, kind, record_type, record_size, _, first_seq, created_ns,
         feed, stream) = SEGMENT_HEADER.unpack_from(data, 0)  # fmt: skip
        if magic != SEGMENT_MAGIC:
            raise JournalFormatError(f"{where}: offset 0: not a journal segment (bad magic)")
        if version != SEGMENT_VERSION:
            raise JournalFormatError(
                f"{where}: offset 8: segment version {version} is not supported "
                f"(this build reads version {SEGMENT_VERSION})"
            )
        (crc,) = _U32.unpack_from(data, SEGMENT_HEADER.size)
        if size != SEGMENT_HEADER_SIZE or crc != zlib.crc32(data[: SEGMENT_HEADER.size]):
            raise JournalFormatError(f"{where}: offset 0: segment header CRC mismatch")
        return cls(
            kind,
            record_type,
            record_size,
            first_seq,
            created_ns,
            feed.rstrip(b"\0").decode("utf-8", "replace"),
            stream.rstrip(b"\0").decode("utf-8", "replace"),
        )


# ----------------------------------------------------------------------------------------------
# Blocks


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A parsed block header (not yet CRC-checked: see `block_ok`)."""

    block_type: int
    record_type: int
    record_size: int
    length: int
    first_seq: int
    count: int
    ts_min: int
    ts_max: int
    reason: int
    crc: int

    @property
    def end_seq(self) -> int:
        """One past the last sequence number this block covers."""
        return self.first_seq + self.count

    @property
    def size(self) -> int:
        """Bytes of the whole block on disk: header, payload and padding."""
        return BLOCK_HEADER_SIZE + padded(self.length)


def parse_block_header(data: Bytes, offset: int = 0) -> BlockHeader | str:
    """The block header at ``offset``, or the reason it is not one (magic, type, lengths)."""
    if len(data) - offset < BLOCK_HEADER_SIZE:
        return "truncated block header"
    (magic, block_type, record_type, record_size, length, first_seq, count, ts_min, ts_max,
     reason) = BLOCK_HEADER.unpack_from(data, offset)  # fmt: skip
    if magic != BLOCK_MAGIC:
        return "bad block magic"
    (crc,) = _U32.unpack_from(data, offset + BLOCK_CRC_OFFSET)
    if block_type == BlockType.DATA:
        if count <= 0 or length > MAX_PAYLOAD:
            return f"implausible data block (count {count}, length {length})"
        if record_size and length != count * record_size:
            return f"length {length} != {count} records of {record_size} bytes"
        if not record_size and length < count * ENTRY_DTYPE.itemsize:
            return f"length {length} too short for {count} entries"
    elif block_type == BlockType.LOSS:
        if count <= 0 or length > 4096:
            return f"implausible loss block (count {count}, length {length})"
    else:
        return f"unknown block type {block_type}"
    return BlockHeader(
        block_type, record_type, record_size, length, first_seq, count, ts_min, ts_max, reason, crc
    )


def block_ok(data: Bytes, header: BlockHeader, offset: int = 0) -> bool:
    """Whether the block at ``offset`` of ``data`` (header, padded payload) matches its CRC."""
    view = memoryview(data)
    end = offset + header.size
    if len(view) < end:
        return False
    return crc_ok(
        view[offset : offset + BLOCK_HEADER_SIZE], view[offset + BLOCK_HEADER_SIZE : end], header
    )


def crc_ok(
    head: Bytes,
    payload: Bytes,
    header: BlockHeader,
) -> bool:
    """Whether a block's header bytes and padded payload match its CRC."""
    return zlib.crc32(payload, zlib.crc32(head[:BLOCK_CRC_OFFSET])) == header.crc


def _header(
    block_type: BlockType,
    record_type: int,
    record_size: int,
    length: int,
    first_seq: int,
    count: int,
    ts_min: int,
    ts_max: int,
    reason: int,
    payload: Sequence[Bytes],
) -> bytes:
    head = BLOCK_HEADER.pack(
        BLOCK_MAGIC,
        block_type,
        record_type,
        record_size,
        length,
        first_seq,
        count,
        ts_min,
        ts_max,
        reason,
    )
    crc = zlib.crc32(head)
    for part in payload:
        crc = zlib.crc32(part, crc)
    return head + _U32.pack(crc)


def encode_fixed(records: np.ndarray, record_type: int) -> list[bytes | memoryview]:
    """One DATA block of fixed records (a contiguous structured array, seq-consecutive).

    Returns the buffers to write, in order (header, payload): no copy of the records.
    """
    n = len(records)
    ts = records["ts_commit"]
    payload = np.ascontiguousarray(records).view(np.uint8).data
    size = records.dtype.itemsize
    parts: list[bytes | memoryview] = [payload]
    if (n * size) % 8:
        parts.append(_ZEROS[: padded(n * size) - n * size])
    head = _header(
        BlockType.DATA,
        record_type,
        size,
        n * size,
        int(records["seq"][0]),
        n,
        int(ts.min()),
        int(ts.max()),
        0,
        parts,
    )
    return [head, *parts]


def encode_variable(records: Sequence[VarRecord], record_type: int) -> list[bytes]:
    """One DATA block of variable records (seq-consecutive). Returns header, entries, payloads."""
    n = len(records)
    entries = np.empty(n, ENTRY_DTYPE)  # column by column: 2.5x faster than from tuples
    entries["ts_commit"] = [r.ts_commit for r in records]
    payloads = [r.payload for r in records]
    entries["length"] = [len(p) for p in payloads]
    entries["record_type"] = [r.record_type for r in records]
    entries["flags"] = [r.flags for r in records]
    table = entries.tobytes()
    body = b"".join(payloads)
    length = len(table) + len(body)
    parts = [table, body, _ZEROS[: padded(length) - length]]
    ts = entries["ts_commit"]
    head = _header(
        BlockType.DATA,
        record_type,
        0,
        length,
        records[0].seq,
        n,
        int(ts.min()),
        int(ts.max()),
        0,
        parts,
    )
    return [head, *parts]


def encode_loss(
    first_seq: int, count: int, reason: str, record_type: int, now_ns: int
) -> list[bytes]:
    """One LOSS block: ``count`` records from ``first_seq`` are missing, and why."""
    text = reason.encode()[:4096]
    parts = [text, _ZEROS[: padded(len(text)) - len(text)]]
    head = _header(
        BlockType.LOSS,
        record_type,
        0,
        len(text),
        first_seq,
        count,
        now_ns,
        now_ns,
        LossReason.of(reason),
        parts,
    )
    return [head, *parts]


def decode_fixed(
    header: BlockHeader, payload: bytes | bytearray, dtype: np.dtype[np.void]
) -> np.ndarray:
    """The records of a fixed DATA block: a view over ``payload`` (writable over a bytearray)."""
    if header.record_size != dtype.itemsize:
        raise JournalFormatError(
            f"block of {header.record_size}-byte records, expected {dtype.itemsize}"
        )
    return np.frombuffer(payload, dtype, header.count)


def decode_variable(header: BlockHeader, payload: bytes | bytearray) -> list[VarRecord]:
    """The records of a variable DATA block."""
    n = header.count
    entries = np.frombuffer(payload, ENTRY_DTYPE, n)
    lengths = entries["length"].astype(np.int64)
    ends = np.cumsum(lengths) + n * ENTRY_DTYPE.itemsize
    if n and int(ends[-1]) > header.length:
        raise JournalFormatError(f"entries of block at seq {header.first_seq} overrun its payload")
    raw = bytes(payload)
    out: list[VarRecord] = []
    start = n * ENTRY_DTYPE.itemsize
    seq = header.first_seq
    for (ts, _, rtype, flags), end in zip(entries.tolist(), ends.tolist(), strict=True):
        out.append(VarRecord(seq, rtype, ts, flags, raw[start:end]))
        start = end
        seq += 1
    return out


def decode_loss(header: BlockHeader, payload: bytes | bytearray) -> Loss:
    """The loss a LOSS block records."""
    reason = bytes(payload[: header.length]).decode("utf-8", "replace")
    return Loss(header.first_seq, header.count, reason or LossReason(header.reason).name.lower())
