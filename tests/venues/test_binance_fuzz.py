"""Property tests: whatever bytes arrive, only documented outputs come out, and they are sound."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consolidator.payloads import Depth, Event, Quote, Trade, encode_depth, encode_event
from consolidator.records import QUOTE, TRADE, EventKind
from consolidator.venues.base import (
    SAMPLE_BYTES,
    ConnectionPlan,
    Dropped,
    FetchSnapshot,
    Output,
    ParseError,
    Reconnect,
    SendFrame,
)
from consolidator.venues.binance import BinanceProtocol, Market

from .helpers import E_MS, Interner, depth, quote, snapshot, trade, wrap

SYMBOLS = ["AAAUSDT", "BBBUSDT"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["0.35130000", "1e5", "-0", "", "١٢٣", "NaN", "99999999999999999999"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def valid_frames(market: Market) -> st.SearchStrategy[bytes]:
    """Well-formed frames of every kind, with small ids so books sync, gap and resync."""
    ids = st.integers(min_value=1, max_value=40)
    prev = ids if market == "usdm" else st.none()
    event = "aggTrade" if market == "usdm" else "trade"
    return st.one_of(
        st.builds(
            lambda s, a, b, p: depth(s, min(a, b), max(a, b), p),
            st.sampled_from(SYMBOLS),
            ids,
            ids,
            prev,
        ),
        st.builds(
            lambda s, t, m: trade(s, t, event, m), st.sampled_from(SYMBOLS), ids, st.booleans()
        ),
        st.builds(quote, st.sampled_from(SYMBOLS), ids),
        st.builds(lambda i: b'{"result":null,"id":%d}' % i, st.integers(0, 5)),
        st.just(b'{"code":2,"msg":"bad","id":1}'),
        st.just(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'),
        st.just(wrap("aaausdt@kline_1m", {"e": "kline", "E": E_MS})),
    )


@st.composite
def mutated(draw: st.DrawFn, market: Market) -> bytes | str:
    """A valid frame, broken in one of several ways."""
    frame = draw(valid_frames(market))
    how = draw(st.sampled_from(["keep"] * 5 + ["truncate", "mutate", "delete", "bytes", "text"]))
    if how == "truncate":
        return frame[: draw(st.integers(0, len(frame)))]
    if how == "bytes":
        return draw(st.binary(max_size=200))
    if how == "text":
        return draw(st.text(max_size=100))
    if how in ("mutate", "delete"):
        msg: Any = orjson.loads(frame)
        target = msg["data"] if "data" in msg and isinstance(msg["data"], dict) else msg
        key = draw(st.sampled_from(sorted(target) or ["x"]))
        if how == "delete":
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
        text = json.dumps(msg, ensure_ascii=draw(st.booleans()))
        return text if draw(st.booleans()) else text.encode()
    return frame


ALLOWED = (
    Trade,
    Quote,
    Depth,
    Event,
    ConnectionPlan,
    SendFrame,
    FetchSnapshot,
    Reconnect,
    ParseError,
    Dropped,
)


class Checker:
    """Feeds one protocol and checks every output; tracks per-symbol ordering invariants."""

    def __init__(self, market: Market) -> None:
        self.protocol = BinanceProtocol(market, SYMBOLS, ["trades", "quotes", "depth"], Interner())
        self.last_trade: dict[int, int] = {}
        self.last_quote: dict[int, int] = {}
        self.last_depth: dict[int, int] = {}
        self.resyncing: set[int] = set(range(len(SYMBOLS)))

    def feed(self, call: Callable[[], list[Output]]) -> list[Output]:
        outputs = call()
        assert isinstance(outputs, list)
        errors = [o for o in outputs if isinstance(o, ParseError)]
        assert len(errors) <= 1
        if errors and errors[0].kind != "error_reply":
            assert len(outputs) == 1 or errors[0].kind.startswith("snapshot_")
        for out in outputs:
            assert isinstance(out, ALLOWED), out
            self.check(out)
        return outputs

    def check(self, out: Output) -> None:
        if isinstance(out, Trade):
            TRADE.pack(0, out.ts_event, out.ts_recv, 0, *out[2:])
            assert out.trade_id > self.last_trade.get(out.symbol_id, -1)
            self.last_trade[out.symbol_id] = out.trade_id
        elif isinstance(out, Quote):
            QUOTE.pack(0, out.ts_event, out.ts_recv, 0, *out[2:])
            assert out.update_id > self.last_quote.get(out.symbol_id, -1)
            self.last_quote[out.symbol_id] = out.update_id
        elif isinstance(out, Depth):
            encode_depth(out)
            if out.snapshot:
                self.resyncing.discard(out.symbol_id)
                self.last_depth[out.symbol_id] = out.last_update_id - 1
            else:
                assert out.symbol_id not in self.resyncing
                assert out.last_update_id > self.last_depth[out.symbol_id]
                self.last_depth[out.symbol_id] = out.last_update_id
        elif isinstance(out, Event):
            encode_event(out)
            assert isinstance(orjson.loads(out.detail), dict)
            if out.kind in (EventKind.GAP, EventKind.RESYNC) and out.symbol_id < len(SYMBOLS):
                self.resyncing.add(out.symbol_id)
        elif isinstance(out, ParseError):
            assert isinstance(out.sample, bytes)
            assert len(out.sample) <= SAMPLE_BYTES
        elif isinstance(out, Dropped):
            assert out.count >= 1


@FAST
@given(st.sampled_from(["spot", "usdm"]), st.data())
def test_any_frame_sequence_yields_only_sound_outputs(market: Market, data: st.DataObject) -> None:
    checker = Checker(market)
    plans = checker.protocol.plan_connections()
    checker.protocol.on_connected(plans[0].conn_id)
    steps = data.draw(
        st.lists(
            st.sampled_from(["frame", "snapshot", "bad_snapshot", "fail", "disconnect"]),
            max_size=60,
        )
    )
    for step in steps:
        symbol = data.draw(st.sampled_from(SYMBOLS))
        if step == "frame":
            frame = data.draw(mutated(market))
            checker.feed(lambda f=frame: checker.protocol.on_frame(plans[0].conn_id, f, 1))  # type: ignore[misc]
        elif step == "snapshot":
            body = snapshot(data.draw(st.integers(0, 45)))
            checker.feed(lambda s=symbol, b=body: checker.protocol.on_snapshot(s, b, 2))  # type: ignore[misc]
        elif step == "bad_snapshot":
            body = data.draw(
                st.binary(max_size=60)
                | st.sampled_from([b"{}", b'{"lastUpdateId":-1,"bids":[],"asks":[]}'])
            )
            checker.feed(lambda s=symbol, b=body: checker.protocol.on_snapshot(s, b, 2))  # type: ignore[misc]
        elif step == "fail":
            checker.feed(lambda s=symbol: checker.protocol.on_snapshot_failed(s, "HTTP 503"))  # type: ignore[misc]
        else:
            checker.feed(lambda: checker.protocol.on_disconnect(plans[0].conn_id, 3))


@FAST
@given(st.binary(max_size=400) | st.text(max_size=200))
def test_random_bytes_are_parse_errors_or_drops(frame: bytes | str) -> None:
    outputs = BinanceProtocol("spot", SYMBOLS, ["trades"], Interner()).on_frame(1, frame, 0)
    assert outputs
    assert all(isinstance(o, ParseError | Dropped | Event | Reconnect) for o in outputs)
