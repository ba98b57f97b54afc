"""The reader registry (`consolidator.ring.registry`) with real files and real processes."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consolidator.ring.registry import (
    NO_POSITION,
    PRUNE_AFTER_NS,
    READERS_DIR,
    list_readers,
    make_registry_dir,
    process_start_ticks,
    prune_readers,
    register_reader,
)
from tests.feed.helpers import REPO, wait_until

FEED = "f1"
NOBODY = 65534


@pytest.fixture
def shm() -> Iterator[Path]:
    """A private shm_dir with feed ``f1`` and its registry, as the writer makes it."""
    root = Path("/dev/shm") / f"registry-{uuid.uuid4().hex[:12]}"
    (root / FEED).mkdir(parents=True)
    root.chmod(0o755)
    (root / FEED).chmod(0o755)
    make_registry_dir(root, FEED)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _proc(*args: str, user: str | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.cli.reader_proc"]
    if user:
        cmd += ["--user", user]
    return subprocess.Popen(
        [*cmd, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _hello(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    data: dict[str, object] = json.loads(line)
    return data


def _kill9(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)


def test_a_registered_reader_is_listed_with_its_reports_and_leaves_on_close(shm: Path) -> None:
    before = time.time_ns()
    slot = register_reader(shm, FEED, "trades", "mdtail")
    assert slot is not None
    (info,) = list_readers(shm, FEED)
    assert (info.name, info.pid, info.stream, info.alive) == ("mdtail", os.getpid(), "trades", True)
    assert info.position == NO_POSITION, "nothing reported yet"
    slot.update(1234, 5)
    (info,) = list_readers(shm, FEED)
    assert (info.position, info.lost) == (1234, 5)
    assert before <= info.registered_ns <= info.heartbeat_ns <= time.time_ns()
    with register_reader(shm, FEED, "quotes", "x" * 100) as other:
        assert other is not None
        names = {(r.stream, r.name) for r in list_readers(shm, FEED)}
        assert names == {("trades", "mdtail"), ("quotes", "x" * 64)}, "names cut to 64 bytes"
    slot.close()
    slot.close()
    assert list_readers(shm, FEED) == []
    assert os.listdir(shm / FEED / READERS_DIR) == []


def test_the_registry_directory_is_setgid_and_group_writable_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0o077)
    try:
        make_registry_dir(tmp_path, FEED)
    finally:
        os.umask(old)
    assert (tmp_path / FEED / READERS_DIR).stat().st_mode & 0o7777 == 0o2770


def test_a_group_member_registers_and_its_entry_belongs_to_the_group(shm: Path) -> None:
    group = 4242  # the registry's group (consolidator); the reader's own primary group differs
    os.chown(shm / FEED / READERS_DIR, 0, group)
    (shm / FEED / READERS_DIR).chmod(0o2770)
    proc = _proc("register", str(shm), FEED, "depth", "analyst", user=f"{NOBODY}:{NOBODY}:{group}")
    try:
        hello = _hello(proc)
        assert hello["registered"] is True
        wait_until(lambda: any(r.position == 7 for r in list_readers(shm, FEED)), 30, "report")
        (info,) = list_readers(shm, FEED)
        assert (info.name, info.pid, info.alive, info.lost) == ("analyst", hello["pid"], True, 1)
        st = info.path.stat() if info.path else None
        assert st is not None
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, group, 0o640)
    finally:
        _kill9(proc)


def test_a_user_who_may_not_write_the_registry_reads_unregistered_and_silently(shm: Path) -> None:
    proc = _proc("register", str(shm), FEED, "trades", "mdtail", user=f"{NOBODY}:{NOBODY}")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"registered": False, "pid": proc.pid, "listed": 0}
    assert err == ""
    assert list_readers(shm, FEED) == []


def test_a_feed_without_a_registry_is_read_unregistered(tmp_path: Path) -> None:
    (tmp_path / FEED).mkdir()
    assert register_reader(tmp_path, FEED, "trades", "mdtail") is None
    assert list_readers(tmp_path, FEED) == []
    assert list_readers(tmp_path, "nofeed") == []


def test_a_killed_reader_is_shown_dead_then_pruned_after_the_grace_period(shm: Path) -> None:
    proc = _proc("register", str(shm), FEED, "trades", "doomed")
    hello = _hello(proc)
    wait_until(lambda: any(r.position == 7 for r in list_readers(shm, FEED)), 30, "report")
    _kill9(proc)
    (info,) = list_readers(shm, FEED)
    assert (info.name, info.pid, info.alive, info.position) == ("doomed", hello["pid"], False, 7)
    assert prune_readers(shm, FEED) == 0, "dead but recent: still shown"
    live = register_reader(shm, FEED, "trades", "survivor")
    assert live is not None
    later = time.time_ns() + PRUNE_AFTER_NS + 1
    assert prune_readers(shm, FEED, now_ns=later) == 1, "only the dead one goes"
    assert [r.name for r in list_readers(shm, FEED)] == ["survivor"]
    live.close()


def test_a_recycled_pid_is_not_mistaken_for_the_reader(shm: Path) -> None:
    slot = register_reader(shm, FEED, "trades", "me")
    assert slot is not None
    try:
        (info,) = list_readers(shm, FEED)
        assert info.alive
        assert info.path is not None
        # The entry now names pid 1 (alive) with our start time: another process, so dead.
        with info.path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as mm, memoryview(mm) as raw:
            words = raw.cast("q")
            words[2] = 1
            words.release()
        (info,) = list_readers(shm, FEED)
        assert info.pid == 1
        assert process_start_ticks(1) is not None
        assert not info.alive
    finally:
        slot.close()


def test_process_start_ticks_tells_processes_apart() -> None:
    mine = process_start_ticks(os.getpid())
    assert mine is not None
    assert mine == process_start_ticks(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = process_start_ticks(child.pid)
        assert theirs is not None
        assert theirs >= mine
    finally:
        child.kill()
        child.wait()
    assert process_start_ticks(child.pid) is None, "gone (reaped)"


def test_positions_are_never_seen_torn_or_going_back(shm: Path) -> None:
    """A reader storing positions as fast as it can; a lister sees them only grow, never 0."""
    proc = _proc("hammer", str(shm), FEED, "trades", "120")
    try:
        _hello(proc)
        seen: list[tuple[int, int]] = []

        def sampled() -> bool:  # as many samples as it takes, while the hammer goes on
            assert proc.poll() is None, "the hammer stopped early"
            for _ in range(100):
                for info in list_readers(shm, FEED):
                    if info.position != NO_POSITION:
                        seen.append((info.position, info.lost))
            return len(seen) > 1000

        wait_until(sampled, 60, "1000 samples", interval=0)
        assert len(seen) > 100
        positions = [p for p, _ in seen]
        assert all(p > 0 for p in positions)
        assert positions == sorted(positions)
        assert positions[-1] > positions[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it leaves, closing its entry
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert list_readers(shm, FEED) == [], "left on exit"
