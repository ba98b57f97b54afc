"""Benchmark of the shared-memory rings: publish and read throughput, cross-process latency.

Run: ``.venv/bin/python -m tools.bench.ring [--quick] [--json PATH]``

Every figure is printed next to a baseline measured in the same run on the same machine, with the
ratio, because the machine is a noisy shared 2-core box and absolute numbers drift between runs.

Throughput (one process, rings in a temp dir under /dev/shm, removed at the end; the ``trades``
and ``depth`` stream layouts of `consolidator.streams`: 64-byte trades in a 2^20-slot ring, depth
payloads in a 2^18-slot ring with a 256 MiB heap). Each figure is the best of ``repeats`` timed
passes; passes of the subject and its baseline alternate; the garbage collector is off while
timing (as `timeit` does).

1. ``FixedRingWriter.publish(...)`` per record, against the floor: ``TRADE.pack_into`` of the
   same values into the same file (own mapping of the same pages), no protocol. A second
   baseline adds the ``time.time_ns()`` call that the writer makes for ``ts_commit``.
2. ``publish_batch(array)`` for 64, 1024 and 16384-record batches, against numpy slice assignment
   of the same array into the same mapping: as the structured dtype (what the writer does), and
   as raw bytes (a ``V64`` view: the memcpy floor).
3. ``FixedRingReader.read_batch(n)`` draining a full ring, for several ``n``, against a slice copy
   of the same number of records, in the same batch sizes, out of the mapping (structured and raw
   bytes); ``read_one()`` against ``TRADE.unpack_from`` per record. The variable ring:
   ``VariableRingWriter.publish(record_type, payload)`` against a slice store of the payload and
   a ``DESCRIPTOR.pack_into`` per record, and ``VariableRingReader.read_batch`` against a copy of
   the same descriptor and payload bytes, for 200-byte and 2 KiB payloads.

Latency (two processes: the writer pinned to CPU 0, the reader to CPU 1). The writer publishes at
a fixed rate: it spins on ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for both processes)
until the record is due, calling ``os.sched_yield()`` (0.5 us) in the spin to release the GIL:
without it the feeder thread of the ``multiprocessing.Queue`` baseline starves behind the spinning
loop and the queue backs up by hundreds of milliseconds; ``time.sleep(0)`` would release it too but
sleeps ~70 us (timer slack) on this VM. Then it stamps ``ts_recv = monotonic_ns()`` and publishes.
A late writer catches up at once (no skipped records). The same loop serves every transport.
The reader takes ``monotonic_ns()`` once the records are in hand (after ``read_batch`` / ``get``
returns) and the latency of a record is that minus its ``ts_recv``: publish call, transport and
read included. The first records are warm-up and are not counted.

Transports: (a) the ring, busy polling ``while reader.tail() == reader.position: pass`` then
``read_batch``; (b) the ring, the default back-off poller ``reader.wait(1.0)`` then
``read_batch``; baseline: ``multiprocessing.Queue.put`` of the same 64 record bytes and a blocking
``get()``. Ratios are ring p99 / queue p99 (lower is better).

Second baseline, the machine's floor: this is a shared VM whose CPUs stall (a pure spin loop pinned
to a CPU misses milliseconds at a time). Before each rate, a probe process spins on each CPU for as
long as a run lasts, recording every gap > 5 us in its clock readings; the "zero-cost floor" row is
what a transport costing nothing would show: a record published while the reader's CPU is stalled
is seen when the stall ends, any other at once. Ratios "p99 / floor p99" compare with it.

Also reported: the writer's achieved rate and worst lateness, the reader's largest gap between two
deliveries, the CPU that *other* processes used during the run (busy ticks of /proc/stat minus this
process and its children), and the VM steal time, to tell stalls of the machine from costs of the
code. In a full run, each latency run (floor probe included) is preceded by a wait of up to 10 s
for other processes to use less than 0.2 cores, and a run during which they used more is
"disturbed" and repeated once, keeping the least disturbed run whatever its latencies (``--quick``
does neither). A disturbed row says so next to its PASS/FAIL.

Sizes of a full run (``make bench`` runs one): best of 5 passes; ``publish()`` x2,000,000,
``publish_batch`` 4,194,304 records per batch size, variable ``publish()`` x500,000; latency over
200,000 records at 100k/s and 50,000 at 10k/s, after 20,000 / 5,000 warm-up records. It takes
about 1.5-2.5 minutes, waits for a quiet machine included. ``--quick`` (best of 2, an eighth to a
tenth of the records, no quiet waits, under 20 s) is a smoke run: its tails are too short to judge.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import mmap
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from consolidator.records import TRADE, TRADE_DTYPE, RecordType
from consolidator.ring.layout import DESCRIPTOR, DESCRIPTOR_DTYPE, HEADER_SIZE, RingLayout
from consolidator.ring.reader import FixedRingReader, VariableRingReader
from consolidator.ring.writer import FixedRingWriter, VariableRingWriter
from consolidator.streams import STREAMS

# Realistic field values (a BTC trade: price 61837.63000000, qty 0.00150).
TS_EVENT: Final = 1_763_700_000_000_000_000
TS_RECV: Final = 1_763_700_000_000_250_000
TS_COMMIT: Final = 1_763_700_000_000_300_000
PRICE_M: Final = 6_183_763_000_000
PRICE_E: Final = -8
QTY_M: Final = 150
QTY_E: Final = -5
SYMBOL_ID: Final = 7
SIDE: Final = 1
FLAGS: Final = 0
DEPTH: Final = int(RecordType.DEPTH)

MAP_FLAGS: Final = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
WRITER_CPU: Final = 0
READER_CPU: Final = 1
BUSY_P99_TARGET_US: Final = 50.0
WAIT_P99_TARGET_US: Final = 1000.0
PUBLISH_TARGET: Final = 1.5e6
# Other processes using this many cores during a latency run make it unreliable (2-core box).
DISTURBED: Final = 0.2
STALL_NS: Final = 5_000
READ_TARGET: Final = 10e6


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does (full or ``--quick``)."""

    repeats: int
    publish_n: int
    batch_total: int
    var_publish_n: int
    # (rate per second, counted records, warm-up records)
    latency: tuple[tuple[int, int, int], ...]
    attempts: int
    quiet_wait_s: float
    read_batches: tuple[int, ...]
    var_read_max: int  # records read back from a variable ring (at most what stays intact)


