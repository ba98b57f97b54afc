"""Shared-memory rings: one writer, any number of lock-free readers (layout in `layout`)."""

from consolidator.ring.layout import RingKind, RingLayout, WriterState
from consolidator.ring.reader import (
    FixedRingReader,
    Loss,
    RingReader,
    VariableRingReader,
    VarRecord,
    WriterInfo,
    open_reader,
)
from consolidator.ring.writer import FixedRingWriter, RingWriter, VariableRingWriter

__all__ = [
    "FixedRingReader",
    "FixedRingWriter",
    "Loss",
    "RingKind",
    "RingLayout",
    "RingReader",
    "RingWriter",
    "VarRecord",
    "VariableRingReader",
    "VariableRingWriter",
    "WriterInfo",
    "WriterState",
    "open_reader",
]
