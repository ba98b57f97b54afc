"""``consolidator demo``: a writer and a live tail on real rings, in a private root.

Until the feed writer exists (M1-2) the writer is a synthetic random-walk market publishing trades,
quotes and events through the real ring writer; ``mdtail`` runs as a separate process and shows it
live. At the end the demo reads every ring back with ``mdtail --no-follow --format json`` and checks
that each published record is there exactly once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from consolidator.payloads import Event, encode_event
from consolidator.records import EventKind, RecordType, Side
from consolidator.ring.writer import FixedRingWriter, VariableRingWriter
from consolidator.streams import open_stream_writer, write_feed_meta
from consolidator.symbols import SymbolTable

__all__ = ["run_demo", "synthetic_writer"]

FEED = "demo"
SYMBOLS = {"BTCUSDT": (6_183_763, -2), "ETHUSDT": (245_012, -2), "PEPEUSDT": (123, -8)}


def synthetic_writer(shm_dir: Path, rate: float, stop_after_s: float) -> dict[str, int]:
    """Publish a random-walk market into trades/quotes/events rings until time or SIGTERM."""
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    write_feed_meta(shm_dir, FEED, "demo")
    symbols = SymbolTable(shm_dir / FEED / "symbols")
    trades = open_stream_writer(shm_dir, FEED, "trades", scale=1)
    quotes = open_stream_writer(shm_dir, FEED, "quotes", scale=1)
    events = open_stream_writer(shm_dir, FEED, "events", scale=1)
    assert isinstance(trades, FixedRingWriter)
    assert isinstance(quotes, FixedRingWriter)
    assert isinstance(events, VariableRingWriter)
    rng = random.Random(7)
    ids = {name: symbols.intern(name) for name in SYMBOLS}
    mids = {name: mid for name, (mid, _) in SYMBOLS.items()}
    counts = {"trades": 0, "quotes": 0, "events": 0}
    events.publish(RecordType.EVENT, encode_event(Event(EventKind.WRITER_START, '{"demo": true}')))
    counts["events"] += 1
    start = time.monotonic()
    next_at = start
    trade_id = 1
    while not stopping and time.monotonic() - start < stop_after_s:
        name = rng.choice(list(SYMBOLS))
        exp = SYMBOLS[name][1]
        mids[name] = max(1, mids[name] + rng.randint(-3, 3))
        mid = mids[name]
        now = time.time_ns()
        if rng.random() < 0.4:
            side = rng.choice((Side.BUY, Side.SELL))
            price = mid + (1 if side is Side.BUY else -1)
            qty = rng.randint(1, 5000)
            trades.publish(now, now, trade_id, price, qty, ids[name], exp, -3, side, 0)
            trade_id += 1
            counts["trades"] += 1
        else:
            quotes.publish(
                0, now, trade_id, mid - 1, rng.randint(1, 9000), mid + 1, rng.randint(1, 9000),
                ids[name], exp, -3, exp, -3,
            )  # fmt: skip
            counts["quotes"] += 1
        for writer in (trades, quotes, events):
            writer.heartbeat(now)
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    events.publish(RecordType.EVENT, encode_event(Event(EventKind.WRITER_STOP, "{}")))
    counts["events"] += 1
    for writer in (trades, quotes, events):
        writer.close()
    symbols.close()
    return counts


def _bin(name: str) -> list[str]:
    return [sys.executable, "-m", f"consolidator.cli.{name}"]


def run_demo(duration_s: float, rate: float) -> int:
    """Run the demo; returns 0 if every published record was read back exactly once."""
    root = Path(tempfile.mkdtemp(prefix="consolidator-demo-"))
    shm_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    shm_dir = Path(tempfile.mkdtemp(prefix="consolidator-demo-", dir=shm_base))
    config_dir = root / "etc"
    (config_dir / "feeds").mkdir(parents=True)
    (config_dir / "consolidator.toml").write_text(
        f'shm_dir = "{shm_dir}"\nstate_dir = "{root / "state"}"\n'
    )
    (config_dir / "feeds" / f"{FEED}.toml").write_text(
        'venue = "binance"\nsymbols = ["BTCUSDT", "ETHUSDT", "PEPEUSDT"]\n'
    )
    env = {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(config_dir)}
    print(f"demo: private root {root}, rings in {shm_dir}", flush=True)
    writer = subprocess.Popen(
        [*_bin("demo"), "--writer", str(shm_dir), str(rate), str(duration_s)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    tail = None
    try:
        while not (shm_dir / FEED / "events.ring").exists():
            if writer.poll() is not None:
                print("demo: the writer failed to start", file=sys.stderr)
                return 1
            time.sleep(0.01)
        tail = subprocess.Popen([*_bin("mdtail"), FEED, "-n", "0"], env=env)
        out, _ = writer.communicate(timeout=duration_s + 30)
        counts = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.3)
    finally:
        for proc in (tail, writer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=10)
    check = subprocess.run(
        [*_bin("mdtail"), FEED, "--no-follow", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seen: dict[str, list[int]] = {"trade": [], "quote": [], "event": []}
    for line in check.stdout.splitlines():
        obj = json.loads(line)
        seen[obj["type"]].append(obj["seq"])
    ok = check.returncode == 0
    for kind, stream in (("trade", "trades"), ("quote", "quotes"), ("event", "events")):
        exact = seen[kind] == list(range(counts[stream]))
        ok = ok and exact
        print(
            f"demo: {stream}: published {counts[stream]}, read back {len(seen[kind])}"
            f" {'exactly once, in order' if exact else 'MISMATCH'}"
        )
    shutil.rmtree(shm_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        result = synthetic_writer(Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        print(json.dumps(result), flush=True)
