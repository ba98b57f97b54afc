"""Core isolation: which cores the kernel keeps free of other tasks (``isolcpus=``).

A writer pinned to a core (the feed's ``cpu`` key) only has that core to itself when the core is
isolated; the writer logs a warning otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["ISOLATED_PATH", "isolated_cpus", "parse_cpu_list"]

ISOLATED_PATH: Final = Path("/sys/devices/system/cpu/isolated")


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list (``"1-3,6"``; empty for none) as a set of core numbers.

    Raises:
        ValueError: text that is not a CPU list.
    """
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low < 0 or high < low:
            raise ValueError(f"not a CPU list: {text!r}")
        cores.update(range(low, high + 1))
    return cores


def isolated_cpus(path: Path = ISOLATED_PATH) -> set[int]:
    """The isolated cores; empty when there are none or the kernel does not say."""
    try:
        return parse_cpu_list(path.read_text())
    except (OSError, ValueError):
        return set()