FULL: Final = Sizes(
    repeats=5,
    publish_n=2_000_000,
    batch_total=4_194_304,
    var_publish_n=500_000,
    latency=((100_000, 200_000, 20_000), (10_000, 50_000, 5_000)),
    attempts=2,
    quiet_wait_s=10.0,
    read_batches=(64, 1024, 16384, 65536),
    var_read_max=1 << 30,
)
QUICK: Final = Sizes(
    repeats=2,
    publish_n=200_000,
    batch_total=524_288,
    var_publish_n=50_000,
    latency=((100_000, 20_000, 2_000), (10_000, 5_000, 1_000)),
    attempts=1,
    quiet_wait_s=0.0,
    read_batches=(64, 16384),
    var_read_max=50_000,
)


@dataclass
class Row:
    """One throughput figure and one of its baselines."""

    bench: str
    param: str
    value: float  # records per second
    mb_s: float
    baseline: str
    baseline_value: float  # records per second
    target: float | None = None

    @property
    def ratio(self) -> float:
        """Subject rate / baseline rate (1.0 = as fast as the floor)."""
        return self.value / self.baseline_value if self.baseline_value else float("nan")

    @property
    def status(self) -> str:
        """PASS/FAIL against the target, or empty when the row has none."""
        if self.target is None:
            return ""
        return "PASS" if self.value >= self.target else "FAIL"


@dataclass
class LatencyRow:
    """One latency measurement: publish-to-visible, in microseconds."""

    rate: int
    transport: str
    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_batch: float
    lost: int
    writer_rate: float
    writer_max_late_us: float
    target_p99_us: float | None = None
    baseline_p99_us: float | None = None
    others_cores: float = 0.0
    steal_ms: float = 0.0
    reader_max_gap_us: float = 0.0
    attempts: int = 1
    floor_p99_us: float | None = None
    stalls: dict[str, dict[str, float]] | None = None

    @property
    def floor_ratio(self) -> float | None:
        """This p99 / the zero-cost floor's p99 at the same rate."""
        if self.floor_p99_us is None or not self.floor_p99_us:
            return None
        return self.p99_us / self.floor_p99_us

    @property
    def ratio(self) -> float | None:
        """This p99 / the queue's p99 at the same rate (lower is better)."""
        if self.baseline_p99_us is None or not self.baseline_p99_us:
            return None
        return self.p99_us / self.baseline_p99_us

    @property
    def disturbed(self) -> bool:
        """Whether other processes took enough CPU during the run to make it unreliable."""
        return self.others_cores >= DISTURBED

    @property
    def status(self) -> str:
        """PASS/FAIL of the p99 against the target, or empty when the row has none.

        A disturbed run is marked so: its failure may be the other processes'.
        """
        if self.target_p99_us is None:
            return "(disturbed)" if self.disturbed else ""
        ok = self.p99_us <= self.target_p99_us and not self.lost
        return ("PASS" if ok else "FAIL") + (" (disturbed)" if self.disturbed else "")


# ----------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """Disable the cyclic garbage collector for a timed section."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap]:
    """A second read-write mapping of a ring file (same pages as the writer's), for baselines."""
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, os.fstat(fd).st_size, flags=MAP_FLAGS)
    finally:
        os.close(fd)
    try:
        yield mm
    finally:
        mm.close()


def alternate(
    subject: Callable[[], float], baselines: list[Callable[[], float]], repeats: int
) -> tuple[float, list[float]]:
    """Best (shortest) time of the subject and of each baseline, passes alternating."""
    best = float("inf")
    best_base = [float("inf")] * len(baselines)
    for _ in range(repeats):
        with gc_off():
            best = min(best, subject())
            for i, base in enumerate(baselines):
                best_base[i] = min(best_base[i], base())
    return best, best_base


def trades_layout() -> RingLayout:
    """The ``trades`` stream layout (2^20 slots of 64 bytes)."""
    return STREAMS["trades"].layout("bench")


def depth_layout() -> RingLayout:
    """The ``depth`` stream layout (2^18 descriptors, 256 MiB heap)."""
    return STREAMS["depth"].layout("bench")


def trade_array(n: int) -> npt.NDArray[np.void]:
    """``n`` realistic trades (seq and ts_commit are left for the writer)."""
    arr = np.zeros(n, TRADE_DTYPE)
    arr["ts_event"] = TS_EVENT
    arr["ts_recv"] = TS_RECV
    arr["trade_id"] = np.arange(n, dtype=np.uint64)
    arr["price_m"] = PRICE_M
    arr["qty_m"] = QTY_M
    arr["symbol_id"] = SYMBOL_ID
    arr["price_e"] = PRICE_E
    arr["qty_e"] = QTY_E
    arr["side"] = SIDE
    return arr


