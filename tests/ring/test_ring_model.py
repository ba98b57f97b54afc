"""The ring against a simple in-memory model (Hypothesis state machines), laps included."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consolidator.errors import RecordError
from consolidator.records import TRADE, TRADE_DTYPE
from consolidator.ring import (
    FixedRingReader,
    FixedRingWriter,
    RingKind,
    RingLayout,
    VariableRingReader,
    VariableRingWriter,
)

FIXED_CAPACITY = 8
VAR_CAPACITY = 16
HEAP = 4096


class _ReaderModel:
    """What a reader has seen: the records it got and the losses it reported."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.received = 0
        self.last_seq = start - 1

    def take(self, seqs: list[int], losses: list[tuple[int, int]], position: int) -> None:
        expected = self.last_seq + 1
        loss_iter = iter(losses)
        for first, count in loss_iter:
            assert first == expected, "a loss must start where the reader was"
            expected = first + count
        for seq in seqs:
            assert seq == expected, f"got seq {seq}, expected {expected}"
            expected += 1
        self.received += len(seqs)
        self.last_seq = expected - 1
        assert position == expected


class FixedRingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ringmodel"))
        layout = RingLayout(RingKind.FIXED, 1, 64, FIXED_CAPACITY)
        self.path = self.dir / "trades.ring"
        self.writer = FixedRingWriter(self.path, layout, TRADE.pack_into, TRADE_DTYPE)
        self.published: list[tuple[int, int, int]] = []
        self.readers: list[tuple[FixedRingReader, _ReaderModel]] = []
        self.lost = [0, 0, 0]
        for _ in range(3):
            reader = FixedRingReader(self.path, TRADE_DTYPE, TRADE, start="oldest")
            self.readers.append((reader, _ReaderModel(reader.position)))

    def teardown(self) -> None:
        for reader, _ in self.readers:
            reader.close()
        self.writer.close()
        shutil.rmtree(self.dir)

    @rule(values=st.lists(st.integers(0, 2**62), min_size=1, max_size=20))
    def publish(self, values: list[int]) -> None:
        for value in values:
            seq = self.writer.publish(
                value, value + 1, value ^ 0x5555, value, -value, 3, -2, -4, 1, 0
            )
            assert seq == len(self.published)
            self.published.append((value, value ^ 0x5555, -value))

    @rule(values=st.lists(st.integers(0, 2**62), min_size=1, max_size=30))
    def publish_batch(self, values: list[int]) -> None:
        batch = np.zeros(len(values), TRADE_DTYPE)
        batch["ts_event"] = values
        batch["ts_recv"] = [v + 1 for v in values]
        batch["trade_id"] = [v ^ 0x5555 for v in values]
        batch["qty_m"] = [-v for v in values]
        first = self.writer.publish_batch(batch)
        assert first == len(self.published)
        self.published.extend((v, v ^ 0x5555, -v) for v in values)

    def _check(self, index: int, seqs: list[int], rows: list[tuple[int, int, int]]) -> None:
        reader, model = self.readers[index]
        for seq, row in zip(seqs, rows, strict=True):
            assert self.published[seq] == row
        losses = [(loss.first_seq, loss.count) for loss in reader.drain_losses()]
        model.take(seqs, losses, reader.position)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 40))
    def read_batch(self, index: int, limit: int) -> None:
        reader = self.readers[index][0]
        before = reader.position
        backlog = len(self.published) - before
        batch = reader.read_batch(limit)
        if backlog <= FIXED_CAPACITY - 1:
            assert len(batch) == min(limit, backlog), "a reader within the ring loses nothing"
        rows = [(int(r["ts_event"]), int(r["trade_id"]), int(r["qty_m"])) for r in batch]
        self._check(index, [int(s) for s in batch["seq"]], rows)

    @rule()
    def read_one(self) -> None:
        reader = self.readers[2][0]
        record = reader.read_one()
        if record is None:
            assert reader.position == len(self.published)
            self._check(2, [], [])
            return
        self._check(2, [record[0]], [(record[1], record[4], record[6])])

    @invariant()
    def accounting(self) -> None:
        for reader, model in self.readers:
            assert model.received + reader.lost == reader.position - model.start
            assert reader.position <= len(self.published)


class VariableRingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="varmodel"))
        layout = RingLayout(RingKind.VARIABLE, 0, 32, VAR_CAPACITY, HEAP)
        self.path = self.dir / "depth.ring"
        self.writer = VariableRingWriter(self.path, layout)
        self.published: list[tuple[int, bytes]] = []
        self.readers = []
        for _ in range(2):
            reader = VariableRingReader(self.path, start="oldest")
            self.readers.append((reader, _ReaderModel(reader.position)))

    def teardown(self) -> None:
        for reader, _ in self.readers:
            reader.close()
        self.writer.close()
        shutil.rmtree(self.dir)

    @rule(size=st.integers(0, HEAP // 4), kind=st.integers(1, 6), fill=st.integers(0, 255))
    def publish(self, size: int, kind: int, fill: int) -> None:
        payload = bytes((fill + i) % 256 for i in range(size))
        seq = self.writer.publish(kind, payload)
        assert seq == len(self.published)
        self.published.append((kind, payload))

    @rule(size=st.integers(HEAP // 4 + 1, HEAP * 2))
    def too_large_is_refused(self, size: int) -> None:
        with pytest.raises(RecordError, match="exceeds"):
            self.writer.publish(1, b"x" * size)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 40), max_bytes=st.integers(1, 5000))
    def read_batch(self, index: int, limit: int, max_bytes: int) -> None:
        reader, model = self.readers[index]
        records = reader.read_batch(limit, max_bytes)
        for record in records:
            assert (record.record_type, record.payload) == self.published[record.seq]
        losses = [(loss.first_seq, loss.count) for loss in reader.drain_losses()]
        model.take([r.seq for r in records], losses, reader.position)

    @precondition(lambda self: len(self.published) > 0)
    @rule()
    def fresh_reader_from_oldest_sees_intact_records(self) -> None:
        with VariableRingReader(self.path, start="oldest") as reader:
            while True:
                records = reader.read_batch(64)
                if not records:
                    break
                for record in records:
                    assert (record.record_type, record.payload) == self.published[record.seq]

    @invariant()
    def accounting(self) -> None:
        for reader, model in self.readers:
            assert model.received + reader.lost == reader.position - model.start


TestFixedRingModel = FixedRingMachine.TestCase
TestFixedRingModel.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestVariableRingModel = VariableRingMachine.TestCase
TestVariableRingModel.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
