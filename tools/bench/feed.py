"""Feed writer benchmark: simulator -> ``consolidator run`` -> rings, against a bare receive loop.

Run: ``.venv/bin/python -m tools.bench.feed [--quick] [--soak SECONDS] [--profile] [--json PATH]
[--readers-only | --compare-only]``

Measures, in one run on this machine:

1. **Throughput per writer core.** The simulator publishes a synthetic Binance spot market at full
   rate over loopback. The writer subscribes to trades, bookTicker and 100 ms depth of every symbol
   and publishes into its rings (raw frames included). Messages/s per CPU-second of the writer
   process is compared with a *bare receive loop*: the writer's websocket library (picows),
   same subscriptions, same event loop (uvloop), receiving frames and doing nothing but take
   their bytes (the floor); a websockets loop, the M1 floor, is measured beside it.
2. **Receive->commit latency** (``ts_commit - ts_recv`` of every published trade, quote and depth
   record) with the simulator paced at about 10 k and 30 k messages/s; read from the rings after the
   run so the measuring reader costs the writer nothing.
3. **Writer RSS** sampled over a soak period (``--soak``; 600 s for the record), the fast
   simulator paced at 10 k events/s (the recorded message mix).
4. ``--profile``: a py-spy profile of the writer at full rate, summarized by function (self time)
   and by component.
5. **Readers.** The same writer workload with no reader and with readers (two ``mdtail FEED
   --format json > /dev/null`` processes and one batch reader, `batch_reader`, all registered in
   the reader registry), alternating in one run (none, readers, readers, none): writer frames/s,
   frames per writer CPU-second and receive->commit percentiles for both, the ratios, and the CPU
   the readers themselves took. Paced at 10 k msgs/s and at full rate; first as the scheduler
   places everyone, then with the writer pinned to a CPU of its own (the simulator and the readers
   on the others), as deployed. ``--readers-only`` runs just this.
6. **Writer vs cryptofeed vs bare picows loops** on the fast simulator (recorded message mix), the
   writer pinned; receive->commit at 10 k and 50 k msgs/s pinned, next to the stall floor;
   ``redundancy = 2`` (skipped until it exists). See `tools.bench.peers`; ``--compare-only``
   runs just this.
7. ``--redundancy 2``: **redundant connections.** The section-1 workload with ``redundancy = 1``
   and ``redundancy = 2`` (two connections per planned one, to the same simulator; each record
   arrives twice and is published once), alternating 1, 2, 2, 1 with a fresh simulator each:
   unique records published per second and per writer CPU-second, and the ratio 2 / 1 (M2-1
   target >= 0.5). ``--redundancy-only`` runs just this.

The message mix is reported as measured (depth / quotes / trades share of published records).

Sizes: ``--symbols`` symbols (300); 15 s per measurement (5 s with ``--quick``). In section 1 the
simulator first runs at 2,000 events/s until every book has its snapshot (BOOK_SYNCED for all
symbols), then is switched to full rate; the bare loop runs against a fresh simulator at full rate
once before and once after the writer, and the mean of the two is the floor. Section 3 samples
private RSS (RssAnon + RssFile) every 10 s for ``--soak`` seconds (60; 20 with ``--quick``); the
ring mappings (RssShmem, a fixed size) are reported apart. ``--profile`` needs ``py-spy`` (on PATH
or in the virtualenv) and records 20 s at 250 Hz. The PASS/FAIL verdicts printed are the M1-2
targets (writer / bare loop >= 0.8; at 10 k/s p99 <= 50 us and max <= 2 ms; RSS <= 150 MB and
flat); M2-1 replaces the first two (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from consolidator.payloads import decode_event
from consolidator.process import stop_process
from consolidator.records import EventKind
from consolidator.ring.reader import FixedRingReader, RingReader, VariableRingReader
from consolidator.ring.registry import ReaderSlot, list_readers, register_reader
from consolidator.streams import feed_streams, open_stream_reader

PY = sys.executable
FEED = "bench"


@dataclass
class Sim:
    proc: subprocess.Popen[str]
    hello: dict[str, Any]

    def stop(self) -> None:
        stop(self.proc)


def cpu_model() -> str:
    """The CPU's model name (for the benchmark's header line)."""
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    stop_process(proc, sig)
    if proc.stdout is not None:
        proc.stdout.close()


def start_sim(symbols: int, rate: str, mode: str = "synthetic") -> Sim:
    proc = subprocess.Popen(
        [PY, "-m", "consolidator.sim.cli", "--venue", "binance", "--port", "0", "--mode", mode,
         "--symbols", str(symbols), "--rate", rate, "--weight-limit", "1000000",
         "--max-send-buffer", str(1 << 30)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return Sim(proc, json.loads(proc.stdout.readline()))


def set_rate(sim: Sim, rate: float) -> None:
    """Change the simulator's event rate (0 = as fast as it can)."""
    body = json.dumps({"action": "rate", "rate": rate}).encode()
    url = f"{sim.hello['rest_url']}/sim/control"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")) as r:
        r.read()


