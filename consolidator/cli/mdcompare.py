"""``mdcompare FEED``: a feed's rings checked against an independent reference connection (or
another feed with ``--against``, or journals with ``--journal``). The work is in
`consolidator.compare`; this is the command line.

Exit codes: 0 when nothing is missing, mismatched or duplicated, 1 otherwise (or on a runtime
failure), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from consolidator.compare.model import STREAMS
from consolidator.compare.run import MAX_SYMBOLS, Options, compare
from consolidator.config import check_feed_name
from consolidator.errors import ConfigError
from consolidator.process import global_config, parser, run_main

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _grace(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _seconds(text)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(
        "mdcompare",
        "Compare a feed's rings, record by record and by the venue's own ids, with an "
        "independent reference connection to the venue (or another feed: --against).",
    )
    p.add_argument("feed", help="feed name (a file in feeds/ of the configuration)")
    p.add_argument("--symbol", action="append", help=f"repeatable (default: the feed's, "
                   f"at most {MAX_SYMBOLS})")  # fmt: skip
    p.add_argument("--stream", action="append", choices=list(STREAMS), help="repeatable "
                   "(default: trades, quotes, depth)")  # fmt: skip
    p.add_argument("--ws-url", help="the reference's WebSocket URL (default: the feed's ws_url)")
    p.add_argument("--duration", type=_seconds, metavar="S",
                   help="stop after S seconds (default: at Ctrl-C)")  # fmt: skip
    p.add_argument("--grace", type=_grace, default=2.0, metavar="S",
                   help="records this young at the end are in flight (default 2)")  # fmt: skip
    p.add_argument("--interval", type=_seconds, default=5.0, metavar="S",
                   help="live summary every S seconds (default 5)")  # fmt: skip
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--out", type=Path, metavar="DIR", help="write CSV, PNG plots, report.json")
    p.add_argument("--against", metavar="FEED_B", help="compare with another feed's capture")
    p.add_argument("--journal", action="store_true", help="compare the journals over a range")
    p.add_argument("--since", help="with --journal: beginning | ISO-8601 time (default beginning)")
    p.add_argument("--until", help="with --journal: ISO-8601 time or ns (default: the end)")
    args = p.parse_args(argv)
    if (args.since or args.until) and not args.journal:
        p.error("--since and --until need --journal")
    if args.journal and args.against is None:
        p.error("--journal compares two captures: it needs --against FEED_B")
    if args.against is not None and args.ws_url:
        p.error("--ws-url and --against exclude each other (no reference connection)")
    if args.symbol and len(set(args.symbol)) > MAX_SYMBOLS:
        p.error(f"at most {MAX_SYMBOLS} symbols: {len(set(args.symbol))} given")
    if args.ws_url and not args.ws_url.startswith(("ws://", "wss://")):
        p.error(f"--ws-url: expected a ws:// or wss:// URL, got {args.ws_url!r}")
    return args


def _main(argv: Sequence[str] | None) -> int:
    args = _args(argv)
    config = global_config(args)
    check_feed_name(args.feed)
    if args.against is not None:
        check_feed_name(args.against)
        if args.against == args.feed:
            raise ConfigError(f"--against {args.against}: the same feed as FEED")
    options = Options(
        feed=args.feed,
        streams=tuple(dict.fromkeys(args.stream)) if args.stream else None,
        symbols=tuple(dict.fromkeys(args.symbol)) if args.symbol else None,
        ws_url=args.ws_url,
        duration_s=args.duration,
        grace_s=args.grace,
        interval_s=args.interval,
        format=args.format,
        out=args.out,
        against=args.against,
        journal=args.journal,
        since=args.since,
        until=args.until,
    )
    return compare(config, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mdcompare``."""
    return run_main("mdcompare", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
