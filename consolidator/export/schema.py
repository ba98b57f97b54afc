"""The Arrow schemas of ``consolidator export``, one per stream, built once at import.

Types: times ``timestamp[ns, UTC]`` (null when the venue sent none), exact decimals
``decimal128(38, 18)``, derived values ``float64``, ids ``uint64``. CSV files carry the same
columns with decimals as plain strings (no exponent, no trailing fractional zeros) and depth
levels as JSON text. The partition time of a row is ``ts`` (book, features) or ``ts_event``,
falling back to ``ts_recv`` when the venue sent no event time (records).

trades::

    ts_event, ts_recv, ts_commit   timestamp[ns, UTC]
    feed, venue, symbol            string
    seq, trade_id                  uint64
    price, qty                     decimal128(38, 18)
    side                           string   "buy" | "sell" (the taker's side; null if unknown)

quotes::

    ts_event, ts_recv, ts_commit   timestamp[ns, UTC]
    feed, venue, symbol            string
    seq                            uint64
    update_id                      uint64   (null when the venue sends none)
    bid_price, bid_qty, ask_price, ask_qty   decimal128(38, 18)

depth (diffs and snapshots; ``type`` says which, as in mdtail)::

    ts_event, ts_recv, ts_commit   timestamp[ns, UTC]
    feed, venue, symbol            string
    seq                            uint64
    type                           string   "depth" | "snapshot"
    first_update_id, last_update_id, prev_update_id   uint64 (prev: null if none)
    bids, asks                     list<struct<price, qty: decimal128(38, 18)>> (qty 0 deletes)

book (one row per symbol and interval; see `consolidator.book.sampler` for the time rule)::

    ts                             timestamp[ns, UTC]  (a multiple of the interval)
    feed, venue, symbol            string
    last_update_id                 uint64 (null in a gap row)
    gap                            bool
    bid_px_01, bid_sz_01, ask_px_01, ask_sz_01, ... to NN   decimal128(38, 18), null when empty
    midprice, spread, spread_bps, microprice, imbalance_1, imbalance_5, imbalance_10,
    ofi, ofi_10, depth_10bps, depth_50bps                   float64

features: the book columns, then::

    taker_buy_volume, taker_sell_volume, signed_volume, vwap, returns, volatility_20,
    volatility_100                 float64
    mlofi_1 .. mlofi_5             float64 (multi-level OFI, level m of each side)
"""

from __future__ import annotations

from functools import cache
from typing import Final

import pyarrow as pa

__all__ = [
    "BOOK_DERIVED",
    "DECIMAL",
    "DEPTH",
    "FEATURE_COLUMNS",
    "QUOTES",
    "RECORD_SCHEMAS",
    "TIMESTAMP",
    "TRADES",
    "book_schema",
    "csv_schema",
    "features_schema",
    "level_columns",
]

DECIMAL: Final = pa.decimal128(38, 18)
TIMESTAMP: Final = pa.timestamp("ns", tz="UTC")
LEVEL: Final = pa.struct([("price", DECIMAL), ("qty", DECIMAL)])

_HEAD: Final = [
    ("ts_event", TIMESTAMP),
    ("ts_recv", TIMESTAMP),
    ("ts_commit", TIMESTAMP),
    ("feed", pa.string()),
    ("venue", pa.string()),
    ("symbol", pa.string()),
    ("seq", pa.uint64()),
]

TRADES: Final = pa.schema(
    [*_HEAD, ("trade_id", pa.uint64()), ("price", DECIMAL), ("qty", DECIMAL), ("side", pa.string())]
)
QUOTES: Final = pa.schema(
    [
        *_HEAD,
        ("update_id", pa.uint64()),
        ("bid_price", DECIMAL),
        ("bid_qty", DECIMAL),
        ("ask_price", DECIMAL),
        ("ask_qty", DECIMAL),
    ]
)
DEPTH: Final = pa.schema(
    [
        *_HEAD,
        ("type", pa.string()),
        ("first_update_id", pa.uint64()),
        ("last_update_id", pa.uint64()),
        ("prev_update_id", pa.uint64()),
        ("bids", pa.list_(LEVEL)),
        ("asks", pa.list_(LEVEL)),
    ]
)
RECORD_SCHEMAS: Final = {"trades": TRADES, "quotes": QUOTES, "depth": DEPTH}

BOOK_DERIVED: Final = (
    "midprice", "spread", "spread_bps", "microprice", "imbalance_1", "imbalance_5",
    "imbalance_10", "ofi", "ofi_10", "depth_10bps", "depth_50bps",
)  # fmt: skip
FEATURE_COLUMNS: Final = (
    "taker_buy_volume", "taker_sell_volume", "signed_volume", "vwap", "returns",
    "volatility_20", "volatility_100",
)  # fmt: skip
MLOFI_COLUMNS: Final = tuple(f"mlofi_{m}" for m in range(1, 6))


def level_columns(depth: int) -> list[str]:
    """``bid_px_01, bid_sz_01, ask_px_01, ask_sz_01, ...`` for levels 1..depth."""
    return [f"{name}_{i:02d}" for i in range(1, depth + 1)
            for name in ("bid_px", "bid_sz", "ask_px", "ask_sz")]  # fmt: skip


@cache
def book_schema(depth: int) -> pa.Schema:
    """The book stream's schema with ``depth`` levels a side."""
    return pa.schema(
        [
            ("ts", TIMESTAMP),
            ("feed", pa.string()),
            ("venue", pa.string()),
            ("symbol", pa.string()),
            ("last_update_id", pa.uint64()),
            ("gap", pa.bool_()),
            *[(name, DECIMAL) for name in level_columns(depth)],
            *[(name, pa.float64()) for name in BOOK_DERIVED],
        ]
    )


@cache
def features_schema(depth: int) -> pa.Schema:
    """The features stream's schema: the book's, then the trade and rolling values."""
    extra = [(name, pa.float64()) for name in (*FEATURE_COLUMNS, *MLOFI_COLUMNS)]
    return pa.schema([*book_schema(depth), *extra])


@cache
def csv_schema(schema: pa.Schema) -> pa.Schema:
    """The same columns for CSV: decimals and level lists become strings."""
    fields = []
    for field in schema:
        if pa.types.is_decimal(field.type) or pa.types.is_list(field.type):
            fields.append(pa.field(field.name, pa.string()))
        else:
            fields.append(field)
    return pa.schema(fields)
