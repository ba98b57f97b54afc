"""Records as the fixed mdtail fields (DESIGN.md "mdtail FEED"): JSON objects, CSV rows, text lines.

Prices and quantities become canonical decimal strings (plain notation, no trailing fractional
zeros); times stay integer nanoseconds; a venue that sent no event time gives ``ts_event: null``.
The text format may be coloured (ANSI SGR codes) for a person watching a terminal: dim times,
buys green and sells red (a quote's bid green, its ask red), events in yellow, and what went
wrong (gaps, resyncs, disconnects, parse errors, losses) in bold red. `use_color` decides.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np

from consolidator.payloads import decode_depth, decode_event, decode_raw
from consolidator.records import NO_SYMBOL, EventKind, RecordType, Side, decimal_str
from consolidator.ring.reader import Loss, VarRecord

__all__ = ["Renderer", "format_text", "loss_object", "use_color"]

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


DIM: Final = "\x1b[2m"
GREEN: Final = "\x1b[32m"
RED: Final = "\x1b[31m"
YELLOW: Final = "\x1b[33m"
ALERT: Final = "\x1b[1;31m"
RESET: Final = "\x1b[0m"
SIDE_COLORS: Final = {"buy": GREEN, "sell": RED}
ALERT_EVENTS: Final = frozenset(
    {"gap", "resync", "disconnect", "parse_error", "loss", "rate_limited"}
)


def use_color(mode: str, isatty: bool, env: Mapping[str, str]) -> bool:
    """Whether to colour text output: ``always``, ``never``, or ``auto``.

    ``auto`` colours a terminal only, and not when ``NO_COLOR`` is set to anything non-empty
    (https://no-color.org) or ``TERM`` is ``dumb``; an explicit ``always`` wins over ``NO_COLOR``.
    """
    if mode != "auto":
        return mode == "always"
    return isatty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color and code else text


def _time(ts: int | None) -> str:
    if not ts:
        return "-" * 15
    seconds, ns = divmod(ts, 1_000_000_000)
    hms = np.datetime64(seconds, "s").astype(str)[11:19]
    return f"{hms}.{ns // 1000:06d}"


def format_text(obj: dict[str, Any], *, color: bool = False) -> str:
    """One aligned, human-readable line: time, feed, symbol, type, then the type's values.

    With ``color``, ANSI codes wrap the padded fields, so the columns stay aligned on screen.
    """
    kind = obj["type"]
    ts = obj.get("ts_recv") or obj.get("ts_commit")
    when = _paint(_time(ts), DIM, color)
    head = f"{when}  {obj['feed']:<10.10} {obj.get('symbol') or '-'!s:<14.14} {kind:<8}"
    if kind == "trade":
        side = obj["side"] or "?"
        paint = SIDE_COLORS.get(side, "")
        price_qty = _paint(f"{obj['price']:>16} x {obj['qty']:<14} {side:<4}", paint, color)
        return f"{head} {price_qty} id={obj['trade_id']}"
    if kind == "quote":
        bid = _paint(f"{obj['bid_qty']:>14} @ {obj['bid_price']:<14}", GREEN, color)
        ask = _paint(f"{obj['ask_price']:>14} @ {obj['ask_qty']:<14}", RED, color)
        return f"{head} {bid} | {ask}"
    if kind in ("depth", "snapshot"):
        ids = (
            f"u={obj['last_update_id']}"
            if kind == "snapshot"
            else f"U={obj['first_update_id']} u={obj['last_update_id']}"
        )
        best_bid = _paint(obj["bids"][0][0] if obj["bids"] else "-", GREEN, color)
        best_ask = _paint(obj["asks"][0][0] if obj["asks"] else "-", RED, color)
        return (
            f"{head} {len(obj['bids']):>4} bids {len(obj['asks']):>4} asks  "
            f"{best_bid} / {best_ask}  {ids}"
        )
    if kind == "event":
        paint = ALERT if obj["kind"] in ALERT_EVENTS else YELLOW
        event_kind = _paint(f"{obj['kind']:<16}", paint, color)
        return f"{head} {event_kind} {obj['detail']}"
    if kind == "raw":
        return f"{head} conn={obj['conn_id']} {obj['frame'][:160]}"
    if kind == "loss":
        text = f"LOST {obj['count']} records from seq {obj['first_seq']} ({obj['reason']})"
        return f"{head} {_paint(text, ALERT, color)}"
    return f"{head} {json.dumps(obj)}"
