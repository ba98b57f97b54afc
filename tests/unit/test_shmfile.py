"""`create_mapped`: a file appears whole under its name, or not at all."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

import pytest

from consolidator.shmfile import create_mapped, map_readonly


def test_the_file_appears_only_after_fill_and_keeps_its_mode_whatever_the_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "counters"
    seen_during_fill: list[bool] = []

    def fill(_fd: int, mm: mmap.mmap) -> None:
        seen_during_fill.append(path.exists())
        mm[:4] = b"DATA"

    old = os.umask(0o077)
    try:
        fd, mm = create_mapped(path, 4096, fill, mode=0o640)
    finally:
        os.umask(old)
    try:
        assert seen_during_fill == [False]
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert path.stat().st_size == 4096
        view = map_readonly(path, 4096)
        assert view is not None
        assert view[:4] == b"DATA"
        view.close()
        assert [p.name for p in tmp_path.iterdir()] == ["counters"]
    finally:
        mm.close()
        os.close(fd)


def test_a_failing_fill_leaves_nothing_behind_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "positions"
    path.write_bytes(b"old")

    def fill(_fd: int, mm: mmap.mmap) -> None:
        with memoryview(mm).cast("Q") as words:
            words[0] = 1
            raise ValueError("half made")

    with pytest.raises(ValueError, match="half made"):
        create_mapped(path, 4096, fill)
    assert [p.name for p in tmp_path.iterdir()] == ["positions"]
    assert path.read_bytes() == b"old"


def test_a_missing_directory_is_an_os_error_with_nothing_left(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_mapped(tmp_path / "absent" / "ring", 4096, lambda _fd, _mm: None)
    assert list(tmp_path.iterdir()) == []