def wait_synced(writer: Writer, count: int, timeout_s: float = 60.0) -> int:
    """Until ``count`` books have synchronized (BOOK_SYNCED events); returns how many did."""
    reader = open_stream_reader(writer.shm, FEED, "events", start="oldest")
    assert isinstance(reader, VariableRingReader)
    synced: set[int] = set()
    deadline = time.monotonic() + timeout_s
    with reader:
        while len(synced) < count and time.monotonic() < deadline:
            for record in reader.read_batch():
                event = decode_event(record.payload)
                if event.kind == EventKind.BOOK_SYNCED:
                    synced.add(event.symbol_id)
            time.sleep(0.05)
    return len(synced)


def subscriptions(symbols: list[str]) -> list[tuple[str, list[bytes]]]:
    """The writer's own connection plan (path, subscribe frames) for these symbols."""
    from consolidator.venues.binance import BinanceProtocol

    ids = iter(range(1 << 30))
    protocol = BinanceProtocol("spot", symbols, ["trades", "quotes", "depth"], lambda _: next(ids))
    return [(p.path, list(p.subscribe_frames)) for p in protocol.plan_connections()]


async def _bare(
    ws_url: str, plans: list[tuple[str, list[bytes]]], seconds: float, client: str
) -> int:
    count = 0

    async def one_websockets(path: str, frames: list[bytes]) -> None:
        import websockets.asyncio.client as wsc

        nonlocal count
        async with wsc.connect(
            ws_url + path, proxy=None, compression=None, max_size=1 << 24, ping_interval=None
        ) as ws:
            for frame in frames:
                await ws.send(frame.decode())
                await asyncio.sleep(0.25)
            async for _ in ws:
                count += 1

    async def one_picows(path: str, frames: list[bytes]) -> None:
        import picows

        class Counting(picows.WSListener):
            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                nonlocal count
                frame.get_payload_as_bytes()  # the writer needs the bytes too
                count += 1

        transport, _ = await picows.ws_connect(
            Counting, ws_url + path, enable_auto_pong=True, max_frame_size=1 << 24, proxy=None
        )
        try:
            for frame in frames:
                transport.send(picows.WSMsgType.TEXT, frame)
                await asyncio.sleep(0.25)
            await transport.wait_disconnected()
        finally:
            transport.disconnect()

    one = one_picows if client == "picows" else one_websockets
    tasks = [asyncio.create_task(one(p, f)) for p, f in plans]
    await asyncio.sleep(3.0)  # subscribed and flowing
    start_count, start_cpu, start = count, time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    frames = count - start_count
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return int(frames / cpu) if cpu else 0 if wall else 0


def bare_loop(
    ws_url: str, symbols: list[str], seconds: float, client: str = "picows"
) -> dict[str, float]:
    """Frames per CPU-second of a client (``picows``, the writer's library, or ``websockets``)
    that receives and does nothing but take each frame's bytes."""
    import uvloop

    plans = subscriptions(symbols)
    start = time.process_time()
    per_cpu = uvloop.run(_bare(ws_url, plans, seconds, client))
    return {"frames_per_cpu_s": per_cpu, "cpu_s": time.process_time() - start}


