"""Per-connection faults: drop-trade, drop-quote and drop-diff withhold chosen messages from one
connection only (mdcompare's tests drop them on the writer's connection, not the reference's);
``conn=N`` aims stall/reset at one connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from consolidator.sim.config import SimConfig
from consolidator.sim.faults import FaultKind, parse_fault
from consolidator.sim.server import running_sim

from .helpers import control, get_json, run, unwrap


def test_withhold_specs_parse_with_id_and_conn() -> None:
    spec = parse_fault("drop-trade:btcusdt,id=120,conn=2,count=3")
    assert (spec.kind, spec.symbol, spec.min_id, spec.conn, spec.count) == (
        FaultKind.DROP_TRADE, "BTCUSDT", 120, 2, 3
    )  # fmt: skip
    assert parse_fault("reset,conn=1").conn == 1
    assert parse_fault("drop-diff").conn is None
    for bad in ("drop-quote,id=-1", "drop-quote,conn=0", "duplicate,id=3", "drop-diff,conn=x"):
        with pytest.raises(ValueError, match="fault option"):
            parse_fault(bad)


async def _collect(ws: ClientConnection, until: float) -> list[tuple[str, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    out = []
    while loop.time() < until:
        try:
            frame = await asyncio.wait_for(ws.recv(), max(0.01, until - loop.time()))
        except TimeoutError:
            break
        stream, data = unwrap(frame)
        assert stream is not None
        out.append((stream, data))
    return out


def _ids(frames: list[tuple[str, dict[str, Any]]], suffix: str, key: str) -> list[int]:
    return [data[key] for stream, data in frames if stream.endswith(suffix)]


def test_drops_reach_one_connection_only() -> None:
    async def scenario() -> None:
        config = SimConfig(symbols=("BTCUSDT",), rate=2000, seed=3)
        async with running_sim(config) as sim:
            streams = "btcusdt@trade/btcusdt@bookTicker/btcusdt@depth@100ms"
            url = f"{sim.ws_url}/stream?streams={streams}"
            async with connect(url) as first, connect(url) as second:
                paused = await control(sim.rest_url, action="pause")
                counters = paused["symbols"]["BTCUSDT"]
                for kind, start in (("trade", counters["last_trade_id"]),
                                    ("quote", counters["update_id"]),
                                    ("diff", counters["update_id"])):  # fmt: skip
                    spec = f"drop-{kind}:BTCUSDT,id={start + 5},conn=1"
                    await control(sim.rest_url, action="fault", spec=spec)
                await control(sim.rest_url, action="resume")
                until = asyncio.get_running_loop().time() + 1.0
                one, two = await asyncio.gather(_collect(first, until), _collect(second, until))
            stats = await get_json(f"{sim.rest_url}/sim/stats")
        dropped = {d["kind"]: d["id"] for d in stats["faults"]["dropped"]}
        assert set(dropped) == {"drop-trade", "drop-quote", "drop-diff"}
        assert {d["conn"] for d in stats["faults"]["dropped"]} == {1}
        for kind, suffix, key in (("drop-trade", "@trade", "t"), ("drop-quote", "@bookTicker", "u"),
                                  ("drop-diff", "@depth@100ms", "u")):  # fmt: skip
            assert dropped[kind] >= counters["last_trade_id" if kind == "drop-trade"
                                             else "update_id"] + 5  # fmt: skip
            ids_one, ids_two = _ids(one, suffix, key), _ids(two, suffix, key)
            assert dropped[kind] in ids_two  # the other connection had it
            lo, hi = max(ids_one[0], ids_two[0]), min(ids_one[-1], ids_two[-1])
            both = {i for i in ids_two if lo <= i <= hi}
            assert {i for i in ids_one if lo <= i <= hi} == both - {dropped[kind]}, kind
        assert stats["faults"]["applied"] == {"drop-trade": 1, "drop-quote": 1, "drop-diff": 1}
        assert json.dumps(stats)  # JSON-able as served

    run(scenario())
