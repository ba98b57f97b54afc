"""The fault matrix: real writer and flusher processes, killed and restarted; then the journal is
read back (history reader and raw block parsing) and every record checked."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from consolidator.journal.history import next_seq
from consolidator.journal.position import read_positions
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.symbols import SymbolTableReader
from tests.journal.helpers import (
    FEED,
    Env,
    durable,
    finish,
    first_line,
    kill9,
    ring_tails,
    stop,
    verify,
    wait_durable,
)
from tests.journal.proc import RAW_RATIO, SYMBOL_EVERY
from tests.wait import wait_until

pytestmark = pytest.mark.integration


def _expected_symbols(trades_end: int) -> list[str]:
    return [f"S{i}" for i in range((trades_end - 1) // SYMBOL_EVERY + 1)]


@pytest.mark.slow
def test_flusher_killed_five_times_during_a_burst_loses_and_duplicates_nothing(env: Env) -> None:
    env.write_config(fsync_interval_ms=50, segment_bytes=1 << 20)
    flusher = env.flusher()
    count = 250_000
    writer = env.writer(count, 50_000, "--capacity", str(1 << 20))
    assert first_line(writer)["start"] == {"trades": 0, "raw": 0}
    total = {"trades": count, "raw": (count + RAW_RATIO - 1) // RAW_RATIO}
    rng = random.Random(3)
    logs = []
    fsyncs = {s: 0 for s in total}  # each stream's fdatasyncs so far, by every flusher
    for k in range(5):
        # Kill k lands once the durable trades pass a point spread over the burst, and only after
        # this flusher has itself made records of both streams durable (its fdatasyncs count only
        # new data), so that every restart resumes from a journal this run extended. A stream
        # already complete has nothing left to sync.
        target = int(count * (k + rng.uniform(0.5, 1.0)) / 6)

        def progressed(target: int = target, before: dict[str, int] = fsyncs) -> bool:
            slots = durable(env)
            return (
                bool(slots)
                and slots["trades"].durable_seq >= target
                and all(
                    slots[s].fsyncs > before[s] or slots[s].durable_seq >= total[s] for s in total
                )
            )

        wait_until(progressed, 60, f"flusher {k + 1} to sync records past trade {target}")
        logs.append(kill9(flusher))
        fsyncs = {s: slot.fsyncs for s, slot in durable(env).items()}
        flusher = env.flusher()
    out, _ = finish(writer)
    ends = {k: int(v) for k, v in __import__("json").loads(out.splitlines()[-1])["end"].items()}
    assert ends["trades"] == 250_000
    # The durable position may be the killed flusher's, already at the end: wait for this one to
    # have attached to both rings (its SIGTERM handler comes before) before the durable check.
    head = _attached(flusher)
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    err = "".join(head) + err
    assert code == 0, err
    covs = verify(env.state, ends)
    assert covs["trades"].records == 250_000
    assert load_symbols(symbols_path(env.state, FEED)) == _expected_symbols(ends["trades"])
    for log in [*logs[1:], err]:  # every flusher after the first resumed from the journal
        resumed = [line for line in log.splitlines() if "journaling from seq" in line]
        assert all("journal next" in line for line in resumed), resumed
    assert len([line for line in err.splitlines() if "journal next" in line]) == 2, err
    assert "Traceback" not in err + "".join(logs)
    segments = list((env.state / "journal" / FEED / "trades").iterdir())
    assert any(p.name.endswith(".seg.zst") for p in segments), "rotated and compressed"


def _attached(flusher: subprocess.Popen[str]) -> list[str]:
    """A flusher's log up to its "journaling from seq" lines of both streams (read, so gone from
    what it prints later)."""
    assert flusher.stderr is not None
    lines: list[str] = []
    while sum("journaling from seq" in line for line in lines) < 2:
        line = flusher.stderr.readline()
        assert line, f"the flusher exited: {''.join(lines)}"
        lines.append(line)
    return lines


def _ends(out: str) -> dict[str, int]:
    import json

    return {k: int(v) for k, v in json.loads(out.splitlines()[-1])["end"].items()}


def test_writer_killed_and_restarted_continues_the_sequence(env: Env) -> None:
    flusher = env.flusher()
    writer = env.writer(1_000_000, 40_000)
    first_line(writer)
    wait_until(lambda: ring_tails(env)["trades"] >= 20_000, 60, "the writer to publish")
    kill9(writer)
    writer = env.writer(30_000, 40_000, "--restore")
    start = first_line(writer)["start"]
    assert start["trades"] > 0, "the reopened ring continues the sequence"
    ends = _ends(finish(writer)[0])
    assert ends["trades"] == start["trades"] + 30_000
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    assert code == 0, err
    verify(env.state, ends)


def test_writer_and_flusher_killed_together(env: Env) -> None:
    flusher = env.flusher()
    writer = env.writer(1_000_000, 40_000)
    first_line(writer)
    # Both die mid-flow, once the flusher has journaled some of it.
    wait_until(
        lambda: bool(d := durable(env)) and all(slot.durable_seq > 0 for slot in d.values()),
        60,
        "the flusher to make records durable",
    )
    kill9(writer)
    kill9(flusher)
    flusher = env.flusher()
    writer = env.writer(20_000, 40_000, "--restore")
    first_line(writer)
    ends = _ends(finish(writer)[0])
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    assert code == 0, err
    verify(env.state, ends)


def test_simulated_reboot_continues_sequence_and_symbols_from_the_journal(env: Env) -> None:
    flusher = env.flusher()
    writer = env.writer(1_000_000, 40_000)
    first_line(writer)
    # Several symbols interned before the reboot, so that restored ids are checked.
    wait_until(lambda: ring_tails(env)["trades"] >= 4 * SYMBOL_EVERY, 60, "the writer to publish")
    wait_until(
        lambda: bool(d := durable(env)) and d["trades"].durable_seq > 0,
        60,
        "the flusher to publish its durable position",
    )
    kill9(writer)
    pos = read_positions(env.shm, FEED)
    assert pos is not None
    from consolidator.streams import open_stream_reader

    tails = {}
    for stream in ("trades", "raw"):
        with open_stream_reader(env.shm, FEED, stream) as r:
            tails[stream] = r.tail()
    wait_durable(env, tails)
    kill9(flusher)
    # Reboot: /dev/shm is empty, the journal is intact.
    shutil.rmtree(env.shm)
    assert {s: next_seq(env.state, FEED, s) for s in tails} == tails
    writer = env.writer(25_000, 40_000, "--restore")
    assert first_line(writer)["start"] == tails, "first_seq=next_seq(...): the sequence goes on"
    flusher = env.flusher()
    ends = _ends(finish(writer)[0])
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    assert code == 0, err
    verify(env.state, ends)
    table = SymbolTableReader(env.shm / FEED / "symbols")
    try:
        assert table.names() == _expected_symbols(ends["trades"]), "ids restored, not reassigned"
    finally:
        table.close()
    assert load_symbols(symbols_path(env.state, FEED)) == _expected_symbols(ends["trades"])


def test_sigterm_drains_what_the_rings_hold_and_exits_0(env: Env) -> None:
    env.write_config(fsync_interval_ms=10_000, fsync_bytes=1 << 30)
    writer = env.writer(60_000, 200_000)
    first_line(writer)
    ends = _ends(finish(writer)[0])
    flusher = env.flusher()
    # SIGTERM once this flusher has its tasks on both rings (its signal handler is installed
    # before), long before its first fdatasync is due: the drain does the journaling.
    wait_until(
        lambda: (pos := read_positions(env.shm, FEED)) is not None
        and pos.flusher_pid == flusher.pid
        and all(pos.streams[s].present for s in ends),
        60,
        "the flusher to attach to the rings",
    )
    code, _, err = stop(flusher)
    assert code == 0, err
    assert "SIGTERM: draining" in err
    verify(env.state, ends)
    pos = read_positions(env.shm, FEED)
    assert pos is not None
    assert pos.streams["trades"].durable_seq == ends["trades"]


def test_a_second_flusher_is_refused(env: Env) -> None:
    first = env.flusher()
    assert first.stderr is not None
    assert "started" in first.stderr.readline()
    second = env.flusher()
    _, err = finish(second)
    assert second.returncode == 1
    assert "another flusher (pid" in err
    assert "Traceback" not in err
    assert stop(first)[0] == 0
