"""``consolidator run FEED``: load the configuration and run the writer under uvloop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import uvloop

from consolidator.config import load_feed
from consolidator.errors import ConsolidatorError
from consolidator.feed.writer import FeedWriter
from consolidator.process import EXIT_FAILURE, global_config, setup_logging

__all__ = ["run"]

_log = logging.getLogger("consolidator.feed")


def run(args: argparse.Namespace) -> int:
    """Run the writer of ``args.feed``; the process exit code.

    Raises:
        ConfigError: bad configuration (the caller prints it and exits 2).
        ConsolidatorError: a runtime failure before the writer runs (exit 1).
    """
    config = global_config(args)
    feed = load_feed(config, args.feed)
    setup_logging()
    logging.getLogger("picows").setLevel(logging.WARNING)  # it logs every connect at INFO
    return int(uvloop.run(_serve(FeedWriter(config, feed))))


async def _serve(writer: FeedWriter) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    try:
        return await writer.run()
    except ConsolidatorError:
        raise
    except Exception as exc:  # one line, never a traceback
        _log.error("writer failed: %s: %s", type(exc).__name__, exc)
        return EXIT_FAILURE
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
