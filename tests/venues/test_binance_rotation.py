"""Make-before-break rotation: the stream is handed from the old connection to its replacement
without losing or repeating anything, whichever of the two is ahead."""

from __future__ import annotations

import itertools

import orjson
import pytest

from consolidator.payloads import Depth, Quote, Trade
from consolidator.venues.base import ConnectionPlan, Dropped, Output
from consolidator.venues.binance import BinanceProtocol

from .helpers import Interner, depth, detail, kinds, quote, snapshot, trade

ALL = ["trades", "quotes", "depth"]


def _stream(steps: int = 40) -> list[bytes]:
    frames = []
    for step in range(1, steps):
        frames.append(trade("AAAUSDT", 1000 + step))
        frames.append(quote("AAAUSDT", 500 + 10 * step))
        frames.append(depth("AAAUSDT", 100 + step, 100 + step))
    return frames


def _ack(protocol: BinanceProtocol, plan: ConnectionPlan) -> None:
    protocol.on_connected(plan.conn_id)
    for frame in plan.subscribe_frames:
        reply = orjson.dumps({"result": None, "id": orjson.loads(frame)["id"]})
        assert kinds(protocol.on_frame(plan.conn_id, reply, 0)) == ["Event:SUBSCRIBE"]


def _rotating() -> tuple[BinanceProtocol, int, int]:
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ALL, Interner())
    (plan,) = protocol.plan_connections()
    _ack(protocol, plan)
    protocol.on_frame(plan.conn_id, depth("AAAUSDT", 100, 100), 0)
    protocol.on_snapshot("AAAUSDT", snapshot(100), 0)
    new = protocol.plan_rotation(plan.conn_id)
    _ack(protocol, new)
    return protocol, plan.conn_id, new.conn_id


def _published(outputs: list[Output]) -> list[tuple[str, int]]:
    out = []
    for o in outputs:
        if isinstance(o, Trade):
            out.append(("trade", o.trade_id))
        elif isinstance(o, Quote):
            out.append(("quote", o.update_id))
        elif isinstance(o, Depth) and not o.snapshot:
            out.append(("depth", o.last_update_id))
    return out


EXPECTED = sorted(
    [("trade", 1000 + s) for s in range(1, 40)]
    + [("quote", 500 + 10 * s) for s in range(1, 40)]
    + [("depth", 100 + s) for s in range(1, 40)]
)


@pytest.mark.parametrize("lead", [1, 3, 10, 30])
def test_old_connection_lagging_behind_its_replacement_loses_nothing(lead: int) -> None:
    """The replacement is ``lead`` frames ahead; its records wait until the old one catches up."""
    protocol, old, new = _rotating()
    frames = _stream()
    start = 30  # the replacement subscribed later: its stream starts at frame 30
    outputs: list[Output] = []
    new_frames = frames[start:]
    old_frames = frames
    # The old connection is behind: the replacement delivers `lead` frames before it catches up.
    schedule = [(new, f) for f in new_frames[:lead]]
    rest = list(itertools.zip_longest(old_frames, new_frames[lead:]))
    for o, n in rest:
        if o is not None:
            schedule.append((old, o))
        if n is not None:
            schedule.append((new, n))
    for conn, frame in schedule:
        outputs += protocol.on_frame(conn, frame, 0)
    # Once the replacement joined, both are live until the old one closes: its copies of what
    # was taken are duplicates.
    assert protocol.on_frame(old, trade("AAAUSDT", 1039), 0) == [Dropped("duplicate_trade", 1)]
    outputs += protocol.on_disconnect(old, 0)
    assert sorted(_published(outputs)) == EXPECTED
    assert len(_published(outputs)) == len(set(_published(outputs))), "nothing twice"
    assert not [o for o in outputs if kinds([o])[0].startswith("Event:GAP")]
    assert _published(protocol.on_frame(new, trade("AAAUSDT", 1040), 0)) == [("trade", 1040)]


