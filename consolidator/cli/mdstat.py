"""``mdstat [FEED]``: the state of every ring, writer and reader (full version: M1-4)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from consolidator.cli.common import global_config, parser, run_main
from consolidator.errors import ConfigError
from consolidator.ring.layout import WriterState
from consolidator.streams import feed_streams, open_stream_reader

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    p = parser("mdstat", "Status of rings and writers.")
    p.add_argument("feed", nargs="?")
    p.add_argument("--format", choices=["text", "json"], default="text")
    args = p.parse_args(argv)
    config = global_config(args)
    if args.feed:
        feeds = [args.feed]
        if not (config.shm_dir / args.feed).is_dir():
            raise ConfigError(f"no feed {args.feed!r} under {config.shm_dir}")
    else:
        feeds = sorted(d.name for d in config.shm_dir.glob("*") if d.is_dir())
    rows = []
    healthy = True
    now = time.time_ns()
    for feed in feeds:
        for stream in feed_streams(config.shm_dir, feed):
            with open_stream_reader(config.shm_dir, feed, stream) as reader:
                info = reader.writer_info()
                alive = reader.writer_alive()
                healthy = healthy and alive
                rows.append(
                    {
                        "feed": feed,
                        "stream": stream,
                        "writer": "alive" if alive else WriterState(info.state).name.lower(),
                        "pid": info.pid,
                        "heartbeat_age_s": round((now - info.heartbeat_ns) / 1e9, 3),
                        "seq": reader.tail(),
                        "capacity": reader.capacity,
                        "oldest": reader.oldest(),
                    }
                )
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
    else:
        print(
            f"{'FEED':<12} {'STREAM':<8} {'WRITER':<9} {'PID':>7} {'HB AGE':>8} {'SEQ':>12} "
            f"{'CAPACITY':>10}"
        )
        for r in rows:
            print(
                f"{r['feed']:<12} {r['stream']:<8} {r['writer']:<9} {r['pid']:>7} "
                f"{r['heartbeat_age_s']:>7.1f}s {r['seq']:>12} {r['capacity']:>10}"
            )
    return 0 if healthy and rows else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mdstat``."""
    return run_main("mdstat", lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
