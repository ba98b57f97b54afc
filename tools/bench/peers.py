"""Section 6 of the feed benchmark: the writer against cryptofeed and bare picows loops.

Run: ``.venv/bin/python -m tools.bench.feed --compare-only [--quick]`` (or the whole benchmark).

In one run, on this machine, every receiver gets the same traffic: a fresh fast simulator
(``consolidator sim --mode fast``, same seed and symbols, the recorded message mix) pinned to the
first CPU, the receiver pinned to the last:

* **writer**: ``consolidator run`` (trades, quotes, 100 ms depth of every symbol, raw ring on),
  pinned with the feed's ``cpu`` key;
* **picows**: a bare picows receive loop (`tools.bench.bare`), the same subscriptions;
* **picows + orjson**: the same loop, ``orjson.loads`` of every payload;
* **cryptofeed**: the newest cryptofeed that installs on this Python, in its own virtualenv under
  ``~/.cache/consolidator-bench/cryptofeed-venv`` (created on first use with ``python -m venv`` and
  ``pip install cryptofeed``), its Binance feed pointed at the simulator with trades, ticker and
  L2 book (`tools.bench.cryptofeed_runner`). If it cannot be installed, the row says why.

The simulator starts at 2,000 events/s until the receiver is subscribed (the writer: every book
synchronized), then runs unlimited: it sends as fast as the receiver drains (TCP flow control),
so each receiver runs at its own maximum. Measured over the window: messages/s (wall) and CPU
microseconds per message (the receiver process's user + system CPU / messages), and the ratios
writer / picows + orjson and writer / cryptofeed (per CPU, i.e. messages per CPU-second). The
simulator's own cores and CPU per message are shown too: on a busy machine a receiver may be
held back by a starved simulator (then "cores" < 1 for both), and the simulator's CPU per
message says how many frames/s it could send with a core of its own.

Then receive->commit of the writer (pinned; the fast simulator on the other CPU, paced: each
block of the events due sent when due, woken by a timerfd) at 10 k and 50 k events/s, median of
three runs (one with ``--quick``), next to the machine's stall floor measured in the same run
(`tools.bench.ring.run_stall_floor`: what a zero-cost transport would show given the CPUs'
stalls). ``redundancy = 2`` is section 7 of the feed benchmark (``--redundancy 2``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from tools.bench import feed
from tools.bench.ring import run_stall_floor

__all__ = ["compare_section"]

CRYPTOFEED_VENV = Path.home() / ".cache" / "consolidator-bench" / "cryptofeed-venv"
HERE = Path(__file__).resolve().parent


def cryptofeed_python() -> tuple[Path | None, str]:
    """The cryptofeed virtualenv's Python (created and installed on first use), and the installed
    version; or None and the reason it is unavailable."""
    python = CRYPTOFEED_VENV / "bin" / "python"
    if not python.exists():
        CRYPTOFEED_VENV.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(CRYPTOFEED_VENV)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode:
            return None, f"python -m venv failed: {made.stderr.strip()[-200:]}"
    probe = [str(python), "-c", "import cryptofeed, importlib.metadata as m; "
             "print(m.version('cryptofeed'))"]  # fmt: skip
    found = subprocess.run(probe, capture_output=True, text=True, check=False)
    if found.returncode:
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "cryptofeed"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if installed.returncode:
            return None, f"pip install cryptofeed failed: {installed.stderr.strip()[-300:]}"
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode:
            return None, f"cryptofeed does not import: {found.stderr.strip()[-300:]}"
    return python, found.stdout.strip()


class _Status:
    """The last JSON status line a receiver printed (read by a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.last: dict[str, float] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.last = json.loads(line)

    def sample(self) -> dict[str, float]:
        """A status line newer than now."""
        before = self.last.get("t", 0.0)
        deadline = time.monotonic() + 5.0
        while self.last.get("t", 0.0) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        return dict(self.last)


def _pinned_sim(symbols: int, cpu: int) -> feed.Sim:
    sim = feed.start_sim(symbols, "2000", mode="fast")
    feed.pin(sim.proc.pid, {cpu})
    return sim


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _window(status: _Status, seconds: float, sim: feed.Sim) -> dict[str, float]:
    a, sim_a = status.sample(), _cpu_s(sim.proc.pid)
    time.sleep(seconds)
    b, sim_b = status.sample(), _cpu_s(sim.proc.pid)
    frames = b["frames"] - a["frames"]
    cpu = b["cpu"] - a["cpu"]
    wall = b["t"] - a["t"]
    return {
        "msgs": frames,
        "msgs_per_s": frames / wall if wall else 0.0,
        "cpu_us_per_msg": 1e6 * cpu / frames if frames else 0.0,
        "cores": cpu / wall if wall else 0.0,
        "sim_cores": (sim_b - sim_a) / wall if wall else 0.0,
        "sim_cpu_us_per_msg": 1e6 * (sim_b - sim_a) / frames if frames else 0.0,
    }


def run_loop(symbols: int, seconds: float, parse: bool, cpus: tuple[int, int]) -> dict[str, Any]:
    """The bare picows loop (``parse``: with orjson) against a fresh fast simulator."""
    sim = _pinned_sim(symbols, cpus[0])
    names = list(sim.hello["symbols"])
    with tempfile.NamedTemporaryFile("w", suffix=".streams", delete=False) as f:
        f.write("\n".join(s for n in names for s in _streams(n)))
        path = Path(f.name)
    cmd = [sys.executable, "-m", "tools.bench.bare", sim.hello["ws_url"], str(path),
           "--cpu", str(cpus[1])] + (["--parse"] if parse else [])  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parents[1])
    try:
        status = _Status(proc)
        _wait_frames(status, proc)
        feed.set_rate(sim, 0)
        time.sleep(2.0)
        return _window(status, seconds, sim)
    finally:
        feed.stop(proc)
        sim.stop()
        path.unlink()