@dataclass
class Writer:
    proc: subprocess.Popen[str]
    root: Path
    shm: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> int:
        stop(self.proc)
        return self.proc.returncode


def start_writer(
    sim: Sim, symbols: list[str], raw: bool = True, cpu: int | None = None, redundancy: int = 1
) -> Writer:
    root = Path(tempfile.mkdtemp(prefix="bench-feed-"))
    shm = Path(tempfile.mkdtemp(prefix="bench-feed-", dir="/dev/shm"))
    (root / "feeds").mkdir()
    (root / "consolidator.toml").write_text(f'shm_dir = "{shm}"\nstate_dir = "{root}/state"\n')
    (root / "feeds" / f"{FEED}.toml").write_text(
        f'venue = "binance"\nsymbols = {json.dumps(symbols)}\nraw = {str(raw).lower()}\n'
        f'ws_url = "{sim.hello["ws_url"]}"\nrest_url = "{sim.hello["rest_url"]}"\n'
        f"snapshot_limit = 100\nring_scale = 2\nredundancy = {redundancy}\n"
        + ("" if cpu is None else f"cpu = {cpu}\n")
    )
    env = {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(root)}
    proc = subprocess.Popen(
        [PY, "-m", "consolidator.cli.main", "run", FEED],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    while not all((shm / FEED / f"{s}.ring").exists() for s in ("raw", "events")):
        if proc.poll() is not None:
            raise RuntimeError("writer failed to start")
        time.sleep(0.05)
    return Writer(proc, root, shm, env)


def cleanup(writer: Writer) -> None:
    shutil.rmtree(writer.shm, ignore_errors=True)
    shutil.rmtree(writer.root, ignore_errors=True)


def tails(writer: Writer) -> dict[str, int]:
    out = {}
    for stream in ("raw", "trades", "quotes", "depth"):
        with open_stream_reader(writer.shm, FEED, stream) as reader:
            out[stream] = reader.tail()
    return out


def writer_throughput(writer: Writer, seconds: float) -> dict[str, float]:
    """Frames/s and frames per writer CPU-second, from the raw ring and /proc."""
    ps = psutil.Process(writer.proc.pid)
    time.sleep(3.0)  # subscribed, books synced
    t0, c0, k0 = time.perf_counter(), ps.cpu_times(), tails(writer)
    time.sleep(seconds)
    t1, c1, k1 = time.perf_counter(), ps.cpu_times(), tails(writer)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    frames = k1["raw"] - k0["raw"]
    records = {s: k1[s] - k0[s] for s in ("trades", "quotes", "depth")}
    total = sum(records.values()) or 1
    return {
        "frames_per_s": frames / (t1 - t0),
        "frames_per_cpu_s": frames / cpu if cpu else 0.0,
        "records_per_s": total / (t1 - t0),
        "records_per_cpu_s": total / cpu if cpu else 0.0,
        "cpu_cores": cpu / (t1 - t0),
        "mix_depth": records["depth"] / total,
        "mix_quotes": records["quotes"] / total,
        "mix_trades": records["trades"] / total,
    }


def latencies(
    writer: Writer, since: dict[str, int], until: dict[str, int] | None = None
) -> np.ndarray:
    """ts_commit - ts_recv (ns) of every trade, quote and depth record published since ``since``
    (and before ``until``, if given)."""
    out = []
    for stream in ("trades", "quotes"):
        reader = open_stream_reader(writer.shm, FEED, stream, start=since[stream])
        assert isinstance(reader, FixedRingReader)
        with reader:
            while len(batch := reader.read_batch()):
                if until is not None:
                    batch = batch[batch["seq"] < until[stream]]
                out.append(batch["ts_commit"] - batch["ts_recv"])
                if until is not None and reader.position >= until[stream]:
                    break
    reader = open_stream_reader(writer.shm, FEED, "depth", start=since["depth"])
    assert isinstance(reader, VariableRingReader)
    with reader:
        while records := reader.read_batch():
            if until is not None:
                records = [r for r in records if r.seq < until["depth"]]
            recv = [
                int.from_bytes(r.payload[8:16], "little") for r in records if r.record_type == 3
            ]
            commit = [r.ts_commit for r in records if r.record_type == 3]
            out.append(np.array(commit, dtype=np.int64) - np.array(recv, dtype=np.int64))
            if until is not None and reader.position >= until["depth"]:
                break
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def latency_run(symbols: int, rate: int, seconds: float) -> dict[str, Any]:
    sim = start_sim(symbols, str(rate))
    writer = start_writer(sim, list(sim.hello["symbols"]))
    try:
        synced = wait_synced(writer, symbols)
        since = tails(writer)
        t0 = time.perf_counter()
        time.sleep(seconds)
        after = tails(writer)
        elapsed = time.perf_counter() - t0
        lat = latencies(writer, since)
    finally:
        writer.stop()
        sim.stop()
        cleanup(writer)
    frames = after["raw"] - since["raw"]
    us = lat / 1000.0
    published = {k: after[k] - since[k] for k in ("trades", "quotes", "depth")}
    total = sum(published.values()) or 1
    return {
        "books_synced": synced,
        "mix": {k: v / total for k, v in published.items()},
        "target_msgs_s": rate,
        "msgs_s": frames / elapsed,
        "records": float(len(lat)),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "p999_us": float(np.percentile(us, 99.9)),
        "max_us": float(us.max()),
    }


def memory_mib(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and RssShmem (the ring mappings) of ``pid``, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 1024
    return out


def soak(symbols: int, rate: int, seconds: float) -> dict[str, Any]:
    sim = start_sim(symbols, str(rate), mode="fast")
    writer = start_writer(sim, list(sim.hello["symbols"]))
    samples = []
    shmem = 0.0
    try:
        start = time.monotonic()
        while True:
            mem = memory_mib(writer.proc.pid)
            shmem = mem["RssShmem"]
            samples.append((round(time.monotonic() - start), mem["RssAnon"] + mem["RssFile"]))
            if time.monotonic() - start >= seconds:
                break
            time.sleep(min(10.0, seconds / 20))
        frames = tails(writer)["raw"]
    finally:
        writer.stop()
        sim.stop()
        cleanup(writer)
    return {"seconds": seconds, "frames": frames, "rss_mib": samples, "ring_shmem_mib": shmem}


def profile(symbols: int, seconds: float) -> list[tuple[str, float]]:
    """py-spy self-time by function of the writer at full rate, top 25."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        return [("py-spy not installed", 0.0)]
    sim = start_sim(symbols, "max")
    writer = start_writer(sim, list(sim.hello["symbols"]))
    out = writer.root / "profile.txt"
    try:
        time.sleep(4.0)
        subprocess.run(
            [spy, "record", "--pid", str(writer.proc.pid), "--duration", str(int(seconds)),
             "--format", "raw", "--output", str(out), "--rate", "250", "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        counts: collections.Counter[str] = collections.Counter()
        total = 0
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            leaf = frames[-1] if frames else "?"
            counts[
                leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0].split("/")[-1]
            ] += int(n)
            total += int(n)
    finally:
        writer.stop()
        sim.stop()
        cleanup(writer)
    return [(name, 100.0 * n / total) for name, n in counts.most_common(25)]


# -- 5. readers --------------------------------------------------------------------------------


def batch_reader(shm: Path, feed: str, stop: list[bool], idle_s: float = 0.005) -> int:
    """Read every stream of ``feed`` in batches, as the flusher does, until ``stop[0]``.

    Registered in the reader registry (name ``bench-batch``); returns the records read.
    """
    readers: dict[str, RingReader] = {}
    slots: dict[str, ReaderSlot | None] = {}
    for stream in feed_streams(shm, feed):
        readers[stream] = open_stream_reader(shm, feed, stream, start="tail")
        slots[stream] = register_reader(shm, feed, stream, "bench-batch")
    total = 0
    try:
        while not stop[0]:
            moved = 0
            for stream, reader in readers.items():
                if isinstance(reader, FixedRingReader):
                    moved += len(reader.read_batch(65536))
                else:
                    assert isinstance(reader, VariableRingReader)
                    moved += len(reader.read_batch(4096))
                reader.drain_losses()
                slot = slots[stream]
                if slot is not None:
                    slot.update(reader.position, reader.lost)
            total += moved
            if not moved:
                time.sleep(idle_s)
    finally:
        for stream, reader in readers.items():
            slot = slots[stream]
            if slot is not None:
                slot.close()
            reader.close()
    return total


def _batch_reader_main(shm: Path) -> None:
    stop = [False]

    def on_term(*_: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    batch_reader(shm, FEED, stop)


def start_readers(writer: Writer, mdtails: int = 2) -> list[subprocess.Popen[str]]:
    """``mdtail FEED --format json > /dev/null`` x ``mdtails``, plus one `batch_reader` process."""
    mdtail = str(Path(PY).parent / "mdtail")
    procs = [
        subprocess.Popen(
            [mdtail, FEED, "--format", "json"],
            env=writer.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for _ in range(mdtails)
    ]
    procs.append(
        subprocess.Popen(
            [PY, "-m", "tools.bench.feed", "--batch-reader", str(writer.shm)],
            env=writer.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
    )
    return procs


def _cpu_s(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measure_phase(
    writer: Writer, seconds: float, others: Sequence[psutil.Process] = ()
) -> dict[str, Any]:
    """Writer frames/s, frames per writer CPU-second, receive->commit latencies (us) over
    ``seconds``, and the CPU cores ``others`` used meanwhile."""
    ps = psutil.Process(writer.proc.pid)
    since, c0, o0, t0 = tails(writer), ps.cpu_times(), _cpu_s(others), time.perf_counter()
    time.sleep(seconds)
    until, c1, o1, t1 = tails(writer), ps.cpu_times(), _cpu_s(others), time.perf_counter()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    frames = until["raw"] - since["raw"]
    return {
        "frames_per_s": frames / (t1 - t0),
        "frames_per_cpu_s": frames / cpu if cpu else 0.0,
        "writer_cores": cpu / (t1 - t0),
        "reader_cores": (o1 - o0) / (t1 - t0),
        "latency_us": latencies(writer, since, until) / 1000.0,
    }


def summarize_phases(phases: list[dict[str, Any]]) -> dict[str, float]:
    us = np.concatenate([p["latency_us"] for p in phases])
    return {
        "frames_per_s": statistics.mean(p["frames_per_s"] for p in phases),
        "frames_per_cpu_s": statistics.mean(p["frames_per_cpu_s"] for p in phases),
        "writer_cores": statistics.mean(p["writer_cores"] for p in phases),
        "reader_cores": statistics.mean(p["reader_cores"] for p in phases),
        "records": float(len(us)),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "p999_us": float(np.percentile(us, 99.9)),
    }


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of ``pid`` onto ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def readers_run(symbols: int, rate: int, seconds: float, pinned: bool = False) -> dict[str, Any]:
    """One simulator and writer; phases without and with readers, in the order none, readers,
    readers, none (drift cancels); ``rate`` 0 means full rate.

    ``pinned``: the writer gets the last CPU to itself, the simulator and the readers share the
    others (as deployed: the writer pinned to its core); otherwise the scheduler places everyone.
    """
    sim = start_sim(symbols, "2000" if rate == 0 else str(rate))
    writer = start_writer(sim, list(sim.hello["symbols"]))
    cpus = sorted(os.sched_getaffinity(0))
    own, rest = {cpus[-1]}, set(cpus[:-1]) or {cpus[-1]}
    if pinned:
        pin(writer.proc.pid, own)
        pin(sim.proc.pid, rest)
    phases: dict[str, list[dict[str, Any]]] = {"none": [], "readers": []}
    try:
        synced = wait_synced(writer, symbols)
        if rate == 0:
            set_rate(sim, 0)
        time.sleep(2.0)
        for kind in ("none", "readers", "readers", "none"):
            if kind == "none":
                phases[kind].append(measure_phase(writer, seconds))
                continue
            procs = start_readers(writer)
            try:
                time.sleep(2.0)  # started, registered, caught up
                if pinned:
                    for proc in procs:
                        pin(proc.pid, rest)
                watched = [psutil.Process(p.pid) for p in procs]
                phase = measure_phase(writer, seconds, watched)
                registry = list_readers(writer.shm, FEED)
                phase["mdtail_lost"] = sum(e.lost for e in registry if e.name == "mdtail")
                phase["mdtail_lag"] = max(
                    (tails(writer)[e.stream] - e.position for e in registry
                     if e.name == "mdtail" and e.stream in ("trades", "quotes", "depth")),
                    default=0,
                )  # fmt: skip
                phases[kind].append(phase)
            finally:
                for proc in procs:
                    stop(proc)
            time.sleep(1.0)
    finally:
        writer.stop()
        sim.stop()
        cleanup(writer)
    none, readers = summarize_phases(phases["none"]), summarize_phases(phases["readers"])
    ratio = {k: readers[k] / none[k] if none[k] else 0.0 for k in none if k != "reader_cores"}
    return {
        "rate": rate, "pinned": pinned, "books_synced": synced, "none": none, "readers": readers,
        "ratio": ratio,
        "mdtail_lost": [p["mdtail_lost"] for p in phases["readers"]],
        "mdtail_lag": [p["mdtail_lag"] for p in phases["readers"]],
    }  # fmt: skip


def print_readers(r: dict[str, Any], symbols: int) -> None:
    """One workload's table: none, readers, and the ratio readers / none."""
    label = "full rate" if r["rate"] == 0 else f"{r['rate'] // 1000}k msgs/s"
    where = "writer pinned to its own CPU" if r["pinned"] else "no pinning"
    print(f"   {label}, {where}, books synced {r['books_synced']}/{symbols}")
    print("   readers       frames/s  frames/CPU-s  writer cores  reader cores"
          "    p50 us    p99 us  p99.9 us    records")  # fmt: skip
    for kind in ("none", "readers"):
        x = r[kind]
        print(f"   {kind:<9} {x['frames_per_s']:>12,.0f} {x['frames_per_cpu_s']:>13,.0f} "
              f"{x['writer_cores']:>13.2f} {x['reader_cores']:>13.2f} {x['p50_us']:>9,.0f} "
              f"{x['p99_us']:>9,.0f} {x['p999_us']:>9,.0f} {x['records']:>10,.0f}")  # fmt: skip
    x = r["ratio"]
    print(f"   {'ratio':<9} {x['frames_per_s']:>12.2f} {x['frames_per_cpu_s']:>13.2f} "
          f"{x['writer_cores']:>13.2f} {'':>13} {x['p50_us']:>9.2f} {x['p99_us']:>9.2f} "
          f"{x['p999_us']:>9.2f}")  # fmt: skip
    print(f"   mdtail at the end of each readers phase: lost (lapped) {r['mdtail_lost']} records, "
          f"lag {r['mdtail_lag']} records")  # fmt: skip


def readers_section(symbols: int, seconds: float, results: dict[str, Any]) -> None:
    """Section 5: the writer without and with readers, paced at 10 k msgs/s and at full rate."""
    print("\n5. Readers: the same writer without and with readers (2 x mdtail --format json")
    print("   > /dev/null + 1 batch reader), phases none/readers/readers/none in one run")
    results["readers"] = []
    for pinned in (False, True):
        for rate in (10_000, 0):
            r = readers_run(symbols, rate, seconds, pinned)
            results["readers"].append(r)
            print_readers(r, symbols)


# -- 6. redundant connections ------------------------------------------------------------------


def redundancy_phase(symbols: int, seconds: float, redundancy: int) -> dict[str, float]:
    """Section 1's writer at full rate with ``redundancy``, against a fresh simulator."""
    sim = start_sim(symbols, "2000")  # every book takes its snapshot first, then full rate
    try:
        writer = start_writer(sim, list(sim.hello["symbols"]), redundancy=redundancy)
        try:
            synced = wait_synced(writer, symbols)
            set_rate(sim, 0)
            result = writer_throughput(writer, seconds)
            result["books_synced"] = synced
        finally:
            writer.stop()
            cleanup(writer)
    finally:
        sim.stop()
    return result


def redundancy_section(symbols: int, seconds: float, legs: int, results: dict[str, Any]) -> None:
    """Section 6: unique records per second and per writer CPU-second, redundancy 1 vs ``legs``
    (phases 1, N, N, 1: drift cancels)."""
    print(f"\n6. Redundant connections: redundancy = 1 vs {legs} at full rate (phases 1/{legs}/"
          f"{legs}/1, fresh simulator each)")  # fmt: skip
    phases: dict[int, list[dict[str, float]]] = {1: [], legs: []}
    for redundancy in (1, legs, legs, 1):
        phases[redundancy].append(redundancy_phase(symbols, seconds, redundancy))
    keys = ("records_per_s", "records_per_cpu_s", "frames_per_s", "cpu_cores", "books_synced")
    mean = {r: {k: statistics.mean(p[k] for p in ps) for k in keys} for r, ps in phases.items()}
    ratio = {k: mean[legs][k] / mean[1][k] if mean[1][k] else 0.0 for k in keys[:4]}
    results["redundancy"] = {"phases": phases, "mean": mean, "ratio": ratio}
    print("   redundancy   records/s  records/CPU-s    frames/s  writer cores  books synced")
    for redundancy in (1, legs):
        x = mean[redundancy]
        print(f"   {redundancy:>10} {x['records_per_s']:>11,.0f} {x['records_per_cpu_s']:>14,.0f} "
              f"{x['frames_per_s']:>11,.0f} {x['cpu_cores']:>13.2f} "
              f"{x['books_synced']:>9.0f}/{symbols}")  # fmt: skip
    x = ratio
    verdict = "PASS" if x["records_per_cpu_s"] >= 0.5 else "FAIL"
    print(f"   {'ratio':>10} {x['records_per_s']:>11.2f} {x['records_per_cpu_s']:>14.2f} "
          f"{x['frames_per_s']:>11.2f} {x['cpu_cores']:>13.2f}   "
          f"(records/CPU-s, target >= 0.5) {verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument(
        "--soak", type=float, default=60.0, help="RSS soak seconds (600 for the record)"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--readers-only", action="store_true", help="only section 5 (readers)")
    parser.add_argument(
        "--compare-only", action="store_true", help="only section 6 (writer vs cryptofeed, picows)"
    )
    parser.add_argument(
        "--redundancy", type=int, choices=(1, 2), default=1,
        help="2: add section 7, redundancy = 1 vs 2",
    )  # fmt: skip
    parser.add_argument(
        "--redundancy-only", action="store_true", help="only section 7 (redundancy = 1 vs 2)"
    )
    parser.add_argument("--batch-reader", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_reader is not None:
        _batch_reader_main(args.batch_reader)
        return
    seconds = 5.0 if args.quick else 15.0
    cpu = cpu_model()
    print(f"feed benchmark: {os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}, "
          f"{args.symbols} symbols, {seconds:.0f} s per measurement")  # fmt: skip
    results: dict[str, Any] = {}
    if args.compare_only:
        from tools.bench.peers import compare_section

        compare_section(args.symbols, seconds, args.quick, results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    if args.readers_only:
        readers_section(args.symbols, seconds, results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    if args.redundancy_only:
        redundancy_section(args.symbols, seconds, 2, results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return

    def bare_phase() -> dict[str, dict[str, float]]:
        sim = start_sim(args.symbols, "max")
        try:
            url, names = sim.hello["ws_url"], list(sim.hello["symbols"])
            return {c: bare_loop(url, names, seconds, c) for c in ("picows", "websockets")}
        finally:
            sim.stop()

    bare = bare_phase()
    sim = start_sim(args.symbols, "2000")  # every book takes its snapshot first, then full rate
    symbols = list(sim.hello["symbols"])
    try:
        writer = start_writer(sim, symbols)
        try:
            synced = wait_synced(writer, len(symbols))
            set_rate(sim, 0)
            full = writer_throughput(writer, seconds)
            full["books_synced"] = synced
        finally:
            writer.stop()
            cleanup(writer)
    finally:
        sim.stop()
    bare2 = bare_phase()
    floors = {
        c: statistics.mean([bare[c]["frames_per_cpu_s"], bare2[c]["frames_per_cpu_s"]])
        for c in ("picows", "websockets")
    }
    ratios = {c: full["frames_per_cpu_s"] / f if f else 0.0 for c, f in floors.items()}
    ratio = ratios["picows"]
    results["throughput"] = {
        "writer": full,
        "bare": [bare, bare2],
        "ratio": ratio,
        "ratio_websockets": ratios["websockets"],
    }
    print("\n1. Throughput at full rate (simulator --rate max, loopback)")
    for client, floor in floors.items():
        print(
            f"   bare {client:<10} receive loop: {floor:>10,.0f} frames per CPU-second"
            " (mean of before/after)"
        )
    print(
        f"   writer (raw ring on)         : {full['frames_per_cpu_s']:>10,.0f} "
        "frames per CPU-second "
        f"({full['frames_per_s']:,.0f} frames/s wall, {full['cpu_cores']:.2f} cores)"
    )
    print(
        f"   ratio writer / bare picows   : {ratio:.2f}   (target >= 0.8)  "
        f"{'PASS' if ratio >= 0.8 else 'FAIL'}"
    )
    print(f"   ratio writer / bare websockets: {ratios['websockets']:.2f}   (the M1 baseline)")
    print(f"   books synchronized first     : {full['books_synced']}/{len(symbols)}")
    print(
        f"   published mix                : depth {full['mix_depth']:.0%}, "
        f"quotes {full['mix_quotes']:.0%}, trades {full['mix_trades']:.0%}"
    )

    print("\n2. Receive->commit latency (ts_commit - ts_recv of every published record)")
    results["latency"] = []
    for rate in (10_000, 30_000):
        r = latency_run(args.symbols, rate, seconds)
        results["latency"].append(r)
        verdict = ""
        if rate == 10_000:
            ok = r["p99_us"] <= 50 and r["max_us"] <= 2000
            verdict = f"(target p99 <= 50 us, max <= 2 ms) {'PASS' if ok else 'FAIL'}"
        mix = ", ".join(f"{k} {v:.0%}" for k, v in r["mix"].items())
        print(
            f"   {rate // 1000:>2}k/s: books synced {r['books_synced']}/{args.symbols}; mix {mix}"
        )
        print(f"   {rate // 1000:>2}k/s target ({r['msgs_s']:,.0f} msgs/s seen, "
              f"{r['records']:,.0f} records): "
              f"p50 {r['p50_us']:.0f} us  p99 {r['p99_us']:.0f} us  p99.9 {r['p999_us']:.0f} us  "
              f"max {r['max_us']:.0f} us  {verdict}")  # fmt: skip

    print(f"\n3. Writer RSS over {args.soak:.0f} s at 10k msgs/s (fast simulator, recorded mix)")
    s = soak(args.symbols, 10_000, 20.0 if args.quick else args.soak)
    results["soak"] = s
    rss = [m for _, m in s["rss_mib"]]
    flat = rss[-1] - rss[len(rss) // 4] <= 2.0
    print(
        f"   private RSS (RssAnon+RssFile) MiB: start {rss[0]:.1f}, end {rss[-1]:.1f}, "
        f"max {max(rss):.1f} (target <= 150 MB and flat)  "
        f"{'PASS' if max(rss) <= 143 and flat else 'FAIL'}"
    )
    shmem = s["ring_shmem_mib"]
    print(f"   plus the ring mappings (RssShmem, shared with every reader): {shmem:.0f} MiB")
    print("   samples (s, MiB): " + ", ".join(f"{t}:{m:.1f}" for t, m in s["rss_mib"]))

    if args.profile:
        print("\n4. Profile of the writer at full rate (py-spy, self time by function)")
        prof = profile(args.symbols, 20.0)
        results["profile"] = prof
        for name, pct in prof:
            print(f"   {pct:5.1f}%  {name}")
    readers_section(args.symbols, seconds, results)
    from tools.bench.peers import compare_section

    compare_section(args.symbols, seconds, args.quick, results)
    if args.redundancy > 1:
        redundancy_section(args.symbols, seconds, args.redundancy, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
