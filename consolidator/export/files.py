"""Partitioned, atomic Parquet and CSV files: ``DIR/feed=F/stream=S/date=D/hour=H/part-N.EXT``.

Rows are routed by their partition time (UTC date and hour) and buffered per partition; every
``row_group`` rows become one Parquet row group (zstd). A file is written under a hidden
temporary name (``.part-PID-K.EXT.tmp``: ignored by DuckDB's ``*.parquet`` globs and by Arrow
datasets) and linked to its final name only once complete, never over an existing file (``N``
is the first free number). `abort` (Ctrl-C, an error) deletes the unfinished temporaries: an
interrupted export leaves only complete files. At most ``max_open`` files are open at once; the
least recently used one is completed to make room (a later row of its hour starts a new part).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from consolidator.export.columns import decimal_strings, level_json
from consolidator.export.schema import csv_schema

__all__ = ["FORMATS", "PartitionedWriter"]

FORMATS: Final = ("parquet", "csv")
NS_PER_HOUR: Final = 3_600_000_000_000


@dataclass
class _Part:
    tmp: Path
    writer: Any
    buffered: list[pa.Table] = field(default_factory=list)
    rows: int = 0


class PartitionedWriter:
    """One stream's rows into partitioned files under ``out``.

    Args:
        out: the export directory.
        feed, stream: the first two partition keys.
        schema: the stream's Arrow schema (`consolidator.export.schema`).
        fmt: ``"parquet"`` or ``"csv"``.
        row_group: rows per Parquet row group (and per CSV write).
        max_open: files open at once.
    """

    def __init__(
        self,
        out: Path,
        feed: str,
        stream: str,
        schema: pa.Schema,
        fmt: str,
        *,
        row_group: int = 50_000,
        max_open: int = 8,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.base = out / f"feed={feed}" / f"stream={stream}"
        self.schema = schema
        self.fmt = fmt
        self.row_group = row_group
        self.max_open = max_open
        self.rows = 0
        self.written_bytes = 0
        self.files: list[Path] = []
        self._parts: OrderedDict[int, _Part] = OrderedDict()
        self._temps: set[Path] = set()  # every temporary not yet deleted, whatever its state
        self._count = 0

    def write(self, columns: Mapping[str, pa.Array], part_ns: np.ndarray) -> None:
        """Add rows (``columns`` in any order, named as the schema) and their partition times."""
        n = len(part_ns)
        if not n:
            return
        table = pa.Table.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        hours = np.asarray(part_ns, dtype="<i8") // NS_PER_HOUR
        first, last = int(hours.min()), int(hours.max())
        if first == last:
            self._add(first, table)
        else:
            order = np.argsort(hours, kind="stable")
            sorted_hours = hours[order]
            bounds = np.flatnonzero(np.diff(sorted_hours)) + 1
            for chunk in np.split(np.arange(n), bounds):
                idx = order[chunk]
                self._add(int(hours[idx[0]]), table.take(pa.array(idx)))
        self.rows += n

    def _add(self, hour: int, table: pa.Table) -> None:
        part = self._parts.get(hour)
        if part is None:
            part = self._open(hour)
        else:
            self._parts.move_to_end(hour)
        part.buffered.append(table)
        part.rows += len(table)
        if part.rows >= self.row_group:
            self._flush(part, final=False)

    def _dir(self, hour: int) -> Path:
        day = np.datetime64(hour * 3600, "s").astype("datetime64[D]")
        return self.base / f"date={day}" / f"hour={hour % 24:02d}"

    def _open(self, hour: int) -> _Part:
        while len(self._parts) >= self.max_open:
            old_hour, old = self._parts.popitem(last=False)
            self._finish(old_hour, old)
        directory = self._dir(hour)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".part-{os.getpid()}-{self._count}.{self.fmt}.tmp"
        self._count += 1
        self._temps.add(tmp)
        writer: Any
        if self.fmt == "parquet":
            writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
        else:
            writer = pacsv.CSVWriter(tmp, csv_schema(self.schema))
        part = self._parts[hour] = _Part(tmp, writer)
        return part

    def _flush(self, part: _Part, final: bool) -> None:
        if not part.buffered:
            return
        table = pa.concat_tables(part.buffered)
        part.buffered = []
        part.rows = 0
        size = self.row_group
        whole = len(table) if final else len(table) // size * size
        for start in range(0, whole, size):
            self._write(part, table.slice(start, min(size, whole - start)))
        if whole < len(table):
            rest = table.slice(whole)
            part.buffered = [rest]
            part.rows = len(rest)

    def _write(self, part: _Part, table: pa.Table) -> None:
        if self.fmt == "parquet":
            part.writer.write_table(table, row_group_size=self.row_group)
            return
        arrays = []
        for column, target in zip(table.columns, csv_schema(self.schema), strict=True):
            if pa.types.is_decimal(column.type):
                arrays.append(decimal_strings(column.combine_chunks()))
            elif pa.types.is_list(column.type):
                arrays.append(level_json(column.combine_chunks()))
            else:
                arrays.append(column.combine_chunks().cast(target.type))
        part.writer.write_table(pa.Table.from_arrays(arrays, schema=csv_schema(self.schema)))

    def _finish(self, hour: int, part: _Part) -> None:
        """Write what is buffered, close, and give the file its final name."""
        self._flush(part, final=True)
        part.writer.close()
        directory = part.tmp.parent
        n = 0
        while True:
            final = directory / f"part-{n}.{self.fmt}"
            try:
                os.link(part.tmp, final)  # never replaces an existing file
                break
            except FileExistsError:
                n += 1
        part.tmp.unlink()
        self._temps.discard(part.tmp)
        self.written_bytes += final.stat().st_size
        self.files.append(final)

    def pending_bytes(self) -> int:
        """Bytes in the files not yet complete (for progress)."""
        total = 0
        for part in self._parts.values():
            with contextlib.suppress(OSError):
                total += part.tmp.stat().st_size
        return total

    def close(self) -> list[Path]:
        """Complete every file; the final paths of all the files written."""
        while self._parts:
            hour, part = self._parts.popitem(last=False)
            self._finish(hour, part)
        return self.files

    def abort(self) -> None:
        """Delete the unfinished files (complete ones stay), even after an interruption at any
        point of `write` or `close`."""
        while self._parts:
            _, part = self._parts.popitem(last=False)
            with contextlib.suppress(Exception):  # a half-written file is deleted either way
                part.writer.close()
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        self._temps.clear()