def test_new_connection_lagging_is_deduplicated() -> None:
    protocol, old, new = _rotating()
    frames = _stream()
    outputs: list[Output] = []
    for o, n in itertools.zip_longest(frames, [None] * 4 + frames):
        if o is not None:
            outputs += protocol.on_frame(old, o, 0)
        if n is not None:
            outputs += protocol.on_frame(new, n, 0)
    assert sorted(_published(outputs)) == EXPECTED
    assert len(_published(outputs)) == len(EXPECTED)


def test_old_connection_closing_before_the_streams_meet_is_an_explicit_gap() -> None:
    protocol, old, new = _rotating()
    frames = _stream()
    outputs: list[Output] = []
    for frame in frames[:15]:  # old delivers steps 1..5
        outputs += protocol.on_frame(old, frame, 0)
    for frame in frames[24:]:  # the replacement starts at step 9: steps 6..8 were never seen
        outputs += protocol.on_frame(new, frame, 0)
    assert all(p[1] <= 1005 or p[0] != "trade" for p in _published(outputs)), "held back"
    outputs += protocol.on_disconnect(old, 0)
    gaps = [o for o in outputs if kinds([o]) == ["Event:GAP"]]
    assert detail(gaps[0]) == {
        "stream": "trades",
        "reason": "rotation",
        "expected": 1006,
        "got": 1009,
    }
    assert "Event:RESYNC" in kinds(outputs), "the depth jump resynchronizes that book"
    trades = [p[1] for p in _published(outputs) if p[0] == "trade"]
    assert trades == [*range(1001, 1006), *range(1009, 1040)]


def test_replacement_after_a_disconnect_takes_over_at_once() -> None:
    protocol = BinanceProtocol("spot", ["AAAUSDT"], ALL, Interner())
    (plan,) = protocol.plan_connections()
    protocol.on_connected(plan.conn_id)
    protocol.on_frame(plan.conn_id, trade("AAAUSDT", 1000), 0)
    protocol.on_disconnect(plan.conn_id, 0)
    again = protocol.plan_rotation(plan.conn_id)
    protocol.on_connected(again.conn_id)
    assert _published(protocol.on_frame(again.conn_id, trade("AAAUSDT", 1001), 0)) == [
        ("trade", 1001)
    ]


def test_a_failed_replacement_leaves_the_old_connection_in_charge() -> None:
    protocol, old, new = _rotating()
    protocol.on_frame(new, trade("AAAUSDT", 1005), 0)  # held: the old one has not got there
    assert protocol.on_disconnect(new, 0) == [], "nothing was missed: the old one still runs"
    outputs: list[Output] = []
    for trade_id in range(1001, 1008):
        outputs += protocol.on_frame(old, trade("AAAUSDT", trade_id), 0)
    assert [p[1] for p in _published(outputs)] == list(range(1001, 1008))
    again = protocol.plan_rotation(old)
    _ack(protocol, again)
    assert protocol.on_frame(again.conn_id, trade("AAAUSDT", 1007), 0) == [
        Dropped("duplicate_trade", 1)
    ], "overlaps at once: joined, and its copy is a duplicate"
    protocol.on_disconnect(old, 0)
    assert _published(protocol.on_frame(again.conn_id, trade("AAAUSDT", 1008), 0)) == [
        ("trade", 1008)
    ]


def test_after_a_failed_replacement_the_old_connection_can_be_replaced_once_closed() -> None:
    protocol, old, new = _rotating()
    assert protocol.on_disconnect(new, 0) == [], "forgotten: the old one keeps the streams"
    out = protocol.on_disconnect(old, 0)
    assert "Event:GAP" in kinds(out), "then it closed before any replacement: a loss"
    again = protocol.plan_rotation(old)  # the old one is no longer retiring: still known
    assert again.streams == protocol.plan_rotation(again.conn_id).streams
