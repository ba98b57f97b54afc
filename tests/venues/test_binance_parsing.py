"""Frame parsing: field mapping, tolerance, and every kind of parse error."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from consolidator.payloads import Quote, Trade
from consolidator.records import Side, TradeFlag, decode_decimal
from consolidator.venues.base import SAMPLE_BYTES, Dropped, ParseError
from consolidator.venues.binance import SPOT_LIMITS, USDM_LIMITS, BinanceProtocol

from .helpers import E_MS, Interner, kinds, trade, wrap

ALL = ["trades", "quotes", "depth"]


def spot() -> BinanceProtocol:
    return BinanceProtocol("spot", ["BTCUSDT"], ALL, Interner())


def test_spot_trade_fields() -> None:
    protocol = spot()
    frame = wrap(
        "btcusdt@trade",
        {"e": "trade", "E": E_MS, "s": "BTCUSDT", "t": 12345, "p": "0.00100", "q": "100",
         "T": E_MS - 3, "m": True, "M": True, "b": 88, "a": 50},
    )  # fmt: skip
    (out,) = protocol.on_frame(3, frame, 42)
    assert isinstance(out, Trade)
    assert out == Trade(
        (E_MS - 3) * 1_000_000, 42, 12345, 100, 100, 0, -5, 0, Side.SELL, TradeFlag.NONE
    )
    assert decode_decimal(out.price_m, out.price_e) == "0.00100"
    (buy,) = protocol.on_frame(3, trade("BTCUSDT", 12346, maker=False), 43)
    assert isinstance(buy, Trade)
    assert buy.side == Side.BUY
    assert protocol.on_frame(3, frame.decode(), 44) == [Dropped("duplicate_trade", 1)]


def test_usdm_raw_trades_flag_off_book_origins() -> None:
    limits = dataclasses.replace(USDM_LIMITS, trade_stream="trade")
    protocol = BinanceProtocol("usdm", ["BTCUSDT"], ["trades"], Interner(), limits=limits)
    (plan,) = protocol.plan_connections()
    assert (plan.path, plan.streams) == ("/public/stream", ("btcusdt@trade",))
    data = {
        "e": "trade",
        "E": E_MS,
        "T": E_MS,
        "s": "BTCUSDT",
        "t": 1,
        "p": "61800.30",
        "q": "0.006",
        "X": "MARKET",
        "m": False,
    }
    (market,) = protocol.on_frame(1, wrap("btcusdt@trade", data), 0)
    (fund,) = protocol.on_frame(1, wrap("btcusdt@trade", data | {"t": 2, "X": "INSURANCE_FUND"}), 0)
    assert isinstance(market, Trade)
    assert isinstance(fund, Trade)
    assert (market.flags, fund.flags) == (TradeFlag.NONE, TradeFlag.OFF_BOOK)


def test_quote_event_time_and_tolerated_extra_fields() -> None:
    protocol = BinanceProtocol("usdm", ["BTCUSDT"], ["quotes"], Interner())
    base = {
        "e": "bookTicker",
        "u": 1,
        "s": "BTCUSDT",
        "b": "1",
        "B": "2",
        "a": "3",
        "A": "4",
        "st": 1,
        "ps": "BTCUSDT",
    }
    times = []
    for update_id, extra in enumerate([{"T": 7, "E": 9}, {"E": 9}, {}], start=1):
        (out,) = protocol.on_frame(
            1, wrap("btcusdt@bookTicker", base | {"u": update_id} | extra), 0
        )
        assert isinstance(out, Quote)
        times.append(out.ts_event)
    assert times == [7_000_000, 9_000_000, 0]


def test_non_ascii_symbols() -> None:
    interner = Interner()
    protocol = BinanceProtocol("spot", ["币安人生USDT"], ["trades"], interner)
    (plan,) = protocol.plan_connections()
    assert plan.streams == ("币安人生usdt@trade",)
    (out,) = protocol.on_frame(1, trade("币安人生USDT", 1), 0)
    assert isinstance(out, Trade)
    assert out.symbol_id == interner.ids["币安人生USDT"]


def _t(**changes: object) -> bytes:
    data: dict[str, object] = {
        "e": "trade",
        "E": E_MS,
        "s": "BTCUSDT",
        "t": 5,
        "p": "1.5",
        "q": "2",
        "T": E_MS,
        "m": False,
    }
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return wrap("btcusdt@trade", data)


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b'{"stream":"btcusdt@trade","data":', "json"),
        (b"\xff\xfe", "json"),
        ("\ud800", "json"),
        (b"[1,2]", "unknown_event"),
        (b'{"hello":"world"}', "unknown_event"),
        (b'{"stream":7,"data":{}}', "unknown_event"),
        (b'{"stream":"nope@trade","data":[]}', "unknown_event"),
        (b'{"stream":"btcusdt@trade","data":[]}', "field_type"),
        (_t(e="kline"), "unknown_event"),
        (_t(p=KeyError), "missing_field"),
        (_t(t=KeyError), "missing_field"),
        (_t(t="5"), "field_type"),
        (_t(t=-5), "field_type"),
        (_t(t=True), "field_type"),
        (_t(t=1.5), "field_type"),
        (_t(m="true"), "field_type"),
        (_t(p=1.5), "field_type"),
        (_t(p="1e999"), "field_type"),
        (_t(p="12345678901234567891"), "field_type"),
        (_t(p="١٢"), "field_type"),
        (_t(T=2**62), "field_type"),
        (_t(T=-1), "field_type"),
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","t":18446744073709551616}}', "field_type"),
        (
            wrap(
                "btcusdt@depth@100ms",
                {"e": "depthUpdate", "E": 1, "U": 5, "u": 4, "b": [], "a": []},
            ),
            "field_type",
        ),
        (
            wrap(
                "btcusdt@depth@100ms",
                {"e": "depthUpdate", "E": 1, "U": 4, "u": 5, "b": [["1"]], "a": []},
            ),
            "field_type",
        ),
        (
            wrap(
                "btcusdt@depth@100ms",
                {"e": "depthUpdate", "E": 1, "U": 4, "u": 5, "b": "x", "a": []},
            ),
            "field_type",
        ),
        (
            wrap("btcusdt@depth@100ms", {"e": "depthUpdate", "U": 4, "u": 5, "b": [], "a": []}),
            "missing_field",
        ),
        (wrap("btcusdt@bookTicker", {"e": "depthUpdate", "u": 1}), "unknown_event"),
        (wrap("btcusdt@bookTicker", {"u": 1, "b": "1", "B": [], "a": "1", "A": "1"}), "field_type"),
    ],
)
def test_parse_errors(frame: bytes | str, kind: str) -> None:
    (out,) = spot().on_frame(9, frame, 0)
    assert isinstance(out, ParseError)
    assert (out.kind, out.conn_id) == (kind, 9)
    raw = frame.encode("utf-8", "replace") if isinstance(frame, str) else frame
    assert out.sample == raw[:SAMPLE_BYTES]


def test_frames_above_the_limit_are_refused_unread() -> None:
    limits = dataclasses.replace(SPOT_LIMITS, max_frame_bytes=64)
    protocol = BinanceProtocol("spot", ["BTCUSDT"], ALL, Interner(), limits=limits)
    huge = wrap("btcusdt@trade", {"e": "trade", "pad": "x" * 1000})
    (out,) = protocol.on_frame(1, huge, 0)
    assert isinstance(out, ParseError)
    assert out.kind == "too_large"
    assert len(out.sample) == SAMPLE_BYTES
    assert kinds(protocol.on_frame(1, bytearray(b'{"result":null,"id":1}'), 0)) == [
        "ParseError:unknown_reply"
    ]
    assert kinds(protocol.on_frame(1, memoryview(b"{"), 0)) == ["ParseError:json"]


def test_kline_and_other_unsubscribed_streams_are_counted_drops() -> None:
    frame = orjson.dumps(
        {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {}}}
    )
    assert spot().on_frame(1, frame, 0) == [Dropped("unsubscribed_stream", 1)]
