"""A synthetic writer process for the journal tests, with content derived from each sequence number.

``python -m tests.journal.proc SHM STATE FEED --count N --rate R [--restore] [--capacity C]``

Publishes ``N`` trades (fixed ring) and ``N // RAW_RATIO`` raw frames (variable ring) at about ``R``
trades per second, in small paced chunks. Every record's content is a function of its sequence
number (`trade_fields`, `raw_payload`), so a reader can verify each one; trade ``k`` uses the symbol
``S{k // SYMBOL_EVERY}``, interned on first use, so the symbol table grows while it runs. With
``--restore`` it starts as a writer does after a reboot: ``restore_symbols`` then
``first_seq=next_seq(...)``. Prints one JSON line when the rings are open (their next sequence
numbers) and one when it stops (SIGTERM or done).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import zlib
from pathlib import Path

from consolidator.journal.history import next_seq, restore_symbols
from consolidator.records import TRADE, TRADE_DTYPE, RecordType
from consolidator.ring import FixedRingWriter, RingKind, RingLayout, VariableRingWriter
from consolidator.streams import ring_path, write_feed_meta
from consolidator.symbols import SymbolTable

SYMBOL_EVERY = 5000
RAW_RATIO = 4
MASK = (1 << 62) - 1


def trade_fields(seq: int) -> tuple[int, ...]:
    """``ts_event, ts_recv`` and the fields after ``ts_commit`` of trade ``seq`` (less symbol)."""
    a = (seq * 2654435761) & MASK
    b = (seq * 40503 + 7) & MASK
    check = zlib.crc32(f"{seq}:{a}:{b}".encode())
    return (seq, check, a, b, seq & 0xFFFF)


def trade_ok(row: tuple[int, ...], symbol_name: str) -> bool:
    """Whether a trade row (``TRADE_DTYPE`` order) is the one published as its seq."""
    seq = row[0]
    ts_event, ts_recv, trade_id, price_m, qty_m = trade_fields(seq)
    return (
        row[1] == ts_event
        and row[2] == ts_recv
        and row[4:7] == (trade_id, price_m, qty_m)
        and row[8:] == (-2, -3, 1 + seq % 2, 0)
        and symbol_name == f"S{seq // SYMBOL_EVERY}"
    )


def raw_payload(seq: int) -> bytes:
    """Raw frame ``seq``: 8-byte seq, 4-byte CRC of the rest, then a seq-dependent filler."""
    size = 16 + (seq * 7919) % 600
    filler = bytes((seq + i) & 0xFF for i in range(size - 12))
    return seq.to_bytes(8, "little") + zlib.crc32(filler).to_bytes(4, "little") + filler


def publish(trades: FixedRingWriter, raw: VariableRingWriter, symbols: SymbolTable, n: int) -> None:
    """Publish ``n`` trades (and a raw frame for every RAW_RATIO-th), content from their seq."""
    for _ in range(n):
        seq = trades.next_seq
        sid = symbols.intern(f"S{seq // SYMBOL_EVERY}")
        ts_event, ts_recv, trade_id, price_m, qty_m = trade_fields(seq)
        trades.publish(ts_event, ts_recv, trade_id, price_m, qty_m, sid, -2, -3, 1 + seq % 2, 0)
        if seq % RAW_RATIO == 0:
            raw.publish(RecordType.RAW, raw_payload(raw.next_seq), raw.next_seq & 0xFFFF)


def trades_layout(feed: str, capacity: int) -> RingLayout:
    return RingLayout(RingKind.FIXED, RecordType.TRADE, 64, capacity, 0, feed, "trades")


def raw_layout(feed: str, capacity: int) -> RingLayout:
    heap = max(1 << 16, capacity * 512)
    return RingLayout(RingKind.VARIABLE, 0, 32, capacity, heap, feed, "raw")


def run(args: argparse.Namespace) -> None:
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    shm, state, feed = args.shm, args.state, args.feed
    first = {"trades": 0, "raw": 0}
    if args.restore:
        restore_symbols(state, shm, feed)
        first = {s: next_seq(state, feed, s) for s in first}
    write_feed_meta(shm, feed, "test")
    symbols = SymbolTable(shm / feed / "symbols")
    trades = FixedRingWriter(
        ring_path(shm, feed, "trades"),
        trades_layout(feed, args.capacity),
        TRADE.pack_into,
        TRADE_DTYPE,
        first_seq=first["trades"],
    )
    raw = VariableRingWriter(
        ring_path(shm, feed, "raw"), raw_layout(feed, args.capacity // 4), first_seq=first["raw"]
    )
    start = {"trades": trades.next_seq, "raw": raw.next_seq}
    print(json.dumps({"start": start}), flush=True)
    published = 0
    chunk = max(1, int(args.rate / 1000))
    began = time.monotonic()
    worst_late = 0.0
    while not stopping and published < args.count:
        due = began + published / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            worst_late = max(worst_late, now - due)
        n = min(chunk, args.count - published)
        publish(trades, raw, symbols, n)
        published += n
        if published % 4096 < chunk:
            trades.heartbeat()
            raw.heartbeat()
    end = {"trades": trades.next_seq, "raw": raw.next_seq}
    trades.close()
    raw.close()
    symbols.close()
    elapsed = time.monotonic() - began
    print(
        json.dumps({"end": end, "published": published, "seconds": elapsed, "late": worst_late}),
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shm", type=Path)
    p.add_argument("state", type=Path)
    p.add_argument("feed")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=50_000)
    p.add_argument("--capacity", type=int, default=1 << 18)
    p.add_argument("--restore", action="store_true")
    run(p.parse_args())
    sys.exit(0)


if __name__ == "__main__":
    main()
