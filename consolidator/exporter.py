"""``consolidator exporter``: every feed under ``shm_dir`` as Prometheus metrics over HTTP.

`FeedCollector` is a prometheus_client custom collector: each scrape reads what the services
publish in shared memory, so feeds that appear or disappear are picked up at the next scrape and
the services never know they are watched (a scrape costs the writer nothing; it only reads). Per
feed it reads:

- ``counters`` (the writer's counters file, `consolidator.counters`): messages, bytes, records,
  parse errors, reconnects, gaps, connections, latency histograms, ... exported as they are
  named there, with the ``feed`` label added;
- ``flusher.counters`` (the flusher's, same layout): fsync durations, journaled records and bytes;
- ``durable`` (the flusher's positions, as mdstat reads them): durable lag per stream;
- the ring headers and the reader registry: ring fill and the records each reader lost;

and, per service (the writer of each feed, the flusher, the exporter itself), process metrics from
psutil and ``/proc``: CPU seconds, RSS (and the shared memory in it: the writer maps its rings),
context switches, open fds, the CPU it is pinned to and whether that CPU is isolated.

`serve` runs the HTTP server (a thread per scrape) and, in the main thread, the sd_notify beat:
READY once listening, WATCHDOG while the scrape thread is alive and no scrape is stuck, STATUS
every few seconds, STOPPING on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consolidator import __version__
from consolidator.config import ExporterConfig
from consolidator.counters import CountersSnapshot, Kind, Unit, read_counters
from consolidator.errors import ConfigError, ConsolidatorError
from consolidator.feed.cpus import isolated_cpus
from consolidator.journal.position import durable_lag_ns, read_positions
from consolidator.notify import Notifier
from consolidator.process import global_config, parser, run_main, setup_logging
from consolidator.ring.registry import NO_POSITION, ReaderInfo, list_readers
from consolidator.streams import feed_streams, feeds, open_stream_reader

__all__ = ["HELP", "FeedCollector", "run_exporter", "serve"]

log = logging.getLogger("consolidator.exporter")

STATUS_S: Final = 5.0
LOOP_S: Final = 0.5
WRITER_UP_AGE_NS: Final = 3_000_000_000
EXPORTER_SERVICE: Final = "consolidator-exporter"
FLUSHER_SERVICE: Final = "consolidator-flusher"

HELP: Final[dict[str, str]] = {
    "consolidator_messages_received": "Messages received from the venue, by channel.",
    "consolidator_bytes_received": "Message bytes received from the venue.",
    "consolidator_records_published": "Records published into the feed's rings, by stream.",
    "consolidator_parse_errors": "Messages the venue protocol could not parse, by kind.",
    "consolidator_reconnects": "Connections replaced or re-established, by reason.",
    "consolidator_gaps": "Sequence gaps detected (each one is an event in the feed).",
    "consolidator_resyncs": "Order books resynchronized from a snapshot.",
    "consolidator_drops": "Outputs dropped instead of published, by reason.",
    "consolidator_rotations": "Planned make-before-break connection rotations.",
    "consolidator_rest_requests": "REST requests sent to the venue.",
    "consolidator_rest_weight": "REST request weight used.",
    "consolidator_rest_errors": "REST requests that failed, by HTTP status or error kind.",
    "consolidator_rate_limited": "REST answers that said the writer was rate limited.",
    "consolidator_snapshots": "Depth snapshot requests, by outcome.",
    "consolidator_internal_errors": "Internal errors the writer survived (bugs: report them).",
    "consolidator_connections": "Websocket connections of the writer, by state.",
    "consolidator_leg_connections": "Open connections of each leg (redundancy = 2).",
    "consolidator_leg_wins": "Records taken from each leg: its copy came first, by channel.",
    "consolidator_leg_duplicates": (
        "Copies from each leg dropped because another copy came first, by channel."
    ),
    "consolidator_leg_lag_seconds": (
        "Mean lag of a leg's copies behind the first copy (0 for a win), over the last second."
    ),
    "consolidator_last_message_timestamp_seconds": "Receive time of the last message, by channel.",
    "consolidator_exchange_to_receive_seconds": "Venue event time to local receive time.",
    "consolidator_receive_to_commit_seconds": (
        "Local receive time to ring commit, per published batch (the batch's oldest record)."
    ),
    "consolidator_fsync_duration_seconds": "Duration of the flusher's fdatasync calls.",
    "consolidator_journal_records": "Records written to the journal, by stream.",
    "consolidator_journal_bytes": "Bytes written to the journal, by stream.",
    "consolidator_writer_up": "1 when the feed's writer runs and its loop is heartbeating.",
    "consolidator_flusher_up": "1 when the flusher runs and is heartbeating.",
    "consolidator_flusher_durable_lag_seconds": (
        "How far the durable journal trails the ring (0 when all it held is fdatasync'd)."
    ),
    "consolidator_ring_fill_ratio": (
        "Share of the ring holding records its slowest live reader has not read (1: lapped next)."
    ),
    "consolidator_reader_lost_records": "Records a ring reader lost (lapped), by reader name.",
    "consolidator_process_cpu_seconds": "CPU time (user and system) of the service's process.",
    "consolidator_process_resident_memory_bytes": "Resident memory of the service's process.",
    "consolidator_process_shared_memory_bytes": (
        "Shared memory in its resident set (RssShmem: for the writer, the rings it maps)."
    ),
    "consolidator_process_context_switches": "Context switches (voluntary and involuntary).",
    "consolidator_process_involuntary_context_switches": "Involuntary context switches.",
    "consolidator_process_open_fds": "Open file descriptors of the service's process.",
    "consolidator_process_start_time_seconds": "Start time of the service's process.",
    "consolidator_process_pinned_cpu": "The CPU the process is pinned to (-1: not one CPU).",
    "consolidator_process_cpu_isolated": "1 when the process is pinned to an isolated CPU.",
    "consolidator_build_info": "Version of consolidator and Python running the exporter.",
    "consolidator_exporter_scrape_duration_seconds": "How long collecting the last scrape took.",
    "consolidator_exporter_feeds": "Feeds found under shm_dir.",
}


_go_float: Final[Callable[[float], str]] = floatToGoString
"""How Prometheus spells a float in a label (``le="0.001"``, ``le="1"``)."""


_Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
_CLASSES: Final = {
    Kind.COUNTER: CounterMetricFamily,
    Kind.GAUGE: GaugeMetricFamily,
    Kind.HISTOGRAM: HistogramMetricFamily,
}


class _Families:
    """The metric families of one scrape, each created at its first sample (whose label names
    it keeps)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[_Family, list[str]]] = {}

    def _family(self, name: str, kind: Kind, labels: dict[str, str]) -> tuple[_Family, list[str]]:
        base = name.removesuffix("_total") if kind is Kind.COUNTER else name
        entry = self._families.get(base)
        if entry is None:
            doc = HELP.get(base, base.replace("_", " "))
            names = list(labels)
            entry = self._families[base] = (_CLASSES[kind](base, doc, labels=names), names)
        return entry

    def add(self, name: str, kind: Kind, labels: dict[str, str], value: float) -> None:
        family, names = self._family(name, kind, labels)
        assert not isinstance(family, HistogramMetricFamily)
        family.add_metric([labels.get(n, "") for n in names], value)

    def histogram(
        self, name: str, labels: dict[str, str], buckets: list[tuple[str, float]], total: float
    ) -> None:
        family, names = self._family(name, Kind.HISTOGRAM, labels)
        assert isinstance(family, HistogramMetricFamily)
        family.add_metric([labels.get(n, "") for n in names], buckets, total)

    def __iter__(self) -> Iterator[Metric]:
        return (family for family, _ in self._families.values())


