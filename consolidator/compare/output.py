"""``--out DIR``: per-symbol CSV of matched pairs, missing.csv and extra.csv, report.json and the
PNG plots (matplotlib, Agg backend: no display needed).

Files: ``pairs-SYMBOL.csv`` (written as pairs match), ``missing.csv``, ``extra.csv``,
``report.json``, ``latency_hist.png``, ``latency_cdf.png``, ``offset_timeseries.png``,
``price_overlay-SYMBOL.png``, ``missing_per_second.png``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any, Final

from consolidator.compare.latency import Series
from consolidator.compare.matcher import Matcher
from consolidator.compare.model import Rec, pair_text
from consolidator.errors import ConfigError

__all__ = ["OutDir"]

PAIR_COLUMNS: Final = ("stream", "id", "ok", "reference_recv_ns", "ring_recv_ns",
                       "ring_commit_ns", "ts_event", "ring_minus_reference_us")  # fmt: skip
RECORD_COLUMNS: Final = ("stream", "symbol", "id", "first_id", "kind", "ts_event", "ts_recv",
                         "ts_commit", "values")  # fmt: skip


class OutDir:
    """Collects what the files need while the comparison runs, then writes them.

    Raises:
        ConfigError: DIR cannot be created or written.
    """

    def __init__(self, path: Path, matcher: Matcher) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".mdcompare-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {path}: cannot write there: {exc.strerror}") from None
        self._pairs: dict[str, tuple[IO[str], Any]] = {}
        self._records: dict[tuple[str, str, int], list[Any]] = {}
        self._prices: dict[str, tuple[Series, Series]] = {}
        matcher.on_pair = self._pair
        matcher.on_classified = self._classified
        matcher.on_record = self._record

    def _pair(self, stream: str, symbol: str, ref: Rec, ring: Rec, ok: bool) -> None:
        entry = self._pairs.get(symbol)
        if entry is None:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in symbol)
            f = (self.path / f"pairs-{name}.csv").open("w", newline="")
            writer = csv.writer(f)
            writer.writerow(PAIR_COLUMNS)
            entry = self._pairs[symbol] = (f, writer)
        offset_us = (ring.ts_recv - ref.ts_recv) / 1e3
        entry[1].writerow((stream, ref.key, int(ok), ref.ts_recv, ring.ts_recv, ring.ts_commit,
                           ring.ts_event, offset_us))  # fmt: skip

    def _classified(self, stream: str, symbol: str, kind: str, side: int, rec: Rec) -> None:
        key = (stream, symbol, rec.key)
        if kind == "late":
            self._records.pop(key, None)
        elif kind in ("missing", "extra"):
            values = json.dumps(_plain(rec.values))
            self._records[key] = [stream, symbol, rec.key, rec.first, kind, rec.ts_event,
                                  rec.ts_recv, rec.ts_commit, values]  # fmt: skip

    def _record(self, side: int, stream: str, symbol: str, rec: Rec) -> None:
        if stream != "trades":
            return
        series = self._prices.get(symbol)
        if series is None:
            series = self._prices[symbol] = (Series(), Series())
        price = rec.values[0]
        if isinstance(price, tuple):
            series[side].add(rec.ts_recv, price[0] * 10.0 ** price[1])

    def write(self, report: dict[str, Any], matcher: Matcher) -> list[Path]:
        """Close the pair files, write the rest; returns every file written."""
        for f, _ in self._pairs.values():
            f.close()
        written = [self.path / f.name for f, _ in self._pairs.values()]
        (self.path / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        written.append(self.path / "report.json")
        for kind in ("missing", "extra"):
            path = self.path / f"{kind}.csv"
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(RECORD_COLUMNS)
                writer.writerows(r for r in self._records.values() if r[4] == kind)
            written.append(path)
        from consolidator.compare import plots  # matplotlib loads only when plots are wanted

        written += plots.write_all(self.path, matcher, self._prices, list(self._records.values()))
        return written


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        if len(value) == 2 and all(type(v) is int for v in value):
            return pair_text(value)
        return [_plain(v) for v in value]
    return value
