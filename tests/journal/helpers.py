"""Shared pieces of the journal tests: a private root, processes, and journal verification.

Verification reads the journal twice, independently: with the history reader
(`consolidator.journal.history`) and by parsing the segment files block by block
(`raw_blocks`). Both must show every sequence number from the first to the writer's end exactly
once, as a record with the expected content or inside an explicit loss.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from consolidator.journal.files import End, SegmentSource, list_segments, stream_dir
from consolidator.journal.history import HistoryReader
from consolidator.journal.position import StreamDurable, read_positions
from consolidator.journal.segment import BlockType
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.ring.reader import Loss
from consolidator.streams import open_stream_reader
from tests.journal.proc import raw_payload, trade_ok

ROOT = Path(__file__).resolve().parents[2]
FEED = "jfeed"


@dataclass
class Env:
    """A private shm_dir, state_dir and configuration directory."""

    root: Path
    shm: Path
    state: Path
    config: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def environ(self) -> dict[str, str]:
        return {**os.environ, "CONSOLIDATOR_CONFIG_DIR": str(self.config)}

    def write_config(self, **flusher: object) -> None:
        settings = {"fsync_interval_ms": 50, "compress": True, **flusher}
        lines = [f'shm_dir = "{self.shm}"', f'state_dir = "{self.state}"', "[flusher]"]
        for key, value in settings.items():
            lines.append(f"{key} = {json.dumps(value)}")
        (self.config / "consolidator.toml").write_text("\n".join(lines) + "\n")

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def flusher(self, *extra: str) -> subprocess.Popen[str]:
        return self.spawn([sys.executable, "-m", "consolidator.journal.main", *extra])

    def writer(self, count: int, rate: float, *extra: str) -> subprocess.Popen[str]:
        proc = self.spawn(
            [sys.executable, "-m", "tests.journal.proc", str(self.shm), str(self.state), FEED,
             "--count", str(count), "--rate", str(rate), *extra]
        )  # fmt: skip
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)
        shutil.rmtree(self.shm, ignore_errors=True)


def make_env(tmp_path: Path) -> Iterator[Env]:
    """Fixture body: rings under /dev/shm (as in production), journal under tmp_path."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    shm = base / f"jtest-{os.getpid()}-{tmp_path.name}"
    config = tmp_path / "etc"
    config.mkdir()
    env = Env(tmp_path, shm, tmp_path / "state", config)
    env.write_config()
    try:
        yield env
    finally:
        env.cleanup()


