"""The HTTP client against a real loopback server; the weight budget; back-off; exchangeInfo."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from consolidator.feed.backoff import Backoff
from consolidator.feed.http import HttpClient, HttpError
from consolidator.feed.rest import WINDOW_SLACK_S, WeightBudget, parse_exchange_info

Respond = Callable[[bytes], bytes | None]


async def _serve(respond: Respond, client: Callable[[str, list[int]], Awaitable[Any]]) -> Any:
    """A raw HTTP server: ``respond(request_head)`` is written back (None: close at once)."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                answer = respond(head)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        return await asyncio.wait_for(client(f"http://127.0.0.1:{port}", connections), 10)


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_keep_alive_content_length_and_query() -> None:
    heads: list[bytes] = []

    def respond(head: bytes) -> bytes:
        heads.append(head)
        return _ok(b'{"ok":1}', "X-MBX-USED-WEIGHT-1M: 7\r\n")

    async def client(url: str, connections: list[int]) -> None:
        http = HttpClient(url + "/api")
        try:
            first = await http.get("/v3/depth", {"symbol": "BTCUSDT", "limit": 5})
            second = await http.get("/v3/ping")
        finally:
            await http.close()
        assert first.status == second.status == 200
        assert first.body == b'{"ok":1}'
        assert first.headers["x-mbx-used-weight-1m"] == "7"
        assert first.ts_recv > 0
        assert len(connections) == 1

    asyncio.run(_serve(respond, client))
    assert heads[0].startswith(b"GET /api/v3/depth?symbol=BTCUSDT&limit=5 HTTP/1.1\r\n")
    assert b"Host: 127.0.0.1:" in heads[0]


def test_chunked_and_close_delimited_bodies() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: 1\r\n\r\n',
            b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil-the-end",
        ]
    )

    async def client(url: str, connections: list[int]) -> None:
        http = HttpClient(url)
        try:
            chunked = await http.get("/a")
            delimited = await http.get("/b")
        finally:
            await http.close()
        assert chunked.body == b'{"a":1}'
        assert delimited.body == b"until-the-end"

    asyncio.run(_serve(lambda _: next(answers), client))


def test_a_closed_kept_alive_connection_is_retried_once() -> None:
    count = [0]

    def respond(head: bytes) -> bytes | None:
        count[0] += 1
        return None if count[0] == 2 else _ok(b"{}")

    async def client(url: str, connections: list[int]) -> None:
        http = HttpClient(url)
        try:
            await http.get("/one")
            second = await http.get("/two")
        finally:
            await http.close()
        assert second.status == 200
        assert len(connections) == 2

    asyncio.run(_serve(respond, client))


def test_timeout_and_garbage_are_http_errors() -> None:
    async def client(url: str, connections: list[int]) -> None:
        http = HttpClient(url, timeout_s=0.2)
        try:
            with pytest.raises(HttpError, match="no response"):
                await http.get("/slow")
        finally:
            await http.close()

    def slow(head: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"

    asyncio.run(_serve(slow, client))

    async def garbage_client(url: str, connections: list[int]) -> None:
        http = HttpClient(url)
        try:
            with pytest.raises(HttpError, match="not an HTTP"):
                await http.get("/x")
        finally:
            await http.close()

    asyncio.run(_serve(lambda _: b"SSH-2.0-OpenSSH\r\n\r\n", garbage_client))


def test_unreachable_server_is_an_http_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        http = HttpClient(f"http://127.0.0.1:{port}")
        with pytest.raises(HttpError):
            await http.get("/")
        await http.close()

    asyncio.run(main())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_budget_charges_within_the_window_and_waits_for_the_next() -> None:
    clock = Clock(600.0)
    budget = WeightBudget(100, share=0.9, clock=clock)
    assert [budget.delay(20) for _ in range(4)] == [0.0] * 4  # 80 of 90
    wait = budget.delay(20)
    assert wait == pytest.approx(60 + WINDOW_SLACK_S)
    clock.now += 30
    assert budget.delay(20) == pytest.approx(30 + WINDOW_SLACK_S)
    clock.now = 660.3
    assert budget.delay(20) == 0.0


def test_budget_follows_the_venue_header_and_limits() -> None:
    clock = Clock(600.0)
    budget = WeightBudget(6000, clock=clock)
    budget.set_limits([("1M", 60.0, 100), ("10S", 10.0, 50)])
    budget.observe({"x-mbx-used-weight-1m": "85", "content-type": "x"})
    assert budget.delay(6) > 0  # 85 + 6 above 90 % of 100
    clock.now = 660.0
    assert budget.delay(40) == 0.0
    assert budget.delay(10) == pytest.approx(10 + WINDOW_SLACK_S)  # the 10 s window is full
    assert budget.limits == [("1M", 100), ("10S", 50)]


def test_budget_block_then_fresh_count() -> None:
    clock = Clock(600.0)
    budget = WeightBudget(100, clock=clock)
    budget.observe({"x-mbx-used-weight-1m": "105"})
    budget.block(3.0)
    assert budget.delay(1) == pytest.approx(3.0)
    clock.now += 3.0
    assert budget.delay(1) == 0.0


def test_backoff_is_capped_jittered_and_reset_when_stable() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.5, 8.0, stable_s=60.0, rng=rng.random)
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.5, 1, 2, 4, 8, 8, 8, 8]
    backoff.connected(100.0)
    backoff.disconnected(130.0)
    assert backoff.ceiling() == 8
    backoff.connected(200.0)
    backoff.disconnected(260.0)
    assert backoff.ceiling() == 0.5


def test_exchange_info_trading_symbols_and_weight_limits() -> None:
    body = orjson.dumps(
        {
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "SECOND",
                    "intervalNum": 0,
                    "limit": 1,
                },
            ],
            "symbols": [
                {"symbol": "BTCUSDT", "status": "TRADING"},
                {"symbol": "OLDUSDT", "status": "BREAK"},
                {"symbol": 7, "status": "TRADING"},
                "junk",
                {"symbol": "ETHUSDT", "status": "TRADING"},
            ],
        }
    )
    info = parse_exchange_info(body)
    assert info.trading == ["BTCUSDT", "ETHUSDT"]
    assert info.weight_limits == [("1M", 60.0, 6000)]
    with pytest.raises(ValueError, match="not JSON"):
        parse_exchange_info(b"<html>")
    with pytest.raises(ValueError, match="no symbols"):
        parse_exchange_info(b"{}")
