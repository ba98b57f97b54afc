"""The shared-memory counters file: layout round trips, allocation limits, replacement, and a
concurrent reader that never sees a torn value."""

from __future__ import annotations

import bisect
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consolidator.counters import (
    FILE_NAMES,
    MAX_BUCKETS,
    CountersFile,
    Family,
    Kind,
    Unit,
    read_counters,
    read_counters_file,
)
from consolidator.counters import (
    State as CountersState,
)
from tests.feed.helpers import REPO

SHM = Path("/dev/shm")


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    path = SHM / f"counterstest-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()


def test_file_is_created_in_place_with_mode_0640_and_read_back(shm_dir: Path) -> None:
    file = CountersFile(shm_dir / "f1" / "counters", service="writer", feed="f1")
    file.words[file.slot("consolidator_gaps_total")] += 3
    file.words[file.slot("consolidator_connections", (("state", "open"),), Kind.GAUGE)] = -1
    snap = read_counters(shm_dir, "f1")
    assert snap is not None
    assert stat.S_IMODE((shm_dir / "f1" / "counters").stat().st_mode) == 0o640
    assert [p.name for p in (shm_dir / "f1").iterdir()] == ["counters"]  # no temporary left
    assert (snap.service, snap.feed, snap.pid, snap.state) == (
        "writer", "f1", os.getpid(), CountersState.LIVE,
    )  # fmt: skip
    assert snap.alive()
    assert snap.value("consolidator_gaps_total") == 3
    assert snap.value("consolidator_connections", state="open") == -1
    assert snap.value("consolidator_never_allocated_total") == 0


def test_histogram_buckets_are_inclusive_upper_bounds_like_prometheus_le(shm_dir: Path) -> None:
    file = CountersFile(shm_dir / "c", service="writer")
    hist = file.histogram("h_seconds", [10, 20, 50])
    for value in (-5, 0, 10, 11, 20, 21, 50, 51, 10**6):
        hist.observe(value)
    snap = read_counters_file(shm_dir / "c")
    assert snap is not None
    (metric,) = snap.metrics
    assert (metric.kind, metric.unit, metric.bounds) == (
        Kind.HISTOGRAM,
        Unit.NANOSECONDS,
        (10, 20, 50),
    )
    assert metric.buckets == (3, 2, 2, 2)  # <=10, <=20, <=50, +Inf
    assert metric.value == 9
    assert metric.sum == sum((-5, 0, 10, 11, 20, 21, 50, 51, 10**6))


def test_a_sum_beyond_int64_restarts_instead_of_raising(shm_dir: Path) -> None:
    file = CountersFile(shm_dir / "c", service="writer")
    hist = file.histogram("h", [1])
    hist.observe(2**62)
    hist.observe(2**62)  # the sum would overflow int64
    hist.observe(2**70)  # beyond int64 itself
    snap = read_counters_file(shm_dir / "c")
    assert snap is not None
    (metric,) = snap.metrics
    assert (metric.buckets, metric.sum) == ((0, 3), 0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["a_total", "b_total", "g", "h_seconds"]),
        st.sampled_from(["", "x", "y=z", "ü"]),
        st.integers(-(2**40), 2**40),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_updates_read_back_as_a_model_says(updates: list[tuple[str, str, int]]) -> None:
    path = SHM / f"counterstest-model-{os.getpid()}"
    file = CountersFile(path, service="flusher", feed="model")
    bounds = [-100, 0, 1000, 2**30]
    model: dict[tuple[str, str], list[int]] = {}
    try:
        for name, label, value in updates:
            labels = (("k", label),)
            if name == "h_seconds":
                file.histogram(name, bounds, labels).observe(value)
                entry = model.setdefault((name, label), [0] * (len(bounds) + 2))
                entry[bisect.bisect_left(bounds, value)] += 1
                entry[-1] += value
            elif name == "g":
                file.words[file.slot(name, labels, Kind.GAUGE)] = value
                model[(name, label)] = [value]
            else:
                file.words[file.slot(name, labels)] += value
                model.setdefault((name, label), [0])[0] += value
        snap = read_counters_file(path)
        assert snap is not None
        got = {}
        for m in snap.metrics:
            key = (m.name, dict(m.labels)["k"])
            got[key] = [*m.buckets, m.sum] if m.kind is Kind.HISTOGRAM else [m.value]
        assert got == model
    finally:
        path.unlink()


def test_family_behaves_like_a_counter_dict() -> None:
    file = CountersFile(None, service="writer")
    family = Family(file, "consolidator_parse_errors_total", "kind", keys=("json",))
    family["schema"] += 2
    family["json"] += 1
    assert family["never"] == 0
    assert "never" not in family
    assert dict(family) == {"json": 1, "schema": 2}
    assert family.setdefault("new", 5) == 5
    assert family.setdefault("new", 7) == 5
    with pytest.raises(TypeError):
        del family["json"]


