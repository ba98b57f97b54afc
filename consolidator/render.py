"""Records as the fixed mdtail fields (DESIGN.md "mdtail FEED"): JSON objects, CSV rows, text lines.

Prices and quantities become canonical decimal strings (plain notation, no trailing fractional
zeros); times stay integer nanoseconds; a venue that sent no event time gives ``ts_event: null``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from consolidator.payloads import decode_depth, decode_event, decode_raw
from consolidator.records import NO_SYMBOL, EventKind, RecordType, Side, decimal_str
from consolidator.ring.reader import Loss, VarRecord

__all__ = ["Renderer", "format_text", "loss_object"]

SIDES: Final = {Side.BUY: "buy", Side.SELL: "sell", Side.UNKNOWN: None}
CSV_COLUMNS: Final = (
    "type", "feed", "venue", "symbol", "seq", "ts_event", "ts_recv", "ts_commit", "trade_id",
    "price", "qty", "side", "update_id", "bid_price", "bid_qty", "ask_price", "ask_qty",
    "first_update_id", "last_update_id", "prev_update_id", "kind", "detail",
)  # fmt: skip


def _levels(levels: list[tuple[int, int, int, int]]) -> list[list[str]]:
    return [[decimal_str(pm, pe), decimal_str(qm, qe)] for pm, pe, qm, qe in levels]


class Renderer:
    """Turns ring records of one feed into mdtail objects.

    Args:
        feed: the feed name.
        venue: the feed's venue (from the feed's metadata).
        symbol_name: maps a symbol id to its name (the shared symbol table).
    """

    def __init__(self, feed: str, venue: str, symbol_name: Callable[[int], str]) -> None:
        self.feed = feed
        self.venue = venue
        self.symbol_name = symbol_name

    def trades(self, batch: np.ndarray) -> list[dict[str, Any]]:
        """Trade objects from a batch of TRADE_DTYPE records."""
        name = self.symbol_name
        return [
            {
                "type": "trade",
                "feed": self.feed,
                "venue": self.venue,
                "symbol": name(sym),
                "seq": seq,
                "trade_id": trade_id,
                "price": decimal_str(pm, pe),
                "qty": decimal_str(qm, qe),
                "side": SIDES.get(side),
                "ts_event": ts_event or None,
                "ts_recv": ts_recv,
                "ts_commit": ts_commit,
            }
            for (seq, ts_event, ts_recv, ts_commit, trade_id, pm, qm, sym, pe, qe, side, _) in (
                batch.tolist()
            )
        ]

    def quotes(self, batch: np.ndarray) -> list[dict[str, Any]]:
        """Quote objects from a batch of QUOTE_DTYPE records."""
        name = self.symbol_name
        return [
            {
                "type": "quote",
                "feed": self.feed,
                "venue": self.venue,
                "symbol": name(sym),
                "seq": seq,
                "update_id": update_id or None,
                "bid_price": decimal_str(bpm, bpe),
                "bid_qty": decimal_str(bqm, bqe),
                "ask_price": decimal_str(apm, ape),
                "ask_qty": decimal_str(aqm, aqe),
                "ts_event": ts_event or None,
                "ts_recv": ts_recv,
                "ts_commit": ts_commit,
            }
            for (seq, ts_event, ts_recv, ts_commit, update_id, bpm, bqm, apm, aqm, sym, bpe, bqe,
                 ape, aqe) in batch.tolist()
        ]  # fmt: skip

    def variable(self, record: VarRecord) -> dict[str, Any] | None:
        """A depth, snapshot or event object; None for record types mdtail does not show."""
        if record.record_type == RecordType.DEPTH:
            d = decode_depth(record.payload)
            return {
                "type": "depth",
                "feed": self.feed,
                "venue": self.venue,
                "symbol": self.symbol_name(d.symbol_id),
                "seq": record.seq,
                "first_update_id": d.first_update_id,
                "last_update_id": d.last_update_id,
                "prev_update_id": d.prev_update_id,
                "bids": _levels(d.bids),
                "asks": _levels(d.asks),
                "ts_event": d.ts_event or None,
                "ts_recv": d.ts_recv,
                "ts_commit": record.ts_commit,
            }
        if record.record_type == RecordType.SNAPSHOT:
            d = decode_depth(record.payload, snapshot=True)
            return {
                "type": "snapshot",
                "feed": self.feed,
                "venue": self.venue,
                "symbol": self.symbol_name(d.symbol_id),
                "seq": record.seq,
                "last_update_id": d.last_update_id,
                "bids": _levels(d.bids),
                "asks": _levels(d.asks),
                "ts_recv": d.ts_recv,
                "ts_commit": record.ts_commit,
            }
        if record.record_type == RecordType.EVENT:
            e = decode_event(record.payload)
            kind = e.kind.name.lower() if isinstance(e.kind, EventKind) else str(e.kind)
            return {
                "type": "event",
                "feed": self.feed,
                "seq": record.seq,
                "kind": kind,
                "symbol": None if e.symbol_id == NO_SYMBOL else self.symbol_name(e.symbol_id),
                "detail": e.detail,
                "ts_commit": record.ts_commit,
            }
        if record.record_type == RecordType.RAW:
            raw = decode_raw(record.payload)
            return {
                "type": "raw",
                "feed": self.feed,
                "venue": self.venue,
                "seq": record.seq,
                "conn_id": raw.conn_id,
                "frame": raw.frame.decode("utf-8", "replace"),
                "ts_recv": raw.ts_recv,
                "ts_commit": record.ts_commit,
            }
        return None


def loss_object(feed: str, stream: str, loss: Loss) -> dict[str, Any]:
    """The ``{"type": "loss", ...}`` line a lapped reader prints in json mode."""
    return {
        "type": "loss",
        "feed": feed,
        "stream": stream,
        "first_seq": loss.first_seq,
        "count": loss.count,
        "reason": loss.reason,
    }


def _time(ts: int | None) -> str:
    if not ts:
        return "-" * 15
    seconds, ns = divmod(ts, 1_000_000_000)
    hms = np.datetime64(seconds, "s").astype(str)[11:19]
    return f"{hms}.{ns // 1000:06d}"


def format_text(obj: dict[str, Any]) -> str:
    """One aligned, human-readable line: time, feed, symbol, type, then the type's values."""
    kind = obj["type"]
    ts = obj.get("ts_recv") or obj.get("ts_commit")
    head = f"{_time(ts)}  {obj['feed']:<10.10} {obj.get('symbol') or '-'!s:<14.14} {kind:<8}"
    if kind == "trade":
        side = obj["side"] or "?"
        return f"{head} {obj['price']:>16} x {obj['qty']:<14} {side:<4} id={obj['trade_id']}"
    if kind == "quote":
        return (
            f"{head} {obj['bid_qty']:>14} @ {obj['bid_price']:<14} | "
            f"{obj['ask_price']:>14} @ {obj['ask_qty']:<14}"
        )
    if kind in ("depth", "snapshot"):
        ids = (
            f"u={obj['last_update_id']}"
            if kind == "snapshot"
            else f"U={obj['first_update_id']} u={obj['last_update_id']}"
        )
        best_bid = obj["bids"][0][0] if obj["bids"] else "-"
        best_ask = obj["asks"][0][0] if obj["asks"] else "-"
        return (
            f"{head} {len(obj['bids']):>4} bids {len(obj['asks']):>4} asks  "
            f"{best_bid} / {best_ask}  {ids}"
        )
    if kind == "event":
        return f"{head} {obj['kind']:<16} {obj['detail']}"
    if kind == "raw":
        return f"{head} conn={obj['conn_id']} {obj['frame'][:160]}"
    if kind == "loss":
        return f"{head} LOST {obj['count']} records from seq {obj['first_seq']} ({obj['reason']})"
    return f"{head} {json.dumps(obj)}"
