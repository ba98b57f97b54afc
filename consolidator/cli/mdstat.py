"""``mdstat [FEED]``: is the system healthy? One screen, or one line per stream per interval.

Exit status 1 when a writer is not alive or a stream has not published within ``--stale``
seconds (so it can serve as a health check), 2 for bad usage.

Registered readers (``consolidator.ring.registry``): each row names the live reader furthest
behind the ring's tail and its lag in records; the text format then lists every reader, dead ones
(processes gone without leaving the registry) marked DEAD; json rows carry them as ``reader_list``.

Redundant connections (``redundancy = 2``): the text format then lists each leg of each channel
(open connections, records won, copies dropped as duplicates, mean lag behind the first copy);
json rows of trades, quotes and depth carry them as ``legs``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from consolidator.errors import ConfigError
from consolidator.process import global_config, parser, run_main
from consolidator.status import StreamStatus, feed_status
from consolidator.streams import feeds

__all__ = ["main"]

COLUMNS = (
    ("feed", "FEED", "<10"), ("stream", "STREAM", "<7"), ("writer", "WRITER", "<8"),
    ("pid", "PID", ">7"), ("heartbeat_age_s", "HB", ">6"), ("seq", "SEQ", ">11"),
    ("rate_per_s", "RATE/S", ">9"), ("reach_s", "REACH_S", ">9"),
    ("last_publish_age_s", "LAST_S", ">8"), ("durable_lag_s", "DUR_LAG", ">8"),
    ("connections_up", "CONN", ">4"), ("gaps", "GAPS", ">5"), ("resyncs", "RESYNC", ">6"),
    ("parse_errors", "PARSE", ">5"), ("flusher_lost", "LOST", ">6"),
    ("readers", "RDRS", ">4"), ("dead_readers", "DEAD", ">4"),
    ("slowest_reader_lag", "RDR_LAG", ">8"), ("slowest_reader", "SLOWEST", "<16"),
    ("slowest_reader_pid", "SLOW_PID", ">8"),
)  # fmt: skip
TEXT_COLUMNS = tuple(c for c in COLUMNS if c[0] != "slowest_reader_pid")
LEG_COLUMNS = (
    ("feed", "FEED", "<10"), ("stream", "STREAM", "<7"), ("leg", "LEG", "<3"),
    ("connections", "CONN", ">4"), ("wins", "WINS", ">11"), ("duplicates", "DUPS", ">11"),
    ("lag_ms", "LAG_MS", ">8"),
)  # fmt: skip
READER_COLUMNS = (
    ("feed", "FEED", "<10"), ("stream", "STREAM", "<7"), ("name", "READER", "<16"),
    ("pid", "PID", ">7"), ("state", "STATE", "<5"), ("position", "POSITION", ">11"),
    ("lag", "LAG", ">9"), ("lost", "LOST", ">7"), ("heartbeat_age_s", "HB", ">7"),
)  # fmt: skip


def _cell(value: Any, spec: str) -> str:
    if value is None:
        value = "-"
    elif isinstance(value, float):
        value = f"{value:.1f}"
    return format(str(value), spec)


def _text(rows: list[StreamStatus]) -> None:
    print("  ".join(_cell(title, spec) for _, title, spec in TEXT_COLUMNS).rstrip())
    for row in rows:
        values = row.as_dict()
        if row.slowest_reader is not None:
            values["slowest_reader"] = f"{row.slowest_reader}/{row.slowest_reader_pid}"
        print("  ".join(_cell(values[key], spec) for key, _, spec in TEXT_COLUMNS).rstrip())
    legs = [(row, leg) for row in rows for leg in row.legs]
    if legs:
        print()
        print("  ".join(_cell(title, spec) for _, title, spec in LEG_COLUMNS).rstrip())
        for row, leg in legs:
            values = {"feed": row.feed, "stream": row.stream, **asdict(leg)}
            values["lag_ms"] = f"{leg.lag_s * 1000:.3f}"
            print("  ".join(_cell(values[key], spec) for key, _, spec in LEG_COLUMNS).rstrip())
    readers = [(row, r) for row in rows for r in row.reader_list]
    if not readers:
        return
    print()
    print("  ".join(_cell(title, spec) for _, title, spec in READER_COLUMNS).rstrip())
    for row, reader in readers:
        values = {"feed": row.feed, "stream": row.stream, **asdict(reader)}
        values["state"] = "alive" if reader.alive else "DEAD"
        print("  ".join(_cell(values[key], spec) for key, _, spec in READER_COLUMNS).rstrip())


def _healthy(row: StreamStatus, stale_s: float) -> bool:
    if row.writer != "alive":
        return False
    if row.stream in ("events", "raw"):
        return True
    return row.last_publish_age_s is not None and row.last_publish_age_s <= stale_s


def _main(argv: Sequence[str] | None) -> int:
    p = parser("mdstat", "Status of writers, rings, the flusher and the feed's counters.")
    p.add_argument("feed", nargs="?")
    p.add_argument("--format", choices=["text", "json", "csv"], default="text")
    p.add_argument("--interval", type=float, metavar="S", help="repeat every S seconds")
    p.add_argument("--count", type=int, metavar="N", help="with --interval: stop after N reports")
    p.add_argument("--stale", type=float, default=60.0, metavar="S",
                   help="a data stream silent this long is unhealthy (default 60)")  # fmt: skip
    args = p.parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        p.error(f"--interval must be positive: {args.interval}")
    config = global_config(args)
    names = feeds(config.shm_dir)
    if args.feed:
        if args.feed not in names:
            raise ConfigError(f"no feed {args.feed!r} under {config.shm_dir}")
        names = [args.feed]
    writer = csv.DictWriter(sys.stdout, [c[0] for c in COLUMNS], extrasaction="ignore")
    if args.format == "csv":
        writer.writerow({c[0]: c[0] for c in COLUMNS})
    window = min(args.interval, 1.0) if args.interval else 0.5
    reports = 0
    while True:
        rows = [row for feed in names for row in feed_status(config.shm_dir, feed, window)]
        healthy = bool(rows) and all(_healthy(r, args.stale) for r in rows)
        now = time.time_ns()
        if args.format == "json":
            for row in rows:
                print(json.dumps({"time_ns": now, **row.as_dict()}))
        elif args.format == "csv":
            for row in rows:
                writer.writerow({**row.as_dict(), "time_ns": now})
        else:
            _text(rows)
            if not rows:
                print(f"(no feeds under {config.shm_dir})")
        sys.stdout.flush()
        reports += 1
        if args.interval is None or (args.count is not None and reports >= args.count):
            return 0 if healthy else 1
        time.sleep(max(0.0, args.interval - window))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mdstat``."""
    return run_main("mdstat", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
