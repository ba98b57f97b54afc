"""Where the recorded exchange traffic lives: ``tests/data/recorded`` (origin and licence there)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECORDED"]

RECORDED = Path(__file__).resolve().parent / "data" / "recorded"
