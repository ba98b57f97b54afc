"""The comparator under test: the simulator, the real writer and its rings (`tests.feed.helpers`),
and ``mdcompare`` as a process."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consolidator.payloads import decode_depth
from consolidator.process import stop_process
from consolidator.records import RecordType
from tests.feed.helpers import (
    REPO,
    Feed,
    Rings,
    Sim,
    Writer,
    env_without_proxy,
    running,
    wait_until,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
GRACE_S = 0.5


@dataclass
class Rig:
    sim: Sim
    feed: Feed
    writer: Writer
    rings: Rings

    def trade_ids(self, symbol: str = "BTCUSDT") -> list[int]:
        names = self.rings.names()
        trades = self.rings.fixed("trades")
        return [int(t["trade_id"]) for t in trades if names[int(t["symbol_id"])] == symbol]

    def snapshots(self, symbol: str = "BTCUSDT") -> list[int]:
        names = self.rings.names()
        out = []
        for _, record_type, payload in self.rings.variable("depth"):
            if record_type == RecordType.SNAPSHOT:
                depth = decode_depth(payload, snapshot=True)
                if names[depth.symbol_id] == symbol:
                    out.append(depth.last_update_id)
        return out

    def sessions(self) -> int:
        """WebSocket connections to the simulator that carry streams."""
        return sum(1 for s in self.sim.stats()["connections"]["sessions"] if s["streams"])

    def wait_trades_past(self, trade_id: int, symbol: str = "BTCUSDT") -> None:
        wait_until(
            lambda: max(self.trade_ids(symbol), default=0) > trade_id, 30, f"trade {trade_id}"
        )


@contextlib.contextmanager
def rig(tmp: Path, rate: int = 300, name: str = "f1") -> Iterator[Rig]:
    """Simulator + writer of feed ``f1`` (BTCUSDT, ETHUSDT), books synced and trades flowing."""
    args = ["--symbols", ",".join(SYMBOLS), "--rate", str(rate), "--seed", "7"]
    with running(tmp, args, venue="binance", symbols=list(SYMBOLS)) as (sim, feed, writer):
        rings = Rings(feed)
        r = Rig(sim, feed, writer, rings)
        wait_until(rings.ready, 30, "the writer's rings")
        for symbol in SYMBOLS:
            wait_until(lambda s=symbol: bool(r.snapshots(s)), 30, f"the book of {symbol}")
        wait_until(lambda: len(r.trade_ids()) > 5, 30, "trades")
        yield r


class Compare:
    """``mdcompare FEED ...`` as a process (json report on stdout)."""

    def __init__(self, feed: Feed, *args: str, out: Path | None = None) -> None:
        cmd = [sys.executable, "-m", "consolidator.cli.mdcompare", feed.name,
               "--config-dir", str(feed.root), "--format", "json", "--grace", str(GRACE_S),
               "--interval", "60", *args]  # fmt: skip
        if out is not None:
            cmd += ["--out", str(out)]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env_without_proxy(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def finish(self, interrupt: bool = True) -> tuple[int, dict[str, Any], str]:
        """Ctrl-C once what was awaited is older than the grace window (or, not ``interrupt``,
        wait for the end); the exit code, the report and stderr."""
        if interrupt:
            time.sleep(GRACE_S + 0.3)  # the awaited records must leave the grace window
            self.proc.send_signal(signal.SIGINT)
        stdout, stderr = self.proc.communicate(timeout=60)
        assert stdout.strip(), f"no report; stderr: {stderr}"
        return self.proc.returncode, json.loads(stdout), stderr

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL, timeout=5)


@contextlib.contextmanager
def compare(feed: Feed, *args: str, out: Path | None = None) -> Iterator[Compare]:
    proc = Compare(feed, *args, out=out)
    try:
        yield proc
    finally:
        proc.kill()


def clean(stream: dict[str, Any]) -> bool:
    return not (
        stream["missing"] or stream["extra"] or stream["mismatched"] or stream["duplicates"]
    )
