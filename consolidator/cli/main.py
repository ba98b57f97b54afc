"""``consolidator``: run, flusher, replay, exporter, export, sim, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from consolidator.process import add_common, run_main

__all__ = ["main"]

COMMANDS = {
    "run": ("FEED", "the writer for one feed (systemd: consolidator@FEED)", None),
}
PASSTHROUGH = {
    "sim": "local exchange simulator (options: consolidator sim --help)",
    "flusher": "durable journal of every ring under shm_dir (consolidator flusher --help)",
    "replay": "replay a journal range into a ring (consolidator replay --help)",
    "exporter": "Prometheus endpoint for all feeds (consolidator exporter --help)",
    "export": "journal and live ring to Parquet/CSV: records, books, features (--help)",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consolidator",
        description="Market data from exchange feeds into shared-memory rings and a journal.",
    )
    add_common(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (arg, help_text, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_common(sp)
        if arg:
            sp.add_argument(arg.lower(), metavar=arg)
    for name, help_text in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    demo = sub.add_parser("demo", help="the whole pipeline offline, with a live tail")
    add_common(demo)
    demo.add_argument("--duration", type=float, default=20.0, metavar="SECONDS")
    demo.add_argument("--rate", type=float, default=10.0, help="simulated trades+quotes per second")
    return p


def _main(argv: Sequence[str]) -> int:
    if argv[:1] == ["sim"]:
        from consolidator.sim.cli import main as sim_main

        return sim_main(list(argv[1:]))
    if argv[:1] == ["flusher"]:
        from consolidator.journal.main import run_flusher

        return run_flusher(list(argv[1:]))
    if argv[:1] == ["replay"]:
        from consolidator.journal.main import run_replay

        return run_replay(list(argv[1:]))
    if argv[:1] == ["export"]:
        from consolidator.cli.export import run as run_export

        return run_export(list(argv[1:]))
    if argv[:1] == ["exporter"]:
        from consolidator.exporter import run_exporter

        return run_exporter(list(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "run":
        from consolidator.feed.main import run

        return run(args)
    from consolidator.cli.demo import run_demo

    return run_demo(args.duration, args.rate)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``consolidator``."""
    return run_main("consolidator", lambda: _main(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
