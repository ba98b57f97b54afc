"""Writer and reader processes for the multi-process ring tests.

``python -m tests.ring.ringproc writer PATH KIND COUNT [--crash-after N] [--torn]``
``python -m tests.ring.ringproc reader PATH KIND MODE``  (MODE: batch, one, slow)

Every record carries a checksum of its other fields, so a reader can prove that none it received
was torn. Readers print "ready", then one JSON line with their tallies when the writer has stopped
and they have drained the ring.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from consolidator.records import TRADE, TRADE_DTYPE
from consolidator.ring import (
    FixedRingReader,
    FixedRingWriter,
    RingKind,
    RingLayout,
    VariableRingReader,
    VariableRingWriter,
    WriterState,
)
from consolidator.ring.layout import HEADER_SIZE, OFF_TAIL_INTENT, U64

FIXED = RingLayout(RingKind.FIXED, 1, 64, 1024)
VARIABLE = RingLayout(RingKind.VARIABLE, 0, 32, 256, 1 << 16)
MASK = (1 << 62) - 1


def fixed_fields(seq: int) -> tuple[int, ...]:
    """Fields after ts_commit for record ``seq``; qty_m is the checksum of the others."""
    a = (seq * 2654435761) & MASK
    b = (seq * 40503 + 7) & MASK
    check = zlib.crc32(f"{seq}:{a}:{b}".encode())
    return (a, b, check, seq & 0xFFFF, -2, -3, 1, 0)


def var_payload(seq: int) -> bytes:
    """A payload of a seq-dependent length: 8-byte seq, 4-byte crc, filler."""
    size = 12 + (seq * 7919) % 3000
    body = seq.to_bytes(8, "little") + bytes((seq + i) & 0xFF for i in range(size - 12))
    return body[:8] + zlib.crc32(body).to_bytes(4, "little") + body[8:]


def var_ok(seq: int, payload: bytes) -> bool:
    body = payload[:8] + payload[12:]
    return (
        int.from_bytes(payload[:8], "little") == seq
        and zlib.crc32(body).to_bytes(4, "little") == payload[8:12]
        and payload == var_payload(seq)
    )


def run_writer(path: Path, kind: str, count: int, crash_after: int, torn: bool) -> None:
    if kind == "fixed":
        writer: FixedRingWriter | VariableRingWriter = FixedRingWriter(
            path, FIXED, TRADE.pack_into, TRADE_DTYPE
        )
    else:
        writer = VariableRingWriter(path, VARIABLE)
    start = writer.next_seq
    print(json.dumps({"start": start, "generation": writer.generation}), flush=True)
    for i in range(count):
        seq = writer.next_seq
        if crash_after and i == crash_after:
            if torn:
                # Die in the middle of a write: intent announced, half a slot written, no commit.
                mm = writer._mm
                U64.pack_into(mm, OFF_TAIL_INTENT, seq + 1)
                slot = HEADER_SIZE + (seq % writer.layout.capacity) * writer.layout.slot_size
                mm[slot : slot + 16] = b"\xee" * 16
            os.kill(os.getpid(), signal.SIGKILL)
        if isinstance(writer, FixedRingWriter):
            writer.publish(seq, seq + 1, *fixed_fields(seq))
        else:
            writer.publish(5, var_payload(seq))
        if i % 1024 == 0:
            writer.heartbeat()
    writer.close()


def run_reader(path: Path, kind: str, mode: str) -> None:
    if kind == "fixed":
        reader: FixedRingReader | VariableRingReader = FixedRingReader(
            path, TRADE_DTYPE, TRADE, start="oldest"
        )
    else:
        reader = VariableRingReader(path, start="oldest")
    start = reader.position
    print("ready", flush=True)
    received = torn = order_errors = 0
    last = start - 1
    generations = set()
    while True:
        got: list[int] = []
        if isinstance(reader, FixedRingReader):
            if mode == "one":
                record = reader.read_one()
                rows = [record] if record is not None else []
            else:
                batch = reader.read_batch(256 if mode == "slow" else 65536)
                rows = [tuple(int(v) for v in row) for row in batch.tolist()] if len(batch) else []
            for row in rows:
                seq = row[0]
                if row[1] != seq or row[2] != seq + 1 or tuple(row[4:]) != fixed_fields(seq):
                    torn += 1
                got.append(seq)
        else:
            records = reader.read_batch(1 if mode == "one" else 64 if mode == "slow" else 4096)
            for record in records:
                if not var_ok(record.seq, record.payload):
                    torn += 1
                got.append(record.seq)
        expected = last + 1
        for loss in reader.drain_losses():
            if loss.first_seq != expected:
                order_errors += 1
            expected = loss.first_seq + loss.count
        for seq in got:
            if seq != expected:
                order_errors += 1
            expected = seq + 1
        last = expected - 1
        received += len(got)
        if mode == "slow" and got:
            time.sleep(0.002)
        if not got:
            info = reader.writer_info()
            generations.add(info.generation)
            if info.state is WriterState.STOPPED and reader.position >= reader.tail():
                break
            reader.wait(0.05)
    print(
        json.dumps(
            {
                "start": start,
                "end": reader.position,
                "received": received,
                "lost": reader.lost,
                "torn": torn,
                "order_errors": order_errors,
                "generations": sorted(generations),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    w = sub.add_parser("writer")
    w.add_argument("path", type=Path)
    w.add_argument("kind", choices=["fixed", "variable"])
    w.add_argument("count", type=int)
    w.add_argument("--crash-after", type=int, default=0)
    w.add_argument("--torn", action="store_true")
    r = sub.add_parser("reader")
    r.add_argument("path", type=Path)
    r.add_argument("kind", choices=["fixed", "variable"])
    r.add_argument("mode", choices=["batch", "one", "slow"])
    args = parser.parse_args()
    if args.role == "writer":
        run_writer(args.path, args.kind, args.count, args.crash_after, args.torn)
    else:
        run_reader(args.path, args.kind, args.mode)
    sys.exit(0)


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