def fixed_writer(path: Path) -> FixedRingWriter:
    """A trades ring writer."""
    return FixedRingWriter(path, trades_layout(), TRADE.pack_into, TRADE_DTYPE)


def rate(count: int, seconds: float) -> float:
    """Records per second."""
    return count / seconds if seconds > 0 else float("nan")


def cpu_ticks() -> tuple[int, int]:
    """(busy, steal) USER_HZ ticks of all CPUs since boot, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, parts[1:9])
        return user + nice + system + irq + softirq, steal
    return 0, 0


def process_cpu() -> float:
    """CPU seconds (user + system) this process has used so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


class CpuMeter:
    """CPU used by processes other than this one and its children, between start and stop.

    The benchmark's own child processes are forked by the fork server, not by this process, so
    they report their CPU time with their results and it is passed to `stop`.

    The machine is shared: another tenant's work shows up here (in cores: 1.0 = one CPU taken all
    along), next to the VM steal time, so a disturbed measurement can be told from a slow one.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._ticks = cpu_ticks()
        self._own = self._own_cpu()

    @staticmethod
    def _own_cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self, children_cpu: float = 0.0) -> tuple[float, float]:
        """(other processes' CPU in cores, steal seconds) since construction.

        ``children_cpu``: CPU seconds of the benchmark's processes started since, as they reported.
        """
        hz = os.sysconf("SC_CLK_TCK")
        busy, steal = cpu_ticks()
        total = (busy - self._ticks[0]) / hz
        own = self._own_cpu() - self._own + children_cpu
        wall = max(1e-9, time.monotonic() - self._t0)
        return max(0.0, total - own) / wall, (steal - self._ticks[1]) / hz


# ----------------------------------------------------------------------------------------------
# 1. Single-record publish


def bench_publish(root: Path, sizes: Sizes) -> list[Row]:
    """``FixedRingWriter.publish`` per record against ``TRADE.pack_into`` of the same bytes."""
    path = root / "publish" / "trades.ring"
    writer = fixed_writer(path)
    n = sizes.publish_n
    mask = writer.layout.capacity - 1
    size = writer.layout.slot_size
    publish = writer.publish
    pack = TRADE.pack_into
    clock = time.time_ns

    def subject() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            publish(TS_EVENT, TS_RECV, i, PRICE_M, QTY_M, SYMBOL_ID, PRICE_E, QTY_E, SIDE, FLAGS)
        return time.perf_counter() - t0

    with mapped(path) as mm:

        def floor() -> float:
            t0 = time.perf_counter()
            for i in range(n):
                pack(
                    mm, HEADER_SIZE + (i & mask) * size, i, TS_EVENT, TS_RECV, TS_COMMIT, i,
                    PRICE_M, QTY_M, SYMBOL_ID, PRICE_E, QTY_E, SIDE, FLAGS,
                )  # fmt: skip
            return time.perf_counter() - t0

        def floor_clock() -> float:
            t0 = time.perf_counter()
            for i in range(n):
                pack(
                    mm, HEADER_SIZE + (i & mask) * size, i, TS_EVENT, TS_RECV, clock(), i,
                    PRICE_M, QTY_M, SYMBOL_ID, PRICE_E, QTY_E, SIDE, FLAGS,
                )  # fmt: skip
            return time.perf_counter() - t0

        best, (base, base_clock) = alternate(subject, [floor, floor_clock], sizes.repeats)
    writer.close()
    value = rate(n, best)
    mb = value * size / 1e6
    return [
        Row("publish()", "1", value, mb, "TRADE.pack_into", rate(n, base), PUBLISH_TARGET),
        Row("publish()", "1", value, mb, "pack_into + time_ns()", rate(n, base_clock)),
    ]


# ----------------------------------------------------------------------------------------------
# 2. Batch publish


def bench_publish_batch(root: Path, sizes: Sizes) -> list[Row]:
    """``publish_batch`` against slice assignment of the same array into the same mapping."""
    path = root / "batch" / "trades.ring"
    writer = fixed_writer(path)
    with mapped(path) as mm:
        rows = [
            row
            for batch in (64, 1024, 16384)
            for row in publish_batch_case(writer, mm, batch, sizes)
        ]
    writer.close()
    return rows


def publish_batch_case(
    writer: FixedRingWriter, mm: mmap.mmap, batch: int, sizes: Sizes
) -> list[Row]:
    """One batch size of `bench_publish_batch`."""
    capacity = writer.layout.capacity
    mask = capacity - 1
    slots = np.frombuffer(mm, TRADE_DTYPE, capacity, HEADER_SIZE)
    raw = np.frombuffer(mm, "V64", capacity, HEADER_SIZE)
    arr = trade_array(batch)
    arr_raw = arr.view("V64")
    loops = max(1, sizes.batch_total // batch)
    total = loops * batch
    publish_batch = writer.publish_batch

    def subject() -> float:
        t0 = time.perf_counter()
        for _ in range(loops):
            publish_batch(arr)
        return time.perf_counter() - t0

    def structured() -> float:
        t0 = time.perf_counter()
        pos = 0
        for _ in range(loops):
            slots[pos : pos + batch] = arr
            pos = (pos + batch) & mask
        return time.perf_counter() - t0

    def memcpy() -> float:
        t0 = time.perf_counter()
        pos = 0
        for _ in range(loops):
            raw[pos : pos + batch] = arr_raw
            pos = (pos + batch) & mask
        return time.perf_counter() - t0

    best, (t_struct, t_raw) = alternate(subject, [structured, memcpy], sizes.repeats)
    value = rate(total, best)
    mb = value * 64 / 1e6
    name, param = "publish_batch()", str(batch)
    return [
        Row(name, param, value, mb, "bytes slice =", rate(total, t_raw)),
        Row(name, param, value, mb, "struct slice =", rate(total, t_struct)),
    ]


# ----------------------------------------------------------------------------------------------
# 3. Reads


def bench_read(root: Path, sizes: Sizes) -> list[Row]:
    """``read_batch`` / ``read_one`` draining a full ring, against copies out of the mapping."""
    path = root / "read" / "trades.ring"
    writer = fixed_writer(path)
    writer.publish_batch(trade_array(writer.layout.capacity))
    reader = FixedRingReader(path, TRADE_DTYPE, TRADE, start="oldest")
    with mapped(path) as mm:
        rows = [
            row for batch in sizes.read_batches for row in read_batch_case(reader, mm, batch, sizes)
        ]
        rows.append(read_one_case(reader, mm, sizes))
    reader.close()
    writer.close()
    return rows


def drain_count(reader: FixedRingReader) -> int:
    """How many records a reader starting at the oldest one can read."""
    return reader.tail() - reader.oldest()


def read_batch_case(reader: FixedRingReader, mm: mmap.mmap, batch: int, sizes: Sizes) -> list[Row]:
    """One batch size of `bench_read`."""
    capacity = reader.capacity
    slots = np.frombuffer(mm, TRADE_DTYPE, capacity, HEADER_SIZE)
    raw = np.frombuffer(mm, "V64", capacity, HEADER_SIZE)
    drain = drain_count(reader)
    read_batch = reader.read_batch

    def subject() -> float:
        reader.position = reader.oldest()
        got = 0
        t0 = time.perf_counter()
        while True:
            n = len(read_batch(batch))
            if not n:
                break
            got += n
        elapsed = time.perf_counter() - t0
        if got != drain or reader.lost:
            raise RuntimeError(f"read {got} of {drain} records, lost {reader.lost}")
        return elapsed

    def structured() -> float:
        t0 = time.perf_counter()
        for pos in range(0, drain, batch):
            slots[pos : min(pos + batch, drain)].copy()
        return time.perf_counter() - t0

    def memcpy() -> float:
        t0 = time.perf_counter()
        for pos in range(0, drain, batch):
            raw[pos : min(pos + batch, drain)].copy()
        return time.perf_counter() - t0

    best, (t_struct, t_raw) = alternate(subject, [structured, memcpy], sizes.repeats)
    value = rate(drain, best)
    mb = value * 64 / 1e6
    name, param = "read_batch()", str(batch)
    return [
        Row(name, param, value, mb, "bytes .copy()", rate(drain, t_raw), READ_TARGET),
        Row(name, param, value, mb, "struct .copy()", rate(drain, t_struct)),
    ]


def read_one_case(reader: FixedRingReader, mm: mmap.mmap, sizes: Sizes) -> Row:
    """``read_one`` draining the ring, against ``TRADE.unpack_from`` per record."""
    drain = drain_count(reader)
    mask = reader.capacity - 1
    unpack = TRADE.unpack_from
    read_one = reader.read_one

    def subject() -> float:
        reader.position = reader.oldest()
        got = 0
        t0 = time.perf_counter()
        while read_one() is not None:
            got += 1
        elapsed = time.perf_counter() - t0
        if got != drain:
            raise RuntimeError(f"read_one read {got} of {drain} records")
        return elapsed

    def floor() -> float:
        t0 = time.perf_counter()
        for i in range(drain):
            unpack(mm, HEADER_SIZE + (i & mask) * 64)
        return time.perf_counter() - t0

    best, (t_unpack,) = alternate(subject, [floor], sizes.repeats)
    value = rate(drain, best)
    return Row(
        "read_one()", "1", value, value * 64 / 1e6, "TRADE.unpack_from", rate(drain, t_unpack)
    )


def bench_variable(root: Path, sizes: Sizes) -> list[Row]:
    """Variable ring publish and ``read_batch`` with depth-like payloads (200 B and 2 KiB)."""
    rows: list[Row] = []
    for length in (200, 2048):
        path = root / f"var{length}" / "depth.ring"
        writer = VariableRingWriter(path, depth_layout())
        payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
        with mapped(path) as mm:
            rows.append(variable_publish_case(writer, mm, payload, sizes))
            # Fill with a run of records that all stay intact (descriptors and payloads).
            layout = writer.layout
            intact = min(layout.capacity - 1024, (layout.heap_size * 31 // 32) // align8(length))
            keep = min(intact, sizes.var_read_max)
            for _ in range(keep):
                writer.publish(DEPTH, payload)
            reader = VariableRingReader(path, start="tail")
            for batch in (64, 4096):
                rows.append(variable_read_case(reader, mm, keep, length, batch, sizes))
            reader.close()
        writer.close()
        path.unlink()
    return rows


def align8(value: int) -> int:
    """``value`` rounded up to a multiple of 8 (heap positions advance so)."""
    return (value + 7) & ~7


def variable_publish_case(
    writer: VariableRingWriter, mm: mmap.mmap, payload: bytes, sizes: Sizes
) -> Row:
    """``VariableRingWriter.publish`` against a payload slice store plus a descriptor pack."""
    layout = writer.layout
    n = sizes.var_publish_n
    length = len(payload)
    step = align8(length)
    heap_off, heap_size = layout.heap_offset, layout.heap_size
    heap_mask, desc_mask = heap_size - 1, layout.capacity - 1
    publish = writer.publish
    pack_desc = DESCRIPTOR.pack_into

    def subject() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            publish(DEPTH, payload)
        return time.perf_counter() - t0

    def floor() -> float:
        pos = 0
        t0 = time.perf_counter()
        for i in range(n):
            start = pos & heap_mask
            if start + length > heap_size:
                start = 0
            mm[heap_off + start : heap_off + start + length] = payload
            pack_desc(mm, HEADER_SIZE + (i & desc_mask) * 32, i, pos, TS_COMMIT, length, DEPTH, 0)
            pos += step
        return time.perf_counter() - t0

    best, (t_floor,) = alternate(subject, [floor], sizes.repeats)
    value = rate(n, best)
    return Row(
        f"var publish() {length} B", "1", value, value * length / 1e6,
        "slice store + pack_into", rate(n, t_floor),
    )  # fmt: skip


def variable_read_case(
    reader: VariableRingReader, mm: mmap.mmap, keep: int, length: int, batch: int, sizes: Sizes
) -> Row:
    """``VariableRingReader.read_batch`` over the newest ``keep`` records, against copies."""
    layout = reader.layout
    step = align8(length)
    heap_mask, desc_mask = layout.heap_size - 1, layout.capacity - 1
    tail = reader.tail()
    first = (tail - keep) & desc_mask
    descs = np.frombuffer(mm, "V32", layout.capacity, HEADER_SIZE)
    heap = np.frombuffer(mm, np.uint8, layout.heap_size, layout.heap_offset)
    first_pos = int(descs[first : first + 1].view(DESCRIPTOR_DTYPE)["heap_pos"][0]) & heap_mask
    read_batch = reader.read_batch

    def subject() -> float:
        reader.position = tail - keep
        got = 0
        t0 = time.perf_counter()
        while True:
            k = len(read_batch(batch))
            if not k:
                break
            got += k
        elapsed = time.perf_counter() - t0
        if got != keep or reader.lost:
            raise RuntimeError(f"read {got} of {keep} records, lost {reader.lost}")
        return elapsed

    def copy() -> float:
        # The same descriptor and payload bytes in the same batches (a batch's payloads are
        # contiguous in the heap, and the reader copies them in one piece too).
        t0 = time.perf_counter()
        for i in range(0, keep, batch):
            k = min(batch, keep - i)
            d = (first + i) & desc_mask
            descs[d : d + k].copy()
            a = (first_pos + i * step) & heap_mask
            heap[a : a + k * step].copy()
        return time.perf_counter() - t0

    best, (t_copy,) = alternate(subject, [copy], sizes.repeats)
    value = rate(keep, best)
    return Row(
        f"var read_batch() {length} B", str(batch), value, value * length / 1e6,
        "desc + heap .copy()", rate(keep, t_copy),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# 4. Cross-process latency


def mp_context() -> Any:
    """Child processes come from a fork server that has numpy and the ring modules imported,
    so starting one costs a fork, not a fresh interpreter (~0.2 s)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["numpy", "consolidator.records", "consolidator.ring.reader", "consolidator.ring.writer"]
    )
    return ctx


