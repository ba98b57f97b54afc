"""``consolidator exporter`` against the real pipeline: the exposition promtool accepts, every
metric of DESIGN.md with its type and labels, process metrics, sd_notify, feeds coming and going."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from consolidator.counters import CountersFile, read_counters
from consolidator.exporter import FeedCollector, serve
from consolidator.notify import Notifier
from consolidator.streams import write_feed_meta
from tests.cli.synthetic import synthetic_writer
from tests.feed.helpers import REPO, env_without_proxy, wait_until
from tests.observability.helpers import Exporter, http_get
from tests.pipeline import Pipeline, pipeline
from tests.service.notify_socket import NotifySocket

pytestmark = pytest.mark.integration

FAULTS = (
    "--fault", "malformed,variant=json,after=3",  # a parse error
    "--fault", "drop-depth,after=3",  # a gap, then a resync
    "--fault", "reset,after=4",  # a reconnect
)  # fmt: skip

DESIGN = {
    "consolidator_messages_received": ("counter", {"feed", "venue", "channel"}),
    "consolidator_bytes_received": ("counter", {"feed", "venue"}),
    "consolidator_records_published": ("counter", {"feed", "stream"}),
    "consolidator_parse_errors": ("counter", {"feed", "kind"}),
    "consolidator_reconnects": ("counter", {"feed", "reason"}),
    "consolidator_gaps": ("counter", {"feed"}),
    "consolidator_resyncs": ("counter", {"feed"}),
    "consolidator_reader_lost_records": ("counter", {"feed", "stream", "reader"}),
    "consolidator_connections": ("gauge", {"feed", "state"}),
    "consolidator_last_message_timestamp_seconds": ("gauge", {"feed", "channel"}),
    "consolidator_exchange_to_receive_seconds": ("histogram", {"feed", "channel"}),
    "consolidator_receive_to_commit_seconds": ("histogram", {"feed", "stream"}),
    "consolidator_flusher_durable_lag_seconds": ("gauge", {"feed", "stream"}),
    "consolidator_fsync_duration_seconds": ("histogram", {"feed"}),
    "consolidator_ring_fill_ratio": ("gauge", {"feed", "stream"}),
    "consolidator_process_cpu_seconds": ("counter", {"service"}),
    "consolidator_process_resident_memory_bytes": ("gauge", {"service"}),
    "consolidator_process_context_switches": ("counter", {"service"}),
    "consolidator_build_info": ("gauge", {"version", "python"}),
}
"""DESIGN.md "Prometheus": family name (without ``_total``), type, label names."""


def _families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, [s for s in samples if s.name == name])
    return found[0]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Exporter]]:
    """Simulator (with a parse error, a gap and a reset), writer, flusher and the exporter."""
    tmp = tmp_path_factory.mktemp("exporter")
    args = ("--venue", "binance", "--symbols", "3", "--rate", "100", *FAULTS)
    with pipeline(tmp, *args) as p:
        exporter = Exporter(p.feed.root)
        try:

            def faults_seen() -> bool:
                snap = read_counters(p.feed.shm_dir, p.feed.name)
                return (
                    snap is not None
                    and sum(m.value for m in snap.family("consolidator_parse_errors_total")) > 0
                    and sum(m.value for m in snap.family("consolidator_reconnects_total")) > 0
                    and snap.value("consolidator_gaps_total") > 0
                    and read_counters(p.feed.shm_dir, p.feed.name, "flusher") is not None
                )

            wait_until(faults_seen, 60, "the parse error, gap and reconnect to be counted")
            yield p, exporter
        finally:
            assert exporter.stop() == 0


def test_exposition_is_clean_for_promtool(running: tuple[Pipeline, Exporter]) -> None:
    _, exporter = running
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed (Debian package prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=exporter.scrape(), capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


def test_every_design_metric_with_its_type_and_labels(running: tuple[Pipeline, Exporter]) -> None:
    _, exporter = running
    families = _families(exporter.scrape())
    for name, (kind, labels) in DESIGN.items():
        assert name in families, f"{name} missing"
        got_kind, samples = families[name]
        assert got_kind == kind, name
        assert samples, f"{name} has no samples"
        for sample in samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    for name, (_, samples) in families.items():
        assert name.startswith("consolidator_")
        hist = name.endswith("_seconds") and families[name][0] == "histogram"
        assert not hist or all("symbol" not in s.labels for s in samples)


def test_counts_and_histograms_follow_the_traffic(running: tuple[Pipeline, Exporter]) -> None:
    p, exporter = running
    feed = p.feed.name
    _, received = _families(exporter.scrape())["consolidator_messages_received"]
    before = _value(
        received, "consolidator_messages_received_total", feed=feed, venue="binance",
        channel="trades",
    )  # fmt: skip
    families: dict[str, tuple[str, list[Sample]]] = {}

    def more_received() -> bool:
        nonlocal families
        families = _families(exporter.scrape())
        _, received = families["consolidator_messages_received"]
        after = _value(
            received, "consolidator_messages_received_total", feed=feed, venue="binance",
            channel="trades",
        )  # fmt: skip
        return after > before

    wait_until(more_received, 60, "more trades received")
    _, r2c = families["consolidator_receive_to_commit_seconds"]
    count = _value(r2c, "consolidator_receive_to_commit_seconds_count", feed=feed, stream="trades")
    below_1s = _value(
        r2c, "consolidator_receive_to_commit_seconds_bucket", feed=feed, stream="trades", le="1.0"
    )
    assert count > 0
    assert below_1s == count
    _, e2r = families["consolidator_exchange_to_receive_seconds"]
    assert _value(e2r, "consolidator_exchange_to_receive_seconds_count", feed=feed, channel="depth")
    _, gaps = families["consolidator_gaps"]
    assert _value(gaps, "consolidator_gaps_total", feed=feed) >= 1
    _, up = families["consolidator_writer_up"]
    assert _value(up, "consolidator_writer_up", feed=feed) == 1


def test_process_metrics_of_each_service(running: tuple[Pipeline, Exporter]) -> None:
    p, exporter = running
    families = _families(exporter.scrape())
    pids = {
        f"consolidator@{p.feed.name}": p.writer.proc.pid,
        "consolidator-flusher": p.flusher.proc.pid,
        "consolidator-exporter": exporter.proc.pid,
    }
    _, starts = families["consolidator_process_start_time_seconds"]
    _, rss = families["consolidator_process_resident_memory_bytes"]
    _, shmem = families["consolidator_process_shared_memory_bytes"]
    _, fds = families["consolidator_process_open_fds"]
    _, pinned = families["consolidator_process_pinned_cpu"]
    for service, pid in pids.items():
        proc = psutil.Process(pid)
        started = _value(starts, "consolidator_process_start_time_seconds", service=service)
        assert started == pytest.approx(proc.create_time(), abs=0.02), service
        assert _value(rss, "consolidator_process_resident_memory_bytes", service=service) > 10e6
        assert _value(fds, "consolidator_process_open_fds", service=service) > 3
        assert _value(pinned, "consolidator_process_pinned_cpu", service=service) == (
            -1 if len(proc.cpu_affinity()) > 1 else proc.cpu_affinity()[0]
        )
    writer_shmem = _value(
        shmem, "consolidator_process_shared_memory_bytes", service=f"consolidator@{p.feed.name}"
    )
    assert writer_shmem > 1e6  # its rings


def test_bad_address_and_busy_port_are_one_line_errors(running: tuple[Pipeline, Exporter]) -> None:
    p, exporter = running
    busy = subprocess.run(
        [sys.executable, "-m", "consolidator.cli.main", "exporter", "--config-dir",
         str(p.feed.root), "--listen", f"127.0.0.1:{exporter.port}"],
        capture_output=True, text=True, cwd=REPO, check=False, env=env_without_proxy(),
    )  # fmt: skip
    assert busy.returncode == 1
    assert busy.stderr.splitlines()[-1] == (
        f"consolidator exporter: error: cannot listen on 127.0.0.1:{exporter.port}: "
        "Address already in use"
    )
    assert "Traceback" not in busy.stderr


def test_sd_notify_ready_watchdog_status_stopping(tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path)
    (tmp_path / "consolidator.toml").write_text(f'shm_dir = "{tmp_path / "shm"}"\n')
    env = {k: v for k, v in sock.env(watchdog_usec=1_000_000).items() if "proxy" not in k.lower()}
    exporter = Exporter(tmp_path, env=env)
    try:
        ready = sock.wait_for("READY=1", 60)
        assert f"STATUS=listening on 127.0.0.1:{exporter.port}" in ready.splitlines()
        sock.wait_for("STATUS=0 feeds", 60)  # the periodic status line
        sock.collect(1.5)
        pings = sock.times("WATCHDOG=1")
        assert len(pings) >= 3  # every 0.5 s (half of WATCHDOG_USEC)
        assert max(b - a for a, b in itertools.pairwise(pings)) < 0.9
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(15) == 0
        sock.wait_for("STOPPING=1", 30)
    finally:
        exporter.stop()
        sock.close()


class _StuckCollector(FeedCollector):
    """A collector whose scrapes wait until released."""

    def __init__(self, shm_dir: Path) -> None:
        super().__init__(shm_dir)
        self.release = threading.Event()

    def _collect(self) -> Any:  # inside the scrape the main loop watches
        self.release.wait(30)
        return super()._collect()


def test_a_stuck_scrape_stops_the_watchdog_until_it_finishes(tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path)
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": "1000000"})
    collector = _StuckCollector(tmp_path / "shm")
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(collector, "127.0.0.1", 0, stop, notifier))
    server.start()
    try:
        ready = sock.wait_for("READY=1", 60)
        port = ready.rsplit(":", 1)[1]
        scrape = threading.Thread(target=http_get, args=(f"http://127.0.0.1:{port}/metrics",))
        scrape.start()
        sock.collect(2.5)  # the scrape has been stuck longer than WATCHDOG_USEC
        sock.messages.clear()
        sock.collect(1.5)
        assert sock.times("WATCHDOG=1") == []
        collector.release.set()
        scrape.join(10)
        sock.wait_for("WATCHDOG=1", 30)
    finally:
        collector.release.set()
        stop.set()
        server.join(10)
        notifier.close()
    sock.wait_for("STOPPING=1", 30)
    sock.close()


def test_collector_picks_up_feeds_that_appear_and_disappear(tmp_path: Path) -> None:
    shm = Path("/dev/shm") / f"exportertest-{tmp_path.name}"
    collector = FeedCollector(shm)
    try:

        def feeds_now() -> list[str]:
            families = {f.name: f for f in collector.collect()}
            return sorted(s.labels["feed"] for s in families["consolidator_writer_up"].samples)

        assert "consolidator_writer_up" not in {f.name for f in collector.collect()}
        synthetic_writer(shm, rate=1000, stop_after_s=0.1)  # feed "demo", rings only
        assert feeds_now() == ["demo"]
        write_feed_meta(shm, "second", "binance")
        CountersFile(shm / "second" / "counters", service="writer", feed="second")
        assert feeds_now() == ["demo", "second"]
        shutil.rmtree(shm / "demo")
        assert feeds_now() == ["second"]
    finally:
        shutil.rmtree(shm, ignore_errors=True)


_PINNED = """
import os, sys, time
from pathlib import Path
from consolidator.counters import CountersFile
os.sched_setaffinity(0, {int(sys.argv[2])})
CountersFile(Path(sys.argv[1]), service="writer", feed="pinned")
print("ready", flush=True)
time.sleep(60)
"""


def test_pinned_cpu_and_whether_it_is_isolated(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    shm = Path("/dev/shm") / f"exportertest-{tmp_path.name}"
    write_feed_meta(shm, "pinned", "binance")
    owner = subprocess.Popen(
        [sys.executable, "-c", _PINNED, str(shm / "pinned" / "counters"), str(cpu)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        for isolated, expected in ((f"{cpu}\n", 1.0), ("\n", 0.0)):
            sys_root = tmp_path / "sys"
            (sys_root / "devices/system/cpu").mkdir(parents=True, exist_ok=True)
            (sys_root / "devices/system/cpu/isolated").write_text(isolated)
            families = {f.name: f for f in FeedCollector(shm, sys_root=sys_root).collect()}
            labels = {"service": "consolidator@pinned"}
            pinned = [s for s in families["consolidator_process_pinned_cpu"].samples
                      if s.labels == labels]  # fmt: skip
            flag = [s for s in families["consolidator_process_cpu_isolated"].samples
                    if s.labels == labels]  # fmt: skip
            assert [s.value for s in pinned] == [cpu]
            assert [s.value for s in flag] == [expected]
    finally:
        owner.kill()
        owner.wait()
        assert owner.stdout is not None
        owner.stdout.close()
        shutil.rmtree(shm, ignore_errors=True)
