"""Synthetic market: reference clients rebuild books equal to the ground truth; payloads."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from consolidator.sim.config import SimConfig, Venue
from consolidator.sim.server import running_sim

from .helpers import (
    books_for,
    checkpoint,
    consume_depth,
    control,
    get_json,
    rest_prefix,
    run,
    unwrap,
)

SPOT_NUMBER = re.compile(r"^\d+\.\d{8}$")


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_reference_client_rebuildsbooks_for(venue: Venue) -> None:
    usdm = venue is Venue.USDM
    suffixes = (
        ["@depth@100ms", "@depth", "@depth@500ms", "@depth@0ms"]
        if usdm
        else [
            "@depth@100ms",
            "@depth@100ms",
            "@depth",
            "@depth@100ms",
        ]
    )

    async def scenario() -> None:
        config = SimConfig(venue=venue, symbol_count=4, rate=20000, seed=11)
        async with running_sim(config) as sim:
            assert sim.market is not None
            symbols = sim.market.symbol_names()
            streams = "/".join(f"{s.lower()}{x}" for s, x in zip(symbols, suffixes, strict=True))
            books = books_for(sim, symbols, usdm)
            route = "/public" if usdm else ""
            async with connect(f"{sim.ws_url}{route}/stream?streams={streams}") as ws:
                reader = asyncio.create_task(consume_depth(ws, books))
                for _ in range(3):
                    await asyncio.sleep(0.6)
                    await checkpoint(sim, books)
                reader.cancel()
            assert all(b.gaps == 0 and b.syncs == 1 and b.applied > 2 for b in books.values())

    run(scenario())


def test_trades_match_truth_log(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"

    async def scenario() -> None:
        config = SimConfig(symbol_count=3, rate=6000, seed=5, truth_log=truth_path)
        async with running_sim(config) as sim:
            assert sim.market is not None
            symbols = sim.market.symbol_names()
            streams = "/".join(f"{s.lower()}@{k}" for s in symbols for k in ("trade", "aggTrade"))
            trades: list[dict[str, Any]] = []
            aggs: list[dict[str, Any]] = []
            async with connect(f"{sim.ws_url}/stream?streams={streams}") as ws:
                subscribed: set[str] = set()  # every symbol's trades flow to us before the start
                while subscribed != set(symbols):
                    _, data = unwrap(await asyncio.wait_for(ws.recv(), 30))
                    if data["e"] == "trade":
                        trades.append(data)
                        subscribed.add(data["s"])
                    else:
                        aggs.append(data)
                start = await control(sim.rest_url, action="pause")
                await control(sim.rest_url, action="resume")
                await asyncio.sleep(0.6)
                end = await control(sim.rest_url, action="pause")
                total = sum(
                    end["symbols"][s]["last_trade_id"] - start["symbols"][s]["last_trade_id"]
                    for s in symbols
                )
                while len([t for t in trades if _after(t, start)]) < total:
                    _, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                    (trades if data["e"] == "trade" else aggs).append(data)
            lines = [json.loads(x) for x in truth_path.read_text().splitlines()]
            by_id = {(x["symbol"], x["trade_id"]): x for x in lines}
            for trade in trades:
                logged = by_id[(trade["s"], trade["t"])]
                assert (logged["price"], logged["qty"]) == (trade["p"], trade["q"])
                assert trade["m"] == (logged["side"] == "sell")
                assert SPOT_NUMBER.match(trade["p"])
                assert SPOT_NUMBER.match(trade["q"])
                assert set(trade) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
            for symbol in symbols:
                ids = [t["t"] for t in trades if t["s"] == symbol]
                assert ids == list(range(ids[0], ids[0] + len(ids)))
                covered = [i for a in aggs if a["s"] == symbol for i in range(a["f"], a["l"] + 1)]
                assert covered == sorted(covered)
                assert len(set(covered)) == len(covered)

    run(scenario())


def _after(trade: dict[str, Any], start: dict[str, Any]) -> bool:
    return bool(trade["t"] > start["symbols"][trade["s"]]["last_trade_id"])


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_payload_shapes(venue: Venue) -> None:
    usdm = venue is Venue.USDM
    expected = {
        "bookTicker": {"e", "u", "s", "b", "B", "a", "A", "T", "E"}
        if usdm
        else {
            "u",
            "s",
            "b",
            "B",
            "a",
            "A",
        },
        "depthUpdate": {"e", "E", "T", "s", "U", "u", "pu", "b", "a"}
        if usdm
        else {
            "e",
            "E",
            "s",
            "U",
            "u",
            "b",
            "a",
        },
        "aggTrade": {"e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m"}
        if usdm
        else {
            "e",
            "E",
            "s",
            "a",
            "p",
            "q",
            "f",
            "l",
            "T",
            "m",
            "M",
        },
    }

    async def scenario() -> None:
        config = SimConfig(venue=venue, symbols=("BTCUSDT",), rate=3000, seed=2)
        async with running_sim(config) as sim:
            seen: dict[str, dict[str, Any]] = {}
            if usdm:
                urls = [
                    f"{sim.ws_url}/public/ws/btcusdt@bookTicker/btcusdt@depth@100ms",
                    f"{sim.ws_url}/market/ws/btcusdt@aggTrade",
                ]
            else:
                urls = [f"{sim.ws_url}/ws/btcusdt@bookTicker/btcusdt@depth@100ms/btcusdt@aggTrade"]
            for url in urls:
                async with connect(url) as ws:
                    for _ in range(400):
                        stream, data = unwrap(await asyncio.wait_for(ws.recv(), 5))
                        assert stream is None
                        seen.setdefault(data.get("e", "bookTicker"), data)
                        if len(seen) == 3 or (usdm and "/public" in url and len(seen) == 2):
                            break
            assert set(seen) == set(expected)
            for kind, fields in expected.items():
                assert set(seen[kind]) == fields, kind
            book = seen["bookTicker"]
            decimals = 2 if usdm else 8
            assert re.match(rf"^\d+\.\d{{{decimals}}}$", book["b"])
            assert int(book["b"].replace(".", "")) < int(book["a"].replace(".", ""))
            depth = await get_json(
                f"{sim.rest_url}{rest_prefix(venue)}/depth?symbol=BTCUSDT&limit=5"
            )
            assert ({"E", "T"} <= set(depth)) == usdm
            assert len(depth["bids"]) == len(depth["asks"]) == 5

    run(scenario())
