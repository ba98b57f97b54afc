"""Shared pieces of the export tests: the recording read independently, books rebuilt from it,
the export command, and feeds written straight into rings (known content, controlled clocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consolidator.payloads import Depth, Event, encode_depth, encode_event
from consolidator.records import TRADE, TRADE_DTYPE, EventKind, RecordType, parse_decimal
from consolidator.ring.layout import DESCRIPTOR, RingKind, RingLayout
from consolidator.ring.writer import FixedRingWriter, VariableRingWriter
from consolidator.streams import STREAMS, ring_path, write_feed_meta
from consolidator.symbols import SymbolTable
from tests.feed.helpers import REPO, Feed
from tests.recorded import RECORDED

PREFIXES = {"binance": "BINANCE", "binance-usdm": "BINANCE_FUTURES"}
MS = 1_000_000


# -- the recording, read here again (no project parser) -------------------------------------


@dataclass
class Snapshot:
    last: int
    ts: int  # ns; 0 when the venue sends none (spot)
    bids: dict[Decimal, Decimal]
    asks: dict[Decimal, Decimal]


@dataclass
class Recording:
    """The carried streams of one recorded session."""

    venue: str
    trades: list[dict[str, Any]] = field(default_factory=list)
    quotes: list[dict[str, Any]] = field(default_factory=list)
    diffs: list[dict[str, Any]] = field(default_factory=list)  # as recorded, in order
    snapshots: dict[str, Snapshot] = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        return sorted({d["s"] for d in self.diffs} | {t["s"] for t in self.trades})

    def published(self, symbol: str) -> list[dict[str, Any]]:
        """The diffs a reader of the feed gets after the snapshot (the venue's sync rule)."""
        last = self.snapshots[symbol].last
        usdm = self.venue == "binance-usdm"
        return [
            d for d in self.diffs
            if d["s"] == symbol and (d["u"] >= last if usdm else d["u"] > last)
        ]  # fmt: skip


def read_recording(venue: str) -> Recording:
    prefix = PREFIXES[venue]
    rec = Recording(venue)
    for line in (RECORDED / f"{prefix}.ws.1.0").read_bytes().splitlines()[1:]:
        _, sep, body = line.partition(b": ")
        if not sep or not body.startswith(b'{"stream":"'):
            continue
        msg = orjson.loads(body)
        stream, data = msg["stream"], msg["data"]
        if stream.endswith("@aggTrade"):
            rec.trades.append(data)
        elif stream.endswith("@bookTicker"):
            rec.quotes.append(data)
        elif stream.endswith("@depth@100ms"):
            rec.diffs.append(data)
    for line in (RECORDED / f"{prefix}.http.0.0").read_bytes().splitlines():
        url, sep, rest = line.partition(b" -> ")
        if not sep:
            continue
        symbol = url.split(b"symbol=")[1].split(b"&")[0].decode()
        body = orjson.loads(rest.partition(b": ")[2])
        if symbol in rec.snapshots:
            continue
        ts = body.get("T", body.get("E", 0)) * MS
        rec.snapshots[symbol] = Snapshot(
            body["lastUpdateId"],
            ts,
            {Decimal(p): Decimal(q) for p, q in body["bids"] if Decimal(q)},
            {Decimal(p): Decimal(q) for p, q in body["asks"] if Decimal(q)},
        )
    return rec


Levels = list[tuple[Decimal, Decimal]]


def event_time(data: dict[str, Any]) -> int:
    """A message's exchange time as the records carry it: the transaction time ``T`` when the
    venue sends one (USD-M depth), else the event time ``E`` (ns)."""
    return int(data.get("T", data["E"])) * MS


class Rebuild:
    """The book of one symbol, rebuilt from the snapshot and the published diffs: `at` gives
    the book after every diff with a time <= ts (times asked in increasing order)."""

    def __init__(self, rec: Recording, symbol: str) -> None:
        snap = rec.snapshots[symbol]
        self.bids, self.asks, self.last = dict(snap.bids), dict(snap.asks), snap.last
        self.diffs = rec.published(symbol)
        self.next = 0
        self.ts = -1

    def at(self, ts: int) -> tuple[Levels, Levels, int]:
        """(bids best first, asks best first, last update id) at ``ts``."""
        assert ts >= self.ts
        self.ts = ts
        # Diffs apply in the order published; one with an earlier time than a diff already
        # applied counts at that diff's time (the records' order).
        while self.next < len(self.diffs) and event_time(self.diffs[self.next]) <= ts:
            d = self.diffs[self.next]
            for side, levels in ((self.bids, d["b"]), (self.asks, d["a"])):
                for p, q in levels:
                    if Decimal(q):
                        side[Decimal(p)] = Decimal(q)
                    else:
                        side.pop(Decimal(p), None)
            self.last = d["u"]
            self.next += 1
        return sorted(self.bids.items(), reverse=True), sorted(self.asks.items()), self.last


def formulas(bids: Levels, asks: Levels) -> dict[str, float]:
    """DESIGN.md's book formulas on exact fractions."""
    (pb, qb), (pa, qa) = (
        (Fraction(bids[0][0]), Fraction(bids[0][1])),
        (Fraction(asks[0][0]), Fraction(asks[0][1])),
    )
    mid = (pb + pa) / 2
    out = {
        "midprice": float(mid),
        "spread": float(pa - pb),
        "spread_bps": float(10_000 * (pa - pb) / mid),
        "microprice": float((pb * qa + pa * qb) / (qb + qa)),
    }
    for k in (1, 5, 10):
        sb = sum((Fraction(q) for _, q in bids[:k]), Fraction(0))
        sa = sum((Fraction(q) for _, q in asks[:k]), Fraction(0))
        out[f"imbalance_{k}"] = float((sb - sa) / (sb + sa))
    for bps in (10, 50):
        width = mid * bps / 10_000
        total = Fraction(0)
        for side in (bids, asks):  # sorted away from the mid: stop at the first one too far
            for p, q in side:
                if abs(Fraction(p) - mid) > width and (Fraction(p) < mid) == (side is bids):
                    break
                if abs(Fraction(p) - mid) <= width:
                    total += Fraction(q)
        out[f"depth_{bps}bps"] = float(total)
    return out


# -- the export of the recorded replay (tests/export/conftest.py) ----------------------------


@dataclass
class Exported:
    rec: Recording
    feed: Feed
    out: Path
    csv: Path


# -- the command ----------------------------------------------------------------------------


def export(
    config_dir: Path, feed: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consolidator.cli.main", "export", feed,
         "--config-dir", str(config_dir), *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
    )  # fmt: skip


def parquet_glob(out: Path, feed: str, stream: str, ext: str = "parquet") -> str:
    return str(out / f"feed={feed}" / f"stream={stream}" / "*" / "*" / f"*.{ext}")


# -- a feed written straight into rings ---------------------------------------------------------


class Clock:
    """A settable nanosecond clock for ``ts_commit``."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class RingFeed:
    """Rings of one feed with controlled commit times (a `Feed`'s shm_dir and config)."""

    def __init__(self, feed: Feed, venue: str, symbols: list[str]) -> None:
        self.feed = feed
        self.clock = Clock()
        shm, name = feed.shm_dir, feed.name
        write_feed_meta(shm, name, venue)
        table = SymbolTable(shm / name / "symbols")
        self.ids = {s: table.intern(s) for s in symbols}
        table.close()
        self.writers: dict[str, Any] = {}
        for stream in ("trades", "depth", "events"):
            spec = STREAMS[stream]
            path = ring_path(shm, name, stream)
            # Small rings: the default ones take hundreds of MB of /dev/shm each.
            if spec.dtype is not None:
                layout = RingLayout(RingKind.FIXED, spec.record_type, spec.dtype.itemsize,
                                    1 << 18, 0, name, stream)  # fmt: skip
                self.writers[stream] = FixedRingWriter(
                    path, layout, TRADE.pack_into, TRADE_DTYPE, clock=self.clock
                )
            else:
                layout = RingLayout(RingKind.VARIABLE, 0, DESCRIPTOR.size, 1 << 12, 1 << 22,
                                    name, stream)  # fmt: skip
                self.writers[stream] = VariableRingWriter(path, layout, clock=self.clock)

    def depth(self, commit: int, depth: Depth) -> None:
        self.clock.now = commit
        kind = RecordType.SNAPSHOT if depth.snapshot else RecordType.DEPTH
        self.writers["depth"].publish(kind, encode_depth(depth))

    def event(self, commit: int, kind: EventKind, symbol: str | None = None) -> None:
        self.clock.now = commit
        sid = self.ids[symbol] if symbol is not None else 0xFFFFFFFF
        self.writers["events"].publish(
            RecordType.EVENT, encode_event(Event(kind, "{}", sid, commit))
        )

    def trades(self, commit: int, records: np.ndarray) -> None:
        self.clock.now = commit
        self.writers["trades"].publish_batch(records)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def level(price: str, qty: str) -> tuple[int, int, int, int]:
    pm, pe = parse_decimal(price)
    qm, qe = parse_decimal(qty)
    return pm, pe, qm, qe


def env_for(feed: Feed) -> dict[str, str]:
    return {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(feed.root)}


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)
