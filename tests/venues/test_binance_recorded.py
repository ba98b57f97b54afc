"""Golden tests: the recorded Binance sessions parse to exact values and every book syncs."""

from __future__ import annotations

from collections import Counter, defaultdict

import orjson
import pytest

from consolidator.payloads import Depth, Event, Quote, Trade
from consolidator.records import EventKind, Side, TradeFlag, decode_decimal
from consolidator.venues.base import Dropped, FetchSnapshot, Output
from consolidator.venues.binance import Market
from consolidator.venues.book_sync import SyncState

from .helpers import Interner, kinds, levels_text, load_recording, recorded_protocol, replay, wrap

SESSIONS: list[tuple[str, Market]] = [
    ("BINANCE", "spot"),
    ("BINANCE_FUTURES", "usdm"),
    ("BINANCE_US", "spot"),
    ("BINANCE_DELIVERY", "usdm"),  # COIN-M: the same shapes as USD-M
]


def _ts(data: dict[str, object], *keys: str) -> int:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int):
            return value * 1_000_000
    return 0


@pytest.mark.parametrize(("name", "market"), SESSIONS)
def test_trades_quotes_and_klines_parse_exactly(name: str, market: Market) -> None:
    recording = load_recording(name)
    interner = Interner()
    protocol = recorded_protocol(market, recording.symbols, interner)
    seen: Counter[str] = Counter()
    for frame, recv, outputs in replay(protocol, recording):
        msg = orjson.loads(frame)
        if "stream" not in msg:
            continue
        stream, data = msg["stream"], msg["data"]
        symbol_id = interner.ids[data["s"]]
        if stream.endswith("@aggTrade"):
            assert len(outputs) == 1
            out = outputs[0]
            assert isinstance(out, Trade)
            assert out.trade_id == data["a"]
            assert decode_decimal(out.price_m, out.price_e) == data["p"]
            assert decode_decimal(out.qty_m, out.qty_e) == data["q"]
            assert out.ts_event == data["T"] * 1_000_000
            assert out.ts_recv == recv
            assert out.symbol_id == symbol_id
            assert out.side == (Side.SELL if data["m"] else Side.BUY)
            assert out.flags == TradeFlag.AGGREGATED
            seen["trade"] += 1
        elif stream.endswith("@bookTicker"):
            assert len(outputs) == 1
            out = outputs[0]
            assert isinstance(out, Quote)
            assert out.update_id == data["u"]
            assert decode_decimal(out.bid_px_m, out.bid_px_e) == data["b"]
            assert decode_decimal(out.bid_qty_m, out.bid_qty_e) == data["B"]
            assert decode_decimal(out.ask_px_m, out.ask_px_e) == data["a"]
            assert decode_decimal(out.ask_qty_m, out.ask_qty_e) == data["A"]
            assert out.ts_event == _ts(data, "T", "E")
            assert out.ts_event == (0 if market == "spot" else data["T"] * 1_000_000)
            assert (out.ts_recv, out.symbol_id) == (recv, symbol_id)
            seen["quote"] += 1
        elif "@kline" in stream:
            assert outputs == [Dropped("unsubscribed_stream", 1)]
            seen["kline"] += 1
    assert min(seen.values()) > 0, seen


def _depth_matches(out: Depth, data: dict[str, object], recv: int, market: Market) -> None:
    assert (out.first_update_id, out.last_update_id) == (data["U"], data["u"])
    assert out.prev_update_id == (data["pu"] if market == "usdm" else None)
    assert levels_text(out.bids) == data["b"]
    assert levels_text(out.asks) == data["a"]
    assert out.ts_event == _ts(data, "T", "E")
    assert out.ts_recv == recv
    assert not out.snapshot


