"""The .deb under a real systemd: install, the suite running on the simulator, upgrade, purge.

One installation serves the whole module and the tests run in file order, each one a step of
an operator's day: install, start ``consolidator.target``, watch data flow, read it as a member
of the ``consolidator`` group, survive a hung writer (watchdog), upgrade under load, stop with
nothing lost, purge. The simulator runs on the host's loopback; systemd runs in a namespace
(`tests.system.namespace`), and everything is removed afterwards, also when a step fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consolidator.journal.position import read_positions
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.payloads import decode_event
from consolidator.records import EventKind
from tests.feed.helpers import Feed, Sim, wait_until
from tests.pipeline import STREAMS, journal_items, tails
from tests.system.namespace import SystemdNamespace

pytestmark = [pytest.mark.system, pytest.mark.slow]

WRITER = "consolidator@binance.service"
FLUSHER = "consolidator-flusher.service"
EXPORTER = "consolidator-exporter.service"
SERVICES = (WRITER, FLUSHER, EXPORTER)
SHM = Path("/dev/shm/consolidator")
STATE = Path("/var/lib/consolidator")
FEED_FILE = Path("/etc/consolidator/feeds/binance.toml")
UNIT_DIR = Path("/lib/systemd/system")
DROP_INS = [Path(f"/etc/systemd/system/{unit}.d") for unit in (FLUSHER, EXPORTER)]
OUR_UNITS = ("consolidator*",)
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass
class Suite:
    """The namespace with the package installed, the simulator, and the cores in use."""

    ns: SystemdNamespace
    sim: Sim
    feed: Feed  # the installed feed as the ring helpers see it (name, shm_dir)
    writer_cpu: int
    housekeeping_cpu: int
    feed_text: str

    def main_pid(self, unit: str) -> str:
        return self.ns.show(unit, "MainPID")

    def status(self, pid: str) -> dict[str, str]:
        lines = self.ns.read(f"/proc/{pid}/status").splitlines()
        return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _apt(ns: SystemdNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.run("apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args)


def _installed_version(ns: SystemdNamespace) -> str:
    return ns.run("dpkg-query", "-W", "-f=${Version}", "consolidator", check=False).stdout


@pytest.fixture(scope="module")
def suite(deb: Path, clean_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    tmp = tmp_path_factory.mktemp("system")
    sim = Sim(tmp, "--symbols", "4", "--rate", "200")
    ns: SystemdNamespace | None = None
    try:
        ns = SystemdNamespace()
        _apt(ns, "install", str(deb))
        ns.quarantine(["consolidator.target"], OUR_UNITS)
        cpus = os.cpu_count() or 1
        writer_cpu, housekeeping_cpu = cpus - 1, 0
        # The feed on the simulator, pinned to the last core ...
        feed_text = (
            'venue = "binance"\n'
            f"symbols = {json.dumps(sim.info['symbols'])}\n"
            f'ws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n'
            f"cpu = {writer_cpu}\n"
        )
        FEED_FILE.write_text(feed_text)
        # ... and the flusher and exporter on a housekeeping core: README's drop-ins.
        for drop_in in DROP_INS:
            drop_in.mkdir(parents=True, exist_ok=True)
            (drop_in / "cpu.conf").write_text(f"[Service]\nCPUAffinity={housekeeping_cpu}\n")
        ns.systemctl("daemon-reload")
        feed = Feed(tmp, name="binance", shm_dir=SHM)
        yield Suite(ns, sim, feed, writer_cpu, housekeeping_cpu, feed_text)
    finally:
        try:
            if ns is not None:
                ns.systemctl("stop", "consolidator.target", check=False)
                if _installed_version(ns):
                    ns.run("apt-get", "-y", "-q", "purge", "consolidator", check=False)
                ns.poweroff()
        finally:
            for drop_in in DROP_INS:
                subprocess.run(["rm", "-rf", str(drop_in)], check=False)
            sim.stop()


@pytest.fixture
def user() -> Iterator[str]:
    """A normal login user (no home directory), removed afterwards."""
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def _mdtail_as(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        [RUNUSER, "-u", name, "--", "/usr/bin/mdtail", "binance", *args],
        capture_output=True, text=True, timeout=60, env=env, check=False, cwd="/",
    )  # fmt: skip


# -- installed ---------------------------------------------------------------------------------


def test_install_creates_the_user_the_directories_and_enables_the_suite(suite: Suite) -> None:
    passwd = subprocess.run(
        ["getent", "passwd", "consolidator"], capture_output=True, text=True, check=True
    ).stdout.split(":")
    assert int(passwd[2]) < 1000, "a system user"
    assert passwd[6].strip() == "/usr/sbin/nologin"
    for path in (SHM, STATE):
        info = path.stat()
        assert oct(info.st_mode & 0o7777) == "0o2750", path
        assert info.st_uid == int(passwd[2]), path
        assert info.st_gid == int(passwd[3]), path
    ns = suite.ns
    assert ns.systemctl("is-enabled", "consolidator.target").strip() == "enabled"
    wants = Path("/etc/systemd/system/consolidator.target.wants/consolidator@binance.service")
    assert wants.is_symlink(), "enabling the suite enables the example feed's writer"
    for unit in SERVICES:
        assert ns.show(unit, "ActiveState") == "inactive", "installing starts nothing"
    conffiles = ns.run("dpkg-query", "-W", "-f=${Conffiles}", "consolidator").stdout
    assert "/etc/consolidator/consolidator.toml" in conffiles
    assert str(FEED_FILE) in conffiles


def test_commands_are_on_path_with_man_pages(suite: Suite) -> None:
    for command in ("consolidator", "mdtail", "mdstat", "mdcompare"):
        version = suite.ns.run(command, "--version").stdout
        assert re.fullmatch(rf"{command} \d+\.\d+\.\d+\S*\n", version), version
        page = suite.ns.run("man", "-P", "cat", command).stdout
        assert "--config-dir" in page, f"man {command} shows the options of --help"
    # mdcompare's plots: matplotlib (Agg) is bundled and draws a PNG.
    code = (
        "import io, consolidator.compare.plots as p; f, ax = p.plt.subplots(); "
        "b = io.BytesIO(); f.savefig(b, format='png'); print(b.getvalue()[:4])"
    )
    python = "/usr/lib/consolidator/bin/python"
    assert suite.ns.run(python, "-c", code).stdout.strip() == r"b'\x89PNG'"
    consolidator_page = suite.ns.run("man", "-P", "cat", "consolidator").stdout
    for sub in ("run", "flusher", "exporter", "sim"):
        assert f"consolidator {sub}" in consolidator_page


def test_units_pass_systemd_analyze_verify(suite: Suite) -> None:
    units = [str(UNIT_DIR / name) for name in ("consolidator.target", FLUSHER, EXPORTER)]
    result = suite.ns.run("systemd-analyze", "verify", *units, str(UNIT_DIR / WRITER), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_writer_exposure_is_at_most_2_5(suite: Suite) -> None:
    for unit in SERVICES:
        out = suite.ns.run("systemd-analyze", "security", "--offline=true", unit).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out[-500:]
        assert float(match.group(1)) <= 2.5, (unit, match.group(0))


# -- running -----------------------------------------------------------------------------------


def test_target_starts_writer_flusher_and_exporter_ready(suite: Suite) -> None:
    ns = suite.ns
    ns.systemctl("start", "consolidator.target")  # returns once every unit sent READY=1
    for unit in SERVICES:
        assert ns.show(unit, "Type") == "notify", unit
        assert (ns.show(unit, "ActiveState"), ns.show(unit, "SubState")) == ("active", "running")
    ns.assert_quiet(OUR_UNITS)


def test_status_shows_each_services_status_line(suite: Suite) -> None:
    wait_until(lambda: "conns up" in suite.ns.show(WRITER, "StatusText"), 30, "writer status")
    for unit in SERVICES:
        out = suite.ns.systemctl("status", "-n", "0", unit)
        assert re.search(r'^\s+Status: ".+"$', out, re.MULTILINE), out


def test_data_flows_into_the_rings_and_the_journal(suite: Suite) -> None:
    wait_until(lambda: tails(suite.feed)["trades"] > 100, 30, "trades in the ring")

    def durable_trades() -> int:
        positions = read_positions(SHM, "binance")
        return 0 if positions is None else positions.streams["trades"].durable_seq

    wait_until(lambda: durable_trades() > 100, 30, "trades in the journal")
    assert any((STATE / "journal" / "binance" / "trades").iterdir())


def test_writer_runs_as_consolidator_on_its_pinned_core(suite: Suite) -> None:
    uid = subprocess.run(
        ["id", "-u", "consolidator"], capture_output=True, text=True, check=True
    ).stdout.strip()
    writer = suite.status(suite.main_pid(WRITER))
    assert writer["Uid"].split()[1] == uid, "effective uid"
    assert writer["Cpus_allowed_list"] == str(suite.writer_cpu)
    for unit in (FLUSHER, EXPORTER):
        status = suite.status(suite.main_pid(unit))
        assert status["Uid"].split()[1] == uid, unit
        assert status["Cpus_allowed_list"] == str(suite.housekeeping_cpu), unit
    isolated = Path("/sys/devices/system/cpu/isolated").read_text().strip()
    if str(suite.writer_cpu) not in isolated.split(","):
        assert f"pinned to core {suite.writer_cpu}, which is not isolated" in (
            suite.ns.journal(WRITER)
        )


def test_mdtail_works_for_members_of_the_consolidator_group(suite: Suite, user: str) -> None:
    denied = _mdtail_as(user, "--no-follow", "-n", "3")
    assert denied.returncode == 1, denied
    assert "permission denied" in denied.stderr
    assert "Traceback" not in denied.stderr
    assert len(denied.stderr.splitlines()) == 1, denied.stderr
    subprocess.run(["usermod", "-a", "-G", "consolidator", user], check=True)
    shown = _mdtail_as(user, "--no-follow", "-n", "5", "--stream", "trades", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    trades = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(trades) == 5
    assert all(t["type"] == "trade" and t["feed"] == "binance" for t in trades)


def test_watchdog_restarts_a_hung_writer_and_the_sequence_continues(suite: Suite) -> None:
    ns = suite.ns
    hung = suite.main_pid(WRITER)
    before = tails(suite.feed)["trades"]
    ns.run("kill", "-STOP", hung)

    def restarted() -> bool:
        pid = suite.main_pid(WRITER)
        return pid not in ("0", hung) and ns.show(WRITER, "ActiveState") == "active"

    wait_until(restarted, 60, "the watchdog to restart the writer")  # WatchdogSec=10s
    assert ns.show(WRITER, "NRestarts") == "1"
    assert "Watchdog timeout" in ns.journal(WRITER)
    wait_until(lambda: tails(suite.feed)["trades"] > before + 100, 30, "trades after restart")
    # No duplicates: checked on the whole journal when the suite stops.


def test_upgrade_keeps_conffiles_and_restarts_the_running_suite(
    suite: Suite, upgrade_deb: Path
) -> None:
    ns = suite.ns
    pids = {unit: suite.main_pid(unit) for unit in SERVICES}
    _apt(ns, "install", str(upgrade_deb))
    assert _installed_version(ns).endswith("+systest1")
    assert FEED_FILE.read_text() == suite.feed_text, "the edited conffile is kept"
    for unit in SERVICES:
        assert ns.show(unit, "ActiveState") == "active", ns.journal(unit)[-3000:]
        assert suite.main_pid(unit) != pids[unit], f"{unit} runs the new version"
    before = tails(suite.feed)["trades"]
    wait_until(lambda: tails(suite.feed)["trades"] > before + 100, 30, "trades after upgrade")


def test_stopping_the_target_drains_the_flusher_with_nothing_lost(suite: Suite) -> None:
    ns = suite.ns
    ns.systemctl("stop", "consolidator.target")  # returns before the units are down

    def down() -> bool:
        return all(ns.show(unit, "ActiveState") == "inactive" for unit in SERVICES)

    wait_until(down, 120, "writer, exporter and (last) the flusher to stop")
    for unit in SERVICES:
        assert ns.show(unit, "Result") == "success", unit
    log = ns.run("journalctl", "--no-pager", "-o", "cat").stdout
    assert log.rindex(f"Stopped {FLUSHER}") > log.rindex(f"Stopped {WRITER}"), "flusher last"
    ends = tails(suite.feed)  # the rings stay in /dev/shm after the writer stopped
    positions = read_positions(SHM, "binance")
    assert positions is not None
    for stream in STREAMS:
        assert positions.streams[stream].durable_seq == ends[stream], stream
        seqs, _, losses = journal_items(STATE, "binance", stream)
        assert not losses, (stream, losses)
        assert seqs == list(range(ends[stream])), f"{stream}: every number once, in order"
    names = load_symbols(symbols_path(STATE, "binance"))
    _, trades, _ = journal_items(STATE, "binance", "trades")
    seen: dict[tuple[str, int], object] = {}
    for row in trades:
        key = (names[row[7]], row[4])  # type: ignore[index]
        assert key not in seen, f"trade {key} journaled twice: {seen[key]} and {row}"
        seen[key] = row  # type: ignore[assignment]
    _, events, _ = journal_items(STATE, "binance", "events")
    kinds = [decode_event(record.payload).kind for record in events]  # type: ignore[attr-defined]
    assert kinds.count(EventKind.WRITER_START) == 3, "start, watchdog restart, upgrade restart"
    assert kinds.count(EventKind.WRITER_STOP) == 2, "the upgrade's restart and this stop"


def test_purge_removes_units_and_configuration_but_keeps_the_journal(suite: Suite) -> None:
    ns = suite.ns
    purge = ns.run("apt-get", "-y", "-q", "purge", "consolidator")
    assert "keeps the journal data in /var/lib/consolidator" in purge.stdout + purge.stderr
    assert not _installed_version(ns)
    left = [
        *UNIT_DIR.glob("consolidator*"),
        *Path("/etc/systemd/system").rglob("consolidator*"),
        *Path("/usr/lib/tmpfiles.d").glob("consolidator*"),
        *Path("/usr/lib/sysusers.d").glob("consolidator*"),
    ]
    assert not left, left
    listed = ns.systemctl("list-unit-files", "consolidator*", check=False)
    assert "0 unit files listed" in listed, listed
    for gone in ("/etc/consolidator", "/usr/bin/mdtail", "/usr/lib/consolidator", str(SHM)):
        assert not Path(gone).exists(), gone
    assert any((STATE / "journal" / "binance" / "trades").iterdir()), "the journal is data"
