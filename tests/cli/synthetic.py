"""A writer without an exchange: a random walk published straight into a feed's rings.

Tests that need rings with known content (mdtail, mdstat) use it instead of the full pipeline.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from consolidator.payloads import Event, encode_event
from consolidator.records import EventKind, RecordType, Side
from consolidator.ring.writer import FixedRingWriter, VariableRingWriter
from consolidator.streams import open_stream_writer, write_feed_meta
from consolidator.symbols import SymbolTable

FEED = "demo"
SYMBOLS = {"BTCUSDT": (6_183_763, -2), "ETHUSDT": (245_012, -2), "PEPEUSDT": (123, -8)}


def synthetic_writer(shm_dir: Path, rate: float, stop_after_s: float) -> dict[str, int]:
    """Publish a random-walk market into trades/quotes/events rings until time or SIGTERM."""
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    write_feed_meta(shm_dir, FEED, "demo")
    symbols = SymbolTable(shm_dir / FEED / "symbols")
    trades = open_stream_writer(shm_dir, FEED, "trades", scale=1)
    quotes = open_stream_writer(shm_dir, FEED, "quotes", scale=1)
    events = open_stream_writer(shm_dir, FEED, "events", scale=1)
    assert isinstance(trades, FixedRingWriter)
    assert isinstance(quotes, FixedRingWriter)
    assert isinstance(events, VariableRingWriter)
    rng = random.Random(7)
    ids = {name: symbols.intern(name) for name in SYMBOLS}
    mids = {name: mid for name, (mid, _) in SYMBOLS.items()}
    counts = {"trades": 0, "quotes": 0, "events": 0}
    events.publish(RecordType.EVENT, encode_event(Event(EventKind.WRITER_START, '{"demo": true}')))
    counts["events"] += 1
    start = time.monotonic()
    next_at = start
    trade_id = 1
    while not stopping and time.monotonic() - start < stop_after_s:
        name = rng.choice(list(SYMBOLS))
        exp = SYMBOLS[name][1]
        mids[name] = max(1, mids[name] + rng.randint(-3, 3))
        mid = mids[name]
        now = time.time_ns()
        if rng.random() < 0.4:
            side = rng.choice((Side.BUY, Side.SELL))
            price = mid + (1 if side is Side.BUY else -1)
            qty = rng.randint(1, 5000)
            trades.publish(now, now, trade_id, price, qty, ids[name], exp, -3, side, 0)
            trade_id += 1
            counts["trades"] += 1
        else:
            quotes.publish(
                0, now, trade_id, mid - 1, rng.randint(1, 9000), mid + 1, rng.randint(1, 9000),
                ids[name], exp, -3, exp, -3,
            )  # fmt: skip
            counts["quotes"] += 1
        for writer in (trades, quotes, events):
            writer.heartbeat(now)
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    events.publish(RecordType.EVENT, encode_event(Event(EventKind.WRITER_STOP, "{}")))
    counts["events"] += 1
    for writer in (trades, quotes, events):
        writer.close()
    symbols.close()
    return counts
