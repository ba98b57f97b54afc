"""Configuration loading: defaults, overrides, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidator.config import DEPTH_SPEEDS, load_config, load_feed
from consolidator.errors import ConfigError


def _dir(tmp_path: Path, main: str | None = None, **feeds: str) -> Path:
    (tmp_path / "feeds").mkdir(exist_ok=True)
    if main is not None:
        (tmp_path / "consolidator.toml").write_text(main)
    for name, text in feeds.items():
        (tmp_path / "feeds" / f"{name}.toml").write_text(text)
    return tmp_path


def test_defaults_and_environment_overrides(tmp_path: Path) -> None:
    config = load_config(_dir(tmp_path), {})
    assert config.shm_dir == Path("/dev/shm/consolidator")
    assert config.state_dir == Path("/var/lib/consolidator")
    assert config.exporter.host_port == ("127.0.0.1", 9464)
    env = {"CONSOLIDATOR_SHM_DIR": "/tmp/s", "CONSOLIDATOR_STATE_DIR": "/tmp/v"}
    config = load_config(_dir(tmp_path, 'shm_dir = "/x"\n'), env)
    assert (config.shm_dir, config.state_dir) == (Path("/tmp/s"), Path("/tmp/v"))


def test_a_full_feed(tmp_path: Path) -> None:
    text = (
        'venue = "binance-usdm"\nsymbols = ["BTCUSDT", "ETHUSDT", "BTCUSDT"]\n'
        'channels = ["trades", "depth"]\nraw = false\nws_url = "ws://127.0.0.1:9/"\n'
        'rest_url = "http://127.0.0.1:10"\nring_scale = 4\ncpu = 1\n'
    )
    config = load_config(_dir(tmp_path, usdm=text), {})
    feed = load_feed(config, "usdm")
    assert feed.symbols == ("BTCUSDT", "ETHUSDT")
    assert feed.streams == ("trades", "depth", "events")
    assert feed.ws_url == "ws://127.0.0.1:9"
    assert (feed.ring_scale, feed.cpu, feed.raw) == (4, 1, False)
    all_feed = load_feed(
        load_config(_dir(tmp_path, a='venue = "binance"\nsymbols = "all"\n'), {}), "a"
    )
    assert all_feed.symbols is None
    assert all_feed.ws_url == "wss://stream.binance.com:9443"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('symbols = ["X"]\n', "venue: missing"),
        ('venue = "kraken"\nsymbols = ["X"]\n', "venue: unknown venue 'kraken'"),
        ('venue = "binance"\n', "symbols: missing"),
        ('venue = "binance"\nsymbols = "some"\n', 'symbols: expected a list or "all"'),
        ('venue = "binance"\nsymbols = []\n', "symbols: expected a non-empty list"),
        ('venue = "binance"\nsymbols = ["X"]\nchannels = ["tardes"]\n', "unknown channel 'tardes'"),
        ('venue = "binance"\nsymbols = ["X"]\nraw = "yes"\n', "raw: expected bool, got 'yes'"),
        ('venue = "binance"\nsymbols = ["X"]\nws_url = "http://x"\n', "ws_url: expected a ws://"),
        ('venue = "binance"\nsymbols = ["X"]\nring_scale = 3\n', "ring_scale: expected a power"),
        ('venue = "binance"\nsymbols = ["X"]\nsnapshot_limit = 0\n', "snapshot_limit: must be pos"),
        ('venue = "binance"\nsymbols = ["X"]\nsnapshot_limit = true\n', "expected a number"),
        ('venue = "binance"\nsymbols = ["X"]\ncolour = "red"\n', "colour: unknown key"),
        ('venue = "binance"\nsymbols = ["X"]\ncompression = true\n',
         "compression: permessage-deflate is not supported"),
        ('venue = "binance"\nsymbols = ["X"]\ncompression = "no"\n', "compression: expected bool"),
        ('venue = "binance"\nsymbols = ["X"]\ndepth_speed = "250ms"\n',
         "depth_speed: expected one of 100ms, 1000ms for binance, got '250ms'"),
        ('venue = "binance-usdm"\nsymbols = ["X"]\ndepth_speed = "1000ms"\n',
         "depth_speed: expected one of 0ms, 100ms, 250ms, 500ms for binance-usdm, got '1000ms'"),
        ('venue = "binance"\nsymbols = ["X"]\ndepth_speed = 100\n', "depth_speed: expected str"),
        ('venue = "deribit"\nsymbols = ["X"]\ndepth_speed = "100ms"\n',
         "depth_speed: not a setting of venue 'deribit'"),
        ('venue = "binance"\nsymbols = ["X"\n', "not valid TOML"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = 3\n',
         "redundancy: expected 1 or 2, got 3"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = 0\n',
         "redundancy: expected 1 or 2, got 0"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = "2"\n', "redundancy: expected int"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = true\n',
         "redundancy: expected a number, got True"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = 2\nws_url_b = "http://b"\n',
         "ws_url_b: expected a ws:// or wss:// URL, got 'http://b'"),
        ('venue = "binance"\nsymbols = ["X"]\nredundancy = 2\nws_url_b = 5\n',
         "ws_url_b: expected str"),
        ('venue = "binance"\nsymbols = ["X"]\nws_url_b = "ws://b"\n',
         "ws_url_b: only used with redundancy = 2"),
    ],
)  # fmt: skip
def test_bad_feed_files_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    config = load_config(_dir(tmp_path, bad=text), {})
    with pytest.raises(ConfigError, match=match) as info:
        load_feed(config, "bad")
    assert str(tmp_path / "feeds" / "bad.toml") in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("shm_dir = 5\n", "shm_dir: expected str"),
        ("[exporter]\nlisten = 'nope'\n", "exporter.listen: expected HOST:PORT"),
        ("[flusher]\nfsync_every = 1\n", "flusher.fsync_every: unknown key"),
        ("[flusher]\nfsync_interval_ms = -1\n", "flusher.fsync_interval_ms: must be positive"),
        ("extra = 1\n", "extra: unknown key"),
    ],
)
def test_bad_main_file_names_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_dir(tmp_path, text), {})


def test_missing_feed_and_bad_feed_names(tmp_path: Path) -> None:
    config = load_config(_dir(tmp_path, ok='venue = "binance"\nsymbols = ["X"]\n'), {})
    with pytest.raises(ConfigError, match=r"no such feed configuration \(configured feeds: ok\)"):
        load_feed(config, "nope")
    with pytest.raises(ConfigError, match="bad feed name"):
        load_feed(config, "../etc")


@pytest.mark.parametrize(
    ("venue", "speed"),
    [("binance", s) for s in DEPTH_SPEEDS["binance"]]
    + [("binance-usdm", s) for s in DEPTH_SPEEDS["binance-usdm"]],
)
def test_every_offered_depth_speed_loads(tmp_path: Path, venue: str, speed: str) -> None:
    text = f'venue = "{venue}"\nsymbols = ["X"]\ndepth_speed = "{speed}"\n'
    feed = load_feed(load_config(_dir(tmp_path, f=text), {}), "f")
    assert feed.depth_speed == speed


def test_depth_speed_defaults_to_100ms_and_compression_false_is_accepted(tmp_path: Path) -> None:
    for venue in ("binance", "binance-usdm"):
        text = f'venue = "{venue}"\nsymbols = ["X"]\ncompression = false\n'
        feed = load_feed(load_config(_dir(tmp_path, f=text), {}), "f")
        assert feed.depth_speed == "100ms"


def test_redundancy_defaults_to_1_and_leg_b_to_ws_url(tmp_path: Path) -> None:
    config = load_config(_dir(tmp_path, f='venue = "binance"\nsymbols = ["X"]\n'), {})
    feed = load_feed(config, "f")
    assert (feed.redundancy, feed.ws_url_b) == (1, feed.ws_url)
    text = 'venue = "binance"\nsymbols = ["X"]\nredundancy = 2\nws_url = "ws://a:1/"\n'
    feed = load_feed(load_config(_dir(tmp_path, f=text), {}), "f")
    assert (feed.redundancy, feed.ws_url, feed.ws_url_b) == (2, "ws://a:1", "ws://a:1")
    text += 'ws_url_b = "wss://b.example:9443/"\n'
    feed = load_feed(load_config(_dir(tmp_path, f=text), {}), "f")
    assert feed.ws_url_b == "wss://b.example:9443"
