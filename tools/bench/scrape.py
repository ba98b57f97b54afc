"""Scrape cost benchmark: writer receive->commit latency with 10 Prometheus scrapes/s vs none.

Run: ``.venv/bin/python -m tools.bench.scrape [--quick] [--rate N] [--scrapes-per-s N] [--json P]``

Method, in one run on this machine: the simulator paces a synthetic Binance spot market at
``--rate`` messages/s; one writer (``consolidator run``) publishes it into its rings and its
counters file, and ``consolidator exporter`` runs beside it on loopback. The run alternates phases
of equal length in the order none, scraped, scraped, none, ``--rounds`` times (drift hits both
conditions alike):

- *none*: the exporter runs but nobody asks it anything;
- *scraped*: a client GETs ``/metrics`` ``--scrapes-per-s`` times per second (10: ten times what a
  Prometheus with a 1 s scrape interval does), each scrape reading every counter, histogram, ring
  header, registry entry and /proc entry the exporter exports.

Per phase, the receive->commit latency (``ts_commit - ts_recv``) of every trade, quote and depth
record published in it is read from the rings afterwards (`tools.bench.feed.measure_phase`: the
measuring reader costs the writer nothing while it runs), with the writer's frames per CPU-second,
the CPU the exporter used, and the writer's run-queue wait (``/proc/PID/schedstat``: the time it
was runnable but had no CPU, which separates scheduling delays from anything else). Reported per
condition (phases pooled): p50, p99, p99.9, frames/s, frames per writer CPU-second, exporter
cores; the ratio scraped / none; each phase's p99, p99.9 and run-queue wait; and the scrapes' own
duration and size.

``--pin`` runs the deployment layout: the writer alone on the last CPU (as ``cpu = N`` in its feed
file does), the simulator, the exporter and the scraping client on the other CPUs. Without it
every process may run anywhere, so a scrape also competes with the writer for a core.

Sizes: phases of 15 s (5 s with ``--quick``), ``--rounds`` 2, ``--symbols`` 300; books are synced
before the first phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from tools.bench.feed import (
    PY,
    Writer,
    cleanup,
    cpu_model,
    measure_phase,
    start_sim,
    start_writer,
    stop,
    summarize_phases,
    wait_synced,
)

_LISTENING = re.compile(r"listening on http://[\d.]+:(\d+)/metrics")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start_exporter(writer: Writer) -> tuple[subprocess.Popen[str], str]:
    """``consolidator exporter`` for the writer's shm_dir on a free loopback port; its URL."""
    log = writer.root / "exporter.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [PY, "-m", "consolidator.cli.main", "exporter", "--listen", "127.0.0.1:0"],
            env=writer.env, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (match := _LISTENING.search(log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"exporter did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{match.group(1)}/metrics"


def runqueue_wait_ns(pid: int) -> int:
    """Time ``pid`` has spent runnable but waiting for a CPU (``/proc/PID/schedstat``)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])


class Scraper:
    """GETs ``url`` ``per_s`` times per second (on a fixed schedule) in a thread."""

    def __init__(self, url: str, per_s: float) -> None:
        self.url = url
        self.interval = 1.0 / per_s
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            start = time.perf_counter()
            with _OPENER.open(self.url, timeout=10) as response:
                size = len(response.read())
            self.durations.append(time.perf_counter() - start)
            self.sizes.append(size)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(15)
        ms = np.array(self.durations) * 1000
        return {
            "scrapes": float(len(ms)),
            "scrape_p50_ms": float(np.percentile(ms, 50)),
            "scrape_max_ms": float(ms.max()),
            "scrape_bytes": float(np.mean(self.sizes)),
        }


def scrape_run(
    symbols: int, rate: int, seconds: float, per_s: float, pin: bool, rounds: int
) -> dict[str, Any]:
    """``rounds`` x phases none, scraped, scraped, none on one simulator, writer and exporter."""
    sim = start_sim(symbols, str(rate))
    writer = start_writer(sim, list(sim.hello["symbols"]))
    exporter, url = start_exporter(writer)
    if pin:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(writer.proc.pid, {cpus[-1]})
        for pid in (0, sim.proc.pid, exporter.pid):
            os.sched_setaffinity(pid, set(cpus[:-1]))
    phases: dict[str, list[dict[str, Any]]] = {"none": [], "scraped": []}
    order: list[tuple[str, float, float, float]] = []
    scrapes: list[dict[str, float]] = []
    try:
        synced = wait_synced(writer, symbols)
        time.sleep(2.0)
        watched = [psutil.Process(exporter.pid)]
        for kind in ("none", "scraped", "scraped", "none") * rounds:
            scraper = Scraper(url, per_s) if kind == "scraped" else None
            wait0 = runqueue_wait_ns(writer.proc.pid)
            phase = measure_phase(writer, seconds, watched)
            waited = (runqueue_wait_ns(writer.proc.pid) - wait0) / 1e6 / seconds
            phases[kind].append(phase)
            us = phase["latency_us"]
            p99, p999 = float(np.percentile(us, 99)), float(np.percentile(us, 99.9))
            order.append((kind, p99, p999, waited))
            if scraper is not None:
                scrapes.append(scraper.stop())
            time.sleep(0.5)
    finally:
        stop(exporter, signal.SIGTERM)
        writer.stop()
        sim.stop()
        cleanup(writer)
    none, scraped = summarize_phases(phases["none"]), summarize_phases(phases["scraped"])
    ratio = {k: scraped[k] / none[k] if none[k] else 0.0 for k in none if k != "reader_cores"}
    return {
        "rate": rate, "pinned": pin, "books_synced": synced, "none": none, "scraped": scraped,
        "ratio": ratio, "phases": order, "scrapes": scrapes, "exporter_exit": exporter.returncode,
    }  # fmt: skip


def report(r: dict[str, Any], symbols: int, per_s: float) -> None:
    layout = "writer pinned alone to a CPU" if r["pinned"] else "no pinning"
    print(f"   {r['rate']:,} msgs/s paced, {layout}, books synced {r['books_synced']}/{symbols}, "
          f"exporter exit code {r['exporter_exit']}")  # fmt: skip
    print("   condition       frames/s  frames/CPU-s  exporter cores    p50 us    p99 us"
          "  p99.9 us    records")  # fmt: skip
    for kind in ("none", "scraped"):
        x = r[kind]
        label = kind if kind == "none" else f"{per_s:g}/s"
        print(f"   {label:<9} {x['frames_per_s']:>14,.0f} {x['frames_per_cpu_s']:>13,.0f} "
              f"{x['reader_cores']:>15.3f} {x['p50_us']:>9,.0f} {x['p99_us']:>9,.0f} "
              f"{x['p999_us']:>9,.0f} {x['records']:>10,.0f}")  # fmt: skip
    x = r["ratio"]
    print(f"   {'ratio':<9} {x['frames_per_s']:>14.2f} {x['frames_per_cpu_s']:>13.2f} "
          f"{'':>15} {x['p50_us']:>9.2f} {x['p99_us']:>9.2f} {x['p999_us']:>9.2f}")  # fmt: skip
    print("   each phase in order: p99 / p99.9 us, the writer's run-queue wait in ms per second")
    for kind, p99, p999, waited in r["phases"]:
        print(f"     {kind:<8} {p99:>9,.0f} {p999:>9,.0f} {waited:>9.1f}")
    for s in r["scrapes"]:
        print(
            f"   scraped phase: {s['scrapes']:.0f} scrapes, p50 {s['scrape_p50_ms']:.1f} ms, "
            f"max {s['scrape_max_ms']:.1f} ms, {s['scrape_bytes'] / 1024:.0f} KiB each"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (smoke test)")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--rate", type=int, default=10_000, help="simulated messages/s")
    parser.add_argument("--scrapes-per-s", type=float, default=10.0)
    parser.add_argument("--pin", action="store_true", help="the writer alone on the last CPU")
    parser.add_argument("--rounds", type=int, default=2, help="times none, scraped x2, none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs at least 2 CPUs")
    seconds = 5.0 if args.quick else 15.0
    cpu = cpu_model()
    python = sys.version.split()[0]
    print(f"scrape benchmark: {os.cpu_count()} cores ({cpu}), Python {python}, "
          f"{args.symbols} symbols, {args.rounds} x {seconds:.0f} s phases "
          "(none, scraped x2, none)")  # fmt: skip
    print("\nWriter receive->commit with the exporter idle vs scraped "
          f"{args.scrapes_per_s:g} times per second (same run)")  # fmt: skip
    result = scrape_run(args.symbols, args.rate, seconds, args.scrapes_per_s, args.pin, args.rounds)
    report(result, args.symbols, args.scrapes_per_s)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