def pin(cpu: int) -> None:
    """Pin this process to ``cpu`` when the machine has it."""
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def paced_writer(
    transport: str,
    path: str,
    queue: Any,
    per_second: int,
    total: int,
    ready: Event,
    go: Event,
    conn: Connection,
) -> None:
    """Child process: publish ``total`` records at ``per_second``, each stamped in ts_recv."""
    pin(WRITER_CPU)
    clock = time.monotonic_ns
    yield_gil = os.sched_yield
    writer: FixedRingWriter | None = None
    if transport == "queue":
        pack = TRADE.pack
        put = queue.put

        def send(i: int) -> None:
            put(
                pack(
                    i,
                    TS_EVENT,
                    clock(),
                    0,
                    i,
                    PRICE_M,
                    QTY_M,
                    SYMBOL_ID,
                    PRICE_E,
                    QTY_E,
                    SIDE,
                    FLAGS,
                )  # fmt: skip
            )
    else:
        writer = fixed_writer(Path(path))
        publish = writer.publish

        def send(i: int) -> None:
            publish(TS_EVENT, clock(), i, PRICE_M, QTY_M, SYMBOL_ID, PRICE_E, QTY_E, SIDE, FLAGS)

    ready.set()
    go.wait()
    period = 1_000_000_000 // per_second
    gc.disable()
    start = due = clock() + 2_000_000
    max_late = 0
    for i in range(total):
        now = clock()
        while now < due:
            yield_gil()
            now = clock()
        max_late = max(max_late, now - due)
        send(i)
        due += period
    elapsed = clock() - start
    conn.send({"elapsed_ns": elapsed, "max_late_ns": max_late, "cpu_s": process_cpu()})
    if writer is not None:
        writer.close()
    if queue is not None:
        queue.close()
        queue.join_thread()


