"""The reference's own Binance parser (PROTOCOLS.md sections 1.3 and 2.2), spot and USD-M.

Written apart from the writer's protocol (`consolidator.venues` is never imported here, a test
checks it): a bug shared by both sides would hide itself. It plans the same streams the writer
subscribes (trades ``<sym>@trade`` or ``@aggTrade``, quotes ``@bookTicker``, depth
``@depth@<speed>``; USD-M depth and quotes on ``/public``, aggTrade on ``/market``) as combined
``/stream?streams=...`` URLs, and turns each frame into a `Rec` with `Decimal` values read from
the JSON text (kept as canonical pairs, `model.decimal_pair`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Final

import orjson

from consolidator.compare.model import Pair, Rec, decimal_pair

__all__ = ["MAX_STREAMS_PER_URL", "BinanceReference", "Connection", "Parsed"]

MAX_STREAMS_PER_URL: Final = 100
"""Streams per reference connection (a URL stays short; the venue allows 1024 / 200)."""
_NS_PER_MS: Final = 1_000_000
_CACHE_MAX: Final = 1 << 16

Parsed = tuple[str, str, Rec]
"""(stream, symbol, record) of one market-data frame."""
Connection = tuple[str, list[tuple[str, str]]]
"""A reference connection's URL path and the (stream, symbol) lanes it carries."""


class BinanceReference:
    """Stream plan and frame parser for one Binance market.

    Args:
        market: "spot" or "usdm".
        trade_stream: "trade" or "aggTrade".
        depth_speed: the diff-depth speed suffix ("100ms"), "" for the stream's default.
    """

    def __init__(self, market: str, trade_stream: str, depth_speed: str = "100ms") -> None:
        if market not in ("spot", "usdm") or trade_stream not in ("trade", "aggTrade"):
            raise ValueError(f"unsupported Binance market/trade stream: {market}/{trade_stream}")
        self.market = market
        self.trade_stream = trade_stream
        self.depth_speed = depth_speed
        self._routes: dict[str, tuple[str, str]] = {}
        self._decimals: dict[str, Pair] = {}
        self.unparsed = 0

    def plan(self, symbols: Iterable[str], streams: Iterable[str]) -> list[Connection]:
        """The reference connections: URL paths (``/stream?streams=...``) carrying ``streams``
        of ``symbols``, each with the (stream, symbol) lanes it carries."""
        by_path: dict[str, list[str]] = {}
        usdm = self.market == "usdm"
        wanted = set(streams)
        for symbol in symbols:
            low = symbol.lower()
            names = []
            if "trades" in wanted:
                path = "/market/stream" if usdm and self.trade_stream == "aggTrade" else None
                names.append((f"{low}@{self.trade_stream}", "trades", path))
            if "quotes" in wanted:
                names.append((f"{low}@bookTicker", "quotes", None))
            if "depth" in wanted:
                speed = f"@{self.depth_speed}" if self.depth_speed else ""
                names.append((f"{low}@depth{speed}", "depth", None))
            for name, stream, path in names:
                self._routes[name] = (stream, symbol)
                route = path or ("/public/stream" if usdm else "/stream")
                by_path.setdefault(route, []).append(name)
        out = []
        for route, names_of in by_path.items():
            for i in range(0, len(names_of), MAX_STREAMS_PER_URL):
                chunk = names_of[i : i + MAX_STREAMS_PER_URL]
                lanes = [self._routes[name] for name in chunk]
                out.append((f"{route}?streams={'/'.join(chunk)}", lanes))
        return out

    def _dec(self, text: object) -> Pair:
        """The exact value of a decimal string, as `Decimal` reads it (cached: prices repeat).

        Plain unsigned notation (what Binance sends) takes a short exact path, the same pair
        `decimal_pair(Decimal(text))` gives (a test checks it); anything else goes through
        `Decimal`.
        """
        if type(text) is not str:
            raise TypeError("a Binance decimal is a JSON string")
        value = self._decimals.get(text)
        if value is None:
            head, _, frac = text.partition(".")
            if head.isdigit() and head.isascii() and (not frac or frac.isdigit()):
                frac = frac.rstrip("0")
                mantissa, exponent = int(head + frac), -len(frac)
                if mantissa == 0:
                    exponent = 0
                elif not frac:
                    while mantissa % 10 == 0:
                        mantissa //= 10
                        exponent += 1
                value = (mantissa, exponent)
            else:
                value = decimal_pair(Decimal(text))
            if len(self._decimals) >= _CACHE_MAX:
                self._decimals.clear()
            self._decimals[text] = value
        return value

    def parse(self, frame: str | bytes, ts_recv: int) -> Parsed | None:
        """The record of one frame, or None (a reply, another stream, or unparsable: counted)."""
        try:
            msg = orjson.loads(frame)
            stream_name = msg.get("stream") if type(msg) is dict else None
            route = self._routes.get(stream_name) if type(stream_name) is str else None
            if route is None:
                return None
            data = msg["data"]
            stream, symbol = route
            if stream == "trades":
                return stream, symbol, self._trade(data, ts_recv)
            if stream == "quotes":
                return stream, symbol, self._quote(data, ts_recv)
            return stream, symbol, self._depth(data, ts_recv)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation):
            self.unparsed += 1
            return None

    def _trade(self, data: dict[str, object], ts_recv: int) -> Rec:
        key = _int(data["a" if self.trade_stream == "aggTrade" else "t"])
        side = "sell" if data["m"] is True else "buy"
        values = (self._dec(data["p"]), self._dec(data["q"]), side)
        return Rec(key, key, _int(data["T"]) * _NS_PER_MS, ts_recv, 0, values)

    def _quote(self, data: dict[str, object], ts_recv: int) -> Rec:
        key = _int(data["u"])
        dec = self._dec
        values = (dec(data["b"]), dec(data["B"]), dec(data["a"]), dec(data["A"]))
        when = data.get("T", data.get("E"))
        return Rec(key, key, 0 if when is None else _int(when) * _NS_PER_MS, ts_recv, 0, values)

    def _depth(self, data: dict[str, object], ts_recv: int) -> Rec:
        first, key = _int(data["U"]), _int(data["u"])
        prev = _int(data["pu"]) if self.market == "usdm" else None
        when = data.get("T", data.get("E"))
        dec = self._dec
        bids = tuple((dec(p), dec(q)) for p, q in _levels(data["b"]))
        asks = tuple((dec(p), dec(q)) for p, q in _levels(data["a"]))
        ts_event = 0 if when is None else _int(when) * _NS_PER_MS
        return Rec(key, first, ts_event, ts_recv, 0, (first, prev, bids, asks))


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"expected an id or a time, got {value!r}")
    return value


def _levels(value: object) -> list[tuple[object, object]]:
    if type(value) is not list:
        raise TypeError("levels are a list")
    out = []
    for level in value:
        if type(level) is not list or len(level) != 2:
            raise TypeError("a level is [price, qty]")
        out.append((level[0], level[1]))
    return out
