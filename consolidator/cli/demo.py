"""``consolidator demo``: the pipeline offline, in a private root, with a live tail.

The simulator (synthetic Binance spot market) feeds the real writer (``consolidator run demo``),
which publishes into rings under a private shm directory; the flusher journals them under a private
state directory; the exporter serves their metrics on a free loopback port; ``mdtail`` shows trades,
quotes and events live. At the end the demo checks the trades ring against the simulator's truth
log (every trade exactly once), that the journal and the exporter's count agree, and that every
order book synchronized with no gap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

from consolidator.errors import ConsolidatorError
from consolidator.payloads import decode_event
from consolidator.process import stop_process
from consolidator.records import EventKind
from consolidator.ring.reader import VariableRingReader
from consolidator.streams import open_stream_reader

__all__ = ["run_demo"]

FEED = "demo"
SYMBOLS = {"BTCUSDT": (6_183_763, -2), "ETHUSDT": (245_012, -2), "PEPEUSDT": (123, -8)}


def _bin(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _stop(proc: subprocess.Popen[str] | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None:
        stop_process(proc, sig)


def _read_json_lines(args: list[str], env: dict[str, str]) -> list[dict[str, object]]:
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"{args} exited {result.returncode}")
    return [json.loads(line) for line in result.stdout.splitlines()]


def _control(rest_url: str, action: str) -> None:
    body = json.dumps({"action": action}).encode()
    request = urllib.request.Request(f"{rest_url}/sim/control", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _wait_subscribed(shm_dir: Path, writer: subprocess.Popen[str], timeout_s: float = 20) -> None:
    """Until the venue has acknowledged the writer's subscriptions (a SUBSCRIBE event)."""
    reader = open_stream_reader(shm_dir, FEED, "events", start="oldest")
    assert isinstance(reader, VariableRingReader)
    deadline = time.monotonic() + timeout_s
    with reader:
        while time.monotonic() < deadline and writer.poll() is None:
            for record in reader.read_batch():
                if decode_event(record.payload).kind == EventKind.SUBSCRIBE:
                    return
            time.sleep(0.02)
    raise RuntimeError("the writer did not subscribe in time")


def _exporter_url(exporter: subprocess.Popen[str]) -> str:
    """The exporter's /metrics URL from its start-up line (it listens on a free port)."""
    assert exporter.stderr is not None
    for line in exporter.stderr:
        sys.stderr.write(line)
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            # The rest of its log goes on to the terminal, as the other processes' does.
            threading.Thread(target=_copy, args=(exporter.stderr,), daemon=True).start()
            return url
    raise ConsolidatorError("the exporter did not start")


def _copy(stream: IO[str]) -> None:
    for line in stream:
        sys.stderr.write(line)


