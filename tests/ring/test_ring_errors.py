"""Bad input to the ring: clear errors, never a crash or a SIGBUS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consolidator.errors import RingError, RingFormatError, RingLockedError
from consolidator.records import TRADE, TRADE_DTYPE
from consolidator.ring import (
    FixedRingReader,
    FixedRingWriter,
    RingKind,
    RingLayout,
    VariableRingReader,
    WriterState,
)
from consolidator.ring.layout import HEADER_SIZE, OFF_MAGIC

LAYOUT = RingLayout(RingKind.FIXED, 1, 64, 64)


def _writer(path: Path, layout: RingLayout = LAYOUT, first_seq: int = 0) -> FixedRingWriter:
    return FixedRingWriter(path, layout, TRADE.pack_into, TRADE_DTYPE, first_seq=first_seq)


def _publish(writer: FixedRingWriter, n: int) -> None:
    for i in range(n):
        writer.publish(i, i, i, i, i, 0, 0, 0, 1, 0)


def test_missing_ring_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RingError, match=r"does not exist \(is the writer running\?\)"):
        FixedRingReader(tmp_path / "nope.ring", TRADE_DTYPE)


def test_corrupted_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    _writer(path).close()
    with path.open("r+b") as f:
        f.seek(OFF_MAGIC)
        f.write(b"XXXXXXXX")
    with pytest.raises(RingFormatError, match="not a consolidator ring"):
        FixedRingReader(path, TRADE_DTYPE)


def test_a_ring_of_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    _writer(path).close()
    with path.open("r+b") as f:
        f.seek(8)
        f.write((99).to_bytes(4, "little"))
    with pytest.raises(RingFormatError, match=r"version 99 is not supported \(this build reads"):
        FixedRingReader(path, TRADE_DTYPE)


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [(32, 1000, "power of two"), (24, 12, "multiple of 8"), (16, 7, "corrupt ring header")],
)
def test_corrupted_layout_fields_are_refused(
    tmp_path: Path, offset: int, value: int, match: str
) -> None:
    path = tmp_path / "t.ring"
    _writer(path).close()
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(value.to_bytes(4 if offset != 32 else 8, "little"))
    with pytest.raises(RingFormatError, match=match):
        FixedRingReader(path, TRADE_DTYPE)


def test_truncated_and_empty_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    _writer(path).close()
    with path.open("r+b") as f:
        f.truncate(HEADER_SIZE + 100)
    with pytest.raises(RingFormatError, match="layout needs"):
        FixedRingReader(path, TRADE_DTYPE)
    empty = tmp_path / "e.ring"
    empty.touch()
    with pytest.raises(RingFormatError, match="empty"):
        FixedRingReader(empty, TRADE_DTYPE)


def test_reader_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    _writer(path).close()
    with pytest.raises(RingFormatError, match="a fixed ring, not variable"):
        VariableRingReader(path)


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    first = _writer(path)
    with pytest.raises(RingLockedError, match=f"held by another writer \\(pid {os.getpid()}\\)"):
        _writer(path)
    first.close()
    _writer(path).close()


def test_corrupt_header_is_replaced_by_the_writer_and_continues_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    w = _writer(path)
    _publish(w, 5)
    w.close()
    with path.open("r+b") as f:
        f.write(b"garbage!")
    again = _writer(path, first_seq=3)
    assert again.next_seq == 3, "unreadable ring: start a new file at the given first_seq"
    again.close()
    assert FixedRingReader(path, TRADE_DTYPE).first_seq == 3


def test_incompatible_layout_supersedes_the_old_file_and_readers_follow(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    w = _writer(path)
    _publish(w, 10)
    reader = FixedRingReader(path, TRADE_DTYPE, TRADE, start=8)
    w.close()
    bigger = _writer(path, RingLayout(RingKind.FIXED, 1, 64, 128))
    assert bigger.next_seq == 10, "the sequence continues in the new file"
    _publish(bigger, 3)
    assert [int(s) for s in reader.read_batch()["seq"]] == [8, 9], "drain the old file first"
    assert reader.refresh(), "then switch to the replacement"
    assert [int(s) for s in reader.read_batch()["seq"]] == [10, 11, 12]
    assert reader.lost == 0
    bigger.close()


def test_writer_liveness_is_visible_to_readers(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    now = [1_000_000_000_000]
    w = FixedRingWriter(path, LAYOUT, TRADE.pack_into, TRADE_DTYPE, clock=lambda: now[0])
    reader = FixedRingReader(path, TRADE_DTYPE, clock=lambda: now[0])
    assert reader.writer_alive(max_age_ns=10**9)
    now[0] += 5 * 10**9
    assert not reader.writer_alive(max_age_ns=10**9), "no heartbeat for 5 s: dead"
    w.heartbeat()
    assert reader.writer_alive(max_age_ns=10**9)
    w.close()
    info = reader.writer_info()
    assert info.state is WriterState.STOPPED
    assert info.pid == os.getpid()
    assert not reader.writer_alive()


ROOT = Path(__file__).resolve().parents[2]
HAVE_PRIVATE_MOUNTS = os.geteuid() == 0 and shutil.which("unshare") is not None


def _in_private_tmpfs(mount: Path, options: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with a tmpfs mounted at ``mount`` in a private mount namespace."""
    return subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o {options} tmpfs "{mount}" && exec "{sys.executable}" -c "$0"',
            code,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )  # fmt: skip


