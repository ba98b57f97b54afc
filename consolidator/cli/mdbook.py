"""``mdbook FEED SYMBOL``: a live order book and its features in the terminal, like ``top``.

Redraws in place every ``--interval`` seconds on a terminal (plain successive screens
otherwise); ``--once`` reads what the rings hold now, prints one view and exits; ``--format
json`` prints one object per redraw (the book columns and ``valid``; see
`consolidator.book.view`). A book that is not known to be right says so: "book invalid:
waiting for snapshot".
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Sequence

import orjson

from consolidator.book.book import rule_for_venue
from consolidator.book.live import LiveBook
from consolidator.book.view import book_object, render_text
from consolidator.errors import ConfigError
from consolidator.process import global_config, parser, run_main
from consolidator.sources import feed_venue
from consolidator.streams import read_feed_meta, ring_path
from consolidator.symbols import SymbolTableReader

__all__ = ["main"]

CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("mdbook", "Show a symbol's live order book and its features.")
    p.add_argument("feed", help="feed name")
    p.add_argument("symbol", help="symbol, as the venue names it (e.g. BTCUSDT)")
    p.add_argument("--depth", type=int, default=10, help="levels a side (default 10)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between redraws")
    p.add_argument("--once", action="store_true", help="print one view of the book now and exit")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--trades", type=int, default=10, help="last trades shown (default 10)")
    args = p.parse_args(argv)
    if not 1 <= args.depth <= 99:
        p.error(f"--depth must be 1..99: {args.depth}")
    if not args.interval > 0:
        p.error(f"--interval must be positive: {args.interval}")
    if args.trades < 0:
        p.error(f"--trades must be >= 0: {args.trades}")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main(argv: Sequence[str] | None) -> int:
    args = _args(argv)
    config = global_config(args)
    shm, feed = config.shm_dir, args.feed
    read_feed_meta(shm, feed)  # the clear "no feed" error
    if not ring_path(shm, feed, "depth").exists():
        raise ConfigError(f"feed {feed!r} has no depth stream")
    table = SymbolTableReader(shm / feed / "symbols")
    try:
        symbol_id = table.id(args.symbol)
    finally:
        table.close()
    if symbol_id is None:
        raise ConfigError(f"symbol {args.symbol!r} has never been seen on feed {feed!r}")
    venue = feed_venue(shm, config.state_dir, feed)
    live = LiveBook(shm, feed, symbol_id, rule_for_venue(venue), trades=args.trades)
    signal.signal(signal.SIGTERM, _on_sigterm)
    tty = sys.stdout.isatty() and args.format == "text"
    out = sys.stdout
    try:
        if tty and not args.once:
            out.write(HIDE_CURSOR)
        while True:
            while live.poll():
                pass  # catch up with everything there is now
            obj = book_object(live, feed, venue, args.symbol, args.depth, live.take_ofi())
            if args.format == "json":
                out.write(orjson.dumps(obj).decode() + "\n")
            else:
                width = shutil.get_terminal_size((100, 40)).columns if tty else 200
                screen = "\n".join(render_text(obj, args.depth, width)) + "\n"
                if tty and not args.once:
                    screen = CLEAR + screen
                elif not args.once:
                    screen += "\n"
                out.write(screen)
            out.flush()
            if args.once:
                return 0
            time.sleep(args.interval)
    finally:
        if tty and not args.once:
            out.write(SHOW_CURSOR)
            out.flush()
        live.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mdbook``."""
    return run_main("mdbook", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
