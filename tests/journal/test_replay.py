"""``consolidator replay`` and the command-line behaviour of ``consolidator flusher``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from consolidator import __version__
from consolidator.errors import ConfigError
from consolidator.journal.history import HistoryReader
from consolidator.journal.replay import parse_point
from consolidator.ring.reader import VariableRingReader
from consolidator.streams import open_stream_reader
from consolidator.symbols import SymbolTableReader
from tests.journal.helpers import FEED, ROOT
from tests.journal.rig import Rig

pytestmark = pytest.mark.integration


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[Rig, dict[str, str]]]:
    rig = Rig(tmp_path)
    rig.start_flusher()
    for _ in range(5):
        rig.publish(1000)
        rig.flush()
        time.sleep(0.02)
    rig.stop_flusher()
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "consolidator.toml").write_text(f'shm_dir = "{rig.shm}"\nstate_dir = "{rig.state}"\n')
    yield rig, {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(etc)}
    rig.close()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consolidator.journal.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def journal_rows(rig: Rig, stream: str = "trades") -> np.ndarray:
    with HistoryReader(rig.state, rig.shm, FEED, stream, live=False) as r:
        return np.concatenate([i for i in r.items() if isinstance(i, np.ndarray)])


def test_replay_a_seq_range_at_max_speed_into_another_feed(
    journal: tuple[Rig, dict[str, str]],
) -> None:
    rig, env = journal
    result = run(env, "replay", FEED, "--stream", "trades", "--from", "100", "--to", "1100",
                 "--speed", "max", "--target-feed", "replayed")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1000 records (seq 100..1099) into replayed/trades; 0 missing" in result.stderr
    with open_stream_reader(rig.shm, "replayed", "trades", start="oldest") as reader:
        got = reader.read_batch()  # type: ignore[attr-defined]
    source = journal_rows(rig)[100:1100]
    assert len(got) == 1000
    keep = [n for n in source.dtype.names or () if n not in ("seq", "ts_commit")]
    for name in keep:
        assert np.array_equal(got[name], source[name]), name
    table = SymbolTableReader(rig.shm / "replayed" / "symbols")
    try:
        assert table.names() == ["S0"], "symbol ids keep their names in the target feed"
    finally:
        table.close()


def test_replay_by_time_merges_streams_at_recorded_speed(
    journal: tuple[Rig, dict[str, str]],
) -> None:
    rig, env = journal
    rows = journal_rows(rig)
    start_ns = int(rows["ts_commit"][2000])
    span_s = (int(rows["ts_commit"][-1]) - start_ns) / 1e9
    iso = datetime.fromtimestamp(start_ns / 1e9, UTC).isoformat()
    began = time.monotonic()
    result = run(env, "replay", FEED, "--from", iso, "--speed", "recorded",
                 "--target-feed", "replayed")  # fmt: skip
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert elapsed >= span_s * 0.8, (elapsed, span_s)
    first = int(rows["seq"][np.flatnonzero(rows["ts_commit"] >= parse_point(iso, "x").time_ns)[0]])
    assert f"{5000 - first} records (seq {first}..4999) into replayed/trades" in result.stderr
    reader = open_stream_reader(rig.shm, "replayed", "raw", start="oldest")
    assert isinstance(reader, VariableRingReader)
    try:
        records = reader.read_batch()
    finally:
        reader.close()
    assert records
    assert all(r.record_type == 6 for r in records)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-feed", FEED], "--target-feed must differ"),
        (["--target-feed", "x", "--from", "yesterday"], "--from: expected a sequence number"),
        (["--target-feed", "x", "--from", "5"], "need exactly one --stream"),
    ],
)
def test_replay_bad_usage_exits_2_with_one_line(
    journal: tuple[Rig, dict[str, str]], args: list[str], message: str
) -> None:
    _, env = journal
    result = run(env, "replay", FEED, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_of_an_unknown_feed(journal: tuple[Rig, dict[str, str]]) -> None:
    _, env = journal
    result = run(env, "replay", "nofeed", "--target-feed", "x")
    assert result.returncode == 2
    assert "no journal for feed 'nofeed'" in result.stderr


def test_parse_point() -> None:
    assert parse_point("42", "--from").seq == 42
    assert parse_point("1970-01-01T00:00:01Z", "--to").time_ns == 1_000_000_000
    with pytest.raises(ConfigError, match="--to: expected"):
        parse_point("soon", "--to")


def test_flusher_help_version_and_errors(tmp_path: Path) -> None:
    env = {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(tmp_path)}
    assert run(env, "--help").returncode == 0
    version = run(env, "--version")
    assert version.returncode == 0
    assert __version__ in version.stdout
    (tmp_path / "consolidator.toml").write_text("[flusher]\nfsync_every = 1\n")
    bad = run(env, "--config-dir", str(tmp_path))
    assert bad.returncode == 2
    assert "flusher.fsync_every: unknown key" in bad.stderr
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    (tmp_path / "consolidator.toml").write_text(
        f'state_dir = "{blocker}"\nshm_dir = "{tmp_path / "shm"}"\n'
    )
    failed = run(env)
    assert failed.returncode == 1
    assert "cannot use the journal directory" in failed.stderr
    assert "Traceback" not in failed.stderr