def test_non_writable_directory_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    code = (
        "import sys, pathlib\n"
        "from consolidator.errors import RingError\n"
        "from tests.ring.test_ring_errors import _writer\n"
        "try:\n"
        f"    _writer(pathlib.Path({str(locked / 'sub' / 't.ring')!r}))\n"
        "except RingError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    if HAVE_PRIVATE_MOUNTS:
        # Root ignores permission bits: make the directory a read-only file system instead.
        result = _in_private_tmpfs(locked, "ro,size=1m", code)
        reason = "Read-only file system"
    else:
        locked.chmod(0o555)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
        )
        reason = "Permission denied"
    assert result.returncode == 3, result.stderr
    assert "cannot create ring directory" in result.stdout
    assert reason in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not HAVE_PRIVATE_MOUNTS, reason="needs root for a private tmpfs")
def test_full_shm_is_an_error_at_creation_not_a_sigbus_later(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    code = (
        "import pathlib, sys\n"
        "from consolidator.errors import RingFullError\n"
        "from consolidator.ring import RingLayout, RingKind\n"
        "from tests.ring.test_ring_errors import _writer\n"
        f"d = pathlib.Path({str(mount)!r})\n"
        "_writer(d / 'fits.ring', RingLayout(RingKind.FIXED, 1, 64, 4096)).close()\n"
        "try:\n"
        "    _writer(d / 'big.ring', RingLayout(RingKind.FIXED, 1, 64, 1 << 16))\n"
        "except RingFullError as e:\n"
        "    print(e); print(sorted(p.name for p in d.iterdir())); sys.exit(3)\n"
    )
    result = _in_private_tmpfs(mount, "size=1m", code)
    assert result.returncode == 3, result.stderr
    assert "no space for 4198400 bytes" in result.stdout
    assert "['fits.ring']" in result.stdout, "no half-made file is left behind"


def test_read_one_without_an_explicit_struct_derives_it_from_the_dtype(tmp_path: Path) -> None:
    path = tmp_path / "t.ring"
    w = _writer(path)
    w.publish(11, 12, 13, 14, 15, 16, -2, -3, 1, 0)
    record = FixedRingReader(path, TRADE_DTYPE, start="oldest").read_one()
    assert record is not None
    assert record[:3] == (0, 11, 12)
    assert record[4:] == (13, 14, 15, 16, -2, -3, 1, 0)
    w.close()
