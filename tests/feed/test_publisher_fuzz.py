"""Mutated frames straight into the publisher: it never raises and counts exactly.

A twin protocol, fed the same frames, says what the publisher must have done: every record
published once, every parse error and drop counted by kind, every request passed on.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consolidator.feed.counters import CHANNELS, Counters
from consolidator.feed.publisher import Publisher, open_rings
from consolidator.payloads import Depth, Event, Quote, Raw, Trade, decode_raw
from consolidator.records import EventKind, RecordType
from consolidator.ring.reader import VariableRingReader
from consolidator.ring.writer import RingWriter
from consolidator.venues.base import (
    ConnectionPlan,
    Dropped,
    FetchSnapshot,
    Output,
    ParseError,
    Reconnect,
    SendFrame,
)
from consolidator.venues.binance import BinanceProtocol

STREAMS = ("trades", "quotes", "depth", "raw", "events")
TRADE = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 10, "p": "1.5", "q": "2", "T": 1, "m": True}
QUOTE = {"u": 5, "s": "BTCUSDT", "b": "1.4", "B": "1", "a": "1.6", "A": "3"}
DEPTH = {
    "e": "depthUpdate",
    "E": 1,
    "s": "BTCUSDT",
    "U": 101,
    "u": 102,
    "b": [["1.4", "1"]],
    "a": [],
}
BASE = [
    ("btcusdt@trade", TRADE),
    ("btcusdt@bookTicker", QUOTE),
    ("btcusdt@depth@100ms", DEPTH),
    ("!serverShutdown", {"e": "serverShutdown", "E": 1}),
]
SNAPSHOT = {"lastUpdateId": 100, "bids": [["1.4", "2"]], "asks": [["1.6", "1"]]}


class Recorder:
    """The writer's side of the requests, recorded."""

    def __init__(self) -> None:
        self.requests: list[Output] = []

    def fetch_snapshot(self, request: FetchSnapshot) -> None:
        self.requests.append(request)

    def send_frame(self, request: SendFrame) -> None:
        self.requests.append(request)

    def reconnect(self, request: Reconnect) -> None:
        self.requests.append(request)

    def open_connection(self, plan: ConnectionPlan) -> None:
        self.requests.append(plan)


@pytest.fixture(scope="module")
def rings() -> Iterator[dict[str, RingWriter]]:
    shm = Path("/dev/shm") / f"feedtest-{uuid.uuid4().hex}"
    opened = open_rings(shm, "fuzz", STREAMS, 1)
    try:
        yield opened
    finally:
        for ring in opened.values():
            ring.close()
        shutil.rmtree(shm, ignore_errors=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, bytes]:
    stream, data = draw(st.sampled_from([*BASE, BASE[2], BASE[2]]))
    data = dict(data)
    if "U" in data:
        first = draw(st.integers(96, 110))
        data["U"], data["u"] = first, first + draw(st.integers(0, 2))
    elif "t" in data or "u" in data:
        data["t" if "t" in data else "u"] = draw(st.integers(0, 300))
    if key_drop := draw(st.none() | st.sampled_from(sorted(data))):
        if draw(st.booleans()):
            del data[key_drop]
        else:
            data[key_drop] = draw(json_values)
    message: Any = {"stream": stream, "data": data}
    choice = draw(st.integers(0, 9))
    if choice == 0:
        message = {"result": None, "id": draw(json_values)}
    elif choice == 1:
        message = draw(json_values)
    raw = orjson.dumps(message)
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=4)) + raw[at + draw(st.integers(0, 3)) :]
    kind = "snapshot" if draw(st.integers(0, 4)) == 0 else "frame"
    if kind == "snapshot":
        raw = orjson.dumps(SNAPSHOT) if draw(st.integers(0, 3)) else raw
    return kind, raw


