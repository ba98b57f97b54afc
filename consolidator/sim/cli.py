"""Command line: ``consolidator sim`` / ``python -m consolidator.sim.cli``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from pathlib import Path
from typing import NoReturn

import orjson

from consolidator.sim.config import Mode, SimConfig, Venue
from consolidator.sim.faults import FaultSpec, parse_fault
from consolidator.sim.server import SimServer

__all__ = ["build_config", "main"]

_PROG = "consolidator sim"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return value


def _speed(text: str) -> float:
    if text == "recorded":
        return 1.0
    if text == "max":
        return math.inf
    return _positive(text)


def _rate(text: str) -> float:
    return math.inf if text == "max" else _positive(text)


def _fault(text: str) -> FaultSpec:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=_PROG, description="Local Binance spot / USD-M exchange simulator.")
    p.add_argument("--venue", choices=[v.value for v in Venue], default=Venue.SPOT.value)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=0, help="WebSocket port (0 = ephemeral)")
    p.add_argument("--rest-port", type=_port, help="REST port (default: port+1, or ephemeral)")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="synthetic (default; each event sent when due), replay (with --replay DIR), or "
        "fast (pre-encoded frames in the recorded message mix, > 1 M frames/s; --rate "
        "defaults to max)",
    )
    p.add_argument(
        "--replay",
        metavar="DIR",
        type=Path,
        help="replay the recorded traffic in DIR (e.g. tests/data/recorded)",
    )
    p.add_argument("--replay-prefix", help="recorded file prefix (BINANCE, BINANCE_FUTURES...)")
    p.add_argument("--speed", type=_speed, default=1.0, help="recorded | max | factor")
    p.add_argument("--symbols", default="8", help="count, or comma-separated symbol list")
    p.add_argument(
        "--rate", type=_rate, help="market events/s, or max (default 1000; fast mode: max)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--book-levels", type=_count, default=150, help="initial levels per side")
    p.add_argument("--ping-interval", type=_positive, help="seconds (20 spot, 180 usdm)")
    p.add_argument("--pong-timeout", type=_positive, help="seconds (60 spot, 600 usdm)")
    p.add_argument("--max-conn-age", type=_positive, default=86400.0, help="seconds")
    p.add_argument("--shutdown-notice", type=_positive, help="serverShutdown lead time (s)")
    p.add_argument("--weight-limit", type=_count, help="REST weight per window")
    p.add_argument("--weight-window", type=_positive, default=60.0, help="seconds")
    p.add_argument("--ban-seconds", type=_positive, default=120.0, help="first 418 ban (s)")
    p.add_argument("--max-streams", type=_count, help="streams per connection")
    p.add_argument("--msg-rate-limit", type=_count, help="incoming messages/s per connection")
    p.add_argument("--fault", type=_fault, action="append", default=[], help="fault spec")
    p.add_argument("--duration", type=_positive, help="exit after this many seconds")
    p.add_argument("--truth-log", type=Path, help="JSON lines of every emitted trade")
    p.add_argument("--quote-log", type=Path, help="JSON lines of every bookTicker sent")
    p.add_argument("--max-send-buffer", type=_count, default=64 * 1024 * 1024, help="bytes")
    p.add_argument("--close-timeout", type=_positive, default=2.0, help="seconds")
    p.add_argument("--nested-errors", action="store_true", help='errors as {"error":{..}}')
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--log-level", default="WARNING")
    return p


def build_config(args: argparse.Namespace) -> SimConfig:
    """Turn parsed arguments into a :class:`SimConfig` (raises ValueError when invalid)."""
    symbols: tuple[str, ...] = ()
    count = 8
    if args.symbols.isdigit():
        count = int(args.symbols)
        if count < 1:
            raise ValueError("--symbols must be >= 1")
    else:
        symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if not symbols:
            raise ValueError("--symbols is empty")
    mode = Mode(args.mode) if args.mode else Mode.SYNTHETIC
    if args.replay is not None:
        if args.mode and mode is not Mode.REPLAY:
            raise ValueError(f"--replay DIR contradicts --mode {mode.value}")
        mode = Mode.REPLAY
        if not args.replay.is_dir():
            raise ValueError(f"--replay {args.replay}: not a directory")
    elif mode is Mode.REPLAY:
        raise ValueError("--mode replay needs --replay DIR (the recordings' directory)")
    rate = args.rate
    if rate is None:
        rate = math.inf if mode is Mode.FAST else 1000.0
    return SimConfig(
        venue=Venue(args.venue),
        host=args.host,
        port=args.port,
        rest_port=args.rest_port,
        mode=mode,
        replay_dir=args.replay,
        replay_prefix=args.replay_prefix,
        speed=args.speed,
        symbols=symbols,
        symbol_count=count,
        rate=rate,
        seed=args.seed,
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        max_conn_age=args.max_conn_age,
        shutdown_notice=args.shutdown_notice,
        weight_limit=args.weight_limit,
        weight_window=args.weight_window,
        ban_seconds=args.ban_seconds,
        max_streams=args.max_streams,
        msg_rate_limit=args.msg_rate_limit,
        faults=tuple(args.fault),
        duration=args.duration,
        truth_log=args.truth_log,
        quote_log=args.quote_log,
        max_send_buffer=args.max_send_buffer,
        close_timeout=args.close_timeout,
        nested_errors=args.nested_errors,
        book_levels=args.book_levels,
    )


async def _serve(config: SimConfig) -> int:
    try:
        server = SimServer(config)
    except ValueError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        await server.start()
    except OSError as exc:
        print(f"{_PROG}: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(server.announcement()).decode() + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.failed.wait())]
    try:
        await asyncio.wait(waiters, timeout=config.duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()
    return 1 if server.failed.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    """Run the simulator; returns the process exit code (2 on bad usage)."""
    try:
        args = _parser().parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
        config = build_config(args)
    except (_UsageError, ValueError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.loop == "uvloop":
        import uvloop

        return int(uvloop.run(_serve(config)))
    return asyncio.run(_serve(config))


if __name__ == "__main__":
    sys.exit(main())
