"""Entry points: ``consolidator flusher`` (`run_flusher`), ``consolidator replay`` (`run_replay`).

Both take the arguments after the subcommand name and return the exit code (0 clean stop, 1 runtime
failure, 2 bad usage or configuration), with errors as one line on stderr (`run_main`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from consolidator.cli.common import global_config, parser, run_main, setup_logging

__all__ = ["run_flusher", "run_replay"]

log = logging.getLogger("consolidator.flusher")


def _flusher_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(
        "consolidator flusher",
        "Durable sync of every ring under shm_dir into the journal under state_dir.",
    )
    p.add_argument(
        "--sync-log",
        metavar="FILE",
        type=Path,
        help="append one JSON line per fdatasync (time, stream, sequence range) to FILE",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="also log debug events")
    return p.parse_args(argv)


def _flusher(argv: Sequence[str] | None) -> int:
    from consolidator.journal.flusher import Flusher

    args = _flusher_args(argv)
    config = global_config(args)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: draining the rings and syncing", signal.Signals(signum).name)
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    flusher = Flusher(config, sync_log=args.sync_log)
    try:
        flusher.start()
        flusher.run(lambda: stopping)
    finally:
        flusher.close()
    log.info("stopped")
    return 0


def run_flusher(argv: Sequence[str] | None = None) -> int:
    """``consolidator flusher``: run until SIGTERM/SIGINT; drain, fdatasync, exit 0."""
    return run_main("consolidator flusher", lambda: _flusher(argv))


def run_replay(argv: Sequence[str] | None = None) -> int:
    """``consolidator replay FEED --stream S --from X --to Y --speed ... --target-feed NAME``."""
    from consolidator.journal.replay import replay_main

    return run_main("consolidator replay", lambda: replay_main(argv))


if __name__ == "__main__":
    if sys.argv[1:2] == ["replay"]:
        sys.exit(run_replay(sys.argv[2:]))
    sys.exit(run_flusher(sys.argv[1:]))
