"""Latency samples in bounded memory, and their quantiles (p50, p90, p99, p99.9, max).

Samples are kept exactly up to ``cap``; past it every other one is dropped and only every
``stride``-th new one kept, so a long run keeps an even spread over its whole length. ``n`` and
``max`` stay exact; the quantiles come from the kept samples.
"""

from __future__ import annotations

from array import array
from typing import Final

import numpy as np

__all__ = ["QUANTILES", "Samples", "Series"]

QUANTILES: Final = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
DEFAULT_CAP: Final = 1 << 20
MAX_POINTS: Final = 200_000


class Samples:
    """Integer samples (nanoseconds) with exact count and maximum; ``times`` when timed."""

    def __init__(self, cap: int = DEFAULT_CAP, *, timed: bool = False) -> None:
        self.values = array("q")
        self.times = array("q")
        self.n = 0
        self.max: int | None = None
        self._cap = cap
        self._stride = 1
        self._timed = timed

    def add(self, value: int, ts: int = 0) -> None:
        """One sample (taken at ``ts``, kept when timed)."""
        self.n += 1
        if self.n % self._stride:
            if self.max is None or value > self.max:
                self.max = value  # not kept: remember it if it is the largest
            return
        self.values.append(value)
        if self._timed:
            self.times.append(ts)
        if len(self.values) >= self._cap:
            top = max(self.values)
            self.max = top if self.max is None else max(self.max, top)
            self.values = self.values[::2]
            self.times = self.times[::2]
            self._stride *= 2

    def array_us(self) -> np.ndarray:
        """The kept samples in microseconds (float64)."""
        return np.frombuffer(self.values, np.int64).astype(np.float64) / 1e3

    def quantiles_us(self) -> dict[str, float | int | None]:
        """``{"n", "p50", "p90", "p99", "p999", "max"}`` in microseconds (None when empty)."""
        out: dict[str, float | int | None] = {"n": self.n}
        data = np.frombuffer(self.values, np.int64) if len(self.values) else None
        for name, q in QUANTILES:
            out[name] = None if data is None else round(float(np.percentile(data, q)) / 1e3, 3)
        top = max(self.values) if len(self.values) else None
        if self.max is not None:
            top = self.max if top is None else max(top, self.max)
        out["max"] = None if top is None else round(top / 1e3, 3)
        return out


class Series:
    """(time, value) points, e.g. one side's trade prices, thinned past MAX_POINTS."""

    def __init__(self) -> None:
        self.times = array("q")
        self.values = array("d")
        self.stride = 1
        self.n = 0

    def add(self, ts: int, value: float) -> None:
        self.n += 1
        if self.n % self.stride:
            return
        self.times.append(ts)
        self.values.append(value)
        if len(self.times) >= MAX_POINTS:
            self.times, self.values = self.times[::2], self.values[::2]
            self.stride *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Times (s since the epoch) and values."""
        return np.frombuffer(self.times, np.int64) / 1e9, np.frombuffer(self.values, np.float64)
