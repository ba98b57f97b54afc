"""Micro-benchmark: Binance frame parsing (`BinanceProtocol.on_frame`) against bare `orjson.loads`.

Method: the recorded spot and USD-M combined-stream files (``shared/data/recorded`` beside the
repository directory, or ``--data DIR``) are fed once, with their snapshots at their receive times,
so every book is synced. Then the frames are repeated with every id shifted past the previous copy
(trade ids, bookTicker and depth update ids, ``pu``), so the replay takes the live path: each trade,
quote and diff is parsed, checked for duplicates and continuity, and published. The baseline is
``orjson.loads`` over the same frames in the same run; ``ratio`` = protocol time / baseline time.
Best of ``--repeat`` runs.

Decimals: ``memo`` is the normal mode (prices and sizes are memoized, and a replay repeats them,
so this is the best case); ``cold`` empties the memo before every frame (the worst case; the
emptying itself is included).

Run: ``.venv/bin/python tools/bench/venue_parse.py [--frames N] [--repeat R] [--data DIR]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from pathlib import Path

import orjson

from consolidator.sim.replay import read_http_file, read_ws_file, stream_symbols
from consolidator.venues.base import clear_decimal_memo
from consolidator.venues.binance import BinanceLimits, BinanceProtocol, Market

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "recorded"
Recording = tuple[list[str], list[tuple[int, bytes]], list[tuple[int, str, bytes]]]


def load(data: Path, name: str) -> Recording:
    """(symbols, [(recv ns, frame)], [(recv ns, symbol, snapshot body)]) of a recording."""
    url, frames = read_ws_file(data / f"{name}.ws.1.0")
    snapshots = [
        (recv, req.split("symbol=", 1)[1].split("&", 1)[0], body)
        for recv, req, body in read_http_file(data / f"{name}.http.0.0")
    ]
    return stream_symbols(url), frames, snapshots


def synced(market: Market, recording: Recording) -> BinanceProtocol:
    """A protocol carrying the recording's streams, fed the recording so every book is synced."""
    symbols, frames, snapshots = recording
    limits = dataclasses.replace(BinanceLimits.for_market(market), trade_stream="aggTrade")
    ids: dict[str, int] = {}
    channels = ["trades", "quotes", "depth"]
    protocol = BinanceProtocol(
        market, symbols, channels, lambda s: ids.setdefault(s, len(ids)), limits=limits
    )
    feed = [(t, 0, "", f) for t, f in frames] + [(t, 1, s, b) for t, s, b in snapshots]
    for recv, kind, symbol, body in sorted(feed, key=lambda item: item[:2]):
        if kind:
            protocol.on_snapshot(symbol, body, recv)
        else:
            protocol.on_frame(1, body, recv)
    return protocol


_ID_FIELDS = {"aggTrade": ("a",), "bookTicker": ("u",), "depthUpdate": ("U", "u", "pu")}


def shifted_copies(frames: list[bytes], count: int) -> list[bytes]:
    """``count`` copies of ``frames`` after the original, each with its ids moved past the last.

    Per stream, trade and bookTicker ids shift by their span in the file; depth ids by the span
    that makes the first diff of a copy continue the last diff of the previous one (spot:
    ``U = u_last + 1``; USD-M: ``pu = u_last``).
    """
    messages = [orjson.loads(frame) for frame in frames]
    first: dict[str, dict[str, int]] = {}
    last: dict[str, dict[str, int]] = {}
    for msg in messages:
        fields = _ID_FIELDS.get(msg["data"].get("e", "bookTicker"), ())
        if fields:
            first.setdefault(msg["stream"], msg["data"])
            last[msg["stream"]] = msg["data"]
    shift: dict[str, int] = {}
    for stream, head in first.items():
        tail = last[stream]
        if "U" not in head:
            field = "a" if "a" in head and isinstance(head["a"], int) else "u"
            shift[stream] = tail[field] - head[field] + 1
        elif "pu" in head:
            shift[stream] = tail["u"] - head["pu"]
        else:
            shift[stream] = tail["u"] - head["U"] + 1
    out = []
    for copy in range(1, count + 1):
        for msg in messages:
            data = dict(msg["data"])
            for field in _ID_FIELDS.get(data.get("e", "bookTicker"), ()):
                if field in data:
                    data[field] += copy * shift[msg["stream"]]
            out.append(orjson.dumps({"stream": msg["stream"], "data": data}))
    return out


def main() -> None:
    """Print messages/s for the protocol and the orjson baseline, and their ratio."""
    parser = argparse.ArgumentParser(description="Binance parsing vs orjson.loads")
    parser.add_argument("--frames", type=int, default=100_000, help="frames per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements, best one counts")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="recordings directory")
    args = parser.parse_args()
    header = f"{'file':<16} {'decimals':<8} {'frames':>7} {'orjson msg/s':>13}"
    print(f"{header} {'protocol msg/s':>15} {'ratio':>6}")
    markets: tuple[tuple[str, Market], ...] = (("BINANCE", "spot"), ("BINANCE_FUTURES", "usdm"))
    for name, market in markets:
        recording = load(args.data, name)
        frames = shifted_copies([f for _, f in recording[1]], -(-args.frames // len(recording[1])))
        loads = orjson.loads
        for mode in ("memo", "cold"):
            best_base = best_full = float("inf")
            outputs: Counter[str] = Counter()
            for _ in range(args.repeat):
                start = time.perf_counter()
                for frame in frames:
                    loads(frame)
                best_base = min(best_base, time.perf_counter() - start)
                on_frame = synced(market, recording).on_frame
                clear_decimal_memo()
                results = []
                start = time.perf_counter()
                if mode == "memo":
                    results = [on_frame(1, frame, 0) for frame in frames]
                else:
                    for frame in frames:
                        clear_decimal_memo()
                        results.append(on_frame(1, frame, 0))
                best_full = min(best_full, time.perf_counter() - start)
            outputs.update(type(o).__name__ for result in results for o in result)
            base, full = len(frames) / best_base, len(frames) / best_full
            row = f"{name:<16} {mode:<8} {len(frames):>7} {base:>13,.0f}"
            print(f"{row} {full:>15,.0f} {best_full / best_base:>6.1f}")
        print(f"{'':<16} outputs per run: {dict(outputs)}")


if __name__ == "__main__":
    main()
