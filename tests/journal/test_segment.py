"""The block/segment format: layout, round trips, and that any damaged byte is detected."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from consolidator.journal.files import Block, End, SegmentSource, find_next_block
from consolidator.journal.segment import (
    BLOCK_HEADER,
    BLOCK_HEADER_SIZE,
    ENTRY_DTYPE,
    SEGMENT_HEADER,
    SEGMENT_HEADER_SIZE,
    BlockHeader,
    BlockType,
    JournalFormatError,
    LossReason,
    SegmentHeader,
    block_ok,
    decode_fixed,
    decode_loss,
    decode_variable,
    encode_fixed,
    encode_loss,
    encode_variable,
    parse_block_header,
)
from consolidator.records import TRADE_DTYPE, RecordType
from consolidator.ring.reader import VarRecord


def trades(first: int, n: int) -> np.ndarray:
    arr = np.zeros(n, TRADE_DTYPE)
    arr["seq"] = np.arange(first, first + n)
    arr["ts_commit"] = 1_000_000 + arr["seq"] * 10
    arr["price_m"] = arr["seq"] * 3
    arr["symbol_id"] = 7
    return arr


def var_records(first: int, n: int) -> list[VarRecord]:
    return [
        VarRecord(first + i, RecordType.DEPTH if i % 2 else RecordType.SNAPSHOT, 5000 + i, i,
                  bytes(range(i % 50)) * 3)
        for i in range(n)
    ]  # fmt: skip


def join(parts: list[bytes] | list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def test_struct_sizes_match_the_documented_layout() -> None:
    assert SEGMENT_HEADER.size + 4 == SEGMENT_HEADER_SIZE == 128
    assert BLOCK_HEADER.size + 4 == BLOCK_HEADER_SIZE == 64
    assert ENTRY_DTYPE.itemsize == 16
    data = SegmentHeader(1, 1, 64, 42, 123, "feed", "trades").pack()
    assert data[:8] == b"CNSLJSEG"
    assert int.from_bytes(data[32:40], "little") == 42
    assert int.from_bytes(data[124:128], "little") == zlib.crc32(data[:124])
    block = join(encode_fixed(trades(5, 3), RecordType.TRADE))
    assert block[:4] == b"CJBK"
    assert int.from_bytes(block[16:24], "little") == 5, "first_seq at offset 16"
    assert int.from_bytes(block[24:32], "little") == 3, "count at offset 24"
    assert int.from_bytes(block[32:40], "little") == 1_000_050, "ts_min at offset 32"
    assert int.from_bytes(block[40:48], "little") == 1_000_070, "ts_max at offset 40"


def test_segment_header_round_trip_and_checks() -> None:
    header = SegmentHeader(2, 0, 0, 1 << 40, 99, "binance", "depth")
    data = header.pack()
    assert SegmentHeader.unpack(data, "x") == header
    with pytest.raises(JournalFormatError, match="x: offset 0: segment header CRC mismatch"):
        SegmentHeader.unpack(data[:60] + b"\x01" + data[61:], "x")
    with pytest.raises(JournalFormatError, match="not a journal segment"):
        SegmentHeader.unpack(b"X" + data[1:], "x")
    with pytest.raises(JournalFormatError, match="truncated"):
        SegmentHeader.unpack(data[:100], "x")


def test_fixed_block_round_trip() -> None:
    arr = trades(100, 50)
    data = join(encode_fixed(arr, RecordType.TRADE))
    header = parse_block_header(data)
    assert isinstance(header, BlockHeader)
    assert (header.first_seq, header.count, header.record_size) == (100, 50, 64)
    assert block_ok(data, header)
    out = decode_fixed(header, bytearray(data[64 : 64 + header.length]), TRADE_DTYPE)
    assert np.array_equal(out, arr)
    assert out.flags.writeable


def test_variable_block_round_trip_keeps_types_flags_and_payloads() -> None:
    records = var_records(7, 40)
    data = join(encode_variable(records, RecordType.DEPTH))
    header = parse_block_header(data)
    assert isinstance(header, BlockHeader)
    assert block_ok(data, header)
    assert len(data) % 8 == 0
    assert (header.ts_min, header.ts_max) == (5000, 5039)
    assert decode_variable(header, data[64 : 64 + header.length]) == records


def test_loss_block_round_trip() -> None:
    data = join(encode_loss(10, 5, "lapped", RecordType.TRADE, 77))
    header = parse_block_header(data)
    assert isinstance(header, BlockHeader)
    assert block_ok(data, header)
    assert header.block_type == BlockType.LOSS
    assert header.reason == LossReason.LAPPED
    loss = decode_loss(header, data[64 : 64 + header.length])
    assert (loss.first_seq, loss.count, loss.reason) == (10, 5, "lapped")


@pytest.mark.parametrize("kind", ["fixed", "variable", "loss"])
def test_every_damaged_byte_is_detected(kind: str) -> None:
    if kind == "fixed":
        data = join(encode_fixed(trades(0, 4), RecordType.TRADE))
    elif kind == "variable":
        data = join(encode_variable(var_records(0, 5), RecordType.DEPTH))
    else:
        data = join(encode_loss(3, 9, "before ring", RecordType.DEPTH, 1))
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x40
        header = parse_block_header(damaged)
        assert isinstance(header, str) or not block_ok(damaged, header), i


def _segment(path: Path, blocks: list[bytes]) -> list[int]:
    offsets = []
    with open(path, "wb") as f:
        f.write(SegmentHeader(1, 1, 64, 0, 1, "f", "trades").pack())
        for block in blocks:
            offsets.append(f.tell())
            f.write(block)
    return offsets


def test_segment_source_reads_blocks_and_stops_at_a_partial_one(tmp_path: Path) -> None:
    blocks = [join(encode_fixed(trades(i * 10, 10), RecordType.TRADE)) for i in range(3)]
    path = tmp_path / "s.seg"
    offsets = _segment(path, blocks)
    with open(path, "ab") as f:
        f.write(blocks[0][:100])
    with SegmentSource(path) as src:
        got = [src.next() for _ in range(4)]
    assert [g.offset for g in got[:3]] == offsets
    assert all(isinstance(g, Block) for g in got[:3])
    assert got[3] == End(offsets[2] + len(blocks[2]), "truncated block")


def test_find_next_block_skips_garbage_to_the_next_valid_block(tmp_path: Path) -> None:
    blocks = [join(encode_fixed(trades(i * 10, 10), RecordType.TRADE)) for i in range(3)]
    path = tmp_path / "s.seg"
    offsets = _segment(path, blocks)
    with open(path, "r+b") as f:
        f.seek(offsets[1] + 70)
        f.write(b"CJBK" * 4)  # fake magic inside the damaged block: must fail its CRC
    found = find_next_block(path, offsets[1])
    assert found is not None
    assert found[0] == offsets[2]
    assert found[1].first_seq == 20
