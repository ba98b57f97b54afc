"""What ``mdbook`` prints: a `LiveBook` as the book columns (json) or as a screen (text).

The json object has the book columns of DESIGN.md ("Books and features"): ``ts`` (exchange
time of the last depth record applied, integer ns), ``feed, venue, symbol, last_update_id, gap``,
``bid_px_01, bid_sz_01, ask_px_01, ask_sz_01, ...`` (decimal strings, null when the level is
empty), ``midprice, spread, spread_bps, microprice, imbalance_1, imbalance_5, imbalance_10, ofi,
ofi_10, depth_10bps, depth_50bps``, plus ``valid`` (and ``reason`` when not valid), and
``trades``: the last trades as ``[ts_event, price, qty, side]``.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from consolidator.book.live import LiveBook
from consolidator.book.sampler import book_values
from consolidator.records import decimal_str

__all__ = ["book_object", "render_text"]

SIDES: Final = {1: "buy", 2: "sell"}
WAITING: Final = "book invalid: waiting for snapshot"


def _dec(value: int | None, exp: int) -> str | None:
    return None if value is None else decimal_str(value, exp)


def book_object(
    live: LiveBook, feed: str, venue: str, symbol: str, depth: int, ofi: tuple[float, float | None]
) -> dict[str, Any]:
    """The json object of one redraw (``ofi``: the interval's OFI and its rolling sum)."""
    book = live.book
    obj: dict[str, Any] = {
        "type": "book",
        "ts": live.ts_event or None,
        "feed": feed,
        "venue": venue,
        "symbol": symbol,
        "last_update_id": book.last_update_id if book.valid else None,
        "gap": not book.valid,
        "valid": book.valid,
    }
    values = book_values(book, depth) if book.valid else None
    for i in range(depth):
        for side, px, sz in (("bids", "bid_px", "bid_sz"), ("asks", "ask_px", "ask_sz")):
            level = None
            if values is not None:
                levels = values.bids if side == "bids" else values.asks
                level = levels[i] if i < len(levels) else None
            obj[f"{px}_{i + 1:02d}"] = None if level is None else _dec(level[0], book.price_exp)
            obj[f"{sz}_{i + 1:02d}"] = None if level is None else _dec(level[1], book.qty_exp)
    for name in ("midprice", "spread", "spread_bps", "microprice", "imbalance_1", "imbalance_5",
                 "imbalance_10"):  # fmt: skip
        obj[name] = None if values is None else getattr(values, name)
    obj["ofi"] = ofi[0] if book.valid else None
    obj["ofi_10"] = ofi[1]
    obj["depth_10bps"] = None if values is None else values.depth_10bps
    obj["depth_50bps"] = None if values is None else values.depth_50bps
    if not book.valid:
        obj["reason"] = book.reason
    obj["trades"] = [
        [t.ts_event, decimal_str(t.price_m, t.price_e), decimal_str(t.qty_m, t.qty_e),
         SIDES.get(t.side)]
        for t in live.trades
    ]  # fmt: skip
    return obj


def _time(ts: int | None) -> str:
    if not ts:
        return "-"
    seconds, ns = divmod(ts, 1_000_000_000)
    return f"{np.datetime64(seconds, 's').astype(str).replace('T', ' ')}.{ns // 1_000_000:03d}"


def _num(value: float | None, spec: str = ".6g") -> str:
    return "-" if value is None else format(value, spec)


def render_text(obj: dict[str, Any], depth: int, width: int = 80) -> list[str]:
    """The screen: a header, the book ladder with cumulative sizes, the features, last trades."""
    head = (
        f"mdbook {obj['feed']} {obj['symbol']} ({obj['venue']})  {_time(obj['ts'])}  "
        f"last update {obj['last_update_id'] if obj['valid'] else '-'}"
    )
    lines = [head[:width], ""]
    if not obj["valid"]:
        lines.append(WAITING if "snapshot" in obj.get("reason", "") else f"book invalid: "
                     f"{obj.get('reason', '')}; waiting for snapshot")  # fmt: skip
        lines.append("")
    else:
        lines.append(
            f"spread {_num(obj['spread'])} ({_num(obj['spread_bps'], '.2f')} bps)  "
            f"mid {_num(obj['midprice'], '.10g')}  microprice {_num(obj['microprice'], '.10g')}"
        )
        lines.append(
            f"imbalance 1/5/10 {_num(obj['imbalance_1'], '+.3f')} "
            f"{_num(obj['imbalance_5'], '+.3f')} {_num(obj['imbalance_10'], '+.3f')}  "
            f"ofi {_num(obj['ofi'], '+.6g')}  ofi_10 {_num(obj['ofi_10'], '+.6g')}  "
            f"depth 10/50 bps {_num(obj['depth_10bps'])} / {_num(obj['depth_50bps'])}"
        )
        lines.append("")
        lines.append(f"{'CUM':>14} {'SIZE':>14} {'BID':>14} | {'ASK':<14} {'SIZE':<14} {'CUM':<14}")
        cum_bid = cum_ask = 0.0
        for i in range(1, depth + 1):
            bid, bsz = obj[f"bid_px_{i:02d}"], obj[f"bid_sz_{i:02d}"]
            ask, asz = obj[f"ask_px_{i:02d}"], obj[f"ask_sz_{i:02d}"]
            if bid is None and ask is None:
                break
            left = right = ""
            if bid is not None:
                cum_bid += float(bsz)
                left = f"{cum_bid:>14.8g} {bsz:>14} {bid:>14}"
            if ask is not None:
                cum_ask += float(asz)
                right = f"{ask:<14} {asz:<14} {cum_ask:<14.8g}"
            lines.append(f"{left:>44} | {right}")
        lines.append("")
    lines.append("last trades:")
    for ts, price, qty, side in reversed(obj["trades"]):
        lines.append(f"  {_time(ts)}  {side or '?':<4} {qty:>14} @ {price}")
    return [line[:width] for line in lines]