def latency_reader(
    transport: str,
    path: str,
    queue: Any,
    total: int,
    warmup: int,
    ready: Event,
    conn: Connection,
) -> None:
    """Child process: receive ``total`` records, time each, send back the latency array."""
    pin(READER_CPU)
    clock = time.monotonic_ns
    gc.disable()
    lost = 0
    batches = 0
    if transport == "queue":
        get = queue.get
        items: list[tuple[int, bytes]] = []
        add_item = items.append
        ready.set()
        for _ in range(total):
            data = get()
            add_item((clock(), data))
        batches = total
        unpack = TRADE.unpack
        seen = np.empty(total, np.int64)
        stamp = np.empty(total, np.int64)
        ids = np.empty(total, np.int64)
        for k, (t, data) in enumerate(items):
            fields = unpack(data)
            seen[k], stamp[k], ids[k] = t, fields[2], fields[4]
    else:
        reader = FixedRingReader(Path(path), TRADE_DTYPE, TRADE, start="tail")
        tail = reader.tail
        read_batch = reader.read_batch
        chunks: list[tuple[int, npt.NDArray[np.void]]] = []
        add_chunk = chunks.append
        got = 0
        ready.set()
        if transport == "ring-busy":
            while got < total:
                while tail() == reader.position:
                    pass
                batch = read_batch(4096)
                add_chunk((clock(), batch))
                got += len(batch)
        else:
            wait = reader.wait
            while got < total:
                if wait(1.0):
                    batch = read_batch(4096)
                    add_chunk((clock(), batch))
                    got += len(batch)
        lost = reader.lost
        batches = len(chunks)
        seen = np.concatenate([np.full(len(b), t, np.int64) for t, b in chunks])
        stamp = np.concatenate([b["ts_recv"] for _, b in chunks]).astype(np.int64)
        ids = np.concatenate([b["trade_id"] for _, b in chunks]).astype(np.int64)
        del chunks
        reader.close()
    counted = ids >= warmup
    latency = (seen - stamp)[counted]
    times = np.unique(seen[counted])
    max_gap = int(np.diff(times).max()) if len(times) > 1 else 0
    conn.send(
        {
            "latency_ns": latency,
            "lost": lost,
            "batches": batches,
            "max_gap_ns": max_gap,
            "cpu_s": process_cpu(),
        }
    )


