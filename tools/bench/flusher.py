"""Benchmark of the flusher: journal throughput, durable lag, fsync never reaching the writer.

Run: ``.venv/bin/python -m tools.bench.flusher [--quick] [--json PATH]``

Every figure is printed next to a baseline measured in the same run, with the ratio (the machine is
a noisy shared 2-core VM). The journal goes to a temporary directory on the root file system
(``--dir``, default /var/tmp: ext4 on the VM's disk, so fdatasync is real), rings to /dev/shm.

1. Throughput (one process). A ring is filled first (2^21 trades of 64 bytes, or 400k raw frames of
   200 bytes), then the `Flusher` object is stepped until it has journaled everything and
   fdatasync'd it (``fsync_interval_ms = 100``; a final sync at the end). Baseline: plain
   sequential ``os.write`` of the same record bytes, in the same 256 KiB pieces as the journal's
   blocks, to a file in the same directory, with ``os.fdatasync`` every 100 ms and at the end. The
   flusher's figure includes reading the ring in batches, block encoding and one CRC per block.
   Best of ``repeats`` passes, subject and baseline alternating.
2. Durable lag (three processes: writer pinned to CPU 0, ``consolidator flusher`` pinned to CPU 1
   with ``--sync-log``). The writer publishes trades at a paced rate (per record below 1M/s, 1 ms
   batches at 1M/s) for ``seconds``. Lag of a record = the time the fdatasync that made it durable
   returned (the flusher's sync log) - its ``ts_commit`` (read back from the journal). p50/p99/max
   over every record; baseline: the fsync interval itself (100 ms), the lag a record committed just
   after a sync must wait at the least. Loss must be 0 (the flusher kept up).
3. Writer jitter with and without the flusher. The writer spins on ``time.monotonic_ns()`` and
   publishes one trade every 10 us (100k/s) for 3 s; lateness = when it published minus when the
   record was due (so any stall of the writer shows, whatever its cause; the first 5% are warm-up).
   Each round runs three modes in turn: ``off`` (no flusher), ``nosync`` (a flusher journaling the
   ring without any fdatasync until it stops: its reading, encoding and writing, without the
   syncs) and ``on`` (the real flusher, fdatasync every 100 ms); flushers are pinned to the other
   CPU. ``on/nosync`` isolates what fdatasync adds; ``on/off`` is the whole flusher. Before each
   run the benchmark waits (up to 20 s) for other processes to use < 0.2 cores, and measures what
   they and the flusher used during the run. Reported per run: p50/p99/p99.9/max lateness, CPU of
   other processes and of the flusher, steal time; then medians over the rounds in which other
   processes stayed under 0.2 cores in every run, and over all rounds. On 2 cores a busy third
   party that a flusher displaces from CPU 1 lands on the writer's CPU: that shows in the
   all-rounds figures.

Sizes of a full run: best of 3 throughput passes, 5 s lag runs at 10k, 100k and 1M records/s, 8
jitter rounds; about 6 minutes, most of it waiting for a quiet machine. ``--quick`` (2 passes, 2 s
lag runs, 2 rounds; about a minute) is a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from consolidator.config import FlusherConfig, GlobalConfig
from consolidator.journal.flusher import Flusher
from consolidator.journal.history import HistoryReader
from consolidator.journal.position import read_positions
from consolidator.records import TRADE, TRADE_DTYPE, RecordType
from consolidator.ring import FixedRingWriter, RingKind, RingLayout, VariableRingWriter
from consolidator.streams import ring_path, write_feed_meta

FEED: Final = "bench"
BLOCK: Final = 256 << 10
ROOT: Final = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def trades_layout(capacity: int) -> RingLayout:
    return RingLayout(RingKind.FIXED, RecordType.TRADE, 64, capacity, 0, FEED, "trades")


def trade_array(n: int) -> np.ndarray:
    arr = np.zeros(n, TRADE_DTYPE)
    arr["ts_event"] = arr["ts_recv"] = time.time_ns()
    arr["trade_id"] = np.arange(n)
    arr["price_m"] = 6_183_763 + (np.arange(n) % 100)
    arr["qty_m"] = 1500
    arr["price_e"], arr["qty_e"], arr["side"] = -2, -3, 1
    return arr


def config(root: Path, shm: Path, state: Path) -> GlobalConfig:
    return GlobalConfig(root, shm, state, FlusherConfig(fsync_interval_ms=100, compress=False))


# ----------------------------------------------------------------------------------------------
# 1. Throughput


def fill_fixed(shm: Path, n: int) -> bytes:
    writer = FixedRingWriter(
        ring_path(shm, FEED, "trades"), trades_layout(2 << (n - 1).bit_length()),
        TRADE.pack_into, TRADE_DTYPE,
    )  # fmt: skip
    arr = trade_array(n)
    writer.publish_batch(arr)
    writer.close()
    return arr.tobytes()


def fill_variable(shm: Path, n: int, size: int) -> bytes:
    cap = 1 << (n - 1).bit_length()
    heap = 1 << (n * (size + 8) * 2 - 1).bit_length()
    layout = RingLayout(RingKind.VARIABLE, 0, 32, cap, heap, FEED, "raw")
    writer = VariableRingWriter(ring_path(shm, FEED, "raw"), layout)
    payload = bytes(range(256))[:size]
    for _ in range(n):
        writer.publish(RecordType.RAW, payload)
    writer.close()
    return (bytes(16) + payload) * n  # the journal's entry + payload per record


def settle() -> None:
    """Write back what earlier passes left dirty, so each pass starts from the same state."""
    os.sync()
    time.sleep(0.2)


def run_flusher(root: Path, shm: Path, state: Path, stream: str, n: int) -> float:
    shutil.rmtree(state, ignore_errors=True)
    settle()
    flusher = Flusher(config(root, shm, state), poll_s=3600.0)
    flusher.start()
    try:
        with gc_off():
            start = time.perf_counter()
            flusher.step()
            task = flusher.tasks[(FEED, stream)]
            while task.journal.written_seq != n:
                flusher.step()
            flusher.sync()
            elapsed = time.perf_counter() - start
        assert task.journal.durable_seq == n
    finally:
        flusher.close()
        shutil.rmtree(state, ignore_errors=True)
    return elapsed


def run_baseline(directory: Path, data: bytes) -> float:
    path = directory / "baseline.bin"
    path.unlink(missing_ok=True)
    settle()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    view = memoryview(data)
    try:
        with gc_off():
            start = last = time.perf_counter()
            for i in range(0, len(view), BLOCK):
                os.write(fd, view[i : i + BLOCK])
                now = time.perf_counter()
                if now - last >= 0.1:
                    os.fdatasync(fd)
                    last = now
            os.fdatasync(fd)
            elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return elapsed


def bench_throughput(work: Path, quick: bool, repeats: int) -> list[dict[str, Any]]:
    rows = []
    cases = [("trades", (1 << 19) if quick else (1 << 21)), ("raw", 100_000 if quick else 400_000)]
    for stream, n in cases:
        shm = Path(tempfile.mkdtemp(prefix="bench-flusher-", dir="/dev/shm"))
        try:
            data = fill_fixed(shm, n) if stream == "trades" else fill_variable(shm, n, 200)
            subject, base = [], []
            for _ in range(repeats):
                subject.append(run_flusher(work, shm, work / "state", stream, n))
                base.append(run_baseline(work, data))
            t, b = min(subject), min(base)
            rows.append({
                "case": f"{stream}: {n} records, {len(data) / n:.0f} B each",
                "flusher_rps": n / t, "flusher_mbps": len(data) / t / 1e6,
                "baseline_rps": n / b, "baseline_mbps": len(data) / b / 1e6, "ratio": b / t,
            })  # fmt: skip
        finally:
            shutil.rmtree(shm, ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------------------
# Processes: the paced writer, and a flusher subprocess


def writer_main(shm: Path, rate: float, seconds: float, spin: bool, out: Path) -> None:
    os.sched_setaffinity(0, {0})
    writer = FixedRingWriter(
        ring_path(shm, FEED, "trades"), trades_layout(1 << 22), TRADE.pack_into, TRADE_DTYPE
    )
    publish = writer.publish
    n = int(rate * seconds)
    late = np.zeros(n if spin else 1, np.int64)
    step = int(1e9 / rate)
    clock = time.monotonic_ns
    with gc_off():
        start = clock() + 50_000_000
        if spin:
            for i in range(n):
                due = start + i * step
                while (now := clock()) < due:
                    pass
                publish(now, now, i, 100, 1, 0, -2, -3, 1, 0)
                late[i] = now - due
        elif rate >= 500_000:
            batch = trade_array(1000)
            for k in range(n // 1000):
                due = start + k * 1_000_000
                while clock() < due:
                    time.sleep(0.0002)
                writer.publish_batch(batch)
        else:
            chunk = max(1, int(rate / 1000))
            for k in range(0, n, chunk):
                due = start + k * step
                while clock() < due:
                    time.sleep(0.0002)
                for i in range(k, min(n, k + chunk)):
                    publish(i, i, i, 100, 1, 0, -2, -3, 1, 0)
        writer.heartbeat()
    writer.close()
    np.save(out, late)


def spawn_writer(
    shm: Path, rate: float, seconds: float, spin: bool, out: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.bench.flusher", "--role", "writer", str(shm), str(rate),
         str(seconds), "1" if spin else "0", str(out)],
        cwd=ROOT,
    )  # fmt: skip


def spawn_flusher(etc: Path, sync_log: Path | None) -> subprocess.Popen[bytes]:
    extra = ["--sync-log", str(sync_log)] if sync_log else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "consolidator.journal.main", "--config-dir", str(etc), *extra],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    os.sched_setaffinity(proc.pid, {1 % (os.cpu_count() or 1)})
    return proc


def make_etc(root: Path, shm: Path, state: Path, *, fsync: bool = True) -> Path:
    """A configuration: fdatasync every 100 ms, or (``fsync=False``) only when stopping."""
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    interval, size = (100, 8 << 20) if fsync else (86_400_000, 1 << 40)
    (etc / "consolidator.toml").write_text(
        f'shm_dir = "{shm}"\nstate_dir = "{state}"\n[flusher]\nfsync_interval_ms = {interval}\n'
        f"fsync_bytes = {size}\ncompress = false\n"
    )
    return etc


# ----------------------------------------------------------------------------------------------
# 2. Durable lag


def durable_lag(work: Path, rate: float, seconds: float) -> dict[str, Any]:
    shm = Path(tempfile.mkdtemp(prefix="bench-flusher-", dir="/dev/shm"))
    state = work / "lag-state"
    shutil.rmtree(state, ignore_errors=True)
    log = work / "sync.log"
    log.unlink(missing_ok=True)
    try:
        write_feed_meta(shm, FEED, "bench")
        FixedRingWriter(
            ring_path(shm, FEED, "trades"), trades_layout(1 << 22), TRADE.pack_into, TRADE_DTYPE
        ).close()
        flusher = spawn_flusher(make_etc(work, shm, state), log)
        time.sleep(1.5)
        writer = spawn_writer(shm, rate, seconds, False, work / "late.npy")
        writer.wait()
        n = (
            int(rate * seconds)
            // (1000 if rate >= 500_000 else 1)
            * (1000 if rate >= 500_000 else 1)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pos = read_positions(shm, FEED)
            if pos is not None and pos.streams["trades"].durable_seq >= n:
                break
            time.sleep(0.05)
        stat = Path(f"/proc/{flusher.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        flusher.send_signal(signal.SIGTERM)
        flusher.wait(60)
        pos = read_positions(shm, FEED)
        lost = pos.streams["trades"].lost_records if pos else -1
        syncs = [json.loads(line) for line in log.read_text().splitlines()]
        ts = np.empty(n, np.int64)
        with HistoryReader(state, shm, FEED, "trades", live=False) as reader:
            for item in reader.items():
                if isinstance(item, np.ndarray):
                    ts[item["seq"].astype(np.int64)] = item["ts_commit"]
        done = np.full(n, -1, np.int64)
        for s in syncs:
            lo, hi = s["from"], min(s["to"], n)
            if hi > lo:
                done[lo:hi] = s["t"]
        assert (done >= 0).all(), "every record was synced"
        lag_ms = (done - ts) / 1e6
        return {
            "rate": rate, "records": n, "lost": lost, "syncs": len(syncs),
            "p50_ms": float(np.percentile(lag_ms, 50)), "p99_ms": float(np.percentile(lag_ms, 99)),
            "max_ms": float(lag_ms.max()),
            "fsync_p99_ms": float(np.percentile([s["fsync_ns"] / 1e6 for s in syncs], 99)),
            "flusher_cpu_s": cpu_s, "seconds": seconds,
        }  # fmt: skip
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 3. Writer jitter, flusher off and on


def busy_ticks() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, fields[7]


def own_ticks() -> int:
    """CPU jiffies used by this process and its waited-for children."""
    tick = os.sysconf("SC_CLK_TCK")
    t = os.times()
    return round((t.user + t.system + t.children_user + t.children_system) * tick)


def wait_quiet(max_wait_s: float, cores: float = 0.3) -> float:
    """Wait (up to ``max_wait_s``) until other processes use less than ``cores``; their use."""
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + max_wait_s
    while True:
        b0, o0 = busy_ticks()[0], own_ticks()
        time.sleep(0.5)
        used = ((busy_ticks()[0] - b0) - (own_ticks() - o0)) / tick / 0.5
        if used < cores or time.monotonic() > deadline:
            return used


MODES: Final = ("off", "nosync", "on")
"""No flusher; a flusher journaling without fdatasync (until it stops); the real flusher."""


def jitter_run(work: Path, seconds: float, mode: str) -> dict[str, float]:
    shm = Path(tempfile.mkdtemp(prefix="bench-flusher-", dir="/dev/shm"))
    state = work / "jit-state"
    shutil.rmtree(state, ignore_errors=True)
    tick = os.sysconf("SC_CLK_TCK")
    try:
        write_feed_meta(shm, FEED, "bench")
        FixedRingWriter(
            ring_path(shm, FEED, "trades"), trades_layout(1 << 22), TRADE.pack_into, TRADE_DTYPE
        ).close()
        etc = make_etc(work, shm, state, fsync=mode == "on")
        flusher = spawn_flusher(etc, None) if mode != "off" else None
        time.sleep(1.5)
        out = work / "late.npy"

        def flusher_ticks() -> int:
            if flusher is None:
                return 0
            stat = Path(f"/proc/{flusher.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(stat[11]) + int(stat[12])

        (b0, s0), o0, f0, t0 = busy_ticks(), own_ticks(), flusher_ticks(), time.monotonic()
        spawn_writer(shm, 100_000, seconds, True, out).wait()
        (b1, s1), o1, f1, t1 = busy_ticks(), own_ticks(), flusher_ticks(), time.monotonic()
        if flusher is not None:
            flusher.send_signal(signal.SIGTERM)
            flusher.wait(60)
            pos = read_positions(shm, FEED)
            assert pos is not None
            assert pos.streams["trades"].durable_seq == int(100_000 * seconds)
        flusher_cpu = (f1 - f0) / tick / (t1 - t0)
        others = ((b1 - b0) - (o1 - o0) - (f1 - f0)) / tick / (t1 - t0)
        late: np.ndarray = np.load(out)
        late = late[len(late) // 20 :] / 1000.0  # us; the first 5% are warm-up
        row = {f"p{q}": float(np.percentile(late, q)) for q in (50, 99, 99.9)}
        row.update(max=float(late.max()), others_cores=max(0.0, others), steal=(s1 - s0) / tick)
        row["flusher_cores"] = flusher_cpu
        return row
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


QUIET_CORES: Final = 0.2


def bench_jitter(work: Path, seconds: float, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Rounds of one run per mode (off, nosync, on), each after waiting for a quiet machine."""
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            wait_quiet(20.0, QUIET_CORES)
            runs[mode].append(jitter_run(work, seconds, mode))
    return runs


