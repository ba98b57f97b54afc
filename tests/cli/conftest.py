"""Fixtures of the command tests: a feed written by the synthetic writer, finished or live."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.synthetic import FEED, synthetic_writer
from tests.feed.helpers import REPO, wait_until


def _config(root: Path, shm: Path) -> dict[str, str]:
    (root / "feeds").mkdir(exist_ok=True)
    (root / "consolidator.toml").write_text(f'shm_dir = "{shm}"\n')
    return {"CONSOLIDATOR_CONFIG_DIR": str(root), "CONSOLIDATOR_SHM_DIR": str(shm)}


@pytest.fixture
def feed_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A finished feed ``demo`` (a writer that ran 0.2 s); the environment that selects it
    (``CONSOLIDATOR_SHM_DIR`` is the shm_dir)."""
    shm = Path("/dev/shm") / f"cli-{tmp_path.name}"
    env = _config(tmp_path, shm)
    synthetic_writer(shm, rate=5000, stop_after_s=0.2)
    yield env
    shutil.rmtree(shm, ignore_errors=True)


@pytest.fixture
def live_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """Feed ``demo`` with its synthetic writer running (200 records/s, a minute at most) in its
    own process; the environment and the shm_dir."""
    shm = Path("/dev/shm") / f"cli-live-{tmp_path.name}"
    env = _config(tmp_path, shm)
    code = (
        "from pathlib import Path; from tests.cli.synthetic import synthetic_writer as w; "
        f"w(Path({str(shm)!r}), 200, 60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: (shm / FEED / "events.ring").exists(), 30, "the synthetic writer")
        yield env, shm
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(shm, ignore_errors=True)
