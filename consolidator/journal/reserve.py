"""Sequence reservations: sequence numbers stay monotonic across crashes and reboots.

The journal alone is not enough after a crash reboot: records published in the last sync interval
lived only in the lost rings, so a writer that continued from the journal would hand their numbers
to new records. Instead the writer durably *reserves* a range ahead of what it publishes, in
``{state_dir}/journal/{feed}/reserved`` (JSON ``{"stream": upto, ...}``, written to a temporary
file, fsync'd, renamed, directory fsync'd). A new ring starts at ``max(journal next_seq,
reserved)``: every number below a reservation may have been used, none above it was. The range
between the journal's end and the new start is journaled by the flusher as an explicit loss
("before ring"). A clean stop trims the reservation to the tails, so an orderly restart skips
nothing.

Renewal happens in a background thread well before the writer reaches the reserved number, so the
publishing path never waits for the disk. If the disk stalls for so long that the writer passes the
reservation, it keeps publishing (it never waits) and counts `overruns`; only a crash in that
window could then reuse numbers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_AHEAD", "SequenceReservation", "load_reserved"]

DEFAULT_AHEAD: Final = 1 << 20
_log = logging.getLogger(__name__)


def _path(state_dir: Path, feed: str) -> Path:
    return state_dir / "journal" / feed / "reserved"


def load_reserved(state_dir: Path, feed: str) -> dict[str, int]:
    """The reservations on disk ({} if none or unreadable, which is logged)."""
    path = _path(state_dir, feed)
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in data.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        _log.warning("%s: unreadable sequence reservation (%s); ignoring it", path, exc)
        return {}


def _write(path: Path, values: Mapping[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, json.dumps(dict(values), sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class SequenceReservation:
    """The writer's reservations for one feed.

    Args:
        state_dir: the state directory (the journal lives under it).
        feed: the feed name.
        ahead: how far ahead of a stream's tail to reserve; renewed at half that distance.
    """

    def __init__(self, state_dir: Path, feed: str, ahead: int = DEFAULT_AHEAD) -> None:
        self.path = _path(state_dir, feed)
        self.ahead = ahead
        self.reserved: dict[str, int] = load_reserved(state_dir, feed)
        self.overruns = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start_of(self, stream: str, journal_next: int) -> int:
        """Where a new ring of ``stream`` must start: above everything possibly used before."""
        return max(journal_next, self.reserved.get(stream, 0))

    def reserve_now(self, tails: Mapping[str, int]) -> None:
        """Reserve ``ahead`` past each tail and wait for it to be durable (at start-up only)."""
        values = {**self.reserved, **{s: t + self.ahead for s, t in tails.items()}}
        _write(self.path, values)
        with self._lock:
            self.reserved = values

    def check(self, tails: Mapping[str, int]) -> None:
        """Called from a timer: renew in the background when a tail nears its reservation."""
        with self._lock:
            reserved = dict(self.reserved)
        if any(t >= reserved.get(s, 0) for s, t in tails.items()):
            self.overruns += 1
        if not any(t + self.ahead // 2 > reserved.get(s, 0) for s, t in tails.items()):
            return
        if self._thread is not None and self._thread.is_alive():
            return
        values = {
            **reserved,
            **{s: max(reserved.get(s, 0), t + self.ahead) for s, t in tails.items()},
        }
        self._thread = threading.Thread(
            target=self._renew, args=(values,), name="seq-reserve", daemon=True
        )
        self._thread.start()

    def _renew(self, values: dict[str, int]) -> None:
        try:
            _write(self.path, values)
        except OSError as exc:
            _log.warning("%s: cannot renew the sequence reservation: %s", self.path, exc)
            return
        with self._lock:
            self.reserved = values

    def release(self, tails: Mapping[str, int]) -> None:
        """At a clean stop: trim the reservations to the tails (nothing beyond them was used)."""
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        values = {**self.reserved, **dict(tails)}
        try:
            _write(self.path, values)
        except OSError as exc:
            _log.warning("%s: cannot trim the sequence reservation: %s", self.path, exc)
