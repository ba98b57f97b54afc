"""A one-line progress bar on a terminal (rows, bytes, ETA); nothing when not on a terminal."""

from __future__ import annotations

import time
from typing import Final, TextIO

__all__ = ["Progress"]

REDRAW_S: Final = 0.25
WIDTH: Final = 24


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Redraws ``label [#####     ] 45%  123,456 rows  12.3 MB  ETA 0:00:12`` in place.

    Args:
        out: where to draw (stderr).
        enabled: draw at all (True on a terminal).
    """

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(
        self, label: str, fraction: float, rows: int, size: int, *, force: bool = False
    ) -> None:
        """Redraw (at most every `REDRAW_S` unless ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < REDRAW_S:
            return
        self._last = now
        elapsed = now - self.started
        eta = "--:--:--"
        if 0.001 < fraction < 1.0 and elapsed > 0.5:
            eta = _duration(elapsed * (1 - fraction) / fraction)
        elif fraction >= 1.0:
            eta = _duration(0)
        bar = "#" * int(fraction * WIDTH)
        line = (
            f"{label} [{bar:<{WIDTH}}] {fraction * 100:3.0f}%  {rows:,} rows  {_bytes(size)}  "
            f"ETA {eta}"
        )
        self.out.write(f"\r\x1b[2K{line}")
        self.out.flush()
        self._drawn = True

    def done(self) -> None:
        """End the line the bar was drawn on."""
        if self.enabled and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False