def _streams(symbol: str) -> list[str]:
    low = symbol.lower()
    return [f"{low}@trade", f"{low}@bookTicker", f"{low}@depth@100ms"]


def _wait_frames(status: _Status, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while status.last.get("frames", 0) < 100:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver {proc.args!r} never received frames")
        time.sleep(0.1)


def run_cryptofeed(
    python: Path, symbols: int, seconds: float, cpus: tuple[int, int]
) -> dict[str, Any]:
    """cryptofeed's Binance feed against a fresh fast simulator; its books are given 5 s to take
    their snapshots at 2,000 events/s first."""
    sim = _pinned_sim(symbols, cpus[0])
    names = ",".join(sim.hello["symbols"])
    workdir = Path(tempfile.mkdtemp(prefix="bench-cryptofeed-"))
    cmd = [str(python), str(HERE / "cryptofeed_runner.py"), sim.hello["ws_url"],
           sim.hello["rest_url"], names, str(cpus[1])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=workdir, env=env
    )
    try:
        status = _Status(proc)
        _wait_frames(status, proc)
        time.sleep(5.0)
        feed.set_rate(sim, 0)
        time.sleep(2.0)
        return _window(status, seconds, sim)
    finally:
        feed.stop(proc)
        sim.stop()


def run_writer(symbols: int, seconds: float, cpus: tuple[int, int]) -> dict[str, Any]:
    """The writer, pinned with the feed's ``cpu`` key, against a fresh fast simulator."""
    sim = _pinned_sim(symbols, cpus[0])
    writer = feed.start_writer(sim, list(sim.hello["symbols"]), cpu=cpus[1])
    try:
        synced = feed.wait_synced(writer, symbols)
        feed.set_rate(sim, 0)
        time.sleep(2.0)
        ps = psutil.Process(writer.proc.pid)
        s0 = _cpu_s(sim.proc.pid)
        t0, c0, k0 = time.perf_counter(), ps.cpu_times(), feed.tails(writer)["raw"]
        time.sleep(seconds)
        t1, c1, k1 = time.perf_counter(), ps.cpu_times(), feed.tails(writer)["raw"]
        s1 = _cpu_s(sim.proc.pid)
        mem = feed.memory_mib(writer.proc.pid)
    finally:
        writer.stop()
        sim.stop()
        feed.cleanup(writer)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    frames = k1 - k0
    return {
        "msgs": frames,
        "msgs_per_s": frames / (t1 - t0),
        "cpu_us_per_msg": 1e6 * cpu / frames if frames else 0.0,
        "cores": cpu / (t1 - t0),
        "sim_cores": (s1 - s0) / (t1 - t0),
        "sim_cpu_us_per_msg": 1e6 * (s1 - s0) / frames if frames else 0.0,
        "books_synced": synced,
        "rss_mib": mem["RssAnon"] + mem["RssFile"],
    }


def latency_run(symbols: int, rate: int, seconds: float, cpus: tuple[int, int]) -> dict[str, Any]:
    """Receive->commit (every trade, quote and depth record) of the pinned writer against the
    fast simulator paced at ``rate`` events/s (each block of events sent when due), after every
    book synchronized at 2,000 events/s."""
    sim = _pinned_sim(symbols, cpus[0])
    writer = feed.start_writer(sim, list(sim.hello["symbols"]), cpu=cpus[1])
    try:
        synced = feed.wait_synced(writer, symbols)
        feed.set_rate(sim, rate)
        time.sleep(1.0)
        since, t0 = feed.tails(writer), time.perf_counter()
        time.sleep(seconds)
        until, t1 = feed.tails(writer), time.perf_counter()
        us = feed.latencies(writer, since, until) / 1000.0
    finally:
        writer.stop()
        sim.stop()
        feed.cleanup(writer)
    p50, p99, p999 = (float(v) for v in np.percentile(us, [50, 99, 99.9]))
    return {
        "books_synced": synced,
        "msgs_s": (until["raw"] - since["raw"]) / (t1 - t0),
        "records": len(us),
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
        "max_us": float(us.max()) if len(us) else 0.0,
    }


def latency_pinned(
    symbols: int, rates: tuple[int, ...], seconds: float, repeats: int, cpus: tuple[int, int]
) -> list[dict[str, Any]]:
    """`latency_run` per rate (median over ``repeats`` runs of each percentile) next to the stall
    floor measured just before each rate's runs."""
    out = []
    for rate in rates:
        floor = run_stall_floor(rate, min(seconds, 10.0))
        runs = [latency_run(symbols, rate, seconds, cpus) for _ in range(repeats)]
        row: dict[str, Any] = {"rate": rate, "runs": runs}
        for key in ("msgs_s", "p50_us", "p99_us", "p999_us", "max_us"):
            row[key] = statistics.median(r[key] for r in runs)
        row["floor"] = {"p50_us": floor.p50_us, "p99_us": floor.p99_us,
                        "p999_us": floor.p999_us, "max_us": floor.max_us}  # fmt: skip
        out.append(row)
    return out


def _row(name: str, r: dict[str, Any] | None, base: dict[str, Any] | None, note: str = "") -> None:
    if r is None:
        print(f"   {name:<18} {'-':>12} {'-':>10} {'-':>7}   {note}")
        return
    ratio = base["cpu_us_per_msg"] / r["cpu_us_per_msg"] if base and r["cpu_us_per_msg"] else 0
    per_core = 1e6 / r["cpu_us_per_msg"] if r["cpu_us_per_msg"] else 0.0
    print(f"   {name:<18} {r['msgs_per_s']:>12,.0f} {r['cpu_us_per_msg']:>10.2f} "
          f"{r['cores']:>7.2f} {per_core:>14,.0f} {ratio:>10.2f} {r['sim_cores']:>10.2f} "
          f"{r['sim_cpu_us_per_msg']:>10.2f}  {note}")  # fmt: skip


def compare_section(symbols: int, seconds: float, quick: bool, results: dict[str, Any]) -> None:
    """Print section 6 and store its numbers under ``results["compare"]``."""
    cpus = sorted(os.sched_getaffinity(0))
    pair = (cpus[0], cpus[-1])
    print("\n6. Writer vs cryptofeed vs bare picows loops, fast simulator (recorded mix), "
          f"{symbols} symbols,")  # fmt: skip
    print(f"   simulator on CPU {pair[0]}, receiver on CPU {pair[1]}, {seconds:.0f} s each")
    rows: dict[str, Any] = {}
    rows["picows"] = run_loop(symbols, seconds, False, pair)
    rows["picows_orjson"] = run_loop(symbols, seconds, True, pair)
    rows["writer"] = run_writer(symbols, seconds, pair)
    python, version = cryptofeed_python()
    cf_note = ""
    if python is None:
        rows["cryptofeed"] = None
        cf_note = f"SKIPPED: {version}"
    else:
        cf_note = f"cryptofeed {version}"
        try:
            rows["cryptofeed"] = run_cryptofeed(python, symbols, seconds, pair)
        except RuntimeError as exc:
            rows["cryptofeed"] = None
            cf_note = f"FAILED: {exc}"
    base = rows["picows_orjson"]
    print(f"   {'receiver':<18} {'msgs/s':>12} {'CPU us/msg':>10} {'cores':>7} "
          f"{'msgs/CPU-s':>14} {'vs orjson':>10} {'sim cores':>10} {'sim us/msg':>10}")  # fmt: skip
    _row("picows", rows["picows"], base)
    _row("picows + orjson", base, base)
    w = rows["writer"]
    _row(
        "writer", w, base, f"books synced {w['books_synced']}/{symbols}, RSS {w['rss_mib']:.0f} MiB"
    )
    _row("cryptofeed", rows["cryptofeed"], base, cf_note)
    p = rows["picows"]
    sim_rate = 1e6 / p["sim_cpu_us_per_msg"] if p["sim_cpu_us_per_msg"] else 0.0
    verdict = "PASS" if p["msgs_per_s"] >= 1e6 else "FAIL"
    print(f"   fast simulator: {p['msgs_per_s']:,.0f} frames/s to the bare loop (target >= 1M: "
          f"{verdict}), using {p['sim_cores']:.2f} cores: {sim_rate:,.0f} frames per simulator "
          "CPU-second")  # fmt: skip
    per_core = 1e6 / w["cpu_us_per_msg"] if w["cpu_us_per_msg"] else 0.0
    vs_orjson = base["cpu_us_per_msg"] / w["cpu_us_per_msg"] if w["cpu_us_per_msg"] else 0.0
    print(f"   writer msgs per CPU-second {per_core:,.0f} (target >= 150k, aim 200k) "
          f"{'PASS' if per_core >= 150_000 else 'FAIL'}; writer / picows+orjson "
          f"{vs_orjson:.2f} (aim >= 0.35)")  # fmt: skip
    cf = rows["cryptofeed"]
    if cf is not None and cf["cpu_us_per_msg"] and w["cpu_us_per_msg"]:
        per_cpu = cf["cpu_us_per_msg"] / w["cpu_us_per_msg"]
        wall = w["msgs_per_s"] / cf["msgs_per_s"] if cf["msgs_per_s"] else 0.0
        rows["writer_vs_cryptofeed"] = {"per_cpu": per_cpu, "msgs_per_s": wall}
        print(f"   writer / cryptofeed: {per_cpu:.2f} per CPU-second, {wall:.2f} in msgs/s "
              f"(target >= 1.5) {'PASS' if per_cpu >= 1.5 else 'FAIL'}")  # fmt: skip
    else:
        print("   writer / cryptofeed: not measured (cryptofeed unavailable)")
    print("   redundancy = 2: see section 7 (tools.bench.feed --redundancy 2)")

    repeats = 1 if quick else 3
    print(f"\n   Receive->commit, writer pinned (CPU {pair[1]}), fast simulator paced, each block "
          f"of events sent when due (CPU {pair[0]}), median of {repeats} run(s); floor = "
          "zero-cost transport given the CPUs' stalls, same run")  # fmt: skip
    latency = latency_pinned(symbols, (10_000, 50_000), seconds, repeats, pair)
    rows["latency"] = latency
    print(f"   {'rate':>8} {'msgs/s seen':>12} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} "
          f"{'max us':>9}   floor p50/p99/p99.9/max us")  # fmt: skip
    for r in latency:
        fl = r["floor"]
        verdict = ""
        if r["rate"] == 10_000:
            ok = r["p99_us"] <= 250 and r["p999_us"] <= 1000
            verdict = f"(target p99 <= 250, p99.9 <= 1000) {'PASS' if ok else 'FAIL'}"
        print(f"   {r['rate']:>8,} {r['msgs_s']:>12,.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
              f"{r['p999_us']:>9.0f} {r['max_us']:>9.0f}   {fl['p50_us']:.0f}/{fl['p99_us']:.0f}/"
              f"{fl['p999_us']:.0f}/{fl['max_us']:.0f}  {verdict}")  # fmt: skip
    results["compare"] = rows
