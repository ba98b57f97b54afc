"""Normalized record values and the payload layouts of variable-length records.

The venue protocols produce the named tuples below; the feed writer publishes them. Decimal fields
are already encoded as (mantissa, exponent) pairs (see `consolidator.records`). Trades and quotes
are fixed-size records: their named tuples list the fields in ring order after ``seq``
(``ts_commit`` is stamped by the ring writer), so ``writer.publish(*trade)`` works. Depth updates,
snapshots, events and raw frames are variable-length payloads in a variable ring; the ring's slot
descriptor carries ``seq``, ``ts_commit`` and the `RecordType`, the payload starts with one of
these headers::

    depth / snapshot header, 56 bytes, then n_bids + n_asks levels of 24 bytes (bids first)
     0 ts_event i8   8 ts_recv i8   16 first_update_id u8   24 last_update_id u8
    32 prev_update_id u8   40 symbol_id u4   44 n_bids u4   48 n_asks u4   52 flags u2   54 pad u2

    level, 24 bytes:   0 price_m i8   8 qty_m i8   16 price_e i1   17 qty_e i1   18 pad[6]

    event header, 16 bytes, then ``detail`` as UTF-8 text (JSON by convention)
     0 ts_event i8   8 symbol_id u4 (NO_SYMBOL = feed-wide)   12 kind u2   14 pad u2

    raw header, 16 bytes, then the frame exactly as received
     0 ts_recv i8    8 conn_id u4   12 flags u2   14 pad u2
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

import numpy as np

from consolidator.errors import RecordError
from consolidator.records import NO_SYMBOL, EventKind

__all__ = [
    "DEPTH_HAS_PREV",
    "DEPTH_HEADER",
    "EVENT_HEADER",
    "LEVEL",
    "LEVEL_DTYPE",
    "MAX_LEVELS",
    "RAW_HEADER",
    "Depth",
    "Event",
    "Level",
    "Quote",
    "Raw",
    "Trade",
    "decode_depth",
    "decode_event",
    "decode_raw",
    "depth_levels",
    "encode_depth",
    "encode_event",
    "encode_raw",
]

DEPTH_HEADER: Final = struct.Struct("<qqQQQIIIHH")
LEVEL: Final = struct.Struct("<qqbb6x")
LEVEL_DTYPE: Final = np.dtype(
    {
        "names": ["price_m", "qty_m", "price_e", "qty_e"],
        "formats": ["<i8", "<i8", "i1", "i1"],
        "offsets": [0, 8, 16, 17],
        "itemsize": 24,
    }
)
EVENT_HEADER: Final = struct.Struct("<qIH2x")
RAW_HEADER: Final = struct.Struct("<qIH2x")
DEPTH_HAS_PREV: Final = 1
MAX_LEVELS: Final = 1 << 20

Level = tuple[int, int, int, int]
"""A book level: (price_m, price_e, qty_m, qty_e)."""


class Trade(NamedTuple):
    """A trade, in fixed-ring field order after ``seq``; ``ts_commit`` is stamped on publish."""

    ts_event: int
    ts_recv: int
    trade_id: int
    price_m: int
    qty_m: int
    symbol_id: int
    price_e: int
    qty_e: int
    side: int
    flags: int


class Quote(NamedTuple):
    """Best bid/offer, in fixed-ring field order after ``seq``; ``update_id`` 0 means none."""

    ts_event: int
    ts_recv: int
    update_id: int
    bid_px_m: int
    bid_qty_m: int
    ask_px_m: int
    ask_qty_m: int
    symbol_id: int
    bid_px_e: int
    bid_qty_e: int
    ask_px_e: int
    ask_qty_e: int


class Depth(NamedTuple):
    """An L2 diff (first/last/prev update ids) or, with ``snapshot`` set, a full book snapshot."""

    ts_event: int
    ts_recv: int
    symbol_id: int
    first_update_id: int
    last_update_id: int
    prev_update_id: int | None
    bids: list[Level]
    asks: list[Level]
    snapshot: bool = False


class Event(NamedTuple):
    """An event record: connect, gap, resync, ... ``symbol_id`` is NO_SYMBOL when feed-wide."""

    kind: EventKind
    detail: str
    symbol_id: int = NO_SYMBOL
    ts_event: int = 0


class Raw(NamedTuple):
    """A frame exactly as it left the socket."""

    ts_recv: int
    conn_id: int
    frame: bytes


def encode_depth(depth: Depth) -> bytearray:
    """Encode a depth update or snapshot payload.

    Raises:
        RecordError: more than MAX_LEVELS levels on a side, or a field out of range.
    """
    bids, asks = depth.bids, depth.asks
    if len(bids) > MAX_LEVELS or len(asks) > MAX_LEVELS:
        raise RecordError(f"too many levels in a depth record: {len(bids)} bids, {len(asks)} asks")
    prev = depth.prev_update_id
    buf = bytearray(DEPTH_HEADER.size + LEVEL.size * (len(bids) + len(asks)))
    try:
        DEPTH_HEADER.pack_into(
            buf,
            0,
            depth.ts_event,
            depth.ts_recv,
            depth.first_update_id,
            depth.last_update_id,
            0 if prev is None else prev,
            depth.symbol_id,
            len(bids),
            len(asks),
            0 if prev is None else DEPTH_HAS_PREV,
            0,
        )
        offset = DEPTH_HEADER.size
        pack = LEVEL.pack_into
        for price_m, price_e, qty_m, qty_e in bids:
            pack(buf, offset, price_m, qty_m, price_e, qty_e)
            offset += 24
        for price_m, price_e, qty_m, qty_e in asks:
            pack(buf, offset, price_m, qty_m, price_e, qty_e)
            offset += 24
    except struct.error as exc:
        raise RecordError(f"depth record field out of range: {exc}") from None
    return buf


def decode_depth(payload: bytes | memoryview, snapshot: bool = False) -> Depth:
    """Decode a depth payload back into a `Depth` (levels as (price_m, price_e, qty_m, qty_e))."""
    (ts_event, ts_recv, first, last, prev, symbol_id, n_bids, n_asks, flags, _) = (
        DEPTH_HEADER.unpack_from(payload, 0)
    )
    levels = [
        (p_m, p_e, q_m, q_e)
        for p_m, q_m, p_e, q_e in LEVEL.iter_unpack(
            memoryview(payload)[DEPTH_HEADER.size : DEPTH_HEADER.size + 24 * (n_bids + n_asks)]
        )
    ]
    return Depth(
        ts_event,
        ts_recv,
        symbol_id,
        first,
        last,
        prev if flags & DEPTH_HAS_PREV else None,
        levels[:n_bids],
        levels[n_bids:],
        snapshot,
    )


def depth_levels(payload: bytes | memoryview) -> tuple[np.ndarray, np.ndarray]:
    """The bid and ask levels of a depth payload as numpy arrays of LEVEL_DTYPE (views)."""
    n_bids, n_asks = struct.unpack_from("<II", payload, 44)
    levels = np.frombuffer(payload, LEVEL_DTYPE, n_bids + n_asks, DEPTH_HEADER.size)
    return levels[:n_bids], levels[n_bids:]


def encode_event(event: Event) -> bytes:
    """Encode an event payload."""
    return EVENT_HEADER.pack(event.ts_event, event.symbol_id, event.kind) + event.detail.encode()


def decode_event(payload: bytes | memoryview) -> Event:
    """Decode an event payload (unknown kinds are kept as plain ints)."""
    ts_event, symbol_id, kind = EVENT_HEADER.unpack_from(payload, 0)
    detail = bytes(payload[EVENT_HEADER.size :]).decode("utf-8", "replace")
    if kind in EventKind._value2member_map_:
        kind = EventKind(kind)
    return Event(kind, detail, symbol_id, ts_event)


def encode_raw(raw: Raw) -> bytes:
    """Encode a raw-frame payload."""
    return RAW_HEADER.pack(raw.ts_recv, raw.conn_id, 0) + raw.frame


def decode_raw(payload: bytes | memoryview) -> Raw:
    """Decode a raw-frame payload."""
    ts_recv, conn_id, _ = RAW_HEADER.unpack_from(payload, 0)
    return Raw(ts_recv, conn_id, bytes(payload[RAW_HEADER.size :]))
