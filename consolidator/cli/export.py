"""``consolidator export FEED``: the command-line front of `consolidator.export.job`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from consolidator.errors import ConfigError
from consolidator.export.files import FORMATS
from consolidator.export.job import (
    EXPORT_STREAMS,
    MAX_DEPTH,
    ExportOptions,
    parse_interval,
    parse_time,
    run_export,
)
from consolidator.process import EXIT_FAILURE, global_config, parser, run_main

__all__ = ["run"]


def _args(argv: Sequence[str]) -> argparse.Namespace:
    p = parser(
        "consolidator export",
        "Export a feed's journal (and its live ring up to now) to partitioned Parquet or CSV: "
        "records, or books and features sampled at an interval.",
    )
    p.add_argument("feed", metavar="FEED")
    p.add_argument(
        "--stream",
        action="append",
        choices=EXPORT_STREAMS,
        help="repeatable (default: those of trades, quotes and depth the feed has)",
    )
    p.add_argument("--symbol", action="append", default=[], help="only this symbol (repeatable)")
    p.add_argument("--since", metavar="T", help="from this exchange time (ISO-8601 or ns)")
    p.add_argument("--until", metavar="T", help="to this exchange time, inclusive")
    p.add_argument("--interval", default="100ms", help="book and features rows (default 100ms)")
    p.add_argument("--depth", type=int, default=10, help="book levels a side (default 10)")
    p.add_argument("--format", choices=FORMATS, default="parquet")
    p.add_argument("--out", metavar="DIR", default=".", help="output directory (default .)")
    args = p.parse_args(argv)
    if not 1 <= args.depth <= MAX_DEPTH:
        p.error(f"--depth must be 1..{MAX_DEPTH}: {args.depth}")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the same cleanup as Ctrl-C: unfinished files are deleted


def run(argv: Sequence[str]) -> int:
    """Run the export; 0 when every file was written, 1 when interrupted or failed, 2 for bad
    usage (one line on stderr)."""
    return run_main("consolidator export", lambda: _run(argv))


def _run(argv: Sequence[str]) -> int:
    args = _args(argv)
    config = global_config(args)
    since_ns = None if args.since is None else parse_time(args.since, "--since")
    until_ns = None if args.until is None else parse_time(args.until, "--until")
    if since_ns is not None and until_ns is not None and until_ns < since_ns:
        raise ConfigError(f"--until {args.until} is before --since {args.since}")
    options = ExportOptions(
        feed=args.feed,
        shm_dir=config.shm_dir,
        state_dir=config.state_dir,
        out=Path(args.out),
        streams=list(dict.fromkeys(args.stream or [])),
        symbols=args.symbol,
        since_ns=since_ns,
        until_ns=until_ns,
        interval_ns=parse_interval(args.interval),
        depth=args.depth,
        fmt=args.format,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = run_export(options)
    except KeyboardInterrupt:
        print(
            "consolidator export: interrupted; unfinished files deleted, complete ones kept",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    for stream, lost in summary.lost.items():
        if lost:
            print(f"consolidator export: {stream}: {lost} records were lost", file=sys.stderr)
    if summary.late_trades:
        print(
            f"consolidator export: {summary.late_trades} trades came after their interval's "
            "row was written and are not in it",
            file=sys.stderr,
        )
    return 0