def run_latency(
    root: Path, transport: str, per_second: int, counted: int, warmup: int
) -> LatencyRow:
    """One writer process and one reader process over ``transport`` at ``per_second``."""
    ctx = mp_context()
    total = counted + warmup
    path = root / "latency" / f"{transport}-{per_second}.ring"
    queue = ctx.Queue() if transport == "queue" else None
    w_ready, r_ready, go = ctx.Event(), ctx.Event(), ctx.Event()
    w_recv, w_send = ctx.Pipe(duplex=False)
    r_recv, r_send = ctx.Pipe(duplex=False)
    writer = ctx.Process(
        target=paced_writer,
        args=(transport, str(path), queue, per_second, total, w_ready, go, w_send),
    )
    reader = ctx.Process(
        target=latency_reader,
        args=(transport, str(path), queue, total, warmup, r_ready, r_send),
    )
    budget = 30 + 3 * total / per_second
    meter = CpuMeter()
    try:
        writer.start()
        if not w_ready.wait(30):
            raise RuntimeError("latency writer did not start")
        reader.start()
        if not r_ready.wait(30):
            raise RuntimeError("latency reader did not start")
        go.set()
        if not r_recv.poll(budget):
            raise RuntimeError(f"latency reader ({transport}, {per_second}/s) timed out")
        got: dict[str, Any] = r_recv.recv()
        if not w_recv.poll(30):
            raise RuntimeError("latency writer sent no result")
        wrote: dict[str, Any] = w_recv.recv()
        writer.join(30)
        reader.join(30)
        others, steal = meter.stop(got["cpu_s"] + wrote["cpu_s"])
    finally:
        for proc in (writer, reader):
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        path.unlink(missing_ok=True)
    lat = got["latency_ns"] / 1e3
    p50, p90, p99, p999 = (float(v) for v in np.percentile(lat, [50, 90, 99, 99.9]))
    target = {"ring-busy": BUSY_P99_TARGET_US, "ring-wait": WAIT_P99_TARGET_US}.get(transport)
    return LatencyRow(
        rate=per_second,
        transport=transport,
        count=len(lat),
        p50_us=p50,
        p90_us=p90,
        p99_us=p99,
        p999_us=p999,
        max_us=float(lat.max()),
        mean_batch=total / max(1, got["batches"]),
        lost=int(got["lost"]),
        writer_rate=total / (wrote["elapsed_ns"] / 1e9),
        writer_max_late_us=wrote["max_late_ns"] / 1e3,
        target_p99_us=target,
        others_cores=others,
        steal_ms=steal * 1000,
        reader_max_gap_us=float(got["max_gap_ns"]) / 1e3,
    )


