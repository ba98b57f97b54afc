"""mdtail's json output against the simulator's ground truth, field by field, exact strings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.feed.helpers import Feed, wait_until
from tests.pipeline import pause_delivered, pipeline, tails

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _plain(text: str) -> str:
    """How DESIGN.md wants a decimal printed: plain notation, no trailing fractional zeros."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _mdtail(feed: Feed, *args: str) -> list[dict[str, Any]]:
    shown = subprocess.run(
        [str(BIN / "mdtail"), feed.name, "--config-dir", str(feed.root), "--no-follow",
         "--format", "json", *args],
        capture_output=True, text=True, timeout=120, check=False, env=os.environ,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines()]


def _last_n_of_a_symbol_in_a_variable_stream(feed: Feed) -> None:
    """``-n N --symbol S`` on depth (decoded record by record, unlike trades and quotes): the last
    N records of S even when other symbols' records come after them."""
    depth = _mdtail(feed, "--stream", "depth")
    symbol = next(d["symbol"] for d in reversed(depth) if d["symbol"] != depth[-1]["symbol"])
    mine = [d for d in depth if d["symbol"] == symbol]
    assert mine[-1]["seq"] < depth[-1]["seq"]
    for n in (1, 3):
        got = _mdtail(feed, "--stream", "depth", "--symbol", symbol, "-n", str(n))
        assert got == mine[-n:], (symbol, n)


def test_every_trade_and_quote_is_the_one_the_simulator_sent(tmp_path: Path) -> None:
    trade_log, quote_log = tmp_path / "trades.jsonl", tmp_path / "quotes.jsonl"
    with pipeline(tmp_path, "--symbols", "3", "--rate", "300", "--truth-log", str(trade_log),
                  "--quote-log", str(quote_log)) as p:  # fmt: skip
        wait_until(lambda: tails(p.feed)["trades"] > 150, 60, "trades")
        pause_delivered(p)  # the simulator sends what it has made, then stops; all published
        objs = _mdtail(p.feed, "--stream", "trades", "--stream", "quotes")
        _last_n_of_a_symbol_in_a_variable_stream(p.feed)
        venue = "binance"
    trades = [o for o in objs if o["type"] == "trade"]
    quotes = [o for o in objs if o["type"] == "quote"]

    made = {(t["symbol"], t["trade_id"]): t for t in _lines(trade_log)}
    assert len(trades) > 150
    _none_missing(trades, made, "trade_id")
    for t in trades:
        m = made[(t["symbol"], t["trade_id"])]
        assert t["price"] == _plain(str(m["price"])), (t, m)
        assert t["qty"] == _plain(str(m["qty"])), (t, m)
        assert t["side"] == m["side"]
        assert t["ts_event"] == int(str(m["time"])) * 1_000_000
        assert (t["feed"], t["venue"]) == (p.feed.name, venue)
        assert t["ts_recv"] <= t["ts_commit"]

    sent: dict[tuple[object, object], dict[str, object]] = {}
    for q in _lines(quote_log):
        sent[(q["symbol"], q["update_id"])] = q
    assert len(quotes) > 100
    fields = ("bid_price", "bid_qty", "ask_price", "ask_qty")
    for q in quotes:
        s = sent[(q["symbol"], q["update_id"])]
        assert tuple(q[f] for f in fields) == tuple(_plain(str(s[f])) for f in fields), (q, s)
        assert q["ts_event"] is None, "Binance spot bookTicker carries no event time"
        assert (q["feed"], q["venue"]) == (p.feed.name, venue)
    _none_missing(quotes, sent, "update_id")


def _none_missing(
    shown: list[dict[str, object]], sent: dict[tuple[object, object], object], key: str
) -> None:
    """Per symbol, from the first one shown on (the simulator ran before the writer subscribed),
    every one the simulator sent is shown, once, in order."""
    symbols = {o["symbol"] for o in shown}
    assert symbols == {sym for sym, _ in sent}, "every symbol"
    for symbol in symbols:
        got = [int(str(o[key])) for o in shown if o["symbol"] == symbol]
        after = sorted(int(str(i)) for sym, i in sent if sym == symbol and int(str(i)) >= got[0])
        assert got == after, (symbol, key)
