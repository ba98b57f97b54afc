"""Fast mode: pre-encoded frames whose ids continue across cycle rounds, snapshots that join."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from consolidator.sim.cli import _parser, build_config
from consolidator.sim.config import Mode, SimConfig, Venue
from consolidator.sim.fast import FastMarket, Template
from consolidator.sim.fast_cycle import SPOT_MIX, USDM_MIX, RecordedMix
from consolidator.sim.server import running_sim

from ..recorded import RECORDED
from .helpers import RefBook, books_for, consume_depth, control, get_json, run, wait_for


def _frames(data: bytes) -> list[dict[str, Any]]:
    """Decode concatenated server text frames (unmasked) into their JSON payloads."""
    out = []
    i = 0
    while i < len(data):
        assert data[i] == 0x81, f"not a final text frame at {i}"
        n = data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(data[i : i + 2], "big")
            i += 2
        out.append(orjson.loads(data[i : i + n]))
        i += n
    return out


def _all_streams(market: FastMarket) -> dict[tuple[int, str], list[str]]:
    names: dict[tuple[int, str], list[str]] = {}
    for i, sym in enumerate(market.cycle.symbols):
        low = sym.spec.symbol.lower()
        for kind, name in (("trade", "trade"), ("aggTrade", "aggTrade"),
                           ("bookTicker", "bookTicker"), ("depth", "depth@100ms")):  # fmt: skip
            names[(i, kind)] = [f"{low}@{name}"]
    return names


async def checkpoint(rest_url: str, books: dict[str, RefBook]) -> None:
    """Pause, wait (generously: the client parses in Python) until every reference book reached
    the counter, compare with the truth, resume."""
    paused = await control(rest_url, action="pause")
    for symbol, book in books.items():
        target = paused["symbols"][symbol]["update_id"]
        await wait_for(lambda b=book, t=target: b.local == t, timeout=60)
        truth = await get_json(f"{rest_url}/sim/book?symbol={symbol}")
        assert truth["lastUpdateId"] == target
        assert book.matches(truth), symbol
    await control(rest_url, action="resume")


@pytest.mark.parametrize(("prefix", "mix"), [("BINANCE", SPOT_MIX), ("BINANCE_FUTURES", USDM_MIX)])
def test_mix_constants_are_the_recorded_counts(prefix: str, mix: RecordedMix) -> None:
    kinds: Counter[str] = Counter()
    levels: Counter[int] = Counter()
    for line in (RECORDED / f"{prefix}.ws.1.0").read_bytes().splitlines()[1:]:
        head, sep, body = line.partition(b": ")
        if not sep or b" " in head:
            continue
        message = orjson.loads(body)
        kind = message["stream"].split("@")[1]
        kinds[kind] += 1
        if kind == "depth":
            levels[len(message["data"]["b"]) + len(message["data"]["a"])] += 1
    assert (kinds["aggTrade"], kinds["bookTicker"], kinds["depth"]) == (
        mix.trades,
        mix.tickers,
        mix.depths,
    )
    assert tuple(sorted(levels.items())) == mix.levels


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_ids_continue_across_rounds_and_the_mix_is_the_recorded_one(venue: Venue) -> None:
    usdm = venue is Venue.USDM

    async def scenario() -> None:
        market = FastMarket(SimConfig(venue=venue, symbol_count=5, seed=3))
        template = Template(market.cycle, _all_streams(market), combined=True)
        n = len(market.cycle)
        messages: list[dict[str, Any]] = []
        for rnd in range(3):
            for start in range(0, n, 1000):
                data, frames = template.render(start, min(start + 1000, n), rnd, 1_700_000_000_123)
                decoded = _frames(data)
                assert len(decoded) == frames
                messages.extend(decoded)
        last: dict[tuple[str, str], int] = {}
        kinds: Counter[str] = Counter()
        for message in messages:
            stream, data = message["stream"], message["data"]
            kind = stream.split("@")[1]
            kinds[kind] += 1
            symbol = stream.split("@")[0].upper()
            assert data["s"] == symbol
            if kind == "trade":
                assert data["E"] == data["T"] == 1_700_000_000_123
                if (symbol, "t") in last:
                    assert data["t"] == last[(symbol, "t")] + 1
                last[(symbol, "t")] = data["t"]
            elif kind == "aggTrade":
                assert data["f"] == data["l"]
                if (symbol, "a") in last:
                    assert data["a"] == last[(symbol, "a")] + 1
                last[(symbol, "a")] = data["a"]
            elif kind == "bookTicker":
                if (symbol, "bt") in last:
                    assert data["u"] > last[(symbol, "bt")]
                last[(symbol, "bt")] = data["u"]
            else:
                previous = last.get((symbol, "u"))
                if previous is not None:
                    if usdm:
                        assert data["pu"] == previous
                        assert data["U"] > previous
                    else:
                        assert data["U"] == previous + 1
                assert data["U"] <= data["u"]
                last[(symbol, "u")] = data["u"]
        mix = USDM_MIX if usdm else SPOT_MIX
        total = mix.trades + mix.tickers + mix.depths
        frames = kinds["aggTrade"] + kinds["bookTicker"] + kinds["depth"]
        for kind, recorded in (("aggTrade", mix.trades), ("bookTicker", mix.tickers),
                               ("depth", mix.depths)):  # fmt: skip
            assert abs(kinds[kind] / frames - recorded / total) < 0.02, (kind, kinds)

    run(scenario())


@pytest.mark.parametrize("venue", [Venue.SPOT, Venue.USDM])
def test_reference_client_rebuilds_books_from_snapshots_at_full_speed(venue: Venue) -> None:
    """Snapshots taken while frames stream at the unlimited rate join the diffs, and the books
    built from them equal the truth after several cycle rounds."""
    usdm = venue is Venue.USDM

    async def scenario() -> None:
        config = SimConfig(venue=venue, mode=Mode.FAST, symbol_count=3, rate=float("inf"), seed=7)
        async with running_sim(config) as sim:
            assert sim.fast is not None
            symbols = sim.fast.symbol_names()
            streams = "/".join(
                f"{s.lower()}@{k}" for s in symbols for k in ("depth@100ms", "bookTicker")
            )
            books = books_for(sim, symbols, usdm)
            route = "/public" if usdm else ""
            async with connect(f"{sim.ws_url}{route}/stream?streams={streams}") as ws:
                reader = asyncio.create_task(consume_depth(ws, books))
                await asyncio.sleep(0.5)
                await checkpoint(sim.rest_url, books)
                fast = sim.fast
                await wait_for(lambda: fast.round >= 1, timeout=60)  # past the cycle's end
                await checkpoint(sim.rest_url, books)
                reader.cancel()
            assert all(b.gaps == 0 and b.syncs == 1 and b.applied > 2 for b in books.values())

    run(scenario(), timeout=180)


def test_a_snapshot_taken_later_continues_the_stream() -> None:
    """A second client that asks for its snapshot long after the first one joins just as well."""

    async def scenario() -> None:
        config = SimConfig(mode=Mode.FAST, symbol_count=2, rate=5_000, seed=9)
        async with running_sim(config) as sim:
            assert sim.fast is not None
            symbols = sim.fast.symbol_names()
            streams = "/".join(f"{s.lower()}@depth@100ms" for s in symbols)
            first = books_for(sim, symbols, usdm=False)
            second = books_for(sim, symbols, usdm=False)
            async with (
                connect(f"{sim.ws_url}/stream?streams={streams}") as ws1,
                connect(f"{sim.ws_url}/stream?streams={streams}") as ws2,
            ):
                readers = [asyncio.create_task(consume_depth(ws1, first))]
                await asyncio.sleep(0.5)
                readers.append(asyncio.create_task(consume_depth(ws2, second)))
                await asyncio.sleep(0.5)
                await checkpoint(sim.rest_url, first)
                await checkpoint(sim.rest_url, second)
                for task in readers:
                    task.cancel()
            for books in (first, second):
                assert all(b.gaps == 0 and b.syncs == 1 for b in books.values())

    run(scenario(), timeout=60)


def test_two_connections_receive_the_same_frames() -> None:
    """One market position for every connection: both see the same messages, ids and times."""

    async def scenario() -> None:
        config = SimConfig(mode=Mode.FAST, symbol_count=2, rate=5_000, seed=2)
        async with running_sim(config) as sim:
            assert sim.fast is not None
            symbol = sim.fast.symbol_names()[0].lower()
            streams = f"{symbol}@trade/{symbol}@bookTicker/{symbol}@depth@100ms"
            await control(sim.rest_url, action="pause")
            async with (
                connect(f"{sim.ws_url}/stream?streams={streams}") as ws1,
                connect(f"{sim.ws_url}/stream?streams={streams}") as ws2,
            ):
                for _ in range(500):
                    stats = await get_json(f"{sim.rest_url}/sim/stats")
                    if [s["streams"] for s in stats["connections"]["sessions"]] == [3, 3]:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("connections never subscribed")
                await control(sim.rest_url, action="resume")
                one = [await ws1.recv(decode=False) for _ in range(300)]
                two = [await ws2.recv(decode=False) for _ in range(300)]
            assert one == two

    run(scenario(), timeout=60)


def test_cli_fast_mode_defaults_to_the_unlimited_rate() -> None:
    config = build_config(_parser().parse_args(["--mode", "fast"]))
    assert config.mode is Mode.FAST
    assert config.rate == float("inf")
    config = build_config(_parser().parse_args(["--mode", "fast", "--rate", "5000"]))
    assert config.rate == 5000
    assert build_config(_parser().parse_args([])).rate == 1000
