"""Comparator benchmark: what a running ``mdcompare`` costs the writer, and what it costs itself.

Run: ``.venv/bin/python -m tools.bench.compare [--quick] [--rate N] [--symbols N] [--json PATH]``

One simulator (synthetic Binance spot, ``--symbols`` symbols, paced at ``--rate`` market events/s;
0 = as fast as it can) and one writer (trades, bookTicker, 100 ms depth, raw frames), the writer
pinned to a CPU of its own, the simulator and the comparator on the others (as deployed). Phases
alternate without and with a running ``mdcompare bench`` (its own reference connection to the
simulator, reading the rings as a registered reader): none, compare, compare, none, each
``--seconds`` long (15; 5 with ``--quick``), so drift cancels.

Reported:

- **writer CPU per frame** (µs of writer CPU per frame received, frames counted by the raw ring's
  tail) without and with the comparator, and their ratio (target <= 1.05), plus frames/s;
- **comparator CPU per message**: mdcompare's CPU over the phase divided by the frames of the phase
  (each frame is one reference message and one ring record to match), and the message rate one core
  would sustain at that cost (target >= 50,000 msgs/s);
- the comparator's verdict on each phase (everything matched?) and its reader loss.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from tools.bench.feed import (
    FEED,
    PY,
    Writer,
    cleanup,
    cpu_model,
    measure_phase,
    pin,
    set_rate,
    start_sim,
    start_writer,
    wait_synced,
)

WARMUP_S = 2.5


def start_compare(writer: Writer) -> subprocess.Popen[str]:
    """``mdcompare bench`` until SIGINT, its JSON report on stdout."""
    return subprocess.Popen(
        [PY, "-m", "consolidator.cli.mdcompare", FEED, "--format", "json", "--interval", "3600",
         "--grace", "1"],
        env=writer.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def compare_phase(writer: Writer, seconds: float, cpus: set[int]) -> dict[str, Any]:
    proc = start_compare(writer)
    try:
        time.sleep(WARMUP_S)  # imported, connected, caught up
        pin(proc.pid, cpus)
        phase = measure_phase(writer, seconds, [psutil.Process(proc.pid)])
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    report = json.loads(out)
    frames = phase["frames_per_s"] * seconds
    phase["compare_cpu_us_per_msg"] = phase["reader_cores"] * seconds / frames * 1e6
    phase["ok"] = report["ok"]
    phase["matched"] = sum(s["matched"] for s in report["streams"].values())
    phase["compare_lost"] = sum(report["ring"]["reader_lost"].values())
    phase["failures"] = {
        name: {k: s[k] for k in ("missing", "extra", "mismatched", "duplicates") if s[k]}
        for name, s in report["streams"].items()
    }
    return phase


def run(symbols: int, rate: int, seconds: float) -> dict[str, Any]:
    sim = start_sim(symbols, "2000" if rate == 0 else str(rate))
    writer = start_writer(sim, list(sim.hello["symbols"]))
    cpus = sorted(os.sched_getaffinity(0))
    own, rest = {cpus[-1]}, set(cpus[:-1]) or {cpus[-1]}
    pin(writer.proc.pid, own)
    pin(sim.proc.pid, rest)
    phases: dict[str, list[dict[str, Any]]] = {"none": [], "compare": []}
    try:
        synced = wait_synced(writer, symbols)
        if rate == 0:
            set_rate(sim, 0)
        time.sleep(2.0)
        for kind in ("none", "compare", "compare", "none"):
            if kind == "none":
                phases[kind].append(measure_phase(writer, seconds))
            else:
                phases[kind].append(compare_phase(writer, seconds, rest))
            time.sleep(1.0)
    finally:
        writer.stop()
        sim.stop()
        cleanup(writer)

    def mean(kind: str, key: str) -> float:
        return float(statistics.mean(p[key] for p in phases[kind]))

    out: dict[str, Any] = {"symbols": symbols, "rate": rate, "books_synced": synced}
    for kind in ("none", "compare"):
        out[kind] = {
            "frames_per_s": mean(kind, "frames_per_s"),
            "writer_cpu_us_per_frame": 1e6 / mean(kind, "frames_per_cpu_s"),
        }
    out["ratio"] = (
        out["compare"]["writer_cpu_us_per_frame"] / out["none"]["writer_cpu_us_per_frame"]
    )
    per_msg = mean("compare", "compare_cpu_us_per_msg")
    out["compare_cpu_us_per_msg"] = per_msg
    out["compare_msgs_per_core_s"] = 1e6 / per_msg
    out["compare_cores"] = mean("compare", "reader_cores")
    out["compare_phases"] = [
        {k: p[k] for k in ("ok", "matched", "compare_lost", "failures")} for p in phases["compare"]
    ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--rate", type=int, default=10_000, help="market events/s (0: full rate)")
    p.add_argument("--seconds", type=float)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.symbols} symbols, rate "
          f"{args.rate or 'full'}, {seconds:g} s per phase, writer pinned", flush=True)  # fmt: skip
    r = run(args.symbols, args.rate, seconds)
    none, comp = r["none"], r["compare"]
    print(f"writer without mdcompare: {none['writer_cpu_us_per_frame']:.2f} us CPU/frame at "
          f"{none['frames_per_s']:,.0f} frames/s")  # fmt: skip
    print(f"writer with mdcompare:    {comp['writer_cpu_us_per_frame']:.2f} us CPU/frame at "
          f"{comp['frames_per_s']:,.0f} frames/s")  # fmt: skip
    verdict = "PASS" if r["ratio"] <= 1.05 else "FAIL"
    print(f"ratio (with / without): {r['ratio']:.3f}  (target <= 1.05: {verdict})")
    verdict = "PASS" if r["compare_msgs_per_core_s"] >= 50_000 else "FAIL"
    print(f"mdcompare: {r['compare_cpu_us_per_msg']:.2f} us CPU/message "
          f"({r['compare_cores']:.2f} cores) -> {r['compare_msgs_per_core_s']:,.0f} msgs/s per "
          f"core (target >= 50,000: {verdict})")  # fmt: skip
    for i, phase in enumerate(r["compare_phases"], 1):
        print(f"  compare phase {i}: ok={phase['ok']} matched={phase['matched']} "
              f"reader lost={phase['compare_lost']} failures={phase['failures']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
