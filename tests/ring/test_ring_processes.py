"""Real processes on one ring: a full-speed writer, three readers, crashes and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consolidator.records import TRADE, TRADE_DTYPE
from consolidator.ring import FixedRingWriter, VariableRingWriter, WriterState
from tests.ring.ringproc import FIXED, VARIABLE

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODES = ("batch", "one", "slow")


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ring.ringproc", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def shm(tmp_path: Path) -> Iterator[Path]:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    d = base / f"ringtest-{tmp_path.name}"
    d.mkdir()
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def _create(path: Path, kind: str) -> None:
    if kind == "fixed":
        writer: FixedRingWriter | VariableRingWriter = FixedRingWriter(
            path, FIXED, TRADE.pack_into, TRADE_DTYPE
        )
    else:
        writer = VariableRingWriter(path, VARIABLE)
    writer.close(WriterState.NONE)


def _finish(proc: subprocess.Popen[str]) -> int:
    proc.communicate(timeout=120)
    return proc.returncode


def _start_readers(path: Path, kind: str) -> list[subprocess.Popen[str]]:
    readers = [_spawn("reader", str(path), kind, mode) for mode in MODES]
    for proc in readers:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    return readers


def _results(readers: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    out = []
    for proc in readers:
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _check(results: list[dict[str, object]], written: int) -> None:
    for mode, result in zip(MODES, results, strict=True):
        assert result["torn"] == 0, (mode, result)
        assert result["order_errors"] == 0, (mode, result)
        assert result["end"] == written, (mode, result)
        assert result["received"] + result["lost"] == written, (mode, result)  # type: ignore[operator]
        assert result["received"] > 0, (mode, result)
    assert results[0]["received"] > results[2]["received"], "the slow reader should be lapped"


@pytest.mark.parametrize(("kind", "count"), [("fixed", 400_000), ("variable", 60_000)])
def test_full_speed_writer_three_readers_nothing_torn_everything_accounted(
    shm: Path, kind: str, count: int
) -> None:
    path = shm / f"{kind}.ring"
    _create(path, kind)
    readers = _start_readers(path, kind)
    writer = _spawn("writer", str(path), kind, str(count))
    assert _finish(writer) == 0
    results = _results(readers)
    _check(results, count)
    assert results[2]["lost"] > 0, "a deliberately slow reader on a small ring must be lapped"


@pytest.mark.parametrize("kind", ["fixed", "variable"])
@pytest.mark.parametrize("torn", [False, True], ids=["kill", "kill-mid-write"])
def test_writer_killed_mid_burst_restarts_and_readers_continue(
    shm: Path, kind: str, torn: bool
) -> None:
    path = shm / f"{kind}.ring"
    _create(path, kind)
    readers = _start_readers(path, kind)
    first = _spawn(
        "writer",
        str(path),
        kind,
        "1000000",
        "--crash-after",
        "30000",
        *(["--torn"] if torn else []),
    )
    assert first.stdout is not None
    assert json.loads(first.stdout.readline())["generation"] == 2
    assert _finish(first) == -9
    second = _spawn("writer", str(path), kind, "20000")
    assert second.stdout is not None
    hello = json.loads(second.stdout.readline())
    assert hello["start"] == 30000, "the restarted writer continues the sequence"
    assert hello["generation"] == 3
    assert _finish(second) == 0
    results = _results(readers)
    _check(results, 50_000)
    assert any(3 in r["generations"] for r in results)  # type: ignore[operator]
