"""JSON payloads of Binance spot and USD-M market events and REST bodies.

Field order follows the venue's documented examples; every function returns compact
orjson bytes.
"""

from __future__ import annotations

import orjson

__all__ = [
    "agg_trade",
    "book_ticker",
    "depth_snapshot",
    "depth_update",
    "server_shutdown",
    "trade",
]

Levels = list[list[str]]


def trade(
    usdm: bool, e_ms: int, symbol: str, tid: int, price: str, qty: str, t_ms: int, maker: bool
) -> bytes:
    """``<symbol>@trade`` event (USD-M: the undocumented ``X``-carrying shape)."""
    if usdm:
        return orjson.dumps(
            {
                "e": "trade",
                "E": e_ms,
                "T": t_ms,
                "s": symbol,
                "t": tid,
                "p": price,
                "q": qty,
                "X": "MARKET",
                "m": maker,
            }
        )
    return orjson.dumps(
        {
            "e": "trade",
            "E": e_ms,
            "s": symbol,
            "t": tid,
            "p": price,
            "q": qty,
            "T": t_ms,
            "m": maker,
            "M": True,
        }
    )


def agg_trade(
    usdm: bool,
    e_ms: int,
    symbol: str,
    aid: int,
    price: str,
    qty: str,
    first: int,
    last: int,
    t_ms: int,
    maker: bool,
) -> bytes:
    """``<symbol>@aggTrade`` event (USD-M adds ``nq`` and has no ``M``)."""
    if usdm:
        return orjson.dumps(
            {
                "e": "aggTrade",
                "E": e_ms,
                "s": symbol,
                "a": aid,
                "p": price,
                "q": qty,
                "nq": qty,
                "f": first,
                "l": last,
                "T": t_ms,
                "m": maker,
            }
        )
    return orjson.dumps(
        {
            "e": "aggTrade",
            "E": e_ms,
            "s": symbol,
            "a": aid,
            "p": price,
            "q": qty,
            "f": first,
            "l": last,
            "T": t_ms,
            "m": maker,
            "M": True,
        }
    )


def book_ticker(
    usdm: bool,
    uid: int,
    symbol: str,
    bid: str,
    bid_qty: str,
    ask: str,
    ask_qty: str,
    t_ms: int,
    e_ms: int,
) -> bytes:
    """``<symbol>@bookTicker`` event (spot has no ``e``/``E``; USD-M has ``e``, ``T``, ``E``)."""
    if usdm:
        return orjson.dumps(
            {
                "e": "bookTicker",
                "u": uid,
                "s": symbol,
                "b": bid,
                "B": bid_qty,
                "a": ask,
                "A": ask_qty,
                "T": t_ms,
                "E": e_ms,
            }
        )
    return orjson.dumps({"u": uid, "s": symbol, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty})


def depth_update(
    usdm: bool,
    e_ms: int,
    t_ms: int,
    symbol: str,
    first: int,
    final: int,
    prev_final: int,
    bids: Levels,
    asks: Levels,
) -> bytes:
    """Diff-depth ``depthUpdate`` event (USD-M adds ``T`` and ``pu``)."""
    if usdm:
        return orjson.dumps(
            {
                "e": "depthUpdate",
                "E": e_ms,
                "T": t_ms,
                "s": symbol,
                "U": first,
                "u": final,
                "pu": prev_final,
                "b": bids,
                "a": asks,
            }
        )
    return orjson.dumps(
        {"e": "depthUpdate", "E": e_ms, "s": symbol, "U": first, "u": final, "b": bids, "a": asks}
    )


def depth_snapshot(
    usdm: bool, last_update_id: int, e_ms: int, t_ms: int, bids: Levels, asks: Levels
) -> bytes:
    """REST depth body (USD-M adds ``E`` and ``T``)."""
    if usdm:
        return orjson.dumps(
            {"lastUpdateId": last_update_id, "E": e_ms, "T": t_ms, "bids": bids, "asks": asks}
        )
    return orjson.dumps({"lastUpdateId": last_update_id, "bids": bids, "asks": asks})


def server_shutdown(e_ms: int) -> bytes:
    """The ``serverShutdown`` event."""
    return orjson.dumps({"e": "serverShutdown", "E": e_ms})
