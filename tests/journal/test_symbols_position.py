"""The journal's copy of the symbol table, restore_symbols, and the durable position file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consolidator.journal.position import (
    FILE_SIZE,
    FlusherState,
    PositionFile,
    StreamState,
    durable_lag_ns,
    read_positions,
)
from consolidator.journal.segment import JournalError
from consolidator.journal.symbols import (
    ENTRY,
    HEADER,
    SymbolJournal,
    load_symbols,
    restore_symbols,
    symbols_path,
)
from consolidator.symbols import SymbolTable, SymbolTableReader


def _table(path: Path, names: list[str]) -> None:
    table = SymbolTable(path)
    for name in names:
        table.intern(name)
    table.close()


def test_new_names_are_persisted_and_restored_with_the_same_ids(tmp_path: Path) -> None:
    shm, state = tmp_path / "shm", tmp_path / "state"
    _table(shm / "f" / "symbols", ["BTCUSDT", "ETHUSDT"])
    journal = SymbolJournal(symbols_path(state, "f"), shm / "f" / "symbols")
    journal.persist(journal.poll())
    assert journal.poll() == []
    _table(shm / "f" / "symbols", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    journal.persist(journal.poll())
    journal.close()
    assert load_symbols(symbols_path(state, "f")) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    os.unlink(shm / "f" / "symbols")  # reboot
    assert restore_symbols(state, shm, "f") == 3
    assert restore_symbols(state, shm, "f") == 0, "idempotent"
    reader = SymbolTableReader(shm / "f" / "symbols")
    try:
        assert reader.names() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    finally:
        reader.close()


def test_a_torn_entry_is_cut_and_the_name_copied_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shm, state = tmp_path / "shm", tmp_path / "state"
    _table(shm / "f" / "symbols", ["A", "B"])
    journal = SymbolJournal(symbols_path(state, "f"), shm / "f" / "symbols")
    journal.persist(journal.poll())
    journal.close()
    path = symbols_path(state, "f")
    data = path.read_bytes()
    assert len(data) == HEADER.size + 2 * ENTRY.size
    path.write_bytes(data[: HEADER.size + ENTRY.size + 30])  # second entry torn
    assert load_symbols(path) == ["A"]
    journal = SymbolJournal(path, shm / "f" / "symbols")
    journal.persist(journal.poll())
    journal.close()
    assert load_symbols(path) == ["A", "B"]
    assert "cut 30 bytes after the last valid entry" in caplog.text


def test_restore_refuses_a_table_with_other_names(tmp_path: Path) -> None:
    shm, state = tmp_path / "shm", tmp_path / "state"
    _table(shm / "f" / "symbols", ["A", "B"])
    journal = SymbolJournal(symbols_path(state, "f"), shm / "f" / "symbols")
    journal.persist(journal.poll())
    journal.close()
    os.unlink(shm / "f" / "symbols")
    _table(shm / "f" / "symbols", ["B"])
    with pytest.raises(JournalError, match="symbol id 0 is 'B' but the journal has 'A'"):
        restore_symbols(state, shm, "f")


def test_a_diverging_table_is_reported_not_persisted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shm, state = tmp_path / "shm", tmp_path / "state"
    _table(shm / "f" / "symbols", ["A"])
    journal = SymbolJournal(symbols_path(state, "f"), shm / "f" / "symbols")
    journal.persist(journal.poll())
    os.unlink(shm / "f" / "symbols")
    _table(shm / "f" / "symbols", ["Z", "Y"])  # recreated without restore_symbols
    assert journal.poll() == []
    journal.close()
    assert "diverges from the journal" in caplog.text
    assert load_symbols(symbols_path(state, "f")) == ["A"]


def test_position_file_round_trip(tmp_path: Path) -> None:
    assert read_positions(tmp_path, "f") is None
    pos = PositionFile(tmp_path / "f" / "durable")
    pos.set("depth", "durable_seq", 123)
    pos.add("depth", "lost_records", 5)
    pos.add("depth", "lost_records", 2)
    pos.set("depth", "state", StreamState.NO_SPACE)
    got = read_positions(tmp_path, "f")
    assert got is not None
    assert got.flusher_pid == os.getpid()
    assert got.flusher_alive()
    assert got.streams["depth"].durable_seq == 123
    assert got.streams["depth"].lost_records == 7
    assert got.streams["depth"].state is StreamState.NO_SPACE
    assert got.streams["trades"].durable_seq == 0
    pos.close()
    again = PositionFile(tmp_path / "f" / "durable")
    assert again.get("depth", "lost_records") == 7, "counters survive a flusher restart"
    again.close()
    got = read_positions(tmp_path, "f")
    assert got is not None
    assert got.flusher_state is FlusherState.STOPPED
    assert (tmp_path / "f" / "durable").stat().st_size == FILE_SIZE


def test_a_position_file_without_magic_is_not_read(tmp_path: Path) -> None:
    pos = PositionFile(tmp_path / "f" / "durable")
    pos.close()
    with open(tmp_path / "f" / "durable", "r+b") as f:
        f.write(b"\0" * 8)
    assert read_positions(tmp_path, "f") is None
    replaced = PositionFile(tmp_path / "f" / "durable")
    replaced.close()
    assert read_positions(tmp_path, "f") is not None


def test_durable_lag_is_zero_when_caught_up_and_the_newest_durable_age_otherwise(
    tmp_path: Path,
) -> None:
    pos = PositionFile(tmp_path / "f" / "durable")
    pos.set("trades", "durable_seq", 10)
    pos.set("trades", "ring_tail", 10)
    pos.set("trades", "durable_ts_ns", 1_000)
    got = read_positions(tmp_path, "f")
    assert got is not None
    assert durable_lag_ns(got.streams["trades"], 5_000) == 0
    pos.set("trades", "ring_tail", 12)
    got = read_positions(tmp_path, "f")
    assert got is not None
    assert durable_lag_ns(got.streams["trades"], 5_000) == 4_000
    pos.close()


def test_something_else_at_the_path_is_no_position_and_never_blocks(tmp_path: Path) -> None:
    """A FIFO there would block a plain open() forever (mdstat, the exporter); a directory or a
    file of another size is not a position file either."""
    feed = tmp_path / "f1"
    feed.mkdir()
    os.mkfifo(feed / "durable")
    assert read_positions(tmp_path, "f1") is None
    (feed / "durable").unlink()
    (feed / "durable").mkdir()
    assert read_positions(tmp_path, "f1") is None
    (feed / "durable").rmdir()
    (feed / "durable").write_bytes(b"\0" * 100)
    assert read_positions(tmp_path, "f1") is None
