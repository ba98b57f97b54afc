"""TOML configuration: ``consolidator.toml`` and ``feeds/FEED.toml`` (DESIGN.md "Configuration").

Every problem is a `ConfigError` whose message names the file and the key, e.g.
``/etc/consolidator/feeds/binance.toml: channels: unknown channel 'tardes' (trades, ...)``.
Unknown keys are errors. Environment variables are read only by `config_dir_from` and
`load_config`, which the command-line front ends call; everything below takes values.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from consolidator.errors import ConfigError

__all__ = [
    "CHANNELS",
    "DEFAULT_CONFIG_DIR",
    "DEPTH_SPEEDS",
    "VENUES",
    "ExporterConfig",
    "FeedConfig",
    "FlusherConfig",
    "GlobalConfig",
    "config_dir_from",
    "list_feeds",
    "load_config",
    "load_feed",
]

DEFAULT_CONFIG_DIR: Final = Path("/etc/consolidator")
CHANNELS: Final = ("trades", "quotes", "depth")
VENUES: Final[dict[str, tuple[str, str]]] = {
    "binance": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "binance-usdm": ("wss://fstream.binance.com", "https://fapi.binance.com"),
    "deribit": ("wss://www.deribit.com/ws/api/v2", "https://www.deribit.com"),
}
TRADE_STREAMS: Final = ("trade", "aggTrade")
DEPTH_SPEEDS: Final[dict[str, tuple[str, ...]]] = {
    "binance": ("100ms", "1000ms"),
    "binance-usdm": ("0ms", "100ms", "250ms", "500ms"),
}
"""The ``depth_speed`` values of each Binance venue (PROTOCOLS.md 1.3.4, 2.2.4); "100ms" is
the default on both."""
FEED_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class FlusherConfig:
    """The ``[flusher]`` table."""

    fsync_interval_ms: int = 100
    fsync_bytes: int = 8 << 20
    segment_seconds: int = 3600
    segment_bytes: int = 1 << 30
    compress: bool = True


@dataclass(frozen=True)
class ExporterConfig:
    """The ``[exporter]`` table."""

    listen: str = "127.0.0.1:9464"

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class GlobalConfig:
    """``consolidator.toml`` plus environment overrides."""

    config_dir: Path
    shm_dir: Path = Path("/dev/shm/consolidator")
    state_dir: Path = Path("/var/lib/consolidator")
    flusher: FlusherConfig = field(default_factory=FlusherConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)


@dataclass(frozen=True)
class FeedConfig:
    """``feeds/FEED.toml``: one writer instance.

    Beyond the fixed keys (venue, symbols, channels, raw, ws_url, rest_url) a feed may set:
    ``ring_scale`` (power of two multiplying default ring sizes), ``snapshot_limit`` (REST depth
    levels), ``depth_speed`` (Binance diff-depth interval, `DEPTH_SPEEDS`; default ``"100ms"``),
    ``compression`` (only ``false``: the writer's transport has no permessage-deflate),
    ``rotate_after_s`` (make-before-break rotation ahead of the venue's 24 h cut),
    ``rediscover_s`` (re-read the instrument list when ``symbols = "all"``), ``stale_after_s`` (no
    data for this long: reconnect), ``cpu`` (the core to pin the writer to), ``trade_stream``
    (Binance ``"trade"`` or ``"aggTrade"``; default ``"trade"`` on spot, ``"aggTrade"`` on USD-M),
    ``redundancy`` (1, or 2: every connection is kept twice, as legs "a" and "b", and each record is
    taken from whichever delivers it first) and ``ws_url_b`` (leg "b"'s URL with ``redundancy = 2``;
    default ``ws_url``).
    """

    name: str
    path: Path
    venue: str
    symbols: tuple[str, ...] | None  # None means "all"
    channels: tuple[str, ...] = CHANNELS
    raw: bool = True
    ws_url: str = ""
    rest_url: str = ""
    ring_scale: int = 1
    snapshot_limit: int = 1000
    depth_speed: str = "100ms"
    rotate_after_s: float = 23.5 * 3600
    rediscover_s: float = 3600.0
    stale_after_s: float = 30.0
    cpu: int | None = None
    trade_stream: str | None = None  # None: the venue's default
    redundancy: int = 1
    ws_url_b: str = ""  # leg "b" (redundancy = 2); set to ws_url by load_feed when absent

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams this feed writes (channels, plus raw if kept, plus events)."""
        return (*self.channels, *(("raw",) if self.raw else ()), "events")


def config_dir_from(arg: str | None, env: Mapping[str, str]) -> Path:
    """``--config-dir``, else ``$CONSOLIDATOR_CONFIG_DIR``, else /etc/consolidator."""
    if arg:
        return Path(arg)
    if env.get("CONSOLIDATOR_CONFIG_DIR"):
        return Path(env["CONSOLIDATOR_CONFIG_DIR"])
    return DEFAULT_CONFIG_DIR


def _read_toml(path: Path, missing: str | None = "no such file") -> dict[str, Any]:
    """The TOML table of ``path``; ``missing=None`` makes an absent file an empty table."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (FileNotFoundError, NotADirectoryError):
        if missing is None:
            return {}
        raise ConfigError(f"{path}: {missing}") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


class _Table:
    """Typed access to one TOML table that reports unknown keys with file and key."""

    def __init__(self, path: Path, data: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = dict(data)
        self.prefix = prefix
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise ConfigError(f"{self._where(key)}: expected a number, got {value!r}")
        if not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigError(f"{self._where(key)}: expected {names}, got {value!r}")
        return value

    def positive(self, key: str, default: float) -> Any:
        value = self.get(key, (int, float), default)
        if value <= 0:
            raise ConfigError(f"{self._where(key)}: must be positive, got {value!r}")
        return value

    def table(self, key: str) -> _Table:
        value = self.get(key, dict, {})
        return _Table(self.path, value, f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._where(unknown[0])}: unknown key")


def load_config(config_dir: Path, env: Mapping[str, str]) -> GlobalConfig:
    """Load ``consolidator.toml`` (optional) and apply the environment overrides."""
    path = config_dir / "consolidator.toml"
    data = _read_toml(path, missing=None)
    top = _Table(path, data)
    shm_dir = Path(top.get("shm_dir", str, "/dev/shm/consolidator"))
    state_dir = Path(top.get("state_dir", str, "/var/lib/consolidator"))
    fl = top.table("flusher")
    flusher = FlusherConfig(
        fsync_interval_ms=fl.positive("fsync_interval_ms", 100),
        fsync_bytes=fl.positive("fsync_bytes", 8 << 20),
        segment_seconds=fl.positive("segment_seconds", 3600),
        segment_bytes=fl.positive("segment_bytes", 1 << 30),
        compress=fl.get("compress", bool, True),
    )
    fl.finish()
    ex = top.table("exporter")
    exporter = ExporterConfig(listen=ex.get("listen", str, "127.0.0.1:9464"))
    host, _, port = exporter.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{path}: exporter.listen: expected HOST:PORT, got {exporter.listen!r}")
    ex.finish()
    top.finish()
    if env.get("CONSOLIDATOR_SHM_DIR"):
        shm_dir = Path(env["CONSOLIDATOR_SHM_DIR"])
    if env.get("CONSOLIDATOR_STATE_DIR"):
        state_dir = Path(env["CONSOLIDATOR_STATE_DIR"])
    return GlobalConfig(config_dir, shm_dir, state_dir, flusher, exporter)


def list_feeds(config: GlobalConfig) -> list[str]:
    """Names of the configured feeds (``feeds/*.toml``)."""
    try:
        return sorted(p.name[:-5] for p in os.scandir(config.config_dir / "feeds")
                      if p.name.endswith(".toml"))  # fmt: skip
    except OSError:
        return []


def check_feed_name(feed: str) -> str:
    """Feed names become file and directory names: lowercase letters, digits, '-' and '_'."""
    if not FEED_NAME.fullmatch(feed):
        raise ConfigError(f"bad feed name {feed!r}: use 1-32 lowercase letters, digits, '-' or '_'")
    return feed


def load_feed(config: GlobalConfig, feed: str) -> FeedConfig:
    """Load and validate ``feeds/FEED.toml``."""
    check_feed_name(feed)
    path = config.config_dir / "feeds" / f"{feed}.toml"
    known = ", ".join(list_feeds(config)) or "none"
    t = _Table(path, _read_toml(path, f"no such feed configuration (configured feeds: {known})"))
    venue = t.get("venue", str, None)
    if venue is None:
        raise ConfigError(f"{path}: venue: missing (one of {', '.join(VENUES)})")
    if venue not in VENUES:
        raise ConfigError(f"{path}: venue: unknown venue {venue!r} (one of {', '.join(VENUES)})")
    symbols_raw = t.get("symbols", (list, str), None)
    if symbols_raw is None:
        raise ConfigError(f'{path}: symbols: missing (a list of symbols or "all")')
    symbols: tuple[str, ...] | None
    if isinstance(symbols_raw, str):
        if symbols_raw != "all":
            raise ConfigError(f'{path}: symbols: expected a list or "all", got {symbols_raw!r}')
        symbols = None
    else:
        if not symbols_raw or not all(isinstance(s, str) and s.strip() for s in symbols_raw):
            raise ConfigError(f"{path}: symbols: expected a non-empty list of symbol names")
        symbols = tuple(dict.fromkeys(s.strip() for s in symbols_raw))
    channels = t.get("channels", list, list(CHANNELS))
    for channel in channels:
        if channel not in CHANNELS:
            raise ConfigError(
                f"{path}: channels: unknown channel {channel!r} ({', '.join(CHANNELS)})"
            )
    if not channels:
        raise ConfigError(f"{path}: channels: at least one of {', '.join(CHANNELS)}")
    default_ws, default_rest = VENUES[venue]
    ws_url = t.get("ws_url", str, default_ws)
    rest_url = t.get("rest_url", str, default_rest)
    if not ws_url.startswith(("ws://", "wss://")):
        raise ConfigError(f"{path}: ws_url: expected a ws:// or wss:// URL, got {ws_url!r}")
    redundancy = t.get("redundancy", int, 1)
    if redundancy not in (1, 2):
        raise ConfigError(f"{path}: redundancy: expected 1 or 2, got {redundancy!r}")
    ws_url_b = t.get("ws_url_b", str, ws_url)
    if not ws_url_b.startswith(("ws://", "wss://")):
        raise ConfigError(f"{path}: ws_url_b: expected a ws:// or wss:// URL, got {ws_url_b!r}")
    if "ws_url_b" in t.data and redundancy != 2:
        raise ConfigError(f"{path}: ws_url_b: only used with redundancy = 2 (the second leg)")
    if not rest_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{path}: rest_url: expected an http:// or https:// URL, got {rest_url!r}"
        )
    ring_scale = t.get("ring_scale", int, 1)
    if ring_scale < 1 or ring_scale & (ring_scale - 1) or ring_scale > 64:
        raise ConfigError(
            f"{path}: ring_scale: expected a power of two from 1 to 64, got {ring_scale}"
        )
    cpu = t.get("cpu", int, None)
    if cpu is not None and cpu < 0:
        raise ConfigError(f"{path}: cpu: expected a core number >= 0, got {cpu}")
    trade_stream = t.get("trade_stream", str, None)
    if trade_stream is not None and trade_stream not in TRADE_STREAMS:
        raise ConfigError(
            f"{path}: trade_stream: expected one of {', '.join(TRADE_STREAMS)}, "
            f"got {trade_stream!r}"
        )
    if t.get("compression", bool, False):
        raise ConfigError(
            f"{path}: compression: permessage-deflate is not supported (the writer's transport "
            "has none); remove the key"
        )
    depth_speed = t.get("depth_speed", str, "100ms")
    speeds = DEPTH_SPEEDS.get(venue)
    if speeds is None and "depth_speed" in t.data:
        raise ConfigError(f"{path}: depth_speed: not a setting of venue {venue!r}")
    if speeds is not None and depth_speed not in speeds:
        raise ConfigError(
            f"{path}: depth_speed: expected one of {', '.join(speeds)} for {venue}, "
            f"got {depth_speed!r}"
        )
    result = FeedConfig(
        name=feed,
        path=path,
        venue=venue,
        symbols=symbols,
        channels=tuple(dict.fromkeys(channels)),
        raw=t.get("raw", bool, True),
        ws_url=ws_url.rstrip("/"),
        rest_url=rest_url.rstrip("/"),
        ring_scale=ring_scale,
        snapshot_limit=t.positive("snapshot_limit", 1000),
        depth_speed=depth_speed,
        rotate_after_s=t.positive("rotate_after_s", 23.5 * 3600),
        rediscover_s=t.positive("rediscover_s", 3600.0),
        stale_after_s=t.positive("stale_after_s", 30.0),
        cpu=cpu,
        trade_stream=trade_stream,
        redundancy=redundancy,
        ws_url_b=ws_url_b.rstrip("/"),
    )
    t.finish()
    return result
