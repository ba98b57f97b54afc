"""WebSocket behaviour: control messages, wrapping, routing, limits, pings, lifetime."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consolidator.sim.config import SimConfig, Venue
from consolidator.sim.server import running_sim
from tests.wait import async_wait_until

from .helpers import RawWs, control, get_json, run, unwrap


def _cfg(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {"symbols": ("BTCUSDT", "ETHUSDT"), "rate": 3000, "seed": 4}
    base.update(overrides)
    return SimConfig(**base)


def test_subscribe_list_unsubscribe_and_properties() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim, connect(f"{sim.ws_url}/ws") as ws:
            await ws.send(
                json.dumps(
                    {
                        "method": "SUBSCRIBE",
                        "params": ["btcusdt@trade", "ethusdt@bookTicker"],
                        "id": 1,
                    }
                )
            )
            replies: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []

            async def until_reply(rid: int) -> dict[str, Any]:
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if "id" in message:
                        replies.append(message)
                        if message["id"] == rid:
                            return message
                    else:
                        events.append(message)

            assert await until_reply(1) == {"result": None, "id": 1}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            assert await until_reply(2) == {
                "result": ["btcusdt@trade", "ethusdt@bookTicker"],
                "id": 2,
            }
            await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 3}))
            assert await until_reply(3) == {"result": False, "id": 3}
            await asyncio.sleep(0.3)
            await ws.send(
                json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 4})
            )
            assert await until_reply(4) == {"result": None, "id": 4}
            events.clear()
            await ws.send(
                json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5})
            )
            assert await until_reply(5) == {"result": None, "id": 5}
            wrapped: list[dict[str, Any]] = []
            while len(wrapped) < 20:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if "stream" in message:
                    wrapped.append(message)
            assert {m["stream"] for m in wrapped} == {"ethusdt@bookTicker"}
            assert all(set(m) == {"stream", "data"} for m in wrapped)
            assert all(e.get("s") == "ETHUSDT" for e in events)

    run(scenario())


def test_combined_stream_wrapping_and_unwrap_property() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            url = f"{sim.ws_url}/stream?streams=btcusdt@bookTicker/ethusdt@trade"
            async with connect(url) as ws:
                streams = set()
                for _ in range(50):
                    stream, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                    assert stream is not None
                    assert data["s"] == stream.split("@")[0].upper()
                    streams.add(stream)
                assert streams == {"btcusdt@bookTicker", "ethusdt@trade"}
                await ws.send(
                    json.dumps({"method": "SET_PROPERTY", "params": ["combined", False], "id": 9})
                )
                seen_reply = False
                raw_events = 0
                while raw_events < 10:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if message.get("id") == 9:
                        seen_reply = True
                    elif seen_reply:
                        assert "stream" not in message
                        raw_events += 1

    run(scenario())


def test_usdm_routed_paths() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(venue=Venue.USDM)) as sim:
            async with connect(
                f"{sim.ws_url}/market/ws/btcusdt@depth@100ms/btcusdt@aggTrade"
            ) as ws:
                for _ in range(30):
                    _, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                    assert data["e"] == "aggTrade"
            async with connect(
                f"{sim.ws_url}/public/stream?streams=btcusdt@aggTrade/btcusdt@depth"
            ) as ws:
                kinds = set()
                for _ in range(4):
                    stream, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                    assert stream == "btcusdt@depth"
                    kinds.add(data["e"])
                assert kinds == {"depthUpdate"}
            async with connect(f"{sim.ws_url}/market/ws") as ws:
                await ws.send(
                    json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1})
                )
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": None, "id": 1}
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.4)
            with pytest.raises(InvalidStatus):
                async with connect(f"{sim.ws_url}/private/ws"):
                    pass

    run(scenario())


def test_max_streams_error_reply() -> None:
    async def scenario() -> None:
        async with (
            running_sim(_cfg(max_streams=3)) as sim,
            connect(f"{sim.ws_url}/ws/btcusdt@trade") as ws,
        ):
            params = ["a@trade", "b@trade", "c@trade"]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": params, "id": 7}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if "id" in reply:
                    break
            assert reply["code"] == 2
            assert reply["id"] == 7
            assert "too many streams" in reply["msg"]
            with pytest.raises(InvalidStatus):
                async with connect(f"{sim.ws_url}/stream?streams=a@trade/b@trade/c@trade/d@trade"):
                    pass

    run(scenario())


def test_incoming_message_limit_counts_pings() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(rate=10)) as sim:
            ws = await RawWs.connect(f"{sim.ws_url}/ws")
            for i in range(5):
                ws.send_frame(0x9, str(i).encode())
            ws.send_text(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            opcodes = []
            while True:
                opcode, payload = await asyncio.wait_for(ws.recv_frame(), 5)
                opcodes.append(opcode)
                if opcode == 0x8:
                    assert int.from_bytes(payload[:2], "big") == 1008
                    break
            assert opcodes.count(0xA) == 5
            assert 0x1 not in opcodes
            await ws.close()

            async def closed() -> dict[str, int]:
                stats = await get_json(f"{sim.rest_url}/sim/stats")
                counts: dict[str, int] = stats["connections"]["closed"]
                return counts

            async def counted() -> bool:  # the server counts it as its side of the close ends
                return "message rate limit" in await closed()

            await async_wait_until(counted, what="the closed connection to be counted")
            assert (await closed())["message rate limit"] == 1

    run(scenario())


def test_ping_and_pong_timeout() -> None:
    async def scenario() -> None:
        # Seconds, not tenths: the bounds below keep their ratios with room for a slow loop.
        config = _cfg(rate=10, ping_interval=0.6, pong_timeout=1.5)
        async with running_sim(config) as sim:
            healthy = await connect(f"{sim.ws_url}/ws/btcusdt@trade")
            loop = asyncio.get_running_loop()
            start = loop.time()  # before the server's side opens: its timers count from there
            raw = await RawWs.connect(f"{sim.ws_url}/ws")
            pings: list[float] = []
            raw.send_frame(0xA, b"")
            while True:
                opcode, payload = await asyncio.wait_for(raw.recv_frame(), 30)
                if opcode == 0x9:
                    pings.append(loop.time() - start)
                    assert payload
                if opcode == 0x8:
                    assert int.from_bytes(payload[:2], "big") == 1008
                    break
            elapsed = loop.time() - start
            assert 1.8 <= elapsed < 4.5
            assert len(pings) >= 2
            await raw.close()
            assert healthy.state.name == "OPEN"
            await healthy.close()

            async def closed() -> dict[str, int]:
                stats = await get_json(f"{sim.rest_url}/sim/stats")
                counts: dict[str, int] = stats["connections"]["closed"]
                return counts

            async def counted() -> bool:
                return "pong timeout" in await closed()

            await async_wait_until(counted, what="the timed-out connection to be counted")
            assert (await closed())["pong timeout"] == 1

    run(scenario())


@pytest.mark.parametrize("combined", [False, True])
def test_max_conn_age_with_shutdown_notice(combined: bool) -> None:
    async def scenario() -> None:
        config = _cfg(rate=200, max_conn_age=3.0, shutdown_notice=1.2)  # room for a slow loop
        async with running_sim(config) as sim:
            path = "/stream?streams=btcusdt@trade" if combined else "/ws/btcusdt@trade"
            loop = asyncio.get_running_loop()
            start = loop.time()
            notice_at = None
            async with connect(sim.ws_url + path) as ws:
                async for raw in ws:
                    stream, data = unwrap(raw)
                    if data.get("e") == "serverShutdown":
                        notice_at = loop.time() - start
                        assert stream == ("!serverShutdown" if combined else None)
                        assert set(data) == {"e", "E"}
                closed_at = loop.time() - start
                assert ws.close_code == 1001
            assert notice_at is not None
            assert 1.5 <= notice_at < 2.7
            assert 2.7 <= closed_at < 4.8

    run(scenario())


def test_control_shutdown_notifies_all() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(rate=10)) as sim:
            a = await connect(f"{sim.ws_url}/ws")
            b = await connect(f"{sim.ws_url}/stream?streams=btcusdt@trade")
            reply = await control(sim.rest_url, action="shutdown", close_after=0.2)
            assert reply["notified"] == 2
            assert json.loads(await a.recv())["e"] == "serverShutdown"
            assert json.loads(await b.recv())["stream"] == "!serverShutdown"
            for ws in (a, b):
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)

    run(scenario())


def test_slow_consumer_is_dropped() -> None:
    async def scenario() -> None:
        config = _cfg(rate=20000, max_send_buffer=256 * 1024)
        async with running_sim(config) as sim:
            streams = "btcusdt@trade/btcusdt@bookTicker/ethusdt@trade/ethusdt@bookTicker"
            ws = await RawWs.connect(f"{sim.ws_url}/stream?streams={streams}")
            ws.writer.transport.pause_reading()

            async def dropped() -> bool:
                stats = await get_json(f"{sim.rest_url}/sim/stats")
                return bool(stats["connections"]["closed"].get("slow consumer"))

            await async_wait_until(dropped, what="the slow consumer to be dropped", interval=0.1)
            await ws.close()

    run(scenario())


@pytest.mark.parametrize(
    ("venue", "route", "streams"),
    [
        (Venue.SPOT, "", {"btcusdt@depth@100ms": 100, "btcusdt@depth": 1000}),
        (
            Venue.USDM,
            "/public",
            {
                "btcusdt@depth@0ms": 0,
                "btcusdt@depth@100ms": 100,
                "btcusdt@depth": 250,
                "btcusdt@depth@500ms": 500,
            },
        ),
    ],
)
def test_every_depth_speed_the_writer_subscribes_is_served_at_its_interval(
    venue: Venue, route: str, streams: dict[str, int]
) -> None:
    """The writer's ``depth_speed`` stream names (tests/venues checks the writer side): each
    acknowledged and served, one diff per interval ("0ms": as the book changes)."""
    times: dict[str, list[int]] = {name: [] for name in streams}

    async def scenario() -> None:
        async with (
            running_sim(_cfg(venue=venue, symbols=("BTCUSDT",), rate=2000)) as sim,
            connect(f"{sim.ws_url}{route}/stream") as ws,
        ):
            request = {"method": "SUBSCRIBE", "params": list(streams), "id": 1}
            await ws.send(json.dumps(request))
            acknowledged = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline and (
                not acknowledged or min(len(t) for t in times.values()) < 4
            ):
                stream, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                if stream is None:
                    assert data == {"result": None, "id": 1}
                    acknowledged = True
                elif stream in times:
                    assert data["e"] == "depthUpdate"
                    times[stream].append(data["E"])

    run(scenario())
    for name, interval_ms in streams.items():
        spacing = sorted(b - a for a, b in zip(times[name][1:], times[name][2:], strict=False))
        median = spacing[len(spacing) // 2]
        if interval_ms == 0:
            assert median < 50, (name, spacing)
        else:
            assert 0.6 * interval_ms <= median <= 1.6 * interval_ms, (name, spacing)