def jitter_summary(runs: dict[str, list[dict[str, float]]], quiet_only: bool) -> str:
    rounds = list(zip(*(runs[m] for m in MODES), strict=True))
    if quiet_only:
        rounds = [r for r in rounds if max(x["others_cores"] for x in r) < QUIET_CORES]
    if not rounds:
        return "  (no such rounds)"
    lines = []
    for q in ("p99", "p99.9", "max"):
        med = [float(np.median([r[i][q] for r in rounds])) for i in range(len(MODES))]
        off, nosync, on = med
        lines.append(
            f"  {q:6} median off {off:8.1f}  nosync {nosync:8.1f}  on {on:8.1f} us;  "
            f"on/nosync {on / max(nosync, 1e-9):.2f}  on/off {on / max(off, 1e-9):.2f}"
        )
    return "\n".join(lines) + f"\n  ({len(rounds)} rounds)"


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--json", type=Path)
    p.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.role == "writer":
        shm, rate, secs, spin, out = rest
        writer_main(Path(shm), float(rate), float(secs), spin == "1", Path(out))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-flusher-", dir=args.dir))
    seconds = 2.0 if args.quick else 5.0
    print(__doc__)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, journal in {work}")
    try:
        result: dict[str, Any] = {
            "throughput": bench_throughput(work, args.quick, 2 if args.quick else 3)
        }
        print("\n1. Throughput (fdatasync every 100 ms)")
        print(f"{'case':38} {'flusher':>22} {'baseline os.write':>22} {'ratio':>6}")
        for r in result["throughput"]:
            print(f"{r['case']:38} {r['flusher_rps'] / 1e6:6.2f} M/s {r['flusher_mbps']:7.0f} MB/s"
                  f" {r['baseline_rps'] / 1e6:6.2f} M/s {r['baseline_mbps']:7.0f} MB/s"
                  f" {r['ratio']:6.2f}")  # fmt: skip
        print("\n2. Durable lag, ts_commit -> fdatasync returned (baseline: the 100 ms interval)")
        result["lag"] = [durable_lag(work, rate, seconds) for rate in (10_000, 100_000, 1_000_000)]
        for r in result["lag"]:
            print(
                f"  {r['rate']:>9,.0f}/s: p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms "
                f"(p99/interval {r['p99_ms'] / 100:.2f})  max {r['max_ms']:6.1f} ms  "
                f"fsync p99 {r['fsync_p99_ms']:.1f} ms  syncs {r['syncs']}  lost {r['lost']}  "
                f"flusher CPU {r['flusher_cpu_s']:.1f} s"
            )
        print("\n3. Writer lateness at 100k/s, spin-paced (us), runs alternating flusher off/on")
        result["jitter"] = jit = bench_jitter(work, 3.0, 2 if args.quick else 8)
        head = f"  {'run':8} {'p50':>8} {'p99':>9} {'p99.9':>9} {'max':>9} {'others':>7}"
        print(head + f" {'flusher':>8} {'steal':>6}")
        for i, round_runs in enumerate(zip(*(jit[m] for m in MODES), strict=True)):
            for mode, r in zip(MODES, round_runs, strict=True):
                print(f"  {mode:6} {i + 1:<2} {r['p50']:7.1f} {r['p99']:9.1f} {r['p99.9']:9.1f} "
                      f"{r['max']:9.1f} {r['others_cores']:6.2f}c {r['flusher_cores']:7.2f}c "
                      f"{r['steal']:5.2f}s")  # fmt: skip
        print(f"  rounds where other processes used < {QUIET_CORES} cores in every run:")
        print(jitter_summary(jit, True))
        print("  all rounds:")
        print(jitter_summary(jit, False))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
