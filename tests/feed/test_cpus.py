"""Core isolation as the kernel reports it (/sys/devices/system/cpu/isolated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidator.feed.cpus import isolated_cpus, parse_cpu_list


@pytest.mark.parametrize(
    ("text", "cores"),
    [("", set()), ("\n", set()), ("3\n", {3}), ("1-3,6", {1, 2, 3, 6}), ("0,2-2", {0, 2})],
)
def test_parses_kernel_cpu_lists(text: str, cores: set[int]) -> None:
    assert parse_cpu_list(text) == cores


@pytest.mark.parametrize("text", ["a", "3-1", "1-x", "-2"])
def test_rejects_what_is_not_a_cpu_list(text: str) -> None:
    with pytest.raises(ValueError, match="CPU list|invalid literal"):
        parse_cpu_list(text)


def test_isolated_cores_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "isolated"
    path.write_text("2-3\n")
    assert isolated_cpus(path) == {2, 3}


def test_unreadable_or_garbled_file_means_no_isolated_core(tmp_path: Path) -> None:
    assert isolated_cpus(tmp_path / "absent") == set()
    (tmp_path / "garbled").write_text("two")
    assert isolated_cpus(tmp_path / "garbled") == set()
