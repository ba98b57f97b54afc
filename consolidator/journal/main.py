"""Entry points: ``consolidator flusher`` (`run_flusher`), ``consolidator replay`` (`run_replay`).

Both take the arguments after the subcommand name and return the exit code (0 clean stop, 1 runtime
failure, 2 bad usage or configuration), with errors as one line on stderr (`run_main`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

from consolidator.notify import Notifier
from consolidator.process import global_config, parser, run_main, setup_logging

if TYPE_CHECKING:
    from consolidator.journal.flusher import Flusher

__all__ = ["run_flusher", "run_replay"]

log = logging.getLogger("consolidator.flusher")

NOTIFY_STATUS_S: Final = 2.0


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
    notifier = Notifier()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: draining the rings and syncing", signal.Signals(signum).name)
            notifier.stopping("draining the rings and syncing")
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    flusher = Flusher(config, sync_log=args.sync_log)
    next_status = 0.0

    def stop_now() -> bool:
        """Called by the flusher's loop every pass: the watchdog and status beat come from it."""
        nonlocal next_status
        notifier.ping_if_due()
        now = time.monotonic()
        if notifier.enabled and now >= next_status and not stopping:
            next_status = now + NOTIFY_STATUS_S
            notifier.status(_status(flusher))
        return stopping

    try:
        flusher.start()
        notifier.ready(_status(flusher))
        flusher.run(stop_now)
    finally:
        flusher.close()
        notifier.close()
    log.info("stopped")
    return 0


def _status(flusher: Flusher) -> str:
    """E.g. "2 feeds, 9 streams, 1200 records written and not yet synced, 0 broken"."""
    pending = sum(
        (t.journal.written_seq or 0) - (t.journal.durable_seq or 0) for t in flusher.tasks.values()
    )
    return (
        f"{len(flusher.feeds)} feeds, {len(flusher.tasks)} streams, "
        f"{pending} records written and not yet synced, {len(flusher.broken)} broken"
    )


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
