"""ENOSPC scenario, run inside a private mount namespace with a small tmpfs as the state dir.

``python -m tests.journal.scenario_enospc ROOT`` (``ROOT/state`` is the mounted tmpfs). Runs a
writer and the flusher, fills the file system twice (a short outage the ring covers, then one
longer than the ring), frees it each time, verifies the journal, and prints one JSON summary line.
Any failed check is an AssertionError (exit status 1, traceback on stderr).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from consolidator.journal.position import StreamState, read_positions
from consolidator.streams import open_stream_reader
from tests.journal.helpers import FEED, Env, finish, first_line, stop, verify, wait_durable
from tests.wait import wait_until

RATE = 13_000
CAPACITY = 1 << 16  # trades ring: 5 s at RATE (the flusher retries at least every second)
COUNT = RATE * 20  # long enough for both outages however slowly the flusher starts


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12):
            block = b"\xff" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


def tails(env: Env) -> dict[str, int]:
    out = {}
    for stream in ("trades", "raw"):
        with open_stream_reader(env.shm, FEED, stream) as reader:
            out[stream] = reader.tail()
    return out


def outage(env: Env, seconds: float, *, lapped: bool) -> dict[str, Any]:
    """Fill the disk for at least ``seconds``, and until the flusher reports NO_SPACE and (with
    ``lapped``) the trades ring no longer holds what the journal is missing (the writer has
    published more than the ring holds since the journal's end); what the flusher had made
    durable, and the ring tails when the disk was freed."""
    pos = read_positions(env.shm, FEED)
    assert pos is not None
    durable = {s: pos.streams[s].durable_seq for s in ("trades", "raw")}
    filler = fill(env.state)
    states: set[str] = set()
    until = time.monotonic() + seconds
    deadline = until + 120
    while True:
        pos = read_positions(env.shm, FEED)
        assert pos is not None
        trades = pos.streams["trades"]
        states.add(trades.state.name)
        done = time.monotonic() >= until and StreamState.NO_SPACE.name in states
        if lapped:
            done = done and tails(env)["trades"] - trades.written_seq > CAPACITY
        if done:
            break
        assert time.monotonic() < deadline, ("outage", lapped, sorted(states), trades)
        time.sleep(0.05)
    freed_at = tails(env)
    filler.unlink()
    return {"durable_before": durable, "tails_at_free": freed_at, "states": sorted(states)}


def episode_over(env: Env) -> bool:
    """Whether every stream is out of its error episode (journal writable again, logged)."""
    pos = read_positions(env.shm, FEED)
    assert pos is not None
    return all(pos.streams[s].state is StreamState.OK for s in ("trades", "raw"))


def main(root: Path) -> None:
    env = Env(root, Path("/dev/shm") / f"jenospc-{os.getpid()}", root / "state", root / "etc")
    env.config.mkdir(exist_ok=True)
    env.write_config(fsync_interval_ms=50, compress=False)
    try:
        flusher = env.flusher()
        writer = env.writer(COUNT, RATE, "--capacity", str(CAPACITY))
        first_line(writer)
        wait_until(  # the flusher journals both streams before the first outage
            lambda: (pos := read_positions(env.shm, FEED)) is not None
            and all(pos.streams[s].durable_seq > 0 for s in ("trades", "raw")),
            60,
            "the flusher to journal",
        )
        short = outage(env, 1.0, lapped=False)
        wait_durable(env, short["tails_at_free"], timeout_s=60)
        wait_until(lambda: episode_over(env), 60, "the first episode to end")  # a second one next
        long = outage(env, 6.5, lapped=True)
        out, _ = finish(writer)
        summary = json.loads(out.splitlines()[-1])
        ends = {k: int(v) for k, v in summary["end"].items()}
        wait_durable(env, ends, timeout_s=60)
        code, _, err = stop(flusher)
        assert code == 0, err
        covs = verify(env.state, ends, allow_loss=True)
        losses = {s: c.losses for s, c in covs.items()}
        for stream, stream_losses in losses.items():
            for first, count, _reason in stream_losses:
                # Only the long outage lost anything, and only what the ring had overwritten.
                assert first >= long["durable_before"][stream], (stream, first, long)
                assert first + count <= long["tails_at_free"][stream], (stream, first, count, long)
        assert losses["trades"], "the long outage outlasted the ring: a recorded loss"
        assert StreamState.NO_SPACE.name in short["states"], short
        assert StreamState.NO_SPACE.name in long["states"], long
        pos = read_positions(env.shm, FEED)
        assert pos is not None
        assert pos.streams["trades"].lost_records == sum(n for _, n, _ in losses["trades"])
        assert pos.streams["trades"].write_errors > 0
        nospace = [line for line in err.splitlines() if "No space left" in line]
        print(
            json.dumps(
                {
                    "writer": summary,
                    "short": short,
                    "long": long,
                    "losses": losses,
                    "nospace_lines": nospace,
                    "recovered_lines": [ln for ln in err.splitlines() if "writable again" in ln],
                    "records": {s: c.records for s, c in covs.items()},
                }
            ),
            flush=True,
        )
    finally:
        env.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
