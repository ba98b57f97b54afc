"""cryptofeed's Binance feed pointed at the simulator, counting messages: run by the benchmark
with the Python of cryptofeed's own virtualenv (this file imports nothing from consolidator).

Run: ``CRYPTOFEED_VENV/bin/python tools/bench/cryptofeed_runner.py WS_URL REST_URL SYMBOLS [CPU]``

A `Binance` subclass with the simulator's WebSocket and REST endpoints (the class attributes
``websocket_endpoints`` / ``rest_endpoints`` cryptofeed reads its addresses from), subscribed to
TRADES (``aggTrade``), TICKER (``bookTicker``) and L2_BOOK (``depth@100ms``, REST snapshot per
symbol, cryptofeed's own book) for the comma-separated exchange ``SYMBOLS``, with callbacks
that do nothing. Every 0.5 s it prints one JSON line: ``{"t": perf_counter, "frames": messages
handled so far, "cpu": process CPU seconds}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import cryptofeed.feed
from cryptofeed import FeedHandler
from cryptofeed.connection import (
    RestEndpoint,
    Routes,
    WebsocketEndpoint,
    WSAsyncConn,
)
from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import Binance

COUNT = [0]


class PlainWSAsyncConn(WSAsyncConn):  # type: ignore[misc]
    """cryptofeed accepts only ``wss://`` addresses; the simulator on loopback speaks ``ws://``
    (as it does to the writer): validate the address as ``wss://``, then connect to the real one.
    """

    def __init__(self, address: str, *args: Any, **kwargs: Any) -> None:
        super().__init__("wss://" + address.removeprefix("ws://"), *args, **kwargs)
        self.address = address


def local_binance(ws_url: str, rest_url: str) -> Any:
    """cryptofeed's Binance class with the simulator's endpoints and a message counter."""

    class LocalBinance(Binance):  # type: ignore[misc]
        websocket_endpoints = [WebsocketEndpoint(ws_url)]  # noqa: RUF012
        rest_endpoints = [  # noqa: RUF012
            RestEndpoint(
                rest_url,
                routes=Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"),
            )
        ]

        async def message_handler(self, msg: str, conn: Any, timestamp: float) -> None:
            COUNT[0] += 1
            await super().message_handler(msg, conn, timestamp)

    return LocalBinance


async def _nothing(*_: Any) -> None:
    return None


async def _report() -> None:
    while True:
        sys.stdout.write(
            json.dumps({"t": time.perf_counter(), "frames": COUNT[0], "cpu": time.process_time()})
            + "\n"
        )
        sys.stdout.flush()
        await asyncio.sleep(0.5)


def main() -> None:
    """Command line (see the module docstring)."""
    ws_url, rest_url, names = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
    if len(sys.argv) > 4:
        os.sched_setaffinity(0, {int(sys.argv[4])})
    cryptofeed.feed.WSAsyncConn = PlainWSAsyncConn
    feed_class = local_binance(ws_url, rest_url)
    wanted = [std for std, exchange in feed_class.symbol_mapping().items() if exchange in names]
    handler = FeedHandler(config={"uvloop": True, "log": {"disabled": True}})
    handler.add_feed(
        feed_class(
            symbols=wanted,
            channels=[TRADES, TICKER, L2_BOOK],
            callbacks={TRADES: _nothing, TICKER: _nothing, L2_BOOK: _nothing},
        )
    )
    loop = asyncio.new_event_loop()  # uvloop's: FeedHandler set the policy
    asyncio.set_event_loop(loop)
    handler.run(start_loop=False)
    reporter = loop.create_task(_report())
    loop.run_forever()
    reporter.cancel()


if __name__ == "__main__":
    main()
