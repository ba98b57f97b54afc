"""The flusher: one process per host copying every ring under ``shm_dir`` into the journal.

Loop: discover rings (every ``poll_s``), read each in batches, append blocks, and every
``fsync_interval_ms`` (or ``fsync_bytes`` of one stream) persist new symbol names, fdatasync the
dirty segments, publish the durable positions, rotate. The writer never waits for any of it: the
flusher is only a ring reader, and a flusher that falls a whole ring behind (down, slow, disk full)
records the exact range it lost as a LOSS block, and counts it.

Start: recovery of every stream journal (`recovery.recover_stream`), then each ring reader starts
at the journal's next sequence number, so a ``kill -9`` loses and duplicates nothing the ring still
holds. Write errors (ENOSPC, EIO): the stream goes into an error state (position file, log once per
episode), its reader is rewound to what was written, and it retries with back-off; a failed
fdatasync abandons the segment (see `appender`). SIGTERM: drain, fdatasync, exit 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from consolidator.config import GlobalConfig, check_feed_name
from consolidator.counters import FILE_NAMES, CountersError, CountersFile
from consolidator.errors import ConfigError
from consolidator.journal.appender import JournalCounters, StreamJournal
from consolidator.journal.compress import Compressor
from consolidator.journal.files import journal_root, list_streams, stream_dir
from consolidator.journal.position import PositionFile
from consolidator.journal.recovery import StreamRecovery, recover_stream
from consolidator.journal.segment import JournalError, JournalFormatError
from consolidator.journal.symbols import SymbolJournal, symbols_path
from consolidator.journal.task import StreamTask
from consolidator.ring.reader import RingReader
from consolidator.ring.registry import ReaderSlot, register_reader
from consolidator.streams import STREAMS, open_stream_reader, ring_path

__all__ = ["Flusher", "FlusherLockedError"]

log = logging.getLogger("consolidator.flusher")

BATCHES_PER_PASS: Final = 8
BACKLOG_RECORDS: Final = 65536
DRAIN_LIMIT_S: Final = 10.0


class FlusherLockedError(JournalError):
    """Another flusher already runs on this journal."""


@dataclass
class _Feed:
    name: str
    position: PositionFile
    symbols: SymbolJournal
    counters: CountersFile
    symbols_failing: bool = False
    meta_copied: bytes = b""
    tasks: list[StreamTask] = field(default_factory=list)


class Flusher:
    """The flusher's state and loop: `start`, `run` until ``stop()`` is true, `close`.

    Args:
        config: paths and the ``[flusher]`` settings.
        fsync: the data sync call (tests inject failures).
        sync_log: append one JSON line per fdatasync (time, stream, sequence range) to this file.
        poll_s: how often to look for new feeds and streams.
        idle_s: sleep when a pass found nothing to do.
    """

    def __init__(
        self,
        config: GlobalConfig,
        *,
        fsync: Callable[[int], None] = os.fdatasync,
        sync_log: Path | None = None,
        poll_s: float = 1.0,
        idle_s: float = 0.005,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.settings = config.flusher
        self.shm_dir = config.shm_dir
        self.state_dir = config.state_dir
        self._fsync = fsync
        self._clock = clock
        self.poll_s = poll_s
        self.idle_s = idle_s
        self.feeds: dict[str, _Feed] = {}
        self.tasks: dict[tuple[str, str], StreamTask] = {}
        self.broken: set[tuple[str, str]] = set()
        self._failing: set[tuple[str, str]] = set()
        self._recovered: dict[tuple[str, str], StreamRecovery] = {}
        self._next_discover = 0.0
        self._last_sync = time.monotonic()
        self._lock_fd = -1
        self._sync_log: IO[str] | None = None
        self._sync_log_path = sync_log
        self.compressor: Compressor | None = None
        self.reader_slots: dict[tuple[str, str], ReaderSlot] = {}

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Take the journal lock, recover every stream journal, start the compressor.

        Raises:
            FlusherLockedError: another flusher holds the lock.
            JournalError: the journal directory is unusable.
        """
        root = journal_root(self.state_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(root / ".flusher.lock", os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise JournalError(f"cannot use the journal directory {root}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise FlusherLockedError(
                f"{root / '.flusher.lock'}: another flusher (pid {pid}) runs on this journal"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        if self.settings.compress:
            self.compressor = Compressor()
        if self._sync_log_path is not None:
            self._sync_log = open(self._sync_log_path, "a")  # noqa: SIM115 - closed in close()
        for feed, stream in list_streams(self.state_dir):
            if stream in STREAMS:
                try:
                    self._recover(feed, stream)
                except JournalFormatError as exc:
                    self._broken(feed, stream, exc)
                except (JournalError, OSError) as exc:
                    log.error("%s/%s: recovery failed: %s (retried when its ring appears)",
                              feed, stream, exc)  # fmt: skip
        log.info(
            "started: rings under %s, journal in %s, fdatasync every %d ms or %d bytes",
            self.shm_dir, root, self.settings.fsync_interval_ms, self.settings.fsync_bytes,
        )  # fmt: skip

    def _recover(self, feed: str, stream: str) -> StreamRecovery:
        directory = stream_dir(self.state_dir, feed, stream)
        rec = recover_stream(directory, repair=True)
        for path, offset, size, reason in rec.truncated:
            log.warning(
                "%s: torn tail at offset %d (%s): truncated %d bytes", path, offset, reason, size
            )
        for corruption in rec.corruptions:
            log.error("%s (segment sealed; appending continues in a new one)", corruption)
        for seg in rec.closed:
            later = [s.first_seq for s in rec.segments if s.first_seq > seg.first_seq]
            self._closed(seg.path, later[0] if later else rec.next_seq)
        self._recovered[(feed, stream)] = rec
        return rec

    def _broken(self, feed: str, stream: str, exc: Exception) -> None:
        log.error("%s/%s: journal unusable, not journaling this stream: %s", feed, stream, exc)
        self.broken.add((feed, stream))

    def _closed(self, path: Path, next_first: int | None) -> None:
        if self.compressor is not None:
            self.compressor.submit(path, next_first)

    def close(self) -> None:
        """Release everything (after `drain`)."""
        for task in self.tasks.values():
            task.close()
        for slot in self.reader_slots.values():
            slot.close()
        for feed in self.feeds.values():
            feed.position.close()
            feed.symbols.close()
            feed.counters.close()
        if self.compressor is not None:
            self.compressor.stop()
        if self._sync_log is not None:
            self._sync_log.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- discovery -----------------------------------------------------------------------------

    def discover(self) -> None:
        """Pick up feeds and streams that have appeared under ``shm_dir``."""
        try:
            names = sorted(os.listdir(self.shm_dir))
        except FileNotFoundError:
            return
        for name in names:
            try:
                check_feed_name(name)
            except ConfigError:
                continue
            for stream in STREAMS:
                key = (name, stream)
                if key in self.tasks or key in self.broken:
                    continue
                if ring_path(self.shm_dir, name, stream).exists():
                    try:
                        self._add(name, stream)
                    except JournalFormatError as exc:
                        self._broken(name, stream, exc)
                    except (JournalError, OSError) as exc:
                        if key not in self._failing:
                            log.error("%s/%s: cannot start journaling: %s (retrying)",
                                      name, stream, exc)  # fmt: skip
                        self._failing.add(key)
                    else:
                        self._failing.discard(key)
            feed = self.feeds.get(name)
            if feed is not None:
                self._copy_meta(feed)

    def _feed(self, name: str) -> _Feed:
        feed = self.feeds.get(name)
        if feed is None:
            position = PositionFile(self.shm_dir / name / "durable")
            symbols = SymbolJournal(
                symbols_path(self.state_dir, name), self.shm_dir / name / "symbols"
            )
            feed = self.feeds[name] = _Feed(name, position, symbols, self._counters_file(name))
        return feed

    def _counters_file(self, feed: str) -> CountersFile:
        """The feed's ``flusher.counters``; private memory if it cannot be created."""
        try:
            return CountersFile(
                self.shm_dir / feed / FILE_NAMES["flusher"], service="flusher", feed=feed
            )
        except CountersError as exc:
            log.warning("%s: no counters for the exporter: %s", feed, exc)
            return CountersFile(None, service="flusher", feed=feed)

    def _copy_meta(self, feed: _Feed) -> None:
        try:
            data = (self.shm_dir / feed.name / "feed.json").read_bytes()
        except OSError:
            return
        if data == feed.meta_copied:
            return
        target = journal_root(self.state_dir) / feed.name / "feed.json"
        with contextlib.suppress(OSError):
            if target.read_bytes() == data:
                feed.meta_copied = data
                return
        tmp = target.with_name(".feed.json.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.rename(target)
            feed.meta_copied = data
        except OSError as exc:
            log.warning("cannot copy feed metadata to %s: %s", target, exc.strerror)

    def _add(self, feed_name: str, stream: str) -> None:
        spec = STREAMS[stream]
        rec = self._recovered.pop((feed_name, stream), None)
        if rec is None:
            rec = self._recover(feed_name, stream)
        try:
            feed = self._feed(feed_name)
        except (JournalError, OSError):
            self._recovered[(feed_name, stream)] = rec
            raise
        journal = StreamJournal(
            rec.directory, feed_name, spec, self.settings, rec,
            on_closed=self._closed, fsync=self._fsync, clock=self._clock,
            counters=JournalCounters(feed.counters, stream),
        )  # fmt: skip

        def open_ring() -> RingReader:
            return open_stream_reader(self.shm_dir, feed_name, stream, start="tail")

        task = StreamTask(feed_name, spec, journal, feed.position, open_ring, self._clock)
        self.tasks[(feed_name, stream)] = task
        feed.tasks.append(task)
        slot = register_reader(self.shm_dir, feed_name, stream, "flusher")
        if slot is not None:
            self.reader_slots[(feed_name, stream)] = slot

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool]) -> None:
        """Loop until ``stop()`` is true, then drain the rings and sync."""
        while not stop():
            # Sleep unless there is a backlog: records trickling in are read every idle_s (they
            # wait for the next fdatasync anyway), so a steady flow does not keep a core busy.
            if self.step() < BACKLOG_RECORDS:
                time.sleep(self.idle_s)
        self.drain()

    def step(self) -> int:
        """One pass: discover (when due), read every ring, sync and rotate (when due).

        Returns the number of records moved.
        """
        now = time.monotonic()
        if now >= self._next_discover:
            self._next_discover = now + self.poll_s
            self.discover()
        moved = 0
        for task in self.tasks.values():
            if task.retry_at <= now:
                moved += task.pump(BATCHES_PER_PASS)
        now = time.monotonic()
        if now - self._last_sync >= self.settings.fsync_interval_ms / 1000:
            self.sync()
        else:
            limit = self.settings.fsync_bytes
            big = [t for t in self.tasks.values() if t.journal.dirty_bytes >= limit]
            if big:
                self.sync(big)
        wall = self._clock()
        for feed in self.feeds.values():
            feed.position.heartbeat(wall)
            feed.counters.heartbeat(wall)
        self._report_reads()
        return moved

    def _report_reads(self) -> None:
        """Each stream's read position and losses, for mdstat (the reader registry)."""
        for key, slot in self.reader_slots.items():
            task = self.tasks[key]
            reader = task.reader
            position = reader.position if reader is not None else task.journal.written_seq or 0
            slot.update(position, task.position.get(task.stream, "lost_records"))

    def drain(self) -> None:
        """Journal what the rings hold now (up to their current tails), then sync everything."""
        targets = {k: t.reader.tail() for k, t in self.tasks.items() if t.reader is not None}
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while time.monotonic() < deadline:
            busy = moved = 0
            for key, task in self.tasks.items():
                reader = task.reader
                if reader is None or key not in targets:
                    continue
                if reader.position < targets[key] or task.resume_at is not None:
                    busy += 1
                    if task.retry_at <= time.monotonic():
                        moved += task.pump(BATCHES_PER_PASS)
            if not busy:
                break
            if not moved:
                time.sleep(0.01)
        self.sync()

    # -- syncing -------------------------------------------------------------------------------

    def sync(self, tasks: list[StreamTask] | None = None) -> None:
        """Persist new symbol names, then fdatasync dirty segments and publish positions."""
        if tasks is None:
            self._last_sync = time.monotonic()
        todo = [t for t in (tasks if tasks is not None else self.tasks.values()) if t.journal.dirty]
        if not todo:
            return
        for feed_name in {t.feed for t in todo}:
            self._sync_symbols(self.feeds[feed_name])
        for task in todo:
            task.sync(self._sync_log)

    def _sync_symbols(self, feed: _Feed) -> None:
        try:
            feed.symbols.persist(feed.symbols.poll())
        except (OSError, JournalError) as exc:
            if not feed.symbols_failing:
                log.error("%s: cannot persist new symbol names: %s (retrying)", feed.name, exc)
            feed.symbols_failing = True
            return
        if feed.symbols_failing:
            log.info("%s: symbol names persisted again", feed.name)
            feed.symbols_failing = False