def wait_quiet(max_wait_s: float) -> float:
    """Wait (at most ``max_wait_s``) until other processes use less than `DISTURBED` cores.

    Returns the last measured load of other processes, in cores.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter()
        time.sleep(0.5)
        others, _ = meter.stop()
        if others < DISTURBED or time.monotonic() >= deadline:
            return others


def least_disturbed(run: Callable[[], LatencyRow], attempts: int, quiet_s: float) -> LatencyRow:
    """``run()`` on a quiet machine if possible: a disturbed run is repeated (up to ``attempts``
    runs) and the least disturbed one is kept, whatever its latencies."""
    best: LatencyRow | None = None
    runs = 0
    while runs < max(1, attempts) and (best is None or best.disturbed):
        if quiet_s > 0:
            wait_quiet(quiet_s)
        row = run()
        runs += 1
        if best is None or row.others_cores < best.others_cores:
            best = row
    assert best is not None
    best.attempts = runs
    return best


def bench_latency(root: Path, sizes: Sizes) -> list[LatencyRow]:
    """Per rate: the stall floor, the queue, then the ring, polled both ways.

    Every row gets the queue's p99 and the floor's p99 at its rate, for the ratios.
    """
    rows: list[LatencyRow] = []
    for per_second, counted, warmup in sizes.latency:
        seconds = (counted + warmup) / per_second
        floor = least_disturbed(
            partial(run_stall_floor, per_second, seconds), sizes.attempts, sizes.quiet_wait_s
        )
        group = [floor] + [
            least_disturbed(
                partial(run_latency, root, transport, per_second, counted, warmup),
                sizes.attempts,
                sizes.quiet_wait_s,
            )
            for transport in ("queue", "ring-busy", "ring-wait")
        ]
        for row in group:
            row.floor_p99_us = floor.p99_us
            if row.transport.startswith("ring"):
                row.baseline_p99_us = group[1].p99_us
        rows.extend(group)
    return rows


def stall_probe(cpu: int, seconds: float, conn: Connection) -> None:
    """Child process: spin on the clock on ``cpu``, recording every gap longer than STALL_NS."""
    pin(cpu)
    clock = time.monotonic_ns
    gc.disable()
    start = last = clock()
    end = start + int(seconds * 1e9)
    starts: list[int] = []
    lengths: list[int] = []
    while last < end:
        now = clock()
        if now - last > STALL_NS:
            starts.append(last)
            lengths.append(now - last)
        last = now
    conn.send(
        {
            "cpu": cpu,
            "start": start,
            "end": last,
            "starts": np.array(starts, np.int64),
            "lengths": np.array(lengths, np.int64),
            "cpu_s": process_cpu(),
        }
    )


def run_stall_floor(per_second: int, seconds: float) -> LatencyRow:
    """The machine's own floor: a stall probe spins on each CPU (as the writer and the reader
    would); a zero-cost transport would deliver a record published while the reader's CPU is
    stalled when the stall ends, and any other record at once. Those latencies, for records
    published every 1/per_second over the probe, are this row."""
    ctx = mp_context()
    pipes = [ctx.Pipe(duplex=False) for _ in (WRITER_CPU, READER_CPU)]
    procs = [
        ctx.Process(target=stall_probe, args=(cpu, seconds, send))
        for cpu, (_, send) in zip((WRITER_CPU, READER_CPU), pipes, strict=True)
    ]
    meter = CpuMeter()
    try:
        for proc in procs:
            proc.start()
        traces: list[dict[str, Any]] = []
        for recv, _ in pipes:
            if not recv.poll(30 + 2 * seconds):
                raise RuntimeError("stall probe timed out")
            traces.append(recv.recv())
        for proc in procs:
            proc.join(30)
        others, steal = meter.stop(sum(t["cpu_s"] for t in traces))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    writer_trace, reader_trace = traces
    starts, lengths = reader_trace["starts"], reader_trace["lengths"]
    published = np.arange(reader_trace["start"], reader_trace["end"], 1_000_000_000 // per_second)
    idx = np.searchsorted(starts, published, side="right") - 1
    latency = np.zeros(len(published), np.int64)
    inside = idx >= 0
    stall_end = (starts + lengths)[idx[inside]]
    latency[inside] = np.maximum(0, stall_end - published[inside])
    lat = latency / 1e3
    p50, p90, p99, p999 = (float(v) for v in np.percentile(lat, [50, 90, 99, 99.9]))
    stats = {}
    for name, trace in (("writer_cpu", writer_trace), ("reader_cpu", reader_trace)):
        gaps = trace["lengths"]
        span = max(1, trace["end"] - trace["start"])
        stats[name] = {
            "stalled_fraction": float(gaps.sum()) / span,
            "stalls_over_100us": int((gaps > 100_000).sum()),
            "stalls_over_1ms": int((gaps > 1_000_000).sum()),
            "max_stall_us": float(gaps.max()) / 1e3 if len(gaps) else 0.0,
            "seconds": span / 1e9,
        }
    return LatencyRow(
        rate=per_second,
        transport="zero-cost floor",
        count=len(lat),
        p50_us=p50,
        p90_us=p90,
        p99_us=p99,
        p999_us=p999,
        max_us=float(lat.max()) if len(lat) else 0.0,
        mean_batch=1.0,
        lost=0,
        writer_rate=float(per_second),
        writer_max_late_us=stats["writer_cpu"]["max_stall_us"],
        others_cores=others,
        steal_ms=steal * 1000,
        reader_max_gap_us=stats["reader_cpu"]["max_stall_us"],
        stalls=stats,
    )


# ----------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Facts about the machine and the interpreter."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "kernel": platform.release(),
    }


def method_text(sizes: Sizes, facts: dict[str, Any], quick: bool) -> str:
    """The method, printed before the tables."""
    lat = ", ".join(f"{c:,} at {r:,}/s (+{w:,} warm-up)" for r, c, w in sizes.latency)
    return "\n".join(
        [
            f"ring benchmark ({'quick' if quick else 'full'} run), {facts['date']}",
            f"machine: {facts['cpu_model']}, {facts['cpu_count']} CPUs "
            f"(allowed {facts['cpus_allowed']}), load {facts['loadavg'][0]:.2f}, "
            f"kernel {facts['kernel']}, Python {facts['python']}, numpy {facts['numpy']}",
            "rings: temp dir under /dev/shm; trades = 64-byte records, 2^20 slots; "
            "depth = 2^18 descriptors + 256 MiB heap",
            f"throughput: best of {sizes.repeats} passes, subject and baselines alternating, "
            f"gc off; publish() x {sizes.publish_n:,}; publish_batch() ~{sizes.batch_total:,} "
            f"records per batch size; read_batch({', '.join(map(str, sizes.read_batches))}) "
            f"and read_one() drain a full ring; variable publish() x {sizes.var_publish_n:,}, "
            "variable read_batch(64, 4096) over the newest intact records"
            + (f" (at most {sizes.var_read_max:,})" if sizes.var_read_max < 1 << 30 else ""),
            "  baselines: the same bytes stored/copied with no protocol, into/out of the same "
            "ring file; ratio = subject / baseline (1.00 = at the floor)",
            f"latency: writer process pinned to CPU {WRITER_CPU}, reader to CPU {READER_CPU} "
            "(one core each; both spin, so nothing else has a free core); "
            "latency = reader's monotonic_ns() after the read returned - ts_recv stamped just "
            "before publish()",
            f"  records: {lat}; writer paced by spinning on monotonic_ns() with os.sched_yield() "
            "(GIL release) in the spin; baseline multiprocessing.Queue put/blocking get() of the "
            "same 64 bytes; ratio = ring p99 / queue p99",
            f"  other CPU = cores used by other processes during the run; >= {DISTURBED} = "
            f"disturbed: waited up to {sizes.quiet_wait_s:g} s for quiet before each run, up to "
            f"{sizes.attempts} run(s), the least disturbed kept; steal = VM steal time",
            "  zero-cost floor = latencies a free transport would show given the reader CPU's "
            "stalls, from a spin-loop probe on both CPUs run just before (gaps > 5 us); "
            "ratio = p99 / floor p99",
        ]
    )


def fmt_rate(value: float) -> str:
    """Records per second in millions."""
    return f"{value / 1e6:.2f}M"


def throughput_table(rows: list[Row]) -> str:
    """The throughput rows as a Markdown table."""
    out = [
        "| benchmark | batch | records/s | MB/s | baseline | baseline records/s | ratio | target "
        "| status |",
        "|---|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        target = f">= {fmt_rate(row.target)}/s" if row.target is not None else ""
        out.append(
            f"| {row.bench} | {row.param} | {fmt_rate(row.value)} | {row.mb_s:,.0f} | "
            f"{row.baseline} | {fmt_rate(row.baseline_value)} | {row.ratio:.2f} | {target} | "
            f"{row.status} |"
        )
    return "\n".join(out)


def latency_table(rows: list[LatencyRow]) -> str:
    """The latency rows as a Markdown table (microseconds)."""
    head = [
        ("rate/s", "---:"), ("transport", "---"), ("N", "---:"), ("p50 us", "---:"),
        ("p90 us", "---:"), ("p99 us", "---:"), ("p99.9 us", "---:"), ("max us", "---:"),
        ("p99 / queue p99", "---:"), ("p99 / floor p99", "---:"), ("mean batch", "---:"),
        ("lost", "---:"), ("writer rate/s", "---:"), ("writer max late us", "---:"),
        ("reader max gap us", "---:"), ("other CPU (cores)", "---:"), ("steal ms", "---:"),
        ("runs", "---:"), ("target p99", "---"), ("status", "---"),
    ]  # fmt: skip
    out = ["| " + " | ".join(h for h, _ in head) + " |", "|" + "|".join(a for _, a in head) + "|"]
    for row in rows:
        cells = [
            f"{row.rate:,}",
            row.transport,
            f"{row.count:,}",
            *(f"{v:.1f}" for v in (row.p50_us, row.p90_us, row.p99_us, row.p999_us, row.max_us)),
            f"{row.ratio:.3f}" if row.ratio is not None else "",
            f"{row.floor_ratio:.2f}" if row.floor_ratio is not None else "",
            f"{row.mean_batch:.2f}",
            str(row.lost),
            f"{row.writer_rate:,.0f}",
            f"{row.writer_max_late_us:.1f}",
            f"{row.reader_max_gap_us:.0f}",
            f"{row.others_cores:.2f}",
            f"{row.steal_ms:.0f}",
            str(row.attempts),
            f"<= {row.target_p99_us:g} us" if row.target_p99_us is not None else "",
            row.status,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the method and the tables, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 20 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    facts = machine()
    print(method_text(sizes, facts, args.quick), flush=True)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="ringbench-", dir="/dev/shm"))
    try:
        rows: list[Row] = []
        meter = CpuMeter()
        for section in (bench_publish, bench_publish_batch, bench_read, bench_variable):
            rows.extend(section(root, sizes))
            print(f"  ... {section.__name__} done at {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
        others, steal = meter.stop()
        facts["throughput_other_cpu_cores"] = round(others, 3)
        facts["throughput_steal_s"] = steal
        latency = bench_latency(root, sizes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(throughput_table(rows))
    print(
        f"(other processes used {facts['throughput_other_cpu_cores']:.2f} cores on average and "
        f"the VM lost {facts['throughput_steal_s']:.2f} s to steal during the throughput part)"
    )
    print()
    print(latency_table(latency))
    for row in latency:
        if row.stalls is not None:
            parts = [
                f"{name.replace('_', ' ')} stalled {st['stalled_fraction']:.1%} "
                f"({st['stalls_over_100us']:.0f} stalls > 100 us, {st['stalls_over_1ms']:.0f} "
                f"> 1 ms, max {st['max_stall_us']:,.0f} us in {st['seconds']:.1f} s)"
                for name, st in row.stalls.items()
            ]
            print(f"stall probe before the {row.rate:,}/s runs: " + "; ".join(parts))
    print(f"\n(elapsed {elapsed:.0f} s)")
    if args.json is not None:
        doc = {
            "machine": facts,
            "quick": args.quick,
            "sizes": asdict(sizes),
            "elapsed_s": elapsed,
            "throughput": [asdict(r) | {"ratio": r.ratio, "status": r.status} for r in rows],
            "latency": [
                asdict(r) | {"ratio": r.ratio, "status": r.status, "disturbed": r.disturbed}
                for r in latency
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
