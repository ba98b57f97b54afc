"""The fault matrix: real writer and flusher processes, killed and restarted; then the journal is
read back (history reader and raw block parsing) and every record checked."""

from __future__ import annotations

import random
import shutil
import time

import pytest

from consolidator.journal.history import next_seq
from consolidator.journal.position import read_positions
from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.symbols import SymbolTableReader
from tests.journal.helpers import (
    FEED,
    Env,
    finish,
    first_line,
    kill9,
    stop,
    verify,
    wait_durable,
)
from tests.journal.proc import SYMBOL_EVERY

pytestmark = pytest.mark.integration


def _expected_symbols(trades_end: int) -> list[str]:
    return [f"S{i}" for i in range((trades_end - 1) // SYMBOL_EVERY + 1)]


@pytest.mark.slow
def test_flusher_killed_five_times_during_a_burst_loses_and_duplicates_nothing(env: Env) -> None:
    env.write_config(fsync_interval_ms=50, segment_bytes=1 << 20)
    flusher = env.flusher()
    writer = env.writer(250_000, 50_000, "--capacity", str(1 << 20))
    assert first_line(writer)["start"] == {"trades": 0, "raw": 0}
    rng = random.Random(3)
    logs = []
    for _ in range(5):
        time.sleep(rng.uniform(0.3, 0.9))
        logs.append(kill9(flusher))
        flusher = env.flusher()
    out, _ = finish(writer)
    ends = {k: int(v) for k, v in __import__("json").loads(out.splitlines()[-1])["end"].items()}
    assert ends["trades"] == 250_000
    wait_durable(env, ends)
    code, _, err = stop(flusher)
    assert code == 0, err
    covs = verify(env.state, ends)
    assert covs["trades"].records == 250_000
    assert load_symbols(symbols_path(env.state, FEED)) == _expected_symbols(ends["trades"])
    resumed = [line for line in err.splitlines() if "journaling from seq" in line]
    assert all("journal next" in line for line in resumed), resumed
    assert "Traceback" not in err + "".join(logs)
    segments = list((env.state / "journal" / FEED / "trades").iterdir())
    assert any(p.name.endswith(".seg.zst") for p in segments), "rotated and compressed"


def _ends(out: str) -> dict[str, int]:
    import json

    return {k: int(v) for k, v in json.loads(out.splitlines()[-1])["end"].items()}


def test_writer_killed_and_restarted_continues_the_sequence(env: Env) -> None:
    flusher = env.flusher()
    writer = env.writer(1_000_000, 40_000)
    first_line(writer)
    time.sleep(1.0)
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
    time.sleep(1.2)
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
    time.sleep(1.0)
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
    time.sleep(1.5)
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
