"""mdtail as a registered reader, as a read-only user, and in colour on a terminal only."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consolidator.ring.registry import READERS_DIR, list_readers
from consolidator.streams import open_stream_reader
from tests.cli.synthetic import FEED
from tests.feed.helpers import REPO, wait_until

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
NOBODY = 65534
ESC = b"\x1b["


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "TERM": "xterm", **extra}


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "mdtail"), FEED, *args],
        env=_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _registered(shm: Path, pid: int) -> dict[str, int]:
    """Stream -> reported position of ``pid``'s live entries."""
    return {r.stream: r.position for r in list_readers(shm, FEED) if r.pid == pid and r.alive}


def _mdstat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mdstat"), FEED, *args],
        env=_env(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mdtail_registers_every_stream_it_follows_and_leaves_when_stopped(
    live_env: tuple[dict[str, str], Path], sig: signal.Signals
) -> None:
    env, shm = live_env
    proc = _start(env)
    try:
        wait_until(lambda: len(_registered(shm, proc.pid)) == 3, 30, "mdtail registered")
        assert {r.name for r in list_readers(shm, FEED)} == {"mdtail"}
        with open_stream_reader(shm, FEED, "trades") as ring:
            floor = ring.tail()
        wait_until(lambda: _registered(shm, proc.pid)["trades"] >= floor, 30, "its reports")
        assert set(_registered(shm, proc.pid)) == {"trades", "quotes", "events"}
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert err == b""
    assert os.listdir(shm / FEED / READERS_DIR) == [], "left the registry"


def test_a_killed_mdtail_is_shown_dead_by_mdstat(live_env: tuple[dict[str, str], Path]) -> None:
    env, shm = live_env
    proc = _start(env, "--stream", "trades")
    try:
        wait_until(lambda: len(_registered(shm, proc.pid)) == 1, 30, "mdtail registered")
        rows = [json.loads(line) for line in _mdstat(env, "--format", "json").stdout.splitlines()]
        trades = next(r for r in rows if r["stream"] == "trades")
        assert (trades["readers"], trades["slowest_reader"]) == (1, "mdtail")
        assert trades["slowest_reader_pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    rows = [json.loads(line) for line in _mdstat(env, "--format", "json").stdout.splitlines()]
    trades = next(r for r in rows if r["stream"] == "trades")
    assert (trades["readers"], trades["dead_readers"], trades["slowest_reader"]) == (0, 1, None)
    (dead,) = trades["reader_list"]
    assert (dead["name"], dead["pid"], dead["alive"]) == ("mdtail", proc.pid, False)
    text = _mdstat(env).stdout
    assert any(
        line.split()[:5] == [FEED, "trades", "mdtail", str(proc.pid), "DEAD"]
        for line in text.splitlines()
    ), text


def test_a_user_who_cannot_register_still_reads_everything(feed_env: dict[str, str]) -> None:
    shm = Path(feed_env["CONSOLIDATOR_SHM_DIR"])
    as_root = subprocess.run(
        [str(BIN / "mdtail"), FEED, "--no-follow", "--format", "json"],
        env=_env(feed_env), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    # The rings readable by the reader's group; the registry (root:root, 2770) not writable.
    for path in [shm, shm / FEED, *(shm / FEED).iterdir()]:
        if path.name != READERS_DIR:
            os.chown(path, 0, NOBODY)
    result = subprocess.run(
        [sys.executable, "-m", "tests.cli.reader_proc", "--user", f"{NOBODY}:{NOBODY}",
         "mdtail", FEED, "--no-follow", "--format", "json"],
        cwd=REPO, env=_env({**feed_env, "CONSOLIDATOR_CONFIG_DIR": "/nonexistent"}),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", "no word about the registry"
    assert result.stdout == as_root.stdout
    assert len(result.stdout.splitlines()) > 100


def _on_a_terminal(env: dict[str, str], *args: str) -> bytes:
    """mdtail's output with a pseudo-terminal as stdout."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "mdtail"), FEED, "--no-follow", *args],
        env=_env(env), stdout=slave, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side has closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def _on_a_pipe(env: dict[str, str], *args: str) -> bytes:
    result = subprocess.run(
        [str(BIN / "mdtail"), FEED, "--no-follow", *args],
        env=_env(env), capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout


def test_colours_on_a_terminal_only(feed_env: dict[str, str]) -> None:
    screen = _on_a_terminal(feed_env)
    lines = screen.splitlines()
    assert len(lines) > 100
    trades = [line for line in lines if b" trade " in line]
    assert trades
    assert all(b"\x1b[32m" in line or b"\x1b[31m" in line for line in trades), "buy/sell colours"
    assert any(b"\x1b[2m" in line for line in lines), "dim times"
    assert ESC not in _on_a_pipe(feed_env)
    assert ESC in _on_a_pipe(feed_env, "--color", "always")


def test_no_color_and_never_turn_colours_off_on_a_terminal(feed_env: dict[str, str]) -> None:
    assert ESC not in _on_a_terminal({**feed_env, "NO_COLOR": "1"})
    assert ESC not in _on_a_terminal(feed_env, "--color", "never")
    assert ESC not in _on_a_terminal(feed_env, "--format", "json")
    plain = _on_a_pipe(feed_env)
    coloured = _on_a_terminal(feed_env)
    stripped = coloured.replace(b"\r\n", b"\n")
    for code in (b"\x1b[2m", b"\x1b[32m", b"\x1b[31m", b"\x1b[33m", b"\x1b[1;31m", b"\x1b[0m"):
        stripped = stripped.replace(code, b"")
    assert stripped == plain, "colour adds codes only: same text, same alignment"
