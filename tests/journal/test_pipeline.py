"""The journal on the real pipeline: simulator -> ``consolidator run`` -> ``consolidator flusher``.

Faults on real processes: the flusher killed (-9) five times during the flow, the writer killed
(-9) alone and together with the flusher, each restarted, and a simulated orderly reboot (writer
stopped, flusher drained, the rings and symbol table under shm_dir removed, the journal kept).
Afterwards the journal must hold every record the writer published, exactly once and in order, with
no loss (the flusher was never down long enough to be lapped); checked by reading the journal.

Then a crash reboot (writer and flusher killed together, shm wiped): what the lost rings held beyond
the journal is gone, and the restarted writer starts above its durable sequence reservation, so no
number is used twice and the skipped range is one explicit loss per stream.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from consolidator.journal.symbols import load_symbols, symbols_path
from consolidator.payloads import decode_event
from consolidator.records import EventKind, to_decimal
from tests.feed.helpers import Writer, wait_until
from tests.pipeline import (
    STREAMS,
    Flusher,
    firsts,
    journal_items,
    pause_delivered,
    pipeline,
    tails,
    wait_flusher_progress,
    wait_rings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_journal_survives_flusher_kills_writer_kill_and_reboot(tmp_path: Path) -> None:
    truth_log = tmp_path / "truth.jsonl"
    state = tmp_path / "state"
    sim_args = ("--symbols", "4", "--rate", "400", "--truth-log", str(truth_log))
    with pipeline(tmp_path, *sim_args) as p:
        feed = p.feed
        wait_until(lambda: tails(feed)["trades"] > 50, 30, "trades flowing")
        for _ in range(5):  # kill -9 the flusher during the flow (once it journals), restart it
            wait_flusher_progress(feed)
            p.flusher.kill9()
            time.sleep(0.3)  # down for a moment while the writer goes on
            p.flusher = Flusher(feed)
        for both in (False, True):  # kill -9 the writer alone, then writer and flusher together
            wait_flusher_progress(feed)
            p.writer.proc.send_signal(signal.SIGKILL)
            if both:
                p.flusher.kill9()
            p.writer.proc.wait(10)
            floor = tails(feed)["trades"] + 20
            p.writer = Writer(feed)
            if both:
                p.flusher = Flusher(feed)
            wait_until(lambda f=floor: tails(feed)["trades"] > f, 30, "flowing again")
        # Simulated orderly reboot: the writer stops, the flusher drains and stops, shm is wiped.
        wait_flusher_progress(feed)  # the restarted flusher is up (and handles SIGTERM)
        assert p.writer.stop()[0] == 0
        assert p.flusher.stop() == 0
        before_reboot = tails(feed)
        shutil.rmtree(feed.shm_dir)
        p.writer = Writer(feed)
        wait_rings(feed)
        p.flusher = Flusher(feed)
        after = tails(feed)
        assert after["trades"] >= before_reboot["trades"], "sequences continue from the journal"
        wait_until(lambda: tails(feed)["trades"] > before_reboot["trades"] + 20, 30, "after boot")
        # Crash reboot: both die at once (the flusher journaling), shm is wiped, both start again.
        wait_flusher_progress(feed)
        p.writer.proc.send_signal(signal.SIGKILL)
        p.flusher.kill9()
        p.writer.proc.wait(10)
        before_crash = tails(feed)
        shutil.rmtree(feed.shm_dir)
        p.writer = Writer(feed)
        wait_rings(feed)
        p.flusher = Flusher(feed)
        restarted = firsts(feed)
        assert all(restarted[s] > before_crash[s] for s in STREAMS), "no number is used twice"
        wait_until(lambda: tails(feed)["trades"] > restarted["trades"] + 20, 30, "after crash")
        wait_flusher_progress(feed)
        pause_delivered(p)
        assert p.writer.stop()[0] == 0
        ends = tails(feed)
        assert p.flusher.stop() == 0, p.flusher.log.read_text()

    for stream in STREAMS:
        seqs, _, losses = journal_items(state, feed.name, stream)
        assert len(losses) == 1, (stream, losses)  # the crash, and nothing else
        (loss,) = losses
        assert loss.first_seq <= before_crash[stream] < restarted[stream]
        assert loss.first_seq + loss.count == restarted[stream], "up to the new ring's start"
        covered = sorted([*seqs, *range(loss.first_seq, loss.first_seq + loss.count)])
        assert covered == list(range(ends[stream])), f"{stream}: each number exactly once"
        assert not set(seqs) & set(range(loss.first_seq, restarted[stream]))
    # Trades: exact values as the simulator made them, each trade at most once.
    names = load_symbols(symbols_path(state, feed.name))
    truth = {}
    for line in truth_log.read_text().splitlines():
        t = json.loads(line)
        truth[(t["symbol"], t["trade_id"])] = t
    _, trades, _ = journal_items(state, feed.name, "trades")
    seen = set()
    for row in trades:
        _, _, _, _, trade_id, pm, qm, sym, pe, qe, side, _ = row  # type: ignore[misc]
        key = (names[sym], trade_id)
        assert key not in seen, f"trade {key} journaled twice"
        seen.add(key)
        made = truth[key]
        assert to_decimal(pm, pe) == Decimal(made["price"])
        assert to_decimal(qm, qe) == Decimal(made["qty"])
        assert ("buy", "sell")[side - 1] == made["side"]
    assert len(seen) > 100
    events = [decode_event(r.payload) for r in journal_items(state, feed.name, "events")[1]]  # type: ignore[attr-defined]
    starts = [e for e in events if e.kind == EventKind.WRITER_START]
    assert len(starts) == 5, "start, two restarts after kill -9, two starts after reboots"