def test_a_full_file_or_a_long_key_loses_only_the_new_metric(
    shm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = CountersFile(shm_dir / "c", service="writer", capacity=3, value_words=64)
    a = file.slot("a")
    file.words[a] = 1
    file.words[file.slot("b", (("k", "v" * 300),))] += 1  # key too long
    b = file.slot("b")
    hist = file.histogram("h", list(range(1, MAX_BUCKETS + 1)))  # 34 words
    hist.observe(5)
    file.words[file.slot("c")] += 1  # the file is full now: descriptors 3 of 3 used
    file.histogram("h2", [1, 2]).observe(1)  # unpublished, harmless
    file.words[b] = 2
    snap = read_counters_file(shm_dir / "c")
    assert snap is not None
    assert [(m.name, m.value) for m in snap.metrics] == [("a", 1), ("b", 2), ("h", 1)]
    assert "no room for metric 'b'" in caplog.text


def test_readers_follow_a_replaced_file_and_the_old_owner_cannot_touch_it(shm_dir: Path) -> None:
    path = shm_dir / "f" / FILE_NAMES["writer"]
    old = CountersFile(path, service="writer", feed="f")
    old.words[old.slot("x_total")] = 10
    first = read_counters_file(path)
    new = CountersFile(path, service="writer", feed="f")  # a restart: a new file, renamed in
    old.words[old.slot("x_total")] = 99  # the old mapping is no longer the file at ``path``
    new.words[new.slot("x_total")] = 1
    second = read_counters_file(path)
    assert first is not None
    assert second is not None
    assert first.value("x_total") == 10
    assert second.value("x_total") == 1
    assert second.start_ns >= first.start_ns


def test_close_marks_the_file_stopped_and_late_updates_are_harmless(shm_dir: Path) -> None:
    file = CountersFile(shm_dir / "c", service="writer")
    slot = file.slot("x_total")
    file.words[slot] = 4
    file.close()
    file.words[slot] += 1
    snap = read_counters_file(shm_dir / "c")
    assert snap is not None
    assert snap.state is CountersState.STOPPED
    assert not snap.alive()
    assert snap.value("x_total") == 5


def test_a_file_of_a_dead_process_is_not_alive(shm_dir: Path) -> None:
    code = (
        "from pathlib import Path; from consolidator.counters import CountersFile; "
        f"CountersFile(Path('{shm_dir}/c'), service='writer')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    snap = read_counters_file(shm_dir / "c")
    assert snap is not None
    assert snap.state is CountersState.LIVE  # it never closed (as after kill -9)
    assert not snap.alive()


@pytest.mark.parametrize("content", [b"", b"\0" * 300, b"CNSLCNTR" + b"\xff" * 300, b"x" * 10])
def test_anything_else_at_the_path_reads_as_none(shm_dir: Path, content: bytes) -> None:
    (shm_dir / "c").write_bytes(content)
    assert read_counters_file(shm_dir / "c") is None
    assert read_counters_file(shm_dir / "missing") is None


# -- a concurrent owner and reader -------------------------------------------------------------

_OWNER = """
import sys, time
from pathlib import Path
from consolidator.counters import CountersFile
path, mode, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
f = CountersFile(path, service="writer", feed="torn")
w = f.words
slot = f.slot("v")
h = f.histogram("h", [1, 2, 3])
w32 = w.cast("B").cast("I")
print("ready", flush=True)
end = time.monotonic() + seconds
k = 0
while time.monotonic() < end:
    for _ in range(1000):
        k += 1
        value = k * 0x100000001  # both 32-bit halves equal k
        if mode == "whole":
            w[slot] = value
        else:  # two 4-byte stores: what a torn 8-byte update looks like
            w32[2 * slot] = value & 0xFFFFFFFF
            w32[2 * slot + 1] = value >> 32
        h.observe(k & 3)
"""


def _watch(path: Path, mode: str, seconds: float) -> tuple[int, int, list[str]]:
    """Run an owner updating ``v`` in ``mode``; read concurrently. (reads, torn reads, problems)"""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(path), mode, str(seconds)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "ready"
    reads = torn = 0
    problems: list[str] = []
    last_v = last_count = 0
    while owner.poll() is None:
        snap = read_counters_file(path)
        assert snap is not None
        value = snap.value("v")
        (hist,) = snap.family("h")
        reads += 1
        if value & 0xFFFFFFFF != value >> 32:
            torn += 1
            if mode == "torn":
                break
        if value < last_v or hist.value < last_count:
            problems.append(f"went backwards: v {last_v} -> {value}, count {last_count} -> {hist}")
        if hist.value != sum(hist.buckets):
            problems.append(f"count {hist.value} is not the sum of {hist.buckets}")
        last_v, last_count = value, hist.value
    owner.kill()
    owner.wait()
    owner.stdout.close()
    return reads, torn, problems


def test_a_concurrent_reader_never_sees_a_torn_or_regressing_value(shm_dir: Path) -> None:
    reads, torn, problems = _watch(shm_dir / "c", "whole", 3.0)
    assert reads > 100
    assert torn == 0
    assert problems == []


def test_the_torn_read_check_catches_split_stores(shm_dir: Path) -> None:
    """The check above can fail: an owner storing 4 bytes at a time is caught quickly."""
    reads, torn, _ = _watch(shm_dir / "c", "torn", 20.0)
    assert torn >= 1, f"no torn value seen in {reads} reads"


def test_the_mapping_is_not_needed_after_a_read(shm_dir: Path) -> None:
    CountersFile(shm_dir / "c", service="writer").slot("x")
    before = Path("/proc/self/maps").read_text().count(str(shm_dir / "c"))
    for _ in range(10):
        read_counters_file(shm_dir / "c")
    after = Path("/proc/self/maps").read_text().count(str(shm_dir / "c"))
    assert after == before
