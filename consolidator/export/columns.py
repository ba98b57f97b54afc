"""Arrow columns from the ring's records and from sampled books, exact and vectorized.

Decimals are (int64 mantissa, int8 exponent) pairs: a run of equal exponents becomes a
``decimal128(38, -exponent)`` array over the mantissas' own bytes (no arithmetic, no float), and
Arrow's decimal cast brings it to ``decimal128(38, 18)``, refusing any value that would lose a
digit or overflow. Times are int64 nanoseconds viewed as ``timestamp[ns, UTC]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from consolidator.errors import ConsolidatorError
from consolidator.export.schema import DECIMAL, LEVEL, TIMESTAMP
from consolidator.payloads import DEPTH_HEADER, LEVEL_DTYPE
from consolidator.records import RecordType, decimal_str, to_decimal
from consolidator.ring.reader import VarRecord

__all__ = [
    "ExportError",
    "decimal_array",
    "decimal_strings",
    "depth_columns",
    "quote_columns",
    "strings",
    "timestamps",
    "trade_columns",
]

SIDE_NAMES: Final = np.array([None, "buy", "sell"], dtype=object)
_HEADER_DTYPE: Final = np.dtype(
    [("ts_event", "<i8"), ("ts_recv", "<i8"), ("first", "<u8"), ("last", "<u8"),
     ("prev", "<u8"), ("symbol_id", "<u4"), ("n_bids", "<u4"), ("n_asks", "<u4"),
     ("flags", "<u2"), ("pad", "<u2")]
)  # fmt: skip


class ExportError(ConsolidatorError):
    """The data cannot be exported as asked (e.g. a value that decimal128(38, 18) cannot hold)."""


def _validity(valid: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    if valid is None or valid.all():
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), int((~valid).sum())


def decimal_array(
    mantissa: np.ndarray, exponent: np.ndarray, valid: np.ndarray | None = None
) -> pa.Array:
    """``mantissa * 10**exponent`` as decimal128(38, 18), exactly (null where not ``valid``).

    Raises:
        ExportError: a value has more than 18 fractional digits or more than 20 integer digits.
    """
    n = len(mantissa)
    mantissa = np.ascontiguousarray(mantissa, dtype="<i8")
    exponent = np.asarray(exponent)
    out = np.zeros((n, 2), dtype="<i8")
    exps = np.unique(exponent) if n else exponent
    for exp in exps.tolist():
        idx = slice(None) if len(exps) == 1 else np.nonzero(exponent == exp)[0]
        part = mantissa[idx]
        words = np.empty((len(part), 2), dtype="<i8")
        words[:, 0] = part
        words[:, 1] = part >> 63
        if not -38 <= exp <= 38:
            raise ExportError(f"decimal exponent out of range for decimal128: {exp}")
        raw = pa.Array.from_buffers(pa.decimal128(38, -exp), len(part), [None, pa.py_buffer(words)])
        try:
            cast = raw.cast(DECIMAL)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = next(v for v in raw.to_pylist() if _unfit(v))
            raise ExportError(f"value does not fit decimal128(38, 18): {bad}") from None
        data = np.frombuffer(cast.buffers()[1], dtype="<i8").reshape(-1, 2)
        out[idx] = data[cast.offset : cast.offset + len(part)]
    validity, nulls = _validity(valid)
    return pa.Array.from_buffers(DECIMAL, n, [validity, pa.py_buffer(out)], nulls)


def _unfit(value: Decimal | None) -> bool:
    if value is None:
        return False
    try:
        pa.array([value], DECIMAL)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return True
    return False


def decimal_from_ints(values: Sequence[int | None], exps: Sequence[int]) -> pa.Array:
    """Python integers (scaled by ``10**exps``; None is null) as decimal128(38, 18)."""
    valid = np.array([v is not None for v in values], dtype=bool)
    try:
        mantissa = np.array([0 if v is None else v for v in values], dtype="<i8")
    except OverflowError:  # beyond int64 after a rescale: the exact, slower way
        return pa.array(
            [None if v is None else to_decimal(v, e) for v, e in zip(values, exps, strict=True)],
            DECIMAL,
        )
    return decimal_array(mantissa, np.array(exps, dtype="i2"), valid)


def timestamps(ns: np.ndarray, zero_is_null: bool = False) -> pa.Array:
    """int64 nanoseconds as timestamp[ns, UTC] (0 as null when ``zero_is_null``)."""
    ns = np.ascontiguousarray(ns, dtype="<i8")
    validity, nulls = _validity(ns != 0 if zero_is_null else None)
    return pa.Array.from_buffers(TIMESTAMP, len(ns), [validity, pa.py_buffer(ns)], nulls)


def strings(value: str, n: int) -> pa.Array:
    """A constant string column."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype="<i4")), pa.array([value], pa.string())
    ).cast(pa.string())


