"""Recorded Binance sessions, replayed by the simulator at full speed, land in the rings exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consolidator.payloads import decode_raw
from consolidator.records import EventKind, Side, TradeFlag, decode_decimal

from ..recorded import RECORDED
from .helpers import Rings, running, wait_until

pytestmark = pytest.mark.integration

SESSIONS = [("binance", "BINANCE"), ("binance-usdm", "BINANCE_FUTURES")]
CARRIED = ("@aggTrade", "@bookTicker", "@depth@100ms")


def _recording(prefix: str) -> tuple[list[bytes], dict[str, int]]:
    """The carried frames (wrapped, as sent) and each symbol's snapshot lastUpdateId."""
    path = RECORDED / f"{prefix}.ws.1.0"
    if not path.exists():
        pytest.skip(f"recorded data not available: {path}")
    frames = []
    for line in path.read_bytes().splitlines()[1:]:
        head, sep, body = line.partition(b": ")
        if sep and b" " not in head and body.startswith(b'{"stream":"'):
            stream = orjson.loads(body)["stream"]
            if stream.endswith(CARRIED):
                frames.append(body)
    snapshots: dict[str, int] = {}
    for line in (RECORDED / f"{prefix}.http.0.0").read_bytes().splitlines():
        url, sep, rest = line.partition(b" -> ")
        if not sep:
            continue
        symbol = url.split(b"symbol=")[1].split(b"&")[0].decode()
        snapshots.setdefault(symbol, orjson.loads(rest.partition(b": ")[2])["lastUpdateId"])
    return frames, snapshots


def _levels(levels: list[tuple[int, int, int, int]]) -> list[list[str]]:
    return [[decode_decimal(pm, pe), decode_decimal(qm, qe)] for pm, pe, qm, qe in levels]


@pytest.mark.parametrize(("venue", "prefix"), SESSIONS)
def test_recorded_session_lands_exactly_once(tmp_path: Path, venue: str, prefix: str) -> None:
    frames, snapshot_ids = _recording(prefix)
    usdm = venue == "binance-usdm"
    messages = [orjson.loads(f) for f in frames]
    symbols = sorted({m["data"]["s"] for m in messages})
    trades = [m["data"] for m in messages if m["stream"].endswith("@aggTrade")]
    quotes = [m["data"] for m in messages if m["stream"].endswith("@bookTicker")]
    diffs = [
        m["data"]
        for m in messages
        if m["stream"].endswith("@depth@100ms")
        and (
            m["data"]["u"] >= snapshot_ids[m["data"]["s"]]
            if usdm
            else m["data"]["u"] > snapshot_ids[m["data"]["s"]]
        )
    ]
    sim_args = ["--venue", venue, "--replay", str(RECORDED), "--speed", "max"]
    feed_keys: dict[str, Any] = {"venue": venue, "symbols": symbols, "trade_stream": "aggTrade"}
    with running(tmp_path, sim_args, **feed_keys) as (_, feed, writer):
        rings = Rings(feed)

        def complete() -> bool:
            if not rings.ready():
                return False
            kinds = Counter(rings.event_kinds())
            return (
                len(rings.fixed("trades")) >= len(trades)
                and len(rings.fixed("quotes")) >= len(quotes)
                and kinds[EventKind.BOOK_SYNCED] >= len(symbols)
                and len(rings.depth()) >= len(diffs) + len(symbols)
            )

        wait_until(complete, 60, f"the replay in the rings ({writer.stderr()})")
        name = rings.names().__getitem__
        got_trades = rings.fixed("trades")
        got_quotes = rings.fixed("quotes")
        depth = rings.depth()
        events = rings.events()
        raw = [decode_raw(p).frame for _, _, p in rings.variable("raw")]

    assert len(got_trades) == len(trades)
    rows = sorted(got_trades.tolist(), key=lambda r: (name(r[7]), r[4]))
    for row, data in zip(rows, sorted(trades, key=lambda d: (d["s"], d["a"])), strict=True):
        _, ts_event, ts_recv, ts_commit, trade_id, pm, qm, sym, pe, qe, side, flags = row
        assert (name(sym), trade_id) == (data["s"], data["a"])
        assert (decode_decimal(pm, pe), decode_decimal(qm, qe)) == (data["p"], data["q"])
        assert side == (Side.SELL if data["m"] else Side.BUY)
        assert flags == TradeFlag.AGGREGATED
        assert ts_event == data["T"] * 1_000_000
        assert 0 < ts_recv <= ts_commit

    assert len(got_quotes) == len(quotes)
    by_key = {(q["s"], q["u"]): q for q in quotes}
    for row in got_quotes.tolist():
        _, _, ts_recv, ts_commit, update_id, bpm, bqm, apm, aqm, sym, bpe, bqe, ape, aqe = row
        data = by_key.pop((name(sym), update_id))
        assert decode_decimal(bpm, bpe) == data["b"]
        assert decode_decimal(bqm, bqe) == data["B"]
        assert decode_decimal(apm, ape) == data["a"]
        assert decode_decimal(aqm, aqe) == data["A"]
        assert 0 < ts_recv <= ts_commit
    assert not by_key

    snapshots = [d for d in depth if d.snapshot]
    assert sorted(name(d.symbol_id) for d in snapshots) == symbols
    assert {name(d.symbol_id): d.last_update_id for d in snapshots} == snapshot_ids
    published = [d for d in depth if not d.snapshot]
    assert len(published) == len(diffs)
    expected = {(d["s"], d["U"], d["u"]): d for d in diffs}
    for diff in published:
        data = expected.pop((name(diff.symbol_id), diff.first_update_id, diff.last_update_id))
        assert diff.prev_update_id == (data["pu"] if usdm else None)
        assert _levels(diff.bids) == data["b"]
        assert _levels(diff.asks) == data["a"]
    assert not expected

    kinds = Counter(e.kind for e in events)
    assert kinds[EventKind.BOOK_SYNCED] == len(symbols)
    assert kinds[EventKind.GAP] == 0
    assert kinds[EventKind.RESYNC] == 0
    assert kinds[EventKind.PARSE_ERROR] == 0
    assert kinds[EventKind.WRITER_START] == 1

    market_frames = Counter(f for f in raw if f.startswith(b'{"stream"'))
    assert market_frames == Counter(frames)
