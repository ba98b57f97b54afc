"""Replay mode: byte-exact recorded frames, recorded REST bodies, snapshot/diff sync."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from consolidator.sim.config import Mode, SimConfig, Venue
from consolidator.sim.server import running_sim

from ..recorded import RECORDED
from .helpers import RefBook, get_json, http, run, unwrap


def _recorded(prefix: str) -> tuple[list[str], list[tuple[float, str, bytes]]]:
    """Stream names of the recording URL and (time, stream, body) of each received frame."""
    lines = (RECORDED / f"{prefix}.ws.1.0").read_bytes().split(b"\n")
    url = lines[0].split(b" <-> ")[0].decode()
    streams = url.split("streams=", 1)[1].split("/")
    frames = []
    for line in lines[1:]:
        if not line.strip():
            continue
        head, _, body = line.partition(b": ")
        stream = body.split(b'"', 4)[3].decode()
        frames.append((float(head), stream, body))
    return streams, frames


def _data(body: bytes) -> bytes:
    return body[body.index(b'"data":') + len(b'"data":') : -1]


def _cfg(venue: Venue, speed: float = float("inf")) -> SimConfig:
    return SimConfig(venue=venue, mode=Mode.REPLAY, replay_dir=RECORDED, speed=speed)


def _prefix(venue: Venue) -> str:
    return "BINANCE_FUTURES" if venue is Venue.USDM else "BINANCE"


def _http_body(path: Path, needle: str) -> bytes:
    for line in path.read_bytes().split(b"\n"):
        if needle.encode() in line.split(b" -> ")[0]:
            return line.split(b": ", 1)[1]
    raise AssertionError(needle)


def test_spot_combined_frames_are_byte_exact() -> None:
    streams, frames = _recorded("BINANCE")

    async def scenario() -> None:
        async with running_sim(_cfg(Venue.SPOT)) as sim:
            url = f"{sim.ws_url}/stream?streams={'/'.join(streams)}"
            async with connect(url) as ws:
                received = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in frames]
            assert received == [body for _, _, body in frames]
            stats = await get_json(f"{sim.rest_url}/sim/stats")
            assert stats["replay"]["frames_sent"] == dict(Counter(s for _, s, _ in frames))
            assert stats["symbols"]["NKNUSDT"]["sent"]["depth@100ms"] == 150

    run(scenario())


def test_raw_stream_subset_payloads_are_byte_exact() -> None:
    _, frames = _recorded("BINANCE")
    wanted = [_data(b) for _, s, b in frames if s in ("lrcbtc@depth@100ms", "lrcbtc@bookTicker")]

    async def scenario() -> None:
        async with running_sim(_cfg(Venue.SPOT)) as sim:
            async with connect(f"{sim.ws_url}/ws") as ws:
                await ws.send(
                    '{"method":"SUBSCRIBE","params":["lrcbtc@depth@100ms","lrcbtc@bookTicker"],'
                    '"id":1}'
                )
                received = []
                while len(received) < len(wanted):
                    message = await asyncio.wait_for(ws.recv(decode=False), 5)
                    if message != b'{"result":null,"id":1}':
                        received.append(message)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.3)
            assert received == wanted

    run(scenario())


def test_rest_bodies_are_recorded() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(Venue.SPOT)) as sim:
            info = await http("GET", f"{sim.rest_url}/api/v3/exchangeInfo")
            assert info.body == _http_body(RECORDED / "BINANCE.0", "exchangeInfo")
            depth = await http("GET", f"{sim.rest_url}/api/v3/depth?symbol=LRCBTC&limit=1000")
            assert depth.body == _http_body(RECORDED / "BINANCE.http.0.0", "symbol=LRCBTC")
            small = (await http("GET", f"{sim.rest_url}/api/v3/depth?symbol=LRCBTC&limit=5")).json()
            assert len(small["bids"]) == 5
            missing = await http("GET", f"{sim.rest_url}/api/v3/depth?symbol=NOSUCHPAIR")
            assert missing.json()["code"] == -1121

    run(scenario())


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_recorded_snapshots_sync_with_recorded_diffs(venue: Venue) -> None:
    usdm = venue is Venue.USDM
    streams, frames = _recorded(_prefix(venue))
    depth_streams = [s for s in streams if "@depth" in s]
    expected = sum(1 for _, s, _ in frames if s in depth_streams)

    async def scenario() -> None:
        async with running_sim(_cfg(venue)) as sim:
            rest = "/fapi/v1" if usdm else "/api/v3"

            async def fetch(symbol: str) -> dict[str, Any]:
                body: dict[str, Any] = await get_json(
                    f"{sim.rest_url}{rest}/depth?symbol={symbol}&limit=1000"
                )
                return body

            books = {
                s.split("@")[0].upper(): RefBook(s.split("@")[0].upper(), usdm, fetch)
                for s in depth_streams
            }
            route = "/public" if usdm else ""
            async with connect(
                f"{sim.ws_url}{route}/stream?streams={'/'.join(depth_streams)}"
            ) as ws:
                for _ in range(expected):
                    _, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                    await books[data["s"]].on_event(data)
            for symbol, book in books.items():
                assert (book.gaps, book.syncs) == (0, 1), symbol
                assert book.applied > 0, symbol
                assert max(book.bids) < min(book.asks), symbol

    run(scenario())


def test_usdm_routes_recorded_streams() -> None:
    streams, frames = _recorded("BINANCE_FUTURES")
    joined = "/".join(streams)

    async def scenario() -> None:
        async with running_sim(_cfg(Venue.USDM)) as sim:
            for route, kinds in (
                ("/public", {"depth@100ms", "bookTicker"}),
                ("/market", {"aggTrade", "kline_1m"}),
            ):
                want = [b for _, s, b in frames if s.split("@", 1)[1] in kinds]
                async with connect(f"{sim.ws_url}{route}/stream?streams={joined}") as ws:
                    got = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in want]
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.2)
                assert got == want

    run(scenario())


def test_recorded_pace_scaled() -> None:
    _, frames = _recorded("BINANCE")
    span = frames[-1][0] - frames[0][0]
    speed = 25.0

    async def scenario() -> None:
        async with running_sim(_cfg(Venue.SPOT, speed=speed)) as sim:
            loop = asyncio.get_running_loop()
            async with connect(f"{sim.ws_url}/ws/nknusdt@depth@100ms/runeeur@depth@100ms") as ws:
                first = last = 0.0
                wanted = [
                    f for f in frames if f[1] in ("nknusdt@depth@100ms", "runeeur@depth@100ms")
                ]
                for i in range(len(wanted)):
                    await asyncio.wait_for(ws.recv(), 5)
                    last = loop.time()
                    if i == 0:
                        first = last
            expected = (wanted[-1][0] - wanted[0][0]) / speed
            assert expected > 0.5
            assert expected * 0.8 <= last - first <= expected * 1.5 + 0.1
            assert span / speed > 1.0

    run(scenario())