def _scaled(value: int, unit: Unit) -> float:
    return value / 1e9 if unit is Unit.NANOSECONDS else float(value)


def _add_counters(out: _Families, feed: str, snapshot: CountersSnapshot) -> None:
    for m in snapshot.metrics:
        labels = {"feed": feed, **dict(m.labels)}
        if m.kind is Kind.HISTOGRAM:
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*m.bounds, None), m.buckets, strict=True):
                cumulative += count
                le = "+Inf" if bound is None else _go_float(_scaled(bound, m.unit))
                buckets.append((le, cumulative))
            out.histogram(m.name, labels, buckets, _scaled(m.sum, m.unit))
        else:
            out.add(m.name, m.kind, labels, _scaled(m.value, m.unit))


class FeedCollector(Collector):
    """Reads every feed under ``shm_dir`` at each scrape (see the module docstring).

    Args:
        shm_dir: where the feeds' rings and counters are.
        proc_root: ``/proc`` (tests pass another tree).
        sys_root: ``/sys``, for ``devices/system/cpu/isolated``.
        clock: nanosecond wall clock.
    """

    def __init__(
        self,
        shm_dir: Path,
        *,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.shm_dir = shm_dir
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._clock = clock
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._active: dict[int, float] = {}
        self.scrapes = 0
        self.last_duration_s = 0.0

    # -- what the main loop asks ----------------------------------------------------------------

    def stuck_for(self) -> float:
        """Seconds the oldest running scrape has been running (0 when none runs)."""
        with self._lock:
            started = min(self._active.values(), default=None)
        return 0.0 if started is None else time.monotonic() - started

    def status(self) -> str:
        """E.g. "2 feeds, 120 scrapes, last 4.1 ms"."""
        with self._lock:
            return (
                f"{len(self._known)} feeds, {self.scrapes} scrapes, "
                f"last {self.last_duration_s * 1000:.1f} ms"
            )

    # -- a scrape --------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Everything, read now."""
        me = threading.get_ident()
        start = time.monotonic()
        with self._lock:
            self._active[me] = start
        try:
            out = self._collect()
        finally:
            duration = time.monotonic() - start
            with self._lock:
                del self._active[me]
                self.scrapes += 1
                self.last_duration_s = duration
        out.add("consolidator_exporter_scrape_duration_seconds", Kind.GAUGE, {}, duration)
        yield from out

    def _collect(self) -> _Families:
        out = _Families()
        names = feeds(self.shm_dir)
        self._note_feeds(names)
        services: dict[str, int] = {}
        for feed in names:
            self._feed(out, feed, services)
        services[EXPORTER_SERVICE] = os.getpid()
        isolated = self._isolated()
        for service, pid in services.items():
            self._process(out, service, pid, isolated)
        out.add("consolidator_exporter_feeds", Kind.GAUGE, {}, len(names))
        out.add(
            "consolidator_build_info",
            Kind.GAUGE,
            {"version": __version__, "python": ".".join(map(str, sys.version_info[:3]))},
            1,
        )
        return out

    def _note_feeds(self, names: list[str]) -> None:
        with self._lock:
            now = set(names)
            for feed in sorted(now - self._known):
                log.info("feed %s appeared under %s", feed, self.shm_dir)
            for feed in sorted(self._known - now):
                log.info("feed %s is gone from %s", feed, self.shm_dir)
            self._known = now

    def _feed(self, out: _Families, feed: str, services: dict[str, int]) -> None:
        now = self._clock()
        writer = read_counters(self.shm_dir, feed, "writer")
        up = False
        if writer is not None:
            _add_counters(out, feed, writer)
            if writer.alive():
                services[f"consolidator@{feed}"] = writer.pid
                up = now - writer.heartbeat_ns < WRITER_UP_AGE_NS
        out.add("consolidator_writer_up", Kind.GAUGE, {"feed": feed}, int(up))
        flusher = read_counters(self.shm_dir, feed, "flusher")
        if flusher is not None:
            _add_counters(out, feed, flusher)
            if flusher.alive():
                services[FLUSHER_SERVICE] = flusher.pid
        positions = read_positions(self.shm_dir, feed)
        flusher_at: dict[str, int] = {}
        if positions is not None:
            alive = positions.flusher_alive(now)
            out.add("consolidator_flusher_up", Kind.GAUGE, {"feed": feed}, int(alive))
            for stream, slot in positions.streams.items():
                if not slot.present:
                    continue
                lag = durable_lag_ns(slot, now) / 1e9
                labels = {"feed": feed, "stream": stream}
                out.add("consolidator_flusher_durable_lag_seconds", Kind.GAUGE, labels, lag)
                if alive:
                    flusher_at[stream] = slot.written_seq
        readers = list_readers(self.shm_dir, feed)
        self._readers(out, feed, readers)
        for stream in feed_streams(self.shm_dir, feed):
            positions_now = [
                r.position
                for r in readers
                if r.alive and r.stream == stream and r.position != NO_POSITION
            ]
            if stream in flusher_at:
                positions_now.append(flusher_at[stream])
            fill = self._fill(feed, stream, positions_now)
            if fill is not None:
                labels = {"feed": feed, "stream": stream}
                out.add("consolidator_ring_fill_ratio", Kind.GAUGE, labels, fill)

    @staticmethod
    def _readers(out: _Families, feed: str, readers: list[ReaderInfo]) -> None:
        lost: dict[tuple[str, str], int] = defaultdict(int)
        for r in readers:
            lost[(r.stream, r.name)] += r.lost
        for (stream, name), count in sorted(lost.items()):
            labels = {"feed": feed, "stream": stream, "reader": name}
            out.add("consolidator_reader_lost_records_total", Kind.COUNTER, labels, count)

    def _fill(self, feed: str, stream: str, positions: list[int]) -> float | None:
        try:
            with open_stream_reader(self.shm_dir, feed, stream) as ring:
                tail, capacity = ring.tail(), ring.capacity
        except ConsolidatorError:
            return None
        if not positions:
            return 0.0
        return min(1.0, max(0, tail - min(positions)) / capacity)

    # -- processes -------------------------------------------------------------------------------

    def _isolated(self) -> set[int]:
        return isolated_cpus(self.sys_root / "devices/system/cpu/isolated")

    def _shmem_bytes(self, pid: int) -> int | None:
        try:
            text = (self.proc_root / str(pid) / "status").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
        return None

    def _process(self, out: _Families, service: str, pid: int, isolated: set[int]) -> None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                rss = proc.memory_info().rss
                switches = proc.num_ctx_switches()
                started = proc.create_time()
                affinity = proc.cpu_affinity()
        except psutil.Error:  # gone meanwhile, or not ours to read
            return
        try:
            fds: int | None = proc.num_fds()
        except psutil.Error:  # /proc/PID/fd needs ptrace access (another user, a user namespace)
            fds = None
        labels = {"service": service}
        pinned = affinity[0] if len(affinity) == 1 else -1
        gauge, counter = Kind.GAUGE, Kind.COUNTER
        out.add("consolidator_process_cpu_seconds_total", counter, labels, cpu.user + cpu.system)
        out.add("consolidator_process_resident_memory_bytes", gauge, labels, rss)
        shmem = self._shmem_bytes(pid)
        if shmem is not None:
            out.add("consolidator_process_shared_memory_bytes", gauge, labels, shmem)
        out.add(
            "consolidator_process_context_switches_total",
            counter,
            labels,
            switches.voluntary + switches.involuntary,
        )
        out.add(
            "consolidator_process_involuntary_context_switches_total",
            counter,
            labels,
            switches.involuntary,
        )
        if fds is not None:
            out.add("consolidator_process_open_fds", gauge, labels, fds)
        out.add("consolidator_process_start_time_seconds", gauge, labels, started)
        out.add("consolidator_process_pinned_cpu", gauge, labels, pinned)
        out.add("consolidator_process_cpu_isolated", gauge, labels, int(pinned in isolated))


# -- the service ------------------------------------------------------------------------------


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT, got {text!r}")
    return ExporterConfig(text).host_port


def serve(
    collector: FeedCollector,
    host: str,
    port: int,
    stop: threading.Event,
    notifier: Notifier,
) -> None:
    """Serve ``/metrics`` on ``host:port`` until ``stop`` is set.

    Raises:
        ConsolidatorError: the address cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise ConsolidatorError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_host, bound_port = server.socket.getsockname()[:2]
    log.info(
        "listening on http://%s:%d/metrics (feeds under %s)",
        bound_host, bound_port, collector.shm_dir,
    )  # fmt: skip
    notifier.ready(f"listening on {bound_host}:{bound_port}")
    next_status = time.monotonic() + STATUS_S
    interval = notifier.watchdog_interval_s
    try:
        while not stop.wait(LOOP_S if interval is None else min(LOOP_S, interval / 2)):
            stuck = collector.stuck_for()
            if thread.is_alive() and (interval is None or stuck < 2 * interval):
                notifier.ping_if_due()
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_S
                notifier.status(collector.status())
    finally:
        notifier.stopping()
        server.shutdown()
        server.server_close()


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("consolidator exporter", "Prometheus endpoint for every feed under shm_dir.")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve /metrics on (default: [exporter] listen, 127.0.0.1:9464)",
    )
    return p.parse_args(argv)


def _exporter(argv: Sequence[str] | None) -> int:
    args = _args(argv)
    config = global_config(args)
    host, port = _listen(args.listen) if args.listen else config.exporter.host_port
    setup_logging()
    stop = threading.Event()
    notifier = Notifier()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(FeedCollector(config.shm_dir), host, port, stop, notifier)
    finally:
        notifier.close()
    log.info("stopped")
    return 0


def run_exporter(argv: Sequence[str] | None = None) -> int:
    """``consolidator exporter [--listen HOST:PORT]``: serve until SIGTERM/SIGINT, exit 0."""
    return run_main("consolidator exporter", lambda: _exporter(argv))