def _symbols(ids: np.ndarray, names: dict[int, str]) -> pa.Array:
    unique, inverse = np.unique(ids, return_inverse=True)
    dictionary = pa.array([names.get(int(i), f"?{int(i)}") for i in unique], pa.string())
    indices = pa.array(inverse.astype("<i4", copy=False))
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def trade_columns(
    batch: np.ndarray, feed: str, venue: str, names: dict[int, str]
) -> dict[str, Any]:
    """The trades columns of a batch of TRADE_DTYPE records."""
    n = len(batch)
    side = batch["side"]
    return {
        "ts_event": timestamps(batch["ts_event"], zero_is_null=True),
        "ts_recv": timestamps(batch["ts_recv"]),
        "ts_commit": timestamps(batch["ts_commit"]),
        "feed": strings(feed, n),
        "venue": strings(venue, n),
        "symbol": _symbols(batch["symbol_id"], names),
        "seq": pa.array(batch["seq"]),
        "trade_id": pa.array(batch["trade_id"]),
        "price": decimal_array(batch["price_m"], batch["price_e"]),
        "qty": decimal_array(batch["qty_m"], batch["qty_e"]),
        "side": pa.array(SIDE_NAMES[np.where(side <= 2, side, 0)], pa.string()),
    }


def quote_columns(
    batch: np.ndarray, feed: str, venue: str, names: dict[int, str]
) -> dict[str, Any]:
    """The quotes columns of a batch of QUOTE_DTYPE records."""
    n = len(batch)
    update_id = batch["update_id"]
    return {
        "ts_event": timestamps(batch["ts_event"], zero_is_null=True),
        "ts_recv": timestamps(batch["ts_recv"]),
        "ts_commit": timestamps(batch["ts_commit"]),
        "feed": strings(feed, n),
        "venue": strings(venue, n),
        "symbol": _symbols(batch["symbol_id"], names),
        "seq": pa.array(batch["seq"]),
        "update_id": pa.array(update_id, mask=update_id == 0),
        "bid_price": decimal_array(batch["bid_px_m"], batch["bid_px_e"]),
        "bid_qty": decimal_array(batch["bid_qty_m"], batch["bid_qty_e"]),
        "ask_price": decimal_array(batch["ask_px_m"], batch["ask_px_e"]),
        "ask_qty": decimal_array(batch["ask_qty_m"], batch["ask_qty_e"]),
    }


def depth_headers(records: Sequence[VarRecord]) -> np.ndarray:
    """The 56-byte depth headers of depth and snapshot records, as one structured array."""
    return np.frombuffer(
        b"".join(bytes(r.payload[: DEPTH_HEADER.size]) for r in records), _HEADER_DTYPE
    )


def depth_columns(
    records: Sequence[VarRecord], feed: str, venue: str, names: dict[int, str]
) -> dict[str, Any]:
    """The depth columns of depth and snapshot records (all of one of those two types)."""
    n = len(records)
    head = depth_headers(records)
    bid_parts, ask_parts = [], []
    for record, n_bids, n_asks in zip(records, head["n_bids"], head["n_asks"], strict=True):
        levels = np.frombuffer(record.payload, LEVEL_DTYPE, int(n_bids + n_asks), DEPTH_HEADER.size)
        bid_parts.append(levels[:n_bids])
        ask_parts.append(levels[n_bids:])
    snapshot = np.array([r.record_type == RecordType.SNAPSHOT for r in records], dtype=bool)
    has_prev = (head["flags"] & 1).astype(bool)
    return {
        "ts_event": timestamps(head["ts_event"], zero_is_null=True),
        "ts_recv": timestamps(head["ts_recv"]),
        "ts_commit": timestamps(np.array([r.ts_commit for r in records], dtype="<i8")),
        "feed": strings(feed, n),
        "venue": strings(venue, n),
        "symbol": _symbols(head["symbol_id"], names),
        "seq": pa.array(np.array([r.seq for r in records], dtype="<u8")),
        "type": pa.array(np.where(snapshot, "snapshot", "depth").astype(object), pa.string()),
        "first_update_id": pa.array(head["first"]),
        "last_update_id": pa.array(head["last"]),
        "prev_update_id": pa.array(head["prev"], mask=~has_prev),
        "bids": _level_lists(bid_parts),
        "asks": _level_lists(ask_parts),
    }


def _level_lists(parts: list[np.ndarray]) -> pa.Array:
    offsets = np.zeros(len(parts) + 1, dtype="<i4")
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    flat = np.concatenate(parts) if parts else np.zeros(0, LEVEL_DTYPE)
    price = decimal_array(flat["price_m"], flat["price_e"])
    qty = decimal_array(flat["qty_m"], flat["qty_e"])
    levels = pa.StructArray.from_arrays([price, qty], fields=list(LEVEL))
    return pa.ListArray.from_arrays(pa.array(offsets), levels)


def decimal_strings(column: pa.Array) -> pa.Array:
    """decimal128 as plain strings without trailing fractional zeros (``"61837.63"``, ``"5"``)."""
    text = pc.cast(column, pa.string())
    text = pc.replace_substring_regex(text, r"(\.\d*?)0+$", r"\1")
    return pc.replace_substring_regex(text, r"\.$", "")


def level_json(column: pa.Array) -> pa.Array:
    """A list<struct<price, qty>> column as JSON text: ``[["61837.63","0.5"], ...]``."""
    out: list[str | None] = []
    for levels in column.to_pylist():
        if levels is None:
            out.append(None)
            continue
        pairs = [[_plain(level["price"]), _plain(level["qty"])] for level in levels]
        out.append(orjson.dumps(pairs).decode())
    return pa.array(out, pa.string())


def _plain(value: Decimal) -> str:
    sign, digits, exp = value.as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    assert isinstance(exp, int)
    return decimal_str(-mantissa if sign else mantissa, exp)
