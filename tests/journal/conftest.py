"""Fixtures shared by the journal's process tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.journal.helpers import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """Private shm and state directories for one test, removed afterwards."""
    yield from make_env(tmp_path)
