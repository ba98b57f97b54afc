"""The console scripts as a user runs them: help, version, errors, the demo, mdtail and mdstat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from consolidator import __version__

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", ["consolidator", "mdtail", "mdstat"])
def test_help_and_version(command: str) -> None:
    assert _run(command, "--help").returncode == 0
    result = _run(command, "--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_exporter_bad_listen_address_exits_2_naming_it() -> None:
    result = _run("consolidator", "exporter", "--listen", "nowhere")
    assert result.returncode == 2
    assert (
        result.stderr
        == "consolidator exporter: error: --listen: expected HOST:PORT, got 'nowhere'\n"
    )


def test_bad_usage_exits_2_without_traceback() -> None:
    result = _run("consolidator", "frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_mdtail_json_fields_and_exact_values(feed_env: dict[str, str]) -> None:
    result = _run("mdtail", "demo", "--no-follow", "--format", "json", env=feed_env)
    assert result.returncode == 0, result.stderr
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    trades = [o for o in objs if o["type"] == "trade"]
    quotes = [o for o in objs if o["type"] == "quote"]
    assert trades
    assert quotes
    assert set(trades[0]) == {
        "type", "feed", "venue", "symbol", "seq", "trade_id", "price", "qty", "side",
        "ts_event", "ts_recv", "ts_commit",
    }  # fmt: skip
    assert [t["seq"] for t in trades] == list(range(len(trades)))
    for t in trades:
        assert t["side"] in ("buy", "sell")
        assert "e" not in t["price"]
        assert not (("." in t["price"]) and t["price"].endswith("0"))
    assert quotes[0]["ts_event"] is None, "the demo sends no quote event time: null"
    pepe = [t for t in trades if t["symbol"] == "PEPEUSDT"]
    assert pepe
    assert pepe[0]["price"].startswith("0.000001")


def test_mdtail_head_exits_quietly(feed_env: dict[str, str]) -> None:
    """``mdtail | head`` ends cleanly even when the feed is quiet (no write ever hits EPIPE)."""
    proc = subprocess.Popen(
        ["/bin/bash", "-c", f"set -o pipefail; {BIN / 'mdtail'} demo -n 100 | head -n 3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **feed_env},
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave the pipeline behind
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert len(stdout.splitlines()) == 3
    assert stderr == ""


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["nofeed"], "no feed 'nofeed'"),
        (["demo", "--stream", "depth"], "has no 'depth' stream"),
        (["demo", "--symbol", "DOGEUSDT"], "never been seen"),
    ],
)
def test_mdtail_bad_input_is_one_line_exit_2(
    feed_env: dict[str, str], args: list[str], match: str
) -> None:
    result = _run("mdtail", *args, "--no-follow", env=feed_env)
    assert result.returncode == 2
    assert match in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_mdtail_symbol_filter(feed_env: dict[str, str]) -> None:
    result = _run(
        "mdtail", "demo", "--no-follow", "--format", "json", "--symbol", "ETHUSDT", env=feed_env
    )
    symbols = {json.loads(line).get("symbol") for line in result.stdout.splitlines()}
    assert symbols == {"ETHUSDT"}


def test_mdstat_reports_a_stopped_writer_as_unhealthy(feed_env: dict[str, str]) -> None:
    result = _run("mdstat", "--format", "json", env=feed_env)
    assert result.returncode == 1, "the demo writer has stopped: not healthy"
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["stream"] for r in rows} == {"trades", "quotes", "events"}
    assert all(r["writer"] == "stopped" for r in rows)


def test_demo_runs_the_pipeline_offline_and_checks_itself() -> None:
    result = _run("consolidator", "demo", "--duration", "3", "--rate", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: OK" in result.stdout
    assert "each exactly once" in result.stdout
    assert "books synchronized: 3/3; gaps: 0; writer exit status 0" in result.stdout


_MODULES = {"mdtail": "mdtail", "mdstat": "mdstat", "consolidator": "main"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play another user")
@pytest.mark.parametrize("command", ["mdtail f1", "mdstat", "consolidator run f1"])
def test_an_unreadable_config_dir_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    config = tmp_path / "config"
    (config / "feeds").mkdir(parents=True)
    (config / "consolidator.toml").write_text('shm_dir = "/dev/shm/none"\n')
    (config / "feeds" / "f1.toml").write_text('venue = "binance"\n')
    config.chmod(0o700)  # root's alone: another user cannot even look inside
    prog, *args = command.split()
    # Import as root (the interpreter may live where nobody cannot read), then become nobody.
    code = (
        "import os, sys, consolidator.feed.main; "
        f"from consolidator.cli import {_MODULES[prog]} as m; "
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534); "
        "sys.exit(m.main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--config-dir", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{config}/consolidator.toml: permission denied" in result.stderr


@pytest.mark.parametrize("stream", ["trades", "quotes"])
def test_mdtail_n_counts_the_records_of_the_chosen_symbol(
    feed_env: dict[str, str], stream: str
) -> None:
    """``-n N --symbol S`` prints the last N records *of S* (as ``grep S | tail -n N`` would),
    however far back in the ring they are."""
    every = _run("mdtail", "demo", "--stream", stream, "--no-follow", "--format", "json",
                 env=feed_env)  # fmt: skip
    objs = [json.loads(line) for line in every.stdout.splitlines()]
    last = objs[-1]["symbol"]
    for symbol in ("BTCUSDT", "PEPEUSDT"):
        mine = [o for o in objs if o.get("symbol") == symbol]
        if symbol != last:
            assert mine, "the feed has some records of each symbol"
            assert mine[-1]["seq"] < objs[-1]["seq"], "and others after them"
        for n in (1, 3, len(mine) + 5):
            got = _run("mdtail", "demo", "--stream", stream, "--symbol", symbol, "-n", str(n),
                       "--no-follow", "--format", "json", env=feed_env)  # fmt: skip
            assert got.returncode == 0, got.stderr
            assert [json.loads(line) for line in got.stdout.splitlines()] == mine[-n:], (symbol, n)
