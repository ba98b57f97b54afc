"""Publisher hot-path benchmark: CPU per message of this tree's publisher vs a git revision's.

Run: ``.venv/bin/python -m tools.bench.publisher [--base REV] [--messages N] [--rounds N]``

Method: ``consolidator/feed/publisher.py`` and ``counters.py`` of ``--base`` (default HEAD) are
loaded from git beside the working tree's; both publish the same Binance messages (trade and
bookTicker alternating, one symbol) into the same rings, ``Publisher.on_message`` for each and
``end_batch`` (where it exists) every 1, 4 or 16 messages, as one socket read would deliver them
(all with the receive time of that read).
Rounds alternate (base, current, base, ...); process CPU time per message; the median of the rounds
and the ratio current / base are printed. In-process and CPU-only, so machine noise is small next
to the feed benchmark's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from consolidator.feed.counters import Counters
from consolidator.feed.publisher import Publisher, open_rings
from consolidator.venues.binance import BinanceProtocol

REPO = Path(__file__).resolve().parents[2]
STREAMS = ("trades", "quotes", "depth", "raw", "events")


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def load_base(rev: str) -> tuple[Any, Any]:
    """The ``Publisher`` and ``Counters`` classes of ``rev``."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{path}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    counters = _module("base_counters", show("consolidator/feed/counters.py"))
    publisher = _module(
        "base_publisher",
        show("consolidator/feed/publisher.py").replace(
            "from consolidator.feed.counters import", "from base_counters import"
        ),
    )
    return publisher.Publisher, counters.Counters


class _Requests:
    def fetch_snapshot(self, request: object) -> None: ...
    def send_frame(self, request: object) -> None: ...
    def reconnect(self, request: object) -> None: ...
    def open_connection(self, plan: object) -> None: ...


def _protocol() -> BinanceProtocol:
    ids: dict[str, int] = {}
    protocol = BinanceProtocol(
        "spot", ["BTCUSDT"], ["trades", "quotes", "depth"], lambda n: ids.setdefault(n, len(ids))
    )
    protocol.plan_connections()
    protocol.on_connected(1)
    return protocol


def messages(n: int) -> list[bytes]:
    now_ms = time.time_ns() // 1_000_000
    out = []
    for i in range(n):
        if i % 2:
            trade = {"e": "trade", "E": now_ms, "s": "BTCUSDT", "t": i, "p": "65000.12",
                     "q": "0.002", "T": now_ms, "m": True}  # fmt: skip
            out.append(orjson.dumps({"stream": "btcusdt@trade", "data": trade}))
        else:
            quote = {"u": i, "s": "BTCUSDT", "b": "65000.11", "B": "1.5", "a": "65000.13",
                     "A": "3.25"}  # fmt: skip
            out.append(orjson.dumps({"stream": "btcusdt@bookTicker", "data": quote}))
    return out


def per_message_ns(
    publisher: Any, frames: list[bytes], batch: int, clock: Callable[[], int] = time.time_ns
) -> float:
    on_message = publisher.on_message
    end: Callable[[], None] = getattr(publisher, "end_batch", lambda: None)
    start = time.process_time_ns()
    ts = clock()
    for i, frame in enumerate(frames):
        on_message(1, frame, ts)  # the messages of one read share its receive time
        if i % batch == batch - 1:
            end()
            ts = clock()
    return (time.process_time_ns() - start) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare with")
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    base_publisher, base_counters = load_base(args.base)
    frames = messages(args.messages)
    shm = Path("/dev/shm") / f"bench-publisher-{uuid.uuid4().hex}"
    rings = open_rings(shm, "bench", STREAMS, 1)
    print(f"publisher benchmark: {args.messages:,} messages x {args.rounds} rounds per batch size, "
          f"base {args.base}, process CPU ns per message (median)")  # fmt: skip
    print("   messages/read      base   current   current/base")
    try:
        for batch in (1, 4, 16):
            times: dict[str, list[float]] = {"base": [], "current": []}
            for _ in range(args.rounds):
                for label, publisher_cls, counters_cls in (
                    ("base", base_publisher, base_counters),
                    ("current", Publisher, Counters),
                ):
                    publisher = publisher_cls(
                        rings, _protocol().on_frame, _Requests(), counters_cls()
                    )
                    times[label].append(per_message_ns(publisher, frames, batch))
            base, current = statistics.median(times["base"]), statistics.median(times["current"])
            print(f"   {batch:>13} {base:>9,.0f} {current:>9,.0f} {current / base:>14.3f}")
    finally:
        for ring in rings.values():
            ring.close()
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
