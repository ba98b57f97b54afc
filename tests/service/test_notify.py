"""sd_notify: the protocol on a real datagram socket, and the writer and flusher processes."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from consolidator.notify import Notifier
from tests.feed.helpers import Feed, Sim, Writer
from tests.pipeline import Flusher, wait_rings
from tests.service.notify_socket import NotifySocket
from tests.wait import wait_until


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def test_without_systemd_every_call_is_a_no_op() -> None:
    n = Notifier(environ={})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    n.ready("x")
    n.status("x")
    n.ping_if_due()
    n.stopping()
    assert n.dropped == 0


def test_messages_on_the_wire(notify: NotifySocket) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(notify.path)})
    n.ready("rings open\nsecond line")
    n.status("3 conns up")
    n.stopping()
    n.close()
    assert notify.collect(0.2) == [
        "READY=1\nSTATUS=rings open second line",
        "STATUS=3 conns up",
        "STOPPING=1",
    ]


def test_abstract_socket_names_work(tmp_path: Path) -> None:
    name = f"consolidator-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        n.ready()
        n.close()
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_pings_at_half_the_interval_and_only_for_its_own_pid(
    notify: NotifySocket,
) -> None:
    now = [100.0]
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    n = Notifier(environ=env, clock=lambda: now[0])
    assert n.watchdog_interval_s == 1.0
    n.ping_if_due()  # the first is due at once
    now[0] += 0.9
    n.ping_if_due()
    now[0] += 0.1
    n.ping_if_due()
    n.close()
    assert notify.collect(0.2) == ["WATCHDOG=1", "WATCHDOG=1"]
    other = Notifier(environ={**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None
    other.close()
    mine = Notifier(environ={**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 1.0
    mine.close()


def test_a_full_socket_drops_and_never_blocks(
    notify: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(notify.path)})
    for _ in range(5000):  # nobody reads: the receive queue fills up
        n.status("x" * 1000)
    n.close()
    assert n.dropped > 0
    assert len([r for r in caplog.records if "sd_notify" in r.message]) == 1


def test_an_unreachable_socket_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    n.ready()
    assert not n.enabled
    assert "NOTIFY_SOCKET" in caplog.text


@pytest.mark.integration
def test_writer_is_ready_without_the_exchange_pings_reports_and_says_stopping(
    tmp_path: Path, notify: NotifySocket
) -> None:
    feed = Feed(tmp_path)
    # Nothing listens there: an exchange outage must not be a start failure.
    feed.write(venue="binance", symbols=["BTCUSDT"], ws_url="ws://127.0.0.1:9",
               rest_url="http://127.0.0.1:9")  # fmt: skip
    writer = Writer(feed, env=notify.env(watchdog_usec=400_000))
    try:
        ready = notify.wait_for("READY=1", 30)
        assert (feed.shm_dir / feed.name / "trades.ring").exists(), "READY before the rings"
        assert "rings open" in ready
        notify.collect(2.5)
        pings = notify.times("WATCHDOG=1")
        assert len(pings) >= 8, pings  # every 0.2 s
        assert max(b - a for a, b in itertools.pairwise(pings)) < 0.8  # generous: a shared VM
        status = [m for m in notify.collect(0) if m.startswith("STATUS=")]
        assert any("0/1 conns up" in m for m in status), status
        code, _ = writer.stop()
        assert code == 0, writer.stderr()
        assert notify.wait_for("STOPPING=1", 1)
    finally:
        writer.stop()
        feed.remove()


@pytest.mark.integration
def test_writer_status_counts_connections_and_messages(
    tmp_path: Path, notify: NotifySocket
) -> None:
    sim = Sim(tmp_path)
    feed = Feed(tmp_path)
    try:
        feed.write(venue="binance", symbols=list(sim.info["symbols"]), ws_url=sim.ws_url,
                   rest_url=sim.rest_url)  # fmt: skip
        writer = Writer(feed, env=notify.env())
        try:
            notify.wait_for("READY=1", 30)

            def busy() -> list[str]:  # the status lines once connected and receiving
                status = [m for m in notify.collect(0.1) if m.startswith("STATUS=")]
                up = [m for m in status if m.startswith("STATUS=1/1 conns up, ")]
                return [m for m in up if not m.startswith("STATUS=1/1 conns up, 0 msg/s")]

            wait_until(lambda: bool(busy()), 60, "a status line with messages flowing")
            pattern = r" msg/s, lag \d+ ms, \d+ gaps, \d+ resyncs$"
            assert all(re.search(pattern, m) for m in busy()), busy()
        finally:
            assert writer.stop()[0] == 0
    finally:
        sim.stop()
        feed.remove()


@pytest.mark.integration
def test_flusher_ready_watchdog_status_and_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    sim = Sim(tmp_path)
    feed = Feed(tmp_path)
    feed.write(venue="binance", symbols=list(sim.info["symbols"]), ws_url=sim.ws_url,
               rest_url=sim.rest_url)  # fmt: skip
    writer = Writer(feed)
    flusher: Flusher | None = None
    try:
        wait_rings(feed)
        flusher = Flusher(feed, env=notify.env(watchdog_usec=400_000))
        notify.wait_for("READY=1", 30)
        notify.collect(3)
        assert len(notify.times("WATCHDOG=1")) >= 8

        def status() -> list[str]:
            return [m for m in notify.collect(0.1) if m.startswith("STATUS=")]

        # The periodic status (every 2 s) once the flusher has found the feed's five rings.
        wait_until(lambda: any("1 feeds, 5 streams" in m for m in status()), 60, "its status")
        flusher.proc.send_signal(signal.SIGTERM)
        assert flusher.proc.wait(60) == 0
        assert notify.wait_for("STOPPING=1", 1)
    finally:
        if flusher is not None:
            flusher.stop()
        writer.stop()
        sim.stop()
        feed.remove()
