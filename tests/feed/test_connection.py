"""One websocket connection against a real loopback server: stamps, pacing, readiness."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from consolidator.feed.connection import ConnectError, FeedConnection
from consolidator.venues.base import ConnectionPlan, ControlPacer

SUBSCRIBE = b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'
MARKET = b'{"stream":"btcusdt@trade","data":{}}'


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    head = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    if n < 126:
        return head + bytes((n,)) + payload
    return head + bytes((126,)) + n.to_bytes(2, "big") + payload


def _plan(frames: tuple[bytes, ...] = (SUBSCRIBE,)) -> ConnectionPlan:
    return ConnectionPlan(1, "/stream", ("btcusdt@trade",), frames)


Handler = Callable[[ServerConnection], Awaitable[None]]


async def _with_server(
    handler: Handler,
    client: Callable[[str], Awaitable[Any]],
    compression: str | None = None,
) -> Any:
    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        return await asyncio.wait_for(client(f"ws://127.0.0.1:{port}"), 10)


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _open(url: str, sink: Callable[[int, bytes, int], None], **kwargs: Any) -> FeedConnection:
    pacer = kwargs.pop("pacer", ControlPacer(rate_per_s=50))
    frames = kwargs.pop("frames", (SUBSCRIBE,))
    conn = FeedConnection(_plan(frames), url, sink, pacer, **kwargs)
    await conn.open()
    return conn


def test_messages_are_stamped_when_their_bytes_arrive() -> None:
    """Two messages in one TCP chunk carry the chunk's arrival time, however long the first
    takes to process."""
    received: list[tuple[bytes, int, int]] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"n":1}') + _frame(b'{"n":2}'))
        await done.wait()

    def sink(conn_id: int, message: bytes, ts: int) -> None:
        if message.startswith(b'{"n"'):
            if not received:
                time.sleep(0.1)  # a slow first message must not delay the second one's stamp
            received.append((message, ts, time.time_ns()))
            if len(received) == 2:
                done.set()

    async def client(url: str) -> None:
        before = time.time_ns()
        conn = await _open(url, sink)
        await done.wait()
        await conn.close()
        assert [m for m, _, _ in received] == [b'{"n":1}', b'{"n":2}']
        (_, ts1, _), (_, ts2, seen2) = received
        assert before < ts1 == ts2
        assert seen2 - ts2 >= 100_000_000

    _run(_with_server(handler, client))


def test_fragmented_message_is_stamped_at_its_last_fragment() -> None:
    sent_last: list[int] = []
    done = asyncio.Event()
    got: list[tuple[bytes, int]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(_frame(b'{"part":', fin=False))
        await asyncio.sleep(0.2)
        sent_last.append(time.time_ns())
        ws.transport.write(_frame(b'"one"}', opcode=0x0))
        await done.wait()

    def sink(conn_id: int, message: bytes, ts: int) -> None:
        got.append((message, ts))
        done.set()

    async def client(url: str) -> None:
        conn = await _open(url, sink, frames=(b'{"method":"LIST_SUBSCRIPTIONS","id":1}',))
        await done.wait()
        await conn.close()

    _run(_with_server(handler, client))
    assert got == [(b'{"part":"one"}', got[0][1])]
    assert got[0][1] >= sent_last[0]


def test_control_frames_are_paced_and_sent_as_text() -> None:
    arrivals: list[tuple[float, object]] = []
    frames = tuple(b'{"method":"SUBSCRIBE","params":[],"id":%d}' % i for i in range(1, 6))

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            arrivals.append((time.monotonic(), message))
            await ws.send(b'{"result":null,"id":0}', text=True)

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None, pacer=ControlPacer(rate_per_s=20), frames=frames)
        conn.send_control(b'{"method":"UNSUBSCRIBE","params":[],"id":6}')
        while len(arrivals) < 6:
            await asyncio.sleep(0.01)
        await conn.close()

    _run(_with_server(handler, client))
    assert all(isinstance(m, str) for _, m in arrivals)
    assert [m for _, m in arrivals][:5] == [f.decode() for f in frames]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.04, gaps


def test_ready_needs_the_replies_and_a_market_message() -> None:
    states: list[bool] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET, text=True)
        await asyncio.sleep(0.1)
        await ws.send(b'{"result":null,"id":1}', text=True)
        await asyncio.sleep(0.1)
        await ws.send(MARKET, text=True)
        await ws.wait_closed()

    async def client(url: str) -> None:
        messages: list[bytes] = []
        conn = await _open(url, lambda _c, m, _t: messages.append(m))
        while len(messages) < 1:
            await asyncio.sleep(0.01)
        states.append(conn.ready.is_set())
        await asyncio.wait_for(conn.ready.wait(), 5)
        states.append(conn.ready.is_set())
        while len(messages) < 3:
            await asyncio.sleep(0.01)
        await conn.close()
        assert messages == [MARKET, b'{"result":null,"id":1}', MARKET]

    _run(_with_server(handler, client))
    assert states == [False, True]


def test_compression_is_negotiated_when_configured() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(MARKET * 50, text=True)
        await ws.wait_closed()

    async def client(url: str) -> None:
        got: list[bytes] = []
        conn = await _open(url, lambda _c, m, _t: got.append(m), compression=True)
        while not got:
            await asyncio.sleep(0.01)
        assert conn.ws is not None
        assert conn.ws.protocol.extensions
        assert got == [MARKET * 50]
        assert conn.rx_bytes < len(MARKET * 50)
        await conn.close()

    _run(_with_server(handler, client, compression="deflate"))


def test_idle_time_and_ping() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.wait_closed()

    async def client(url: str) -> None:
        conn = await _open(url, lambda *_: None)
        await asyncio.sleep(0.3)
        assert conn.idle_s(time.monotonic()) >= 0.25
        await conn.ping()
        await asyncio.sleep(0.1)
        assert conn.idle_s(time.monotonic()) < 0.15
        await conn.close()
        assert not conn.is_open

    _run(_with_server(handler, client))


def test_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
        conn = FeedConnection(
            _plan(), f"ws://127.0.0.1:{port}", lambda *_: None, ControlPacer(rate_per_s=5)
        )
        with pytest.raises(ConnectError):
            await conn.open()

    _run(main())