def _protocol() -> BinanceProtocol:
    ids: dict[str, int] = {}
    protocol = BinanceProtocol(
        "spot", ["BTCUSDT"], ["trades", "quotes", "depth"], lambda n: ids.setdefault(n, len(ids))
    )
    protocol.plan_connections()
    protocol.on_connected(1)
    return protocol


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(frames(), max_size=40))
def test_publisher_survives_mutated_frames_with_exact_counters(
    rings: dict[str, RingWriter], inputs: list[tuple[str, bytes]]
) -> None:
    twin = _protocol()
    real = _protocol()
    counters = Counters()
    recorder = Recorder()
    publisher = Publisher(rings, real.on_frame, recorder, counters)
    tails = {s: r.next_seq for s, r in rings.items()}
    expected: list[Output] = []
    for ts, (kind, raw) in enumerate(inputs, 1):
        if kind == "frame":
            expected += twin.on_frame(1, raw, ts)
            publisher.on_message(1, raw, ts)
        else:
            expected += twin.on_snapshot("BTCUSDT", raw, ts)
            publisher.handle(real.on_snapshot("BTCUSDT", raw, ts))
    by_type = Counter(type(o) for o in expected)
    errors = Counter(o.kind for o in expected if isinstance(o, ParseError))
    drops: Counter[str] = Counter()
    for o in expected:
        if isinstance(o, Dropped):
            drops[o.reason] += o.count
    events = [o for o in expected if isinstance(o, Event)]
    frames_in = sum(1 for kind, _ in inputs if kind == "frame")

    assert counters.internal_errors == 0
    assert counters.total_messages() == frames_in
    assert counters.parse_errors == errors
    assert counters.drops == drops
    assert counters.gaps == sum(1 for e in events if e.kind == EventKind.GAP)
    assert counters.resyncs == sum(1 for e in events if e.kind == EventKind.RESYNC)
    published = {
        "trades": by_type[Trade],
        "quotes": by_type[Quote],
        "depth": by_type[Depth],
        "raw": frames_in,
        "events": len(events) + len(errors),
    }
    assert counters.records_published == published
    assert {s: r.next_seq - tails[s] for s, r in rings.items()} == published
    assert recorder.requests == [
        o for o in expected if isinstance(o, FetchSnapshot | SendFrame | Reconnect | ConnectionPlan)
    ]


def test_frame_above_the_size_limit_is_counted_not_published(
    rings: dict[str, RingWriter],
) -> None:
    counters = Counters()
    protocol = _protocol()
    publisher = Publisher(rings, protocol.on_frame, Recorder(), counters)
    before = rings["raw"].next_seq
    big = b'{"stream":"btcusdt@trade","data":' + b" " * (2 << 20) + b"{}}"
    publisher.on_message(1, big, 1)
    publisher.on_message(1, b"\xff\xfe not json", 2)
    assert counters.parse_errors == {"too_large": 1, "json": 1}
    assert counters.records_published["trades"] == 0
    assert counters.records_published["events"] == 2  # one PARSE_ERROR event per kind
    assert rings["raw"].next_seq == before + 2  # raw keeps every frame as received


CHANNEL_CASES = [
    (b'{"stream":"btcusdt@trade","data":{}}', "trades"),
    (b'{"stream":"btcusdt@aggTrade","data":{}}', "trades"),
    (b'{"stream":"btcusdt@bookTicker","data":{}}', "quotes"),
    (b'{"stream":"btcusdt@depth@100ms","data":{}}', "depth"),
    (b'{"stream":"btcusdt@kline_1m","data":{}}', "other"),
    (b'{"stream":"' + b"x" * 60 + b'@trade","data":{}}', "other"),  # '@' past the first 64 bytes
    (b'{"stream":"btcusdt@', "other"),
    (b'{"stream":"@b', "quotes"),
    (b'{"result":null,"id":1}', "other"),
    (b"", "other"),
]


def test_raw_frames_are_kept_exactly_and_counted_by_channel(
    rings: dict[str, RingWriter],
) -> None:
    counters = Counters()
    publisher = Publisher(rings, _protocol().on_frame, Recorder(), counters)
    start = rings["raw"].next_seq
    for ts, (message, _) in enumerate(CHANNEL_CASES, 1):
        publisher.on_message(ts % 3, message, ts << 40)
    expected = Counter(channel for _, channel in CHANNEL_CASES)
    assert counters.messages_received == {c: expected[c] for c in CHANNELS}
    assert counters.last_message_ns["other"] == len(CHANNEL_CASES) << 40
    assert counters.internal_errors == 0
    with VariableRingReader(rings["raw"].path, start=start) as reader:
        records = reader.read_batch()
    assert [r.record_type for r in records] == [RecordType.RAW] * len(CHANNEL_CASES)
    assert [decode_raw(r.payload) for r in records] == [
        Raw(ts << 40, ts % 3, message) for ts, (message, _) in enumerate(CHANNEL_CASES, 1)
    ]


def test_a_failing_sink_is_counted_as_an_internal_error(
    rings: dict[str, RingWriter], caplog: pytest.LogCaptureFixture
) -> None:
    """What the connection calls when on_message or end_batch raised: counted each time, logged
    once."""
    counters = Counters()
    publisher = Publisher(rings, lambda *_: [], Recorder(), counters)
    publisher.sink_failed(ValueError("first"))
    publisher.sink_failed(ValueError("second"))
    assert counters.internal_errors == 2
    logged = [r.getMessage() for r in caplog.records if "message sink" in r.getMessage()]
    assert len(logged) == 1
    assert "first" in logged[0]
