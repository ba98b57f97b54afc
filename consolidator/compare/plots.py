"""The PNG plots of ``--out DIR`` (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from consolidator.compare.latency import Series
from consolidator.compare.matcher import Matcher
from consolidator.compare.report import LATENCIES

__all__ = ["write_all"]

ROLLING: Final = 200
DPI: Final = 100


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)


def write_all(
    out: Path,
    matcher: Matcher,
    prices: dict[str, tuple[Series, Series]],
    records: list[list[Any]],
) -> list[Path]:
    """Every plot; returns the files written."""
    written = [_histogram(out, matcher), _cdf(out, matcher), _offsets(out, matcher)]
    for symbol, (ref, ring) in prices.items():
        fig, ax = plt.subplots(figsize=(9, 4))
        starts = [series.arrays()[0][0] for series in (ref, ring) if len(series.times)]
        t0 = min(starts, default=0.0)
        for series, label, style in ((ref, "reference", "-"), (ring, "ring", "--")):
            t, p = series.arrays()
            if len(t):
                ax.step(t - t0, p, style, where="post", label=label, lw=1)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.set_title(f"trade prices, {symbol}: reference and ring")
        ax.set_xlabel("receive time (s since the first trade)")
        ax.set_ylabel("price")
        ax.legend(loc="best")
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in symbol)
        written.append(_save(fig, out / f"price_overlay-{name}.png"))
    written.append(_per_second(out, records))
    return written


def _histogram(out: Path, matcher: Matcher) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    data = matcher.ring_minus_reference.array_us()
    if len(data):
        ax.hist(data, bins=min(100, max(10, len(data) // 20)))
        ax.set_yscale("log")
    else:
        _empty(ax, "matched records")
    ax.set_title("ring ts_recv minus reference receive time")
    ax.set_xlabel("µs (negative: the ring saw it first)")
    ax.set_ylabel("records")
    return _save(fig, out / "latency_hist.png")


def _cdf(out: Path, matcher: Matcher) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = False
    for name, label in LATENCIES:
        data = np.sort(getattr(matcher, name).array_us())
        if len(data):
            ax.plot(data, np.arange(1, len(data) + 1) / len(data), label=f"{name}: {label}")
            drawn = True
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
        ax.set_xscale("symlog")
    else:
        _empty(ax, "latency samples")
    ax.set_title("latency CDF")
    ax.set_xlabel("µs")
    ax.set_ylabel("fraction")
    return _save(fig, out / "latency_cdf.png")


def _offsets(out: Path, matcher: Matcher) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    samples = matcher.ring_minus_reference
    t = np.frombuffer(samples.times, np.int64)
    v = samples.array_us()
    if len(t):
        order = np.argsort(t, kind="stable")
        t, v = (t[order] - t[order][0]) / 1e9, v[order]
        ax.plot(t, v, ".", ms=1, alpha=0.4, label="ring - reference")
        if len(v) >= ROLLING:
            windows = np.lib.stride_tricks.sliding_window_view(v, ROLLING)
            ax.plot(t[ROLLING - 1 :], np.percentile(windows, 99, axis=1), label="rolling p99")
        ax.legend(loc="best")
    else:
        _empty(ax, "matched records")
    ax.set_title("ring minus reference receive time, over the run")
    ax.set_xlabel("s since the first match")
    ax.set_ylabel("µs")
    return _save(fig, out / "offset_timeseries.png")


def _per_second(out: Path, records: list[list[Any]]) -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    if records:
        t0 = min(r[6] for r in records) // 1_000_000_000
        for kind, color in (("missing", "tab:red"), ("extra", "tab:blue")):
            seconds = [r[6] // 1_000_000_000 - t0 for r in records if r[4] == kind]
            if seconds:
                counts = np.bincount(seconds)
                ax.bar(np.arange(len(counts)), counts, color=color, alpha=0.6, label=kind)
        ax.legend(loc="best")
    else:
        _empty(ax, "missing or extra records")
    ax.set_title("missing and extra records per second")
    ax.set_xlabel("s since the first")
    ax.set_ylabel("records")
    return _save(fig, out / "missing_per_second.png")
