"""zstd compression of closed segments, in a background thread, crash-safely.

For ``X.seg``: scan it (only its valid blocks, up to the next segment's first sequence number, are
kept: a torn or overlapping tail is cut here), stream those bytes through zstd (level 3, frame
checksum on) into ``.X.seg.zst.tmp``, fsync it, rename it to ``X.seg.zst``, fsync the directory,
then remove ``X.seg`` and fsync the directory again. A crash at any point leaves either the plain
segment alone, or both (recovery then removes the plain one: the ``.zst`` exists only once it is
complete), never neither. A segment with corruption in the middle is left uncompressed, as
evidence, and reported.

python-zstandard releases the GIL while it compresses, so the flusher's loop keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zstandard

from consolidator.journal.files import COMPRESSED, fsync_dir
from consolidator.journal.recovery import scan_segment
from consolidator.journal.segment import JournalError

__all__ = ["CompressJob", "Compressor", "compress_segment"]

log = logging.getLogger("consolidator.journal")

LEVEL: Final = 3
CHUNK: Final = 1 << 20
RETRY_S: Final = 60.0


@dataclass(frozen=True)
class CompressJob:
    """Compress ``path``, keeping only blocks before ``limit_seq`` (the next segment's start)."""

    path: Path
    limit_seq: int | None


class CancelledError(Exception):
    """The compressor is stopping: the job was abandoned (its temporary file removed)."""


def compress_segment(
    job: CompressJob, *, level: int = LEVEL, cancelled: Callable[[], bool] = lambda: False
) -> Path:
    """Compress one closed segment crash-safely; returns the ``.zst`` path.

    Raises:
        JournalError: the segment is corrupt in the middle (left as it is).
        CancelledError: ``cancelled()`` became true.
        OSError: reading or writing failed (ENOSPC, EIO): the plain segment stays.
    """
    src = job.path
    scan = scan_segment(src, job.limit_seq)
    if scan.corruptions:
        raise JournalError(f"not compressing {src}: {scan.corruptions[0]}")
    keep = scan.end_offset
    final = src.with_name(src.name[: -len(".seg")] + COMPRESSED)
    tmp = src.with_name(f".{final.name}.tmp")
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            # Not a with block: leaving one ends the frame, which fails ("Src size is incorrect")
            # when fewer than the pledged ``keep`` bytes went in, and that error would replace
            # CancelledError or the JournalError below. An abandoned frame is just dropped.
            writer = cctx.stream_writer(fout, size=keep, closefd=False)
            left = keep
            while left:
                if cancelled():
                    raise CancelledError(str(src))
                chunk = fin.read(min(CHUNK, left))
                if not chunk:
                    raise JournalError(f"{src}: shrank while being compressed")
                writer.write(chunk)
                left -= len(chunk)
            writer.flush(zstandard.FLUSH_FRAME)  # ends the frame, into fout
            fout.flush()
            os.fsync(fout.fileno())
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(src.parent)
    src.unlink()
    fsync_dir(src.parent)
    return final


class Compressor:
    """A background thread compressing the segments submitted to it, one at a time."""

    def __init__(self, *, level: int = LEVEL) -> None:
        self.level = level
        self._queue: queue.Queue[CompressJob | None] = queue.Queue()
        self._stop = threading.Event()
        self._retry: list[tuple[float, CompressJob]] = []
        self._failing = False
        self.done = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="compressor", daemon=True)
        self._thread.start()

    def submit(self, path: Path, limit_seq: int | None) -> None:
        """Queue a closed segment for compression."""
        self._queue.put(CompressJob(path, limit_seq))

    def pending(self) -> int:
        """Jobs queued or waiting to be retried."""
        return self._queue.qsize() + len(self._retry)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Abandon the current job (its temporary file is removed) and stop the thread."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=1.0)
            except queue.Empty:
                job = None
            if job is None:
                self._requeue_due()
                continue
            self._do(job)

    def _requeue_due(self) -> None:
        now = time.monotonic()
        due = [job for at, job in self._retry if at <= now]
        self._retry = [(at, job) for at, job in self._retry if at > now]
        for job in due:
            self._queue.put(job)

    def _do(self, job: CompressJob) -> None:
        if not job.path.exists():
            return
        start = time.monotonic()
        try:
            final = compress_segment(job, level=self.level, cancelled=self._stop.is_set)
        except CancelledError:
            return
        except JournalError as exc:
            self.errors += 1
            log.error("%s", exc)
            return
        except OSError as exc:
            self.errors += 1
            if not self._failing:
                log.warning(
                    "cannot compress %s: %s (retrying every %.0f s)", job.path, exc, RETRY_S
                )
            self._failing = True
            self._retry.append((time.monotonic() + RETRY_S, job))
            return
        if self._failing:
            log.info("compression works again")
            self._failing = False
        self.done += 1
        before = final.stat().st_size
        log.info("compressed %s (%.1f s, %d bytes)", final, time.monotonic() - start, before)
