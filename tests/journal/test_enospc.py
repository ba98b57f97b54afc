"""Disk full: the writer is unaffected; the flusher reports, retries, and resumes when space
returns, recording loss only for what the ring no longer held (a small tmpfs in a private mount
namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.journal.scenario_enospc import COUNT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
HAVE_PRIVATE_MOUNTS = os.geteuid() == 0 and shutil.which("unshare") is not None


@pytest.mark.skipif(not HAVE_PRIVATE_MOUNTS, reason="needs root for a private tmpfs")
def test_disk_full_twice_writer_unaffected_flusher_resumes_loss_only_beyond_the_ring(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    script = (
        f'mount -t tmpfs -o size=64m tmpfs "{state}" && '
        f'exec "{sys.executable}" -m tests.journal.scenario_enospc "{tmp_path}"'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    writer = summary["writer"]
    assert writer["published"] == COUNT, "the writer published everything, never blocked"
    assert writer["end"]["trades"] == COUNT, "its sequence went on through both outages"
    assert summary["losses"]["trades"], summary["losses"]
    # Logged once per episode (a stream may squeeze a block into a partly used page and then fail
    # again, which is a new episode), never per record or per retry.
    assert 2 <= len(summary["nospace_lines"]) <= 8, summary["nospace_lines"]
    assert 2 <= len(summary["recovered_lines"]) <= 8, summary["recovered_lines"]
