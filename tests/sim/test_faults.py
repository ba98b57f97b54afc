"""Every injectable fault is observable by a client and counted in /sim/stats."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from consolidator.sim.config import SimConfig, Venue
from consolidator.sim.faults import parse_fault
from consolidator.sim.server import running_sim
from tests.wait import async_wait_until

from .helpers import books_for, checkpoint, consume_depth, control, get_json, run, unwrap


def _cfg(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {"symbols": ("BTCUSDT", "ETHUSDT"), "rate": 4000, "seed": 9}
    base.update(overrides)
    return SimConfig(**base)


async def _applied(rest_url: str) -> dict[str, int]:
    stats = await get_json(f"{rest_url}/sim/stats")
    applied: dict[str, int] = stats["faults"]["applied"]
    return applied


async def _frames(ws: ClientConnection, n: int) -> list[str | bytes]:
    return [await asyncio.wait_for(ws.recv(), 5) for _ in range(n)]


async def _drain(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5)


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_drop_depth_gap_then_resync(venue: Venue) -> None:
    usdm = venue is Venue.USDM

    async def scenario() -> None:
        async with running_sim(_cfg(venue=venue)) as sim:
            books = books_for(sim, ["BTCUSDT", "ETHUSDT"], usdm)
            route = "/public" if usdm else ""
            url = f"{sim.ws_url}{route}/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
            async with connect(url) as ws:
                reader = asyncio.create_task(consume_depth(ws, books))
                # Armed once both books are synced (armed with the simulator, 0.5 s in, the drop
                # could come before a slow client had a book to see the gap in).
                await async_wait_until(
                    lambda: all(b.syncs >= 1 for b in books.values()), what="both books synced"
                )
                await control(sim.rest_url, action="fault", spec="drop-depth:BTCUSDT,after=0.5")
                await async_wait_until(  # the drop seen as a gap, and BTCUSDT synced again
                    lambda: books["BTCUSDT"].syncs >= 2, what="the gap and the resync"
                )
                await checkpoint(sim, books)
                reader.cancel()
            assert (books["BTCUSDT"].gaps, books["BTCUSDT"].syncs) == (1, 2)
            assert (books["ETHUSDT"].gaps, books["ETHUSDT"].syncs) == (0, 1)
            assert await _applied(sim.rest_url) == {"drop-depth": 1}

    run(scenario())


def test_duplicate_and_reorder() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            async with connect(f"{sim.ws_url}/ws/btcusdt@trade") as ws:
                await _frames(ws, 5)
                await control(sim.rest_url, action="fault", spec="duplicate:BTCUSDT")
                ids = [json.loads(f)["t"] for f in await _frames(ws, 150)]
                assert sum(a == b for a, b in itertools.pairwise(ids)) == 1
                await control(sim.rest_url, action="fault", spec="reorder,count=2")
                ids = [json.loads(f)["t"] for f in await _frames(ws, 300)]
                assert sum(a > b for a, b in itertools.pairwise(ids)) == 2
                assert sorted(ids) == list(range(min(ids), min(ids) + len(ids)))
            assert await _applied(sim.rest_url) == {"duplicate": 1, "reorder": 2}

    run(scenario())


def test_malformed_variants() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            async with connect(f"{sim.ws_url}/stream?streams=btcusdt@bookTicker") as ws:
                await _frames(ws, 3)
                await control(sim.rest_url, action="fault", spec="malformed,count=3")
                bad_json = wrong_types = unknown = 0
                for raw in await _frames(ws, 200):
                    try:
                        _, data = unwrap(raw)
                    except json.JSONDecodeError:
                        bad_json += 1
                        continue
                    if data.get("e") == "simMysteryEvent":
                        unknown += 1
                    elif not isinstance(data.get("s"), str):
                        wrong_types += 1
                assert (bad_json, wrong_types, unknown) == (1, 1, 1)
            assert await _applied(sim.rest_url) == {"malformed": 3}

    run(scenario())


def test_stall_stops_data_and_pongs() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            async with connect(f"{sim.ws_url}/ws/btcusdt@bookTicker", ping_interval=None) as ws:
                await _frames(ws, 3)
                # Long enough that what follows happens inside it even on a loaded machine.
                await control(sim.rest_url, action="fault", spec="stall,duration=4.0")

                async def stalled() -> bool:
                    stats = await get_json(f"{sim.rest_url}/sim/stats")
                    return any(s["stalled"] for s in stats["connections"]["sessions"])

                await async_wait_until(stalled, what="the connection to stall")
                while True:  # what was sent before the stall
                    try:
                        await asyncio.wait_for(ws.recv(), 0.3)
                    except TimeoutError:
                        break
                pong = await ws.ping()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pong), 0.4)
                await asyncio.wait_for(pong, 30)  # the stall ends by itself
                assert json.loads(await asyncio.wait_for(ws.recv(), 30))["s"] == "BTCUSDT"
            assert await _applied(sim.rest_url) == {"stall": 1}

    run(scenario())


def test_reset_is_abrupt() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            ws = await connect(f"{sim.ws_url}/ws/btcusdt@bookTicker")
            await _frames(ws, 3)
            await control(sim.rest_url, action="fault", spec="reset")
            with pytest.raises(ConnectionClosedError) as caught:
                await _drain(ws)
            assert caught.value.rcvd is None
            assert isinstance(caught.value.__cause__, ConnectionResetError)

            async def closed() -> dict[str, int]:
                stats = await get_json(f"{sim.rest_url}/sim/stats")
                counts: dict[str, int] = stats["connections"]["closed"]
                return counts

            async def counted() -> bool:  # once the server has seen its side of it go
                return "reset fault" in await closed()

            await async_wait_until(counted, what="the reset connection to be counted")
            assert await _applied(sim.rest_url) == {"reset": 1}
            assert (await closed())["reset fault"] == 1

    run(scenario())


def test_connection_fault_after_delay_from_cli_spec() -> None:
    async def scenario() -> None:
        config = _cfg(faults=(parse_fault("reset,after=0.3,count=2"),))
        async with running_sim(config) as sim:
            loop = asyncio.get_running_loop()
            survived = []
            for _ in range(3):
                # Before connecting: the server (this loop's clock too) counts "after" from its
                # side's open, which a loaded loop may reach well before connect() returns.
                start = loop.time()
                ws = await connect(f"{sim.ws_url}/ws/btcusdt@bookTicker")
                connected = loop.time()
                try:
                    while loop.time() - connected < 3.0:  # the reset is due at 0.3 s: generous
                        await asyncio.wait_for(ws.recv(), 10)
                    await ws.close()
                    survived.append(True)
                except ConnectionClosedError:
                    survived.append(False)
                    assert loop.time() - start >= 0.29
            assert survived == [False, False, True]
            assert await _applied(sim.rest_url) == {"reset": 2}

    run(scenario())
