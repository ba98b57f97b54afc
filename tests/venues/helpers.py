"""Helpers for the venue protocol tests: recorded files, frame builders, output summaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from consolidator.payloads import Depth, Event
from consolidator.records import decode_decimal
from consolidator.sim.replay import read_http_file, read_ws_file, stream_symbols
from consolidator.venues.base import Dropped, Output, ParseError
from consolidator.venues.binance import BinanceLimits, BinanceProtocol, Market

from ..recorded import RECORDED

E_MS = 1_600_000_000_000


class Interner:
    """A stand-in for the feed's symbol table: ids in order of first sight."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids))


@dataclass
class Recording:
    """One recorded session: the streams' symbols, the frames and the REST snapshots."""

    name: str
    symbols: list[str]
    frames: list[tuple[int, bytes]]
    snapshots: list[tuple[int, str, bytes]]


def load_recording(name: str) -> Recording:
    """Read ``NAME.ws.1.0`` and ``NAME.http.0.0`` from ``tests/data/recorded``."""
    ws = RECORDED / f"{name}.ws.1.0"
    url, frames = read_ws_file(ws)
    snapshots = [
        (recv, url_.split("symbol=", 1)[1].split("&", 1)[0], body)
        for recv, url_, body in read_http_file(RECORDED / f"{name}.http.0.0")
    ]
    return Recording(name, stream_symbols(url), frames, snapshots)


def recorded_protocol(
    market: Market, symbols: Sequence[str], interner: Interner
) -> BinanceProtocol:
    """A protocol for the recordings' streams (they all use aggTrade, spot included)."""
    limits = dataclasses.replace(BinanceLimits.for_market(market), trade_stream="aggTrade")
    channels = ["trades", "quotes", "depth"]
    return BinanceProtocol(market, symbols, channels, interner, limits=limits)


def replay(
    protocol: BinanceProtocol, recording: Recording
) -> list[tuple[bytes, int, list[Output]]]:
    """Feed frames and snapshots in receive-time order (a snapshot after the frames received
    before it); (input, ts_recv, outputs) per input."""
    feed = [(t, 0, "", f) for t, f in recording.frames]
    feed += [(t, 1, s, b) for t, s, b in recording.snapshots]
    results = []
    for recv, is_snapshot, symbol, body in sorted(feed, key=lambda item: item[:2]):
        if is_snapshot:
            results.append((body, recv, protocol.on_snapshot(symbol, body, recv)))
        else:
            results.append((body, recv, protocol.on_frame(1, body, recv)))
    return results


def wrap(stream: str, data: dict[str, object]) -> bytes:
    """A combined-stream frame."""
    return orjson.dumps({"stream": stream, "data": data})


def depth(
    symbol: str,
    first: int,
    last: int,
    prev: int | None = None,
    bids: Iterable[tuple[str, str]] = (("1.5", "2"),),
    asks: Iterable[tuple[str, str]] = (),
    speed: str = "100ms",
) -> bytes:
    """A diff-depth frame (with ``pu`` when ``prev`` is given: USD-M)."""
    data: dict[str, object] = {"e": "depthUpdate", "E": E_MS, "s": symbol, "U": first, "u": last}
    if prev is not None:
        data["pu"] = prev
        data["T"] = E_MS - 1
    data["b"] = [list(level) for level in bids]
    data["a"] = [list(level) for level in asks]
    return wrap(f"{symbol.lower()}@depth@{speed}", data)


def snapshot(last: int, bids: Iterable[tuple[str, str]] = (("1.4", "3"),)) -> bytes:
    """A REST depth snapshot body."""
    return orjson.dumps(
        {"lastUpdateId": last, "bids": [list(b) for b in bids], "asks": [["1.6", "1"]]}
    )


def trade(symbol: str, trade_id: int, event: str = "trade", maker: bool = False) -> bytes:
    """A trade (``event="trade"``) or aggTrade frame."""
    key = "a" if event == "aggTrade" else "t"
    data = {"e": event, "E": E_MS, "s": symbol, key: trade_id, "p": "10.50", "q": "0.001"}
    data |= {"T": E_MS - 5, "m": maker}
    return wrap(f"{symbol.lower()}@{event}", data)


def quote(symbol: str, update_id: int) -> bytes:
    """A spot bookTicker frame."""
    data = {"u": update_id, "s": symbol, "b": "1.0", "B": "2", "a": "1.1", "A": "3"}
    return wrap(f"{symbol.lower()}@bookTicker", data)


def kinds(outputs: Iterable[Output]) -> list[str]:
    """Short names of outputs: "Depth", "Snapshot", "Event:GAP", "Dropped:stale_depth", ..."""
    names = []
    for out in outputs:
        if isinstance(out, Depth):
            names.append("Snapshot" if out.snapshot else "Depth")
        elif isinstance(out, Event):
            names.append(f"Event:{out.kind.name}")
        elif isinstance(out, Dropped):
            names.append(f"Dropped:{out.reason}")
        elif isinstance(out, ParseError):
            names.append(f"ParseError:{out.kind}")
        else:
            names.append(type(out).__name__)
    return names


def levels_text(levels: Iterable[tuple[int, int, int, int]]) -> list[list[str]]:
    """Levels back as the venue's ``[price, qty]`` strings."""
    return [[decode_decimal(pm, pe), decode_decimal(qm, qe)] for pm, pe, qm, qe in levels]


def detail(event: Output) -> dict[str, object]:
    """The parsed detail of an event."""
    assert isinstance(event, Event)
    parsed = orjson.loads(event.detail)
    assert isinstance(parsed, dict)
    return parsed


def of_type(outputs: Iterable[Output], kind: type[Output]) -> list[Output]:
    """The outputs of one type."""
    return [o for o in outputs if isinstance(o, kind)]


__all__ = [
    "E_MS",
    "RECORDED",
    "Interner",
    "Recording",
    "depth",
    "detail",
    "kinds",
    "levels_text",
    "load_recording",
    "of_type",
    "quote",
    "recorded_protocol",
    "replay",
    "snapshot",
    "trade",
    "wrap",
]