def _scrape(url: str, metric: str, label: str) -> int | None:
    """The sum of one metric's samples that carry ``label`` (None: no such sample)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{") and label in line
    ]
    return int(sum(values)) if values else None


def _journal_trades(state_dir: Path) -> int:
    """How many trades the journal holds, in sequence with no loss (-1 if it has a gap)."""
    from consolidator.journal.history import HistoryReader
    from consolidator.ring.reader import Loss

    count = 0
    with HistoryReader(state_dir, Path("/nonexistent"), FEED, "trades", live=False) as reader:
        for item in reader.items():
            if isinstance(item, Loss):
                return -1
            count += len(item)
    return count


def run_demo(duration_s: float, rate: float) -> int:
    """Simulator -> writer -> rings, a live ``mdtail``, then a check against ground truth.

    Returns 0 when every trade the simulator made is in the trades ring exactly once and every
    book synchronized.
    """
    root = Path(tempfile.mkdtemp(prefix="consolidator-demo-"))
    shm_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    shm_dir = Path(tempfile.mkdtemp(prefix="consolidator-demo-", dir=shm_base))
    config_dir = root / "etc"
    (config_dir / "feeds").mkdir(parents=True)
    (config_dir / "consolidator.toml").write_text(
        f'shm_dir = "{shm_dir}"\nstate_dir = "{root / "state"}"\n'
    )
    env = {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(config_dir)}
    truth = root / "truth.jsonl"
    procs: list[subprocess.Popen[str]] = []
    print(f"demo: private root {root}, rings in {shm_dir}", flush=True)
    try:
        sim = subprocess.Popen(
            [*_bin("consolidator.sim.cli"), "--venue", "binance", "--port", "0",
             "--symbols", "3", "--rate", str(rate), "--truth-log", str(truth)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        procs.append(sim)
        assert sim.stdout is not None
        hello = json.loads(sim.stdout.readline())
        symbols = list(hello["symbols"])
        _control(hello["rest_url"], "pause")  # no trades until the writer is subscribed
        print(f"demo: simulator on {hello['ws_url']} with {', '.join(symbols)}", flush=True)
        (config_dir / "feeds" / f"{FEED}.toml").write_text(
            f'venue = "binance"\nsymbols = {json.dumps(symbols)}\n'
            f'ws_url = "{hello["ws_url"]}"\nrest_url = "{hello["rest_url"]}"\n'
        )
        writer = subprocess.Popen([*_bin("consolidator.cli.main"), "run", FEED], text=True, env=env)
        procs.append(writer)
        flusher = subprocess.Popen([*_bin("consolidator.cli.main"), "flusher"], text=True, env=env)
        procs.append(flusher)
        exporter = subprocess.Popen(
            [*_bin("consolidator.cli.main"), "exporter", "--listen", "127.0.0.1:0"],
            text=True, env=env, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(exporter)
        metrics_url = _exporter_url(exporter)
        print(f"demo: Prometheus metrics at {metrics_url}", flush=True)
        while not (shm_dir / FEED / "events.ring").exists():
            if writer.poll() is not None:
                print("demo: the writer failed to start", file=sys.stderr)
                return 1
            time.sleep(0.02)
        tail = subprocess.Popen(
            [*_bin("consolidator.cli.mdtail"), FEED, "--stream", "trades", "--stream", "quotes",
             "--stream", "events", "-n", "0"],
            text=True, env=env,
        )  # fmt: skip
        procs.append(tail)
        _wait_subscribed(shm_dir, writer)
        _control(hello["rest_url"], "resume")
        time.sleep(duration_s)
        # Pause the market (the simulator sends what it has made first), let the writer drain.
        _control(hello["rest_url"], "pause")
        time.sleep(1.0)
        published = _scrape(metrics_url, "consolidator_records_published_total", 'stream="trades"')
        _stop(writer)
        writer_code = writer.returncode
        _stop(flusher)  # drains what the rings hold into the journal, then exits
        time.sleep(0.3)
        _stop(tail, signal.SIGINT)
        trades = _read_json_lines(
            [*_bin("consolidator.cli.mdtail"), FEED, "--stream", "trades", "--no-follow",
             "--format", "json"], env,
        )  # fmt: skip
        events = _read_json_lines(
            [*_bin("consolidator.cli.mdtail"), FEED, "--stream", "events", "--no-follow",
             "--format", "json"], env,
        )  # fmt: skip
    finally:
        for proc in procs:
            _stop(proc)
    made = [json.loads(line) for line in truth.read_text().splitlines()] if truth.exists() else []
    made_ids = sorted((t["symbol"], t["trade_id"]) for t in made)
    got_ids = sorted((str(t["symbol"]), t["trade_id"]) for t in trades)
    journaled = _journal_trades(root / "state")
    synced = {e["symbol"] for e in events if e["kind"] == "book_synced"}
    gaps = [e for e in events if e["kind"] in ("gap", "resync")]
    ok = (
        writer_code == 0
        and published == len(got_ids)
        and got_ids == made_ids
        and journaled == len(got_ids)
        and synced == set(symbols)
        and not gaps
    )
    print(
        f"demo: the simulator made {len(made_ids)} trades; the trades ring holds {len(got_ids)}"
        f" ({'each exactly once' if got_ids == made_ids else 'MISMATCH'}), the journal"
        f" {journaled};"
        f" books synchronized: {len(synced)}/{len(symbols)}; gaps: {len(gaps)};"
        f" writer exit status {writer_code}; the exporter counted {published} trades published"
    )
    shutil.rmtree(shm_dir, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
