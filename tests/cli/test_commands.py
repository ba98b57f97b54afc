"""The console scripts as a user runs them: help, version, errors, the demo, mdtail and mdstat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consolidator import __version__
from tests.cli.synthetic import synthetic_writer

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


@pytest.mark.parametrize("sub", ["exporter"])
def test_later_subcommands_say_not_yet_implemented(sub: str) -> None:
    result = _run("consolidator", *sub.split())
    assert result.returncode == 2
    assert "not yet implemented" in result.stderr


def test_bad_usage_exits_2_without_traceback() -> None:
    result = _run("consolidator", "frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.fixture
def feed_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    shm = Path("/dev/shm") / f"cli-{tmp_path.name}"
    (tmp_path / "feeds").mkdir()
    (tmp_path / "consolidator.toml").write_text(f'shm_dir = "{shm}"\n')
    synthetic_writer(shm, rate=5000, stop_after_s=0.2)
    yield {"CONSOLIDATOR_CONFIG_DIR": str(tmp_path)}
    for f in sorted(shm.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    shm.rmdir()


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
