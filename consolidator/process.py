"""The process shell every command and service shares: --version/--config-dir, logging, one-line
errors with the documented exit codes, and stopping a child process.

It sits below every entry point (the writer, the flusher, the exporter, the commands in `cli/`),
so nothing outside `cli/` needs to import a command front-end.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from consolidator import __version__
from consolidator.config import GlobalConfig, config_dir_from, load_config
from consolidator.errors import ConfigError, ConsolidatorError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "add_common",
    "global_config",
    "parser",
    "run_main",
    "setup_logging",
    "stop_process",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every command has."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_common(p)
    return p


def add_common(p: argparse.ArgumentParser) -> None:
    """``--version`` and ``--config-dir``."""
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--config-dir",
        metavar="DIR",
        help="configuration directory (default: $CONSOLIDATOR_CONFIG_DIR or /etc/consolidator)",
    )


def global_config(args: argparse.Namespace) -> GlobalConfig:
    """Load consolidator.toml from the chosen directory, with environment overrides."""
    return load_config(config_dir_from(args.config_dir, os.environ), os.environ)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr without timestamps (journald adds them), one event per line."""
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_main(prog: str, main: Callable[[], int]) -> int:
    """Run ``main``; turn errors into one line on stderr and the documented exit codes.

    Bad usage or configuration exits 2, other failures 1; Ctrl-C and a closed pipe
    (``mdtail | head``) exit quietly.
    """
    try:
        return main()
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConsolidatorError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except PermissionError as exc:  # e.g. reading rings without being in their group
        print(f"{prog}: error: {exc.filename or exc}: permission denied", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # Python flushes stdout at exit: point it at /dev/null so that does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def stop_process(
    proc: subprocess.Popen[str] | subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout: float = 10.0,
) -> bool:
    """Send ``sig`` to a child that still runs and wait up to ``timeout`` s; SIGKILL it after.

    Returns False when it had to be killed (it ignored ``sig``), True otherwise.
    """
    if proc.poll() is not None:
        return True
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
    return True
