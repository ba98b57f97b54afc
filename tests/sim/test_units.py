"""Unit tests of the simulator's pure parts."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consolidator.sim.book import BookSide
from consolidator.sim.config import Venue, profile_for
from consolidator.sim.control import handle_control
from consolidator.sim.faults import FaultKind, FaultManager, parse_fault
from consolidator.sim.frames import ws_text_frame
from consolidator.sim.streams import is_valid_stream, parse_stream, parse_ws_path
from consolidator.sim.symbols import build_specs, format_units, make_spec
from consolidator.sim.weights import WeightLimiter

SPOT = profile_for(Venue.SPOT)
USDM = profile_for(Venue.USDM)


@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=12))
def test_format_units_roundtrip(units: int, decimals: int) -> None:
    text = format_units(units, decimals)
    assert Decimal(text) == Decimal(units).scaleb(-decimals)
    assert len(text.partition(".")[2]) == decimals


def test_spot_and_usdm_formatting() -> None:
    spot = make_spec("BTCUSDT", "BTC", "USDT", "61837.63", "0.01", "0.00001", 8)
    assert spot.price(spot.ref_ticks) == "61837.63000000"
    assert spot.qty(3) == "0.00003000"
    usdm = make_spec("BTCUSDT", "BTC", "USDT", "61800.20", "0.10", "0.001", None)
    assert usdm.price(usdm.ref_ticks) == "61800.20"
    assert usdm.qty(6) == "0.006"
    assert (usdm.tick_precision, usdm.step_precision) == (2, 3)
    tiny = make_spec("PEPEUSDT", "PEPE", "USDT", "0.00000123", "0.00000001", "1", 8)
    assert tiny.price(tiny.ref_ticks) == "0.00000123"


def test_generated_symbols_are_distinct_grids() -> None:
    specs = build_specs(Venue.SPOT, (), 30, 7, 8)
    assert len({s.symbol for s in specs}) == 30
    assert len({s.tick for s in specs}) >= 4
    for spec in specs:
        assert spec.ref_ticks >= 2


def test_fault_spec_parsing() -> None:
    spec = parse_fault("drop-depth:btcusdt,count=2,after=1.5")
    assert (spec.kind, spec.symbol, spec.count, spec.after) == (
        FaultKind.DROP_DEPTH,
        "BTCUSDT",
        2,
        1.5,
    )
    assert parse_fault("duplicate,prob=0.5").count is None
    assert parse_fault("stall,duration=2").duration == 2
    assert parse_fault("reset,count=0").count is None
    assert parse_fault("reset,conn=3").conn == 3
    for bad in (
        "nope",
        "duplicate,count=x",
        "duplicate,prob=2",
        "reset,foo=1",
        "reorder,variant=x",
        "reset,conn=x",
        "duplicate,conn=1",
    ):
        with pytest.raises(ValueError, match=r"."):
            parse_fault(bad)


def test_fault_manager_frame_faults() -> None:
    faults = FaultManager(1)
    faults.arm(parse_fault("duplicate:ETHUSDT"), 0.0)
    faults.arm(parse_fault("reorder"), 0.0)
    frames = [(b"a", "btcusdt@trade"), (b"b", "btcusdt@trade"), (b"c", "ethusdt@trade")]
    out = faults.mutate(frames, combined=False, now=1.0)
    assert [f for f, _ in out] == [b"b", b"a", b"c", b"c"]
    assert faults.applied == {"duplicate": 1, "reorder": 1}
    assert not faults.frame_faults_armed
    assert not faults.take(FaultKind.DROP_DEPTH, "BTCUSDT", 1.0)


def test_stream_names_and_paths() -> None:
    assert is_valid_stream("btcusdt@depth@100ms")
    assert is_valid_stream("btcusdt@aggTrade")
    assert not is_valid_stream("BTCUSDT@trade")
    assert not is_valid_stream("btcusdt trade")
    assert parse_stream("btcusdt@depth", SPOT).interval_ms == 1000
    assert parse_stream("btcusdt@depth", USDM).interval_ms == 250
    assert parse_stream("btcusdt@depth@500ms", USDM).interval_ms == 500
    assert parse_stream("btcusdt@depth@500ms", SPOT).interval_ms is None
    target = parse_ws_path("/stream?streams=btcusdt@trade/ethusdt@bookTicker", SPOT)
    assert not isinstance(target, str)
    assert target.combined
    assert target.streams == ("btcusdt@trade", "ethusdt@bookTicker")
    target = parse_ws_path("/market/ws/btcusdt%40aggTrade", USDM)
    assert not isinstance(target, str)
    assert (target.route, target.combined, target.streams) == (
        "/market",
        False,
        ("btcusdt@aggTrade",),
    )
    assert parse_ws_path("/public/ws", SPOT) == "not found"
    assert isinstance(parse_ws_path("/ws/BTCUSDT@trade", SPOT), str)


def test_ws_text_frame_lengths() -> None:
    assert ws_text_frame(b"x")[:2] == b"\x81\x01"
    assert ws_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_text_frame(b"x" * 70000)[:2] == b"\x81\x7f"


class _Target:
    def __init__(self) -> None:
        self.combined = False
        self.names: list[str] = []

    def stream_names(self) -> list[str]:
        return list(self.names)

    def add_streams(self, names: list[str]) -> None:
        self.names += [n for n in names if n not in self.names]

    def remove_streams(self, names: list[str]) -> None:
        self.names = [n for n in self.names if n not in names]


@pytest.mark.parametrize(
    ("request_text", "reply"),
    [
        ("{bad", {"code": 3, "id": None}),
        ('{"method":"FOO","id":1}', {"code": 2, "id": 1}),
        ('{"method":"SET_PROPERTY","params":["nope",true],"id":2}', {"code": 0, "id": 2}),
        ('{"method":"SET_PROPERTY","params":["combined",1],"id":3}', {"code": 1, "id": 3}),
        ('{"method":"GET_PROPERTY","params":[5],"id":4}', {"code": 2, "id": 4}),
        ('{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":5}', {"code": 2, "id": 5}),
        ('{"method":"SUBSCRIBE","params":["a@trade"],"id":{"x":1}}', {"code": 2, "id": None}),
        ('{"method":"SUBSCRIBE","params":["a@trade","b@trade","c@trade"],"id":6}', {"code": 2}),
    ],
)
def test_control_errors(request_text: str, reply: dict[str, object]) -> None:
    out = json.loads(handle_control(_Target(), request_text, max_streams=2))
    assert {k: out[k] for k in reply} == reply
    assert isinstance(out["msg"], str)


def test_control_success_and_nested_errors() -> None:
    target = _Target()
    sub = '{"method":"SUBSCRIBE","params":["a@trade","b@depth"],"id":"abc"}'
    assert json.loads(handle_control(target, sub, 10)) == {"result": None, "id": "abc"}
    listed = json.loads(handle_control(target, '{"method":"LIST_SUBSCRIPTIONS","id":7}', 10))
    assert listed == {"result": ["a@trade", "b@depth"], "id": 7}
    handle_control(target, '{"method":"SET_PROPERTY","params":["combined",true],"id":8}', 10)
    got = json.loads(
        handle_control(target, '{"method":"GET_PROPERTY","params":["combined"],"id":9}', 10)
    )
    assert got == {"result": True, "id": 9}
    nested = json.loads(handle_control(target, "{bad", 10, nested_errors=True))
    assert nested["error"]["code"] == 3


def test_weight_limiter_429_then_418() -> None:
    limiter = WeightLimiter(limit=10, window=60.0, ban_seconds=120.0)
    assert limiter.charge("ip", 5, 6000.0).status == 200
    assert limiter.charge("ip", 5, 6001.0).status == 200
    over = limiter.charge("ip", 5, 6002.0)
    assert (over.status, over.retry_after) == (429, 58)
    ban = limiter.charge("ip", 1, 6003.0)
    assert (ban.status, ban.retry_after) == (418, 120)
    assert limiter.charge("ip", 1, 6050.0).status == 418
    assert limiter.charge("ip", 1, 6124.0).status == 200
    assert limiter.charge("other", 1, 6003.0).status == 200


def test_book_side_order() -> None:
    bids = BookSide(is_bid=True)
    for price in (5, 9, 7, 3):
        bids.set(price, price * 10)
    bids.set(7, 0)
    bids.set(4, 0)
    assert bids.best() == 9
    assert bids.worst() == 3
    assert bids.top(2) == [(9, 90), (5, 50)]
    assert bids.top() == [(9, 90), (5, 50), (3, 30)]
    assert bids.at_depth(1) == 5


def test_a_session_fault_fires_on_that_connection_only() -> None:
    faults = FaultManager(1)
    faults.arm(parse_fault("reset,conn=2"), 0.0)
    assert faults.due_connection_faults(1, 0.0, set(), 1.0) == []
    assert [s.kind for s in faults.due_connection_faults(2, 0.0, set(), 1.0)] == [FaultKind.RESET]
    assert not faults.has_connection_faults
