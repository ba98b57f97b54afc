"""REST: exchangeInfo, depth, weights, 429/418, errors, listing control."""

from __future__ import annotations

from typing import Any

import pytest

from consolidator.sim.config import SimConfig, Venue
from consolidator.sim.server import running_sim

from .helpers import control, get_json, http, run


def _cfg(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {"symbols": ("BTCUSDT", "PEPEUSDT", "ETHBTC"), "rate": 2000}
    base.update(overrides)
    return SimConfig(**base)


def test_spot_exchange_info() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            info = await get_json(f"{sim.rest_url}/api/v3/exchangeInfo")
            assert info["rateLimits"][0]["limit"] == 6000
            by_name = {s["symbol"]: s for s in info["symbols"]}
            assert set(by_name) == {"BTCUSDT", "PEPEUSDT", "ETHBTC"}
            pepe = by_name["PEPEUSDT"]
            assert (pepe["status"], pepe["baseAsset"], pepe["quoteAsset"]) == (
                "TRADING",
                "PEPE",
                "USDT",
            )
            filters = {f["filterType"]: f for f in pepe["filters"]}
            assert filters["PRICE_FILTER"]["tickSize"] == "0.00000001"
            assert filters["LOT_SIZE"]["stepSize"] == "1.00000000"
            btc = {f["filterType"]: f for f in by_name["BTCUSDT"]["filters"]}
            assert btc["PRICE_FILTER"]["tickSize"] == "0.01000000"
            one = await get_json(f"{sim.rest_url}/api/v3/exchangeInfo?symbol=ETHBTC")
            assert [s["symbol"] for s in one["symbols"]] == ["ETHBTC"]
            some = await get_json(
                f"{sim.rest_url}/api/v3/exchangeInfo?symbols=%5B%22ETHBTC%22,%22BTCUSDT%22%5D"
            )
            assert [s["symbol"] for s in some["symbols"]] == ["ETHBTC", "BTCUSDT"]

    run(scenario())


def test_usdm_exchange_info_and_depth() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(venue=Venue.USDM, symbols=("BTCUSDT", "1000PEPEUSDT"))) as sim:
            info = await get_json(f"{sim.rest_url}/fapi/v1/exchangeInfo")
            btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
            filters = {f["filterType"]: f for f in btc["filters"]}
            assert (filters["PRICE_FILTER"]["tickSize"], btc["pricePrecision"]) == ("0.10", 2)
            assert btc["contractType"] == "PERPETUAL"
            weights = []
            for limit in (5, 100, 500, 1000):
                before = (await http("GET", f"{sim.rest_url}/fapi/v1/ping")).headers
                result = await http(
                    "GET", f"{sim.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit={limit}"
                )
                used = int(result.headers["x-mbx-used-weight-1m"])
                weights.append(used - int(before["x-mbx-used-weight-1m"]))
                body = result.json()
                assert {"lastUpdateId", "E", "T", "bids", "asks"} == set(body)
                assert len(body["bids"]) <= limit
            assert weights == [2, 5, 10, 20]

    run(scenario())


def test_spot_depth_weights_and_truncation() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg(book_levels=600)) as sim:
            weights = []
            previous = 0
            for limit in (10, 200, 1000, 5000):
                result = await http(
                    "GET", f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT&limit={limit}"
                )
                assert result.status == 200
                used = int(result.headers["x-mbx-used-weight-1m"])
                weights.append(used - previous)
                previous = used
                body = result.json()
                assert set(body) == {"lastUpdateId", "bids", "asks"}
                assert len(body["bids"]) == min(limit, len(body["bids"]))
                if limit == 10:
                    assert len(body["asks"]) == 10
                prices = [float(p) for p, _ in body["bids"]]
                assert prices == sorted(prices, reverse=True)
            assert weights == [5, 25, 50, 250]
            default = await get_json(f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT")
            assert len(default["asks"]) == 100

    run(scenario())


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("symbol=NOPEUSDT", 400, -1121),
        ("", 400, -1102),
        ("symbol=btcusdt", 400, -1100),
        ("symbol=BTCUSDT&limit=abc", 400, -1100),
    ],
)
def test_depth_errors(query: str, status: int, code: int) -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            result = await http("GET", f"{sim.rest_url}/api/v3/depth?{query}")
            assert result.status == status
            assert result.json()["code"] == code
            assert "x-mbx-used-weight-1m" in result.headers

    run(scenario())


def test_429_then_418_with_retry_after() -> None:
    async def scenario() -> None:
        async with running_sim(
            _cfg(weight_limit=12, weight_window=3600.0, ban_seconds=30.0)
        ) as sim:
            url = f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=50"
            assert (await http("GET", url)).status == 200
            assert (await http("GET", url)).status == 200
            limited = await http("GET", url)
            assert limited.status == 429
            assert limited.json()["code"] == -1003
            assert 0 < int(limited.headers["retry-after"]) <= 3600
            assert limited.headers["x-mbx-used-weight-1m"] == "15"
            banned = await http("GET", url)
            assert banned.status == 418
            assert int(banned.headers["retry-after"]) == 30
            again = await http("GET", f"{sim.rest_url}/api/v3/ping")
            assert again.status == 418
            assert int(again.headers["retry-after"]) <= 30
            stats = await get_json(f"{sim.rest_url}/sim/stats")
            assert (stats["rest"]["429"], stats["rest"]["418"]) == (1, 2)
            await control(sim.rest_url, action="reset_weights")
            assert (await http("GET", url)).status == 200

    run(scenario())


def test_delist_and_list_symbols() -> None:
    async def scenario() -> None:
        async with running_sim(_cfg()) as sim:
            await control(sim.rest_url, action="delist", symbol="ETHBTC")
            info = await get_json(f"{sim.rest_url}/api/v3/exchangeInfo")
            status = {s["symbol"]: s["status"] for s in info["symbols"]}
            assert status["ETHBTC"] == "BREAK"
            before = (await get_json(f"{sim.rest_url}/sim/book?symbol=ETHBTC"))["lastUpdateId"]
            await control(sim.rest_url, action="list", symbol="NEWCOINUSDT")
            info = await get_json(f"{sim.rest_url}/api/v3/exchangeInfo")
            new = next(s for s in info["symbols"] if s["symbol"] == "NEWCOINUSDT")
            assert (new["status"], new["baseAsset"], new["quoteAsset"]) == (
                "TRADING",
                "NEWCOIN",
                "USDT",
            )
            depth = await get_json(f"{sim.rest_url}/api/v3/depth?symbol=NEWCOINUSDT&limit=5")
            assert depth["bids"]
            assert depth["asks"]
            after = (await get_json(f"{sim.rest_url}/sim/book?symbol=ETHBTC"))["lastUpdateId"]
            assert after == before
            bad = await http("POST", f"{sim.rest_url}/sim/control", {"action": "explode"})
            assert bad.status == 400
            assert bad.json()["ok"] is False

    run(scenario())