def first_line(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict[str, Any]:
    """The first JSON line a writer prints."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = proc.stdout.readline()
    assert line, f"process exited early: {proc.poll()}"
    assert time.monotonic() < deadline
    data: dict[str, Any] = json.loads(line)
    return data


def finish(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> tuple[str, str]:
    """Wait for a process; its remaining stdout and stderr."""
    out, err = proc.communicate(timeout=timeout_s)
    return out, err


def stop(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> tuple[int, str, str]:
    """SIGTERM a process and wait: (exit code, stdout, stderr)."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def kill9(proc: subprocess.Popen[str]) -> str:
    """SIGKILL a process we started; its stderr."""
    proc.kill()
    _, err = proc.communicate(timeout=30)
    return err


def wait_durable(env: Env, ends: dict[str, int], timeout_s: float = 90.0) -> None:
    """Wait until the flusher's published durable position reaches ``ends`` on every stream."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pos = read_positions(env.shm, FEED)
        if pos is not None and all(pos.streams[s].durable_seq >= e for s, e in ends.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"durable position did not reach {ends}: {read_positions(env.shm, FEED)}")


def durable(env: Env) -> dict[str, StreamDurable]:
    """The trades and raw slots of the flusher's published position (none yet: empty)."""
    pos = read_positions(env.shm, FEED)
    return {} if pos is None else {s: pos.streams[s] for s in ("trades", "raw")}


def ring_tails(env: Env) -> dict[str, int]:
    """The writer's trades and raw ring tails now."""
    out = {}
    for stream in ("trades", "raw"):
        with open_stream_reader(env.shm, FEED, stream) as reader:
            out[stream] = reader.tail()
    return out


# ----------------------------------------------------------------------------------------------
# Verification


@dataclass
class Coverage:
    """What one reading of a stream's journal found."""

    records: int = 0
    losses: list[tuple[int, int, str]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    end: int = 0


def _check_item(stream: str, item: Any, names: list[str], cov: Coverage) -> None:
    if isinstance(item, np.ndarray):
        for row in item.tolist():
            sid = row[7]
            name = names[sid] if sid < len(names) else f"?{sid}"
            if not trade_ok(tuple(row), name):
                cov.bad.append(f"trade seq {row[0]}: {row} {name}")
    else:
        for record in item:
            if record.payload != raw_payload(record.seq) or record.flags != record.seq & 0xFFFF:
                cov.bad.append(f"raw seq {record.seq}")


def read_journal(state: Path, stream: str, *, start: int = 0) -> Coverage:
    """Read a stream with the history reader (journal only), checking order and content."""
    names = load_symbols(symbols_path(state, FEED))
    cov = Coverage(end=start)
    with HistoryReader(state, Path("/nonexistent"), FEED, stream, start=start, live=False) as r:
        for item in r.items():
            first = item.first_seq if isinstance(item, Loss) else _first(item)
            if first != cov.end:
                cov.bad.append(f"expected seq {cov.end}, got {first}")
            if isinstance(item, Loss):
                cov.losses.append((item.first_seq, item.count, item.reason))
                cov.end = item.first_seq + item.count
                continue
            _check_item(stream, item, names, cov)
            cov.records += len(item)
            cov.end = first + len(item)
    return cov


def _first(item: Any) -> int:
    if isinstance(item, np.ndarray):
        return int(item["seq"][0])
    return int(item[0].seq)


def raw_blocks(state: Path, stream: str) -> Coverage:
    """Parse every segment block by block (no cursor logic): ranges must chain exactly."""
    cov = Coverage()
    segments = list_segments(stream_dir(state, FEED, stream))
    expected: int | None = None
    for i, seg in enumerate(segments):
        limit = segments[i + 1].first_seq if i + 1 < len(segments) else None
        with SegmentSource(seg.path) as src:
            if expected is None:
                expected = cov.end = src.header.first_seq
            if src.header.first_seq != expected:
                cov.bad.append(f"{seg.path}: starts at {src.header.first_seq}, expected {expected}")
            while not isinstance(got := src.next(), End):
                h = got.header
                if limit is not None and h.first_seq >= limit:
                    break  # overlap after an abandoned segment: the next one has it
                if h.first_seq != expected:
                    cov.bad.append(f"{seg.path}@{got.offset}: seq {h.first_seq} != {expected}")
                if h.block_type == BlockType.LOSS:
                    cov.losses.append((h.first_seq, h.count, bytes(got.payload).decode()))
                else:
                    cov.records += h.count
                expected = h.end_seq
            if got.reason is not None and limit is None:
                cov.bad.append(f"{seg.path}@{got.offset}: {got.reason}")
    cov.end = expected or 0
    return cov


def verify(state: Path, ends: dict[str, int], *, allow_loss: bool = False) -> dict[str, Coverage]:
    """Both readings of every stream: complete to ``ends``, in order, content right."""
    out: dict[str, Coverage] = {}
    for stream, end in ends.items():
        cov = read_journal(state, stream)
        raw = raw_blocks(state, stream)
        assert not cov.bad, (stream, cov.bad[:5])
        assert not raw.bad, (stream, raw.bad[:5])
        assert cov.end == end, (stream, cov.end, end, cov.losses)
        assert raw.end == end, (stream, raw.end, end)
        lost = sum(n for _, n, _ in cov.losses)
        assert cov.records + lost == end, (stream, cov.records, lost, end)
        assert raw.records == cov.records, stream
        assert raw.losses == cov.losses, stream
        if not allow_loss:
            assert not cov.losses, (stream, cov.losses)
        out[stream] = cov
    return out