@pytest.mark.parametrize(("name", "market"), SESSIONS)
def test_every_book_syncs_with_its_recorded_snapshot(name: str, market: Market) -> None:
    recording = load_recording(name)
    interner = Interner()
    protocol = recorded_protocol(market, recording.symbols, interner)
    sources: dict[tuple[int, int, int], tuple[dict[str, object], int]] = {}
    depth_frames: Counter[int] = Counter()
    for recv, frame in recording.frames:
        msg = orjson.loads(frame)
        if msg["data"].get("e") == "depthUpdate":
            symbol_id = interner.ids[msg["data"]["s"]]
            sources[(symbol_id, msg["data"]["U"], msg["data"]["u"])] = (msg["data"], recv)
            depth_frames[symbol_id] += 1
    snapshots = {interner.ids[s]: orjson.loads(body) for _, s, body in recording.snapshots}

    outputs: list[Output] = [o for _, _, outs in replay(protocol, recording) for o in outs]
    assert not [k for k in kinds(outputs) if k in ("Event:GAP", "Event:RESYNC")]
    fetches = Counter(o.symbol for o in outputs if isinstance(o, FetchSnapshot))
    assert fetches == Counter(recording.symbols)
    accounted: Counter[int] = Counter()
    last: dict[int, int] = {}
    synced: defaultdict[int, list[str]] = defaultdict(list)
    for out in outputs:
        if isinstance(out, Event) and out.kind == EventKind.BOOK_SYNCED:
            synced[out.symbol_id].append("synced")
        elif isinstance(out, Depth) and out.snapshot:
            body = snapshots[out.symbol_id]
            assert out.last_update_id == body["lastUpdateId"]
            assert levels_text(out.bids) == body["bids"]
            assert levels_text(out.asks) == body["asks"]
            assert out.ts_event == _ts(body, "T", "E")
            last[out.symbol_id] = out.last_update_id
            synced[out.symbol_id].append("snapshot")
        elif isinstance(out, Depth):
            data, recv = sources[(out.symbol_id, out.first_update_id, out.last_update_id)]
            _depth_matches(out, data, recv, market)
            previous = last[out.symbol_id]
            if market == "spot":
                assert out.first_update_id <= previous + 1 <= out.last_update_id
            elif synced[out.symbol_id][-1] == "synced":  # the first diff after the snapshot
                assert out.first_update_id <= previous <= out.last_update_id
            else:
                assert out.prev_update_id == previous
            last[out.symbol_id] = out.last_update_id
            synced[out.symbol_id].append("diff")
            accounted[out.symbol_id] += 1
    for events in synced.values():
        assert events[:2] == ["snapshot", "synced"]
        assert "diff" in events
    assert sorted(synced) == sorted(interner.ids.values())
    dropped = sum(o.count for o in outputs if isinstance(o, Dropped) and "depth" in o.reason)
    assert sum(accounted.values()) + dropped == sum(depth_frames.values())
    assert all(protocol.book_state(s) is SyncState.SYNCED for s in recording.symbols)


@pytest.mark.parametrize(("name", "market"), SESSIONS)
def test_every_recorded_diff_parses_exactly(name: str, market: Market) -> None:
    """Each diff, buffered behind a synthetic one that a snapshot joins, is published exactly."""
    recording = load_recording(name)
    count = 0
    for recv, frame in recording.frames:
        msg = orjson.loads(frame)
        data = msg["data"]
        if data.get("e") != "depthUpdate":
            continue
        interner = Interner()
        protocol = recorded_protocol(market, [data["s"]], interner)
        first = data["U"]
        lead: dict[str, object] = {"e": "depthUpdate", "E": 1, "U": first - 1, "u": first - 1}
        lead |= {"b": [], "a": []} | ({"pu": first - 2} if market == "usdm" else {})
        assert protocol.on_frame(1, wrap(msg["stream"], lead), 0) == [
            FetchSnapshot(data["s"], 1000, 50 if market == "spot" else 20)
        ]
        assert protocol.on_frame(1, frame, recv) == []
        joined = first - 1 if market == "spot" else first
        body = orjson.dumps({"lastUpdateId": joined, "bids": [], "asks": []})
        outputs = protocol.on_snapshot(data["s"], body, 0)
        assert kinds(outputs) == [
            "Dropped:depth_before_snapshot",
            "Snapshot",
            "Event:BOOK_SYNCED",
            "Depth",
        ]
        out = outputs[-1]
        assert isinstance(out, Depth)
        assert out.symbol_id == interner.ids[data["s"]]
        _depth_matches(out, data, recv, market)
        count += 1
    assert count > 100
