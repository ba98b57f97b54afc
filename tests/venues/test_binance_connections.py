"""Connection planning, subscriptions, rotation and overlap dedup, disconnects, the pacer."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import orjson
import pytest

from consolidator.config import DEPTH_SPEEDS
from consolidator.payloads import Depth, Event, Trade
from consolidator.records import NO_SYMBOL
from consolidator.venues.base import (
    ConnectionPlan,
    ControlPacer,
    Dropped,
    FetchSnapshot,
    Output,
    Reconnect,
    SendFrame,
    VenueUsageError,
)
from consolidator.venues.binance import (
    DEPTH_STREAMS,
    SPOT_LIMITS,
    BinanceLimits,
    BinanceProtocol,
    Market,
    depth_snapshot_weight,
)
from consolidator.venues.book_sync import SyncState

from .helpers import Interner, depth, detail, kinds, quote, snapshot, trade

SECOND = 1_000_000_000
ALL = ["trades", "quotes", "depth"]


def names(count: int) -> list[str]:
    return [f"S{index:04d}USDT" for index in range(count)]


def subscribed(plan: ConnectionPlan) -> list[str]:
    params: list[str] = []
    for frame in plan.subscribe_frames:
        request = orjson.loads(frame)
        assert request["method"] == "SUBSCRIBE"
        assert 1 <= len(request["params"]) <= 200
        params += request["params"]
    return params


def ack_all(protocol: BinanceProtocol, plan: ConnectionPlan) -> None:
    protocol.on_connected(plan.conn_id)
    for frame in plan.subscribe_frames:
        reply = orjson.dumps({"result": None, "id": orjson.loads(frame)["id"]})
        assert kinds(protocol.on_frame(plan.conn_id, reply, 0)) == ["Event:SUBSCRIBE"]


def test_stream_names_and_paths() -> None:
    spot = BinanceProtocol("spot", ["BTCUSDT"], ALL, Interner())
    (plan,) = spot.plan_connections()
    assert plan.path == "/stream"
    assert subscribed(plan) == ["btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade"]
    futures = BinanceProtocol("usdm", ["BTCUSDT"], ALL, Interner())
    plans = {p.path: subscribed(p) for p in futures.plan_connections()}
    assert plans == {
        "/public/stream": ["btcusdt@depth@100ms", "btcusdt@bookTicker"],
        "/market/stream": ["btcusdt@aggTrade"],
    }


@pytest.mark.parametrize(
    ("market", "speed", "stream"),
    [
        ("spot", "100ms", "btcusdt@depth@100ms"),
        ("spot", "1000ms", "btcusdt@depth"),
        ("usdm", "0ms", "btcusdt@depth@0ms"),
        ("usdm", "100ms", "btcusdt@depth@100ms"),
        ("usdm", "250ms", "btcusdt@depth"),
        ("usdm", "500ms", "btcusdt@depth@500ms"),
    ],
)
def test_depth_speed_picks_the_diff_depth_stream(market: Market, speed: str, stream: str) -> None:
    limits = BinanceLimits.for_market(market, depth_speed=speed)
    assert limits.depth_speed == speed
    protocol = BinanceProtocol(market, ["BTCUSDT"], ["depth"], Interner(), limits=limits)
    (plan,) = protocol.plan_connections()
    assert subscribed(plan) == [stream]
    assert plan.path == ("/stream" if market == "spot" else "/public/stream")
    data = orjson.loads(depth("BTCUSDT", 1, 2, prev=None if market == "spot" else 0))["data"]
    other = "btcusdt@depth@100ms" if stream == "btcusdt@depth" else "btcusdt@depth"
    ignored = protocol.on_frame(plan.conn_id, orjson.dumps({"stream": other, "data": data}), 0)
    assert ignored == [Dropped("unsubscribed_stream", 1)]
    taken = protocol.on_frame(plan.conn_id, orjson.dumps({"stream": stream, "data": data}), 0)
    assert taken == [FetchSnapshot("BTCUSDT", 1000, limits.snapshot_weight)]


@pytest.mark.parametrize(("market", "speed"), [("spot", "250ms"), ("usdm", "1000ms"), ("spot", "")])
def test_a_depth_speed_the_market_lacks_is_refused(market: Market, speed: str) -> None:
    with pytest.raises(VenueUsageError, match=f"no {market} diff-depth stream at {speed!r}"):
        BinanceLimits.for_market(market, depth_speed=speed)
    bad = dataclasses.replace(BinanceLimits.for_market(market), depth_speed=speed)
    with pytest.raises(VenueUsageError, match="diff-depth"):
        BinanceProtocol(market, ["BTCUSDT"], ["depth"], Interner(), limits=bad)


def test_the_config_offers_exactly_the_venue_intervals() -> None:
    assert DEPTH_SPEEDS == {
        "binance": tuple(DEPTH_STREAMS["spot"]),
        "binance-usdm": tuple(DEPTH_STREAMS["usdm"]),
    }


@pytest.mark.parametrize(
    ("market", "channels", "count", "cap"),
    [("spot", ["trades"], 1025, 1024), ("usdm", ["depth"], 201, 200), ("spot", ALL, 700, 1024)],
)
def test_connections_respect_the_stream_limit_and_frames_are_chunked(
    market: str, channels: list[str], count: int, cap: int
) -> None:
    protocol = BinanceProtocol(market, names(count), channels, Interner())  # type: ignore[arg-type]
    plans = protocol.plan_connections()
    streams = [s for p in plans for s in subscribed(p)]
    assert len(plans) == -(-len(streams) // cap)
    assert all(len(p.streams) <= cap for p in plans)
    assert max(len(p.streams) for p in plans) - min(len(p.streams) for p in plans) <= 1
    assert sorted(streams) == sorted(s for p in plans for s in p.streams)
    assert len(set(streams)) == len(streams) == count * len(channels)
    ids = [orjson.loads(f)["id"] for p in plans for f in p.subscribe_frames]
    assert len(set(ids)) == len(ids)
    assert len({p.conn_id for p in plans}) == len(plans)
    with pytest.raises(VenueUsageError):
        protocol.plan_connections()


def test_limits() -> None:
    assert depth_snapshot_weight("spot", 1000) == 50
    assert depth_snapshot_weight("spot", 5000) == 250
    assert depth_snapshot_weight("usdm", 1000) == 20
    with pytest.raises(VenueUsageError):
        depth_snapshot_weight("usdm", 5000)
    limits = BinanceLimits.for_market("spot", snapshot_limit=5000)
    assert (limits.snapshot_limit, limits.snapshot_weight) == (5000, 250)
    protocol = BinanceProtocol("spot", ["BTCUSDT"], ["depth"], Interner(), limits=limits)
    assert protocol.on_frame(1, depth("BTCUSDT", 1, 1), 0) == [FetchSnapshot("BTCUSDT", 5000, 250)]
    assert BinanceLimits.for_market("usdm").max_streams_per_connection == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("coinm", ["X"], ALL), "market"),
        (("spot", ["X"], []), "channels"),
        (("spot", ["X"], ["klines"]), "channels"),
        (("spot", ["X", "X"], ALL), "repeat"),
        (("spot", ["BTC/USDT"], ALL), "symbol"),
        (("spot", [""], ALL), "symbol"),
    ],
)
def test_api_misuse_raises(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(VenueUsageError, match=message):
        BinanceProtocol(*args, Interner())  # type: ignore[arg-type, misc]


def test_rotation_plan_and_misuse() -> None:
    protocol = BinanceProtocol("spot", names(3), ALL, Interner())
    (plan,) = protocol.plan_connections()
    rotated = protocol.plan_rotation(plan.conn_id)
    assert rotated.conn_id != plan.conn_id
    assert (rotated.path, rotated.streams) == (plan.path, plan.streams)
    assert subscribed(rotated) == subscribed(plan)
    assert not {orjson.loads(f)["id"] for f in rotated.subscribe_frames} & {
        orjson.loads(f)["id"] for f in plan.subscribe_frames
    }
    with pytest.raises(VenueUsageError):
        protocol.plan_rotation(999)
    with pytest.raises(VenueUsageError):
        protocol.on_connected(999)
    with pytest.raises(VenueUsageError):
        protocol.on_frame(1, 12345, 0)  # type: ignore[arg-type]
    assert protocol.on_disconnect(999, 0) == []


def _stream() -> list[bytes]:
    """Trades, quotes and synced depth for two symbols, interleaved."""
    frames = []
    for step in range(1, 40):
        frames.append(trade("AAAUSDT", 1000 + step))
        frames.append(quote("BBBUSDT", 500 + step))
        frames.append(depth("AAAUSDT", 100 + step, 100 + step))
        if step % 3 == 0:
            frames.append(trade("BBBUSDT", 7000 + step, maker=True))
    return frames


def _synced_spot_pair() -> BinanceProtocol:
    protocol = BinanceProtocol("spot", ["AAAUSDT", "BBBUSDT"], ALL, Interner())
    protocol.on_frame(1, depth("AAAUSDT", 100, 100), 0)
    protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    return protocol


@pytest.mark.parametrize("lag", [0, 1, 5])
def test_rotation_overlap_publishes_each_record_once(lag: int) -> None:
    frames = _stream()
    single = _synced_spot_pair()
    expected = [o for f in frames for o in single.on_frame(1, f, 0)]
    assert len(expected) == 39 * 3 + 13
    protocol = _synced_spot_pair()
    outputs: list[Output] = []
    lagging: list[bytes | None] = [None] * lag
    for old, new in itertools.zip_longest(frames, [*lagging, *frames]):  # the new one lags
        if old is not None:
            outputs += protocol.on_frame(1, old, 0)
        if new is not None:
            outputs += protocol.on_frame(2, new, 0)
    assert [o for o in outputs if not isinstance(o, Dropped)] == expected
    dropped: Counter[str] = Counter()
    for out in outputs:
        if isinstance(out, Dropped):
            dropped[out.reason] += out.count
    assert dropped == {"duplicate_trade": 52, "duplicate_quote": 39, "stale_depth": 39}


def test_usdm_rotation_overlap_keeps_the_pu_chain() -> None:
    protocol = BinanceProtocol("usdm", ["AAAUSDT"], ["depth"], Interner())
    protocol.on_frame(1, depth("AAAUSDT", 90, 100, 80), 0)
    protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    frames = [depth("AAAUSDT", 103 + 10 * i, 110 + 10 * i, 100 + 10 * i) for i in range(20)]
    outputs: list[Output] = []
    for old, new in itertools.zip_longest(frames, [None, None, *frames]):
        if old is not None:
            outputs += protocol.on_frame(1, old, 0)
        if new is not None:
            outputs += protocol.on_frame(2, new, 0)
    published = [o.last_update_id for o in outputs if isinstance(o, Depth)]
    assert published == [110 + 10 * i for i in range(20)]
    assert kinds(outputs).count("Dropped:stale_depth") == 20


def test_subscribe_replies_errors_and_unknown_ids() -> None:
    protocol = BinanceProtocol("spot", ["BTCUSDT"], ALL, Interner())
    (plan,) = protocol.plan_connections()
    protocol.on_connected(plan.conn_id)
    request_id = orjson.loads(plan.subscribe_frames[0])["id"]
    out = protocol.on_frame(plan.conn_id, b'{"result":null,"id":%d}' % request_id, 0)
    assert kinds(out) == ["Event:SUBSCRIBE"]
    assert detail(out[0]) == {
        "conn_id": plan.conn_id,
        "id": request_id,
        "ok": True,
        "method": "subscribe",
        "streams": 3,
    }
    assert kinds(protocol.on_frame(1, b'{"result":null,"id":4242}', 0)) == [
        "ParseError:unknown_reply"
    ]
    error = b'{"code":2,"msg":"Invalid request: too many parameters","id":77}'
    out = protocol.on_frame(1, error, 0)
    assert kinds(out) == ["ParseError:error_reply", "Event:SUBSCRIBE"]
    assert detail(out[1]) == {
        "conn_id": 1,
        "id": 77,
        "ok": False,
        "code": 2,
        "msg": "Invalid request: too many parameters",
    }
    out = protocol.on_frame(1, b'{"code":3,"msg":"Invalid JSON","id":null}', 0)
    assert kinds(out) == ["ParseError:error_reply", "Event:SUBSCRIBE"]


@pytest.mark.parametrize(
    "frame",
    [
        b'{"e":"serverShutdown","E":1770123456789}',
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    ],
)
def test_server_shutdown_asks_for_a_rotation_once(frame: bytes) -> None:
    protocol = BinanceProtocol("spot", ["BTCUSDT"], ALL, Interner())
    (plan,) = protocol.plan_connections()
    protocol.on_connected(plan.conn_id)
    out = protocol.on_frame(plan.conn_id, frame, 5)
    assert kinds(out) == ["Event:SERVER_SHUTDOWN", "Reconnect"]
    event = out[0]
    assert isinstance(event, Event)
    assert (event.symbol_id, event.ts_event) == (NO_SYMBOL, 1770123456789 * 1_000_000)
    assert out[1] == Reconnect(plan.conn_id, "server_shutdown")
    assert kinds(protocol.on_frame(plan.conn_id, frame, 6)) == ["Event:SERVER_SHUTDOWN"]
    replacement = protocol.plan_rotation(plan.conn_id)
    assert kinds(protocol.on_frame(replacement.conn_id, frame, 6)) == [
        "Event:SERVER_SHUTDOWN",
        "Reconnect",
    ]


def _synced_on(protocol: BinanceProtocol, conn_id: int) -> None:
    protocol.on_frame(conn_id, depth("AAAUSDT", 10, 10), 0)
    protocol.on_snapshot("AAAUSDT", snapshot(10), 0)
    assert protocol.book_state("AAAUSDT") is SyncState.SYNCED


def test_disconnect_without_cover_resyncs_books_and_reports_lost_streams() -> None:
    interner = Interner()
    protocol = BinanceProtocol("spot", ["AAAUSDT", "BBBUSDT"], ALL, interner)
    (plan,) = protocol.plan_connections()
    ack_all(protocol, plan)
    _synced_on(protocol, plan.conn_id)
    out = protocol.on_disconnect(plan.conn_id, 77)
    assert kinds(out) == ["Event:GAP", "Event:RESYNC", "Event:GAP"]
    assert [o.symbol_id for o in out if isinstance(o, Event)] == [interner.ids["AAAUSDT"]] * 2 + [
        NO_SYMBOL
    ]
    assert detail(out[0]) == {"reason": "disconnect", "last_update_id": 10}
    assert detail(out[2]) == {
        "reason": "disconnect",
        "conn_id": plan.conn_id,
        "streams": 4,
        "channels": ["quotes", "trades"],
    }
    assert protocol.book_state("AAAUSDT") is SyncState.IDLE
    assert protocol.on_disconnect(plan.conn_id, 78) == []
    replacement = protocol.plan_rotation(plan.conn_id)
    assert replacement.streams == plan.streams
    ack_all(protocol, replacement)
    assert protocol.on_frame(replacement.conn_id, depth("AAAUSDT", 20, 21), 0) == [
        FetchSnapshot("AAAUSDT", 1000, 50)
    ]


def test_disconnect_covered_by_the_rotated_connection_loses_nothing() -> None:
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ALL, Interner())
    (plan,) = protocol.plan_connections()
    ack_all(protocol, plan)
    _synced_on(protocol, plan.conn_id)
    replacement = protocol.plan_rotation(plan.conn_id)
    ack_all(protocol, replacement)
    assert protocol.on_disconnect(plan.conn_id, 1) == []
    assert protocol.book_state("AAAUSDT") is SyncState.SYNCED
    with pytest.raises(VenueUsageError):
        protocol.plan_rotation(plan.conn_id)  # retired and forgotten


def test_disconnect_before_the_replacement_is_subscribed_resyncs() -> None:
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ["depth"], Interner())
    (plan,) = protocol.plan_connections()
    ack_all(protocol, plan)
    _synced_on(protocol, plan.conn_id)
    replacement = protocol.plan_rotation(plan.conn_id)
    protocol.on_connected(replacement.conn_id)
    assert kinds(protocol.on_disconnect(plan.conn_id, 1)) == ["Event:GAP", "Event:RESYNC"]


def test_add_and_remove_symbols() -> None:
    interner = Interner()
    small = dataclasses.replace(SPOT_LIMITS, max_streams_per_connection=4)
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ["trades", "quotes"], interner, limits=small)
    assert kinds(protocol.add_symbols(["BBBUSDT"])) == ["Event:SYMBOL_ADDED"]
    (plan,) = protocol.plan_connections()
    assert plan.streams == (
        "aaausdt@bookTicker",
        "aaausdt@trade",
        "bbbusdt@bookTicker",
        "bbbusdt@trade",
    )
    ack_all(protocol, plan)
    out = protocol.add_symbols(["CCCUSDT", "CCCUSDT", "AAAUSDT"])
    assert kinds(out) == ["Event:SYMBOL_ADDED", "ConnectionPlan"]
    assert detail(out[0]) == {
        "symbol": "CCCUSDT",
        "streams": ["cccusdt@bookTicker", "cccusdt@trade"],
    }
    new_plan = out[1]
    assert isinstance(new_plan, ConnectionPlan)
    assert new_plan.streams == (
        "cccusdt@bookTicker",
        "cccusdt@trade",
    )
    ack_all(protocol, new_plan)
    out = protocol.remove_symbols(["AAAUSDT", "ZZZUSDT"])
    assert kinds(out) == ["Event:SYMBOL_REMOVED", "SendFrame"]
    unsubscribe = out[1]
    assert isinstance(unsubscribe, SendFrame)
    assert unsubscribe.conn_id == plan.conn_id
    request = orjson.loads(unsubscribe.data)
    assert (request["method"], request["params"]) == (
        "UNSUBSCRIBE",
        ["aaausdt@bookTicker", "aaausdt@trade"],
    )
    assert protocol.on_frame(plan.conn_id, trade("AAAUSDT", 5), 0) == [
        Dropped("unsubscribed_stream", 1)
    ]
    out = protocol.add_symbols(["DDDUSDT"])
    assert kinds(out) == ["Event:SYMBOL_ADDED", "SendFrame"]
    frame = out[1]
    assert isinstance(frame, SendFrame)
    assert frame.conn_id == plan.conn_id
    assert orjson.loads(frame.data)["params"] == ["dddusdt@bookTicker", "dddusdt@trade"]
    assert protocol.symbols == ("BBBUSDT", "CCCUSDT", "DDDUSDT")
    assert isinstance(protocol.on_frame(plan.conn_id, trade("DDDUSDT", 5), 0)[0], Trade)


def test_removed_depth_symbol_drops_its_book() -> None:
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ["depth"], Interner())
    protocol.on_frame(1, depth("AAAUSDT", 1, 1), 0)
    protocol.remove_symbols(["AAAUSDT"])
    assert protocol.book_state("AAAUSDT") is None
    assert protocol.on_snapshot("AAAUSDT", snapshot(1), 0) == [Dropped("unexpected_snapshot", 1)]


# --- the pacer --------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "allowed"), [(5, 4), (10, 9)])
def test_pacer_stays_below_the_venue_limit_in_every_second(limit: int, allowed: int) -> None:
    start = 1_700_000_000 * SECOND
    polled = ControlPacer.for_limit(limit)
    sent = [t for t in range(start, start + 10 * SECOND, SECOND // 1000) if polled.allow(t)]
    greedy = ControlPacer.for_limit(limit)  # sends the moment next_time allows: the worst case
    eager = [start]
    while eager[-1] < start + 10 * SECOND:
        assert greedy.allow(eager[-1])
        eager.append(greedy.next_time(eager[-1]))
    for times in (sent, eager):
        windows = [sum(1 for s in times if t <= s <= t + SECOND) for t in times]
        assert max(windows) <= allowed
        assert len(times) >= 10 * (allowed - 1)
    assert max(sum(1 for s in eager if t <= s <= t + SECOND) for t in eager) == allowed


def test_pacer_next_time_and_burst() -> None:
    pacer = ControlPacer.for_limit(5)
    assert pacer.allow(0)
    assert not pacer.allow(1)
    ready = pacer.next_time(1)
    assert ready == SECOND // 3
    assert not pacer.allow(ready - 1)
    assert pacer.allow(ready)
    burst = ControlPacer(rate_per_s=2, burst=3)
    assert [burst.allow(0) for _ in range(4)] == [True, True, True, False]
    assert burst.next_time(0) == SECOND // 2
    assert BinanceProtocol("usdm", ["X"], ALL, Interner()).new_pacer().next_time(5) == 5
    with pytest.raises(VenueUsageError):
        ControlPacer(0)
    with pytest.raises(VenueUsageError):
        ControlPacer.for_limit(2)


def test_spot_default_limits() -> None:
    assert (SPOT_LIMITS.max_streams_per_connection, SPOT_LIMITS.control_messages_per_second) == (
        1024,
        5,
    )
    assert (SPOT_LIMITS.rest_weight_per_minute, SPOT_LIMITS.trade_stream) == (6000, "trade")
