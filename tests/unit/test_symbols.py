"""The shared symbol table."""

from __future__ import annotations

from pathlib import Path

import pytest

from consolidator.errors import SymbolTableError
from consolidator.symbols import SymbolTable, SymbolTableReader


def test_ids_are_stable_and_shared_with_readers(tmp_path: Path) -> None:
    path = tmp_path / "feed" / "symbols"
    table = SymbolTable(path)
    assert table.intern("BTCUSDT") == 0
    assert table.intern("ETHUSDT") == 1
    assert table.intern("BTCUSDT") == 0
    reader = SymbolTableReader(path)
    assert reader.name(1) == "ETHUSDT"
    assert table.intern("BTC-27DEC24-100000-C") == 2
    assert reader.name(2) == "BTC-27DEC24-100000-C"
    assert reader.id("ETHUSDT") == 1
    assert reader.id("NOPE") is None
    assert reader.name(99) == "?99"


def test_table_survives_a_writer_restart(tmp_path: Path) -> None:
    path = tmp_path / "symbols"
    first = SymbolTable(path)
    first.intern("A")
    first.intern("B")
    first.close()
    again = SymbolTable(path)
    assert again.names() == ["A", "B"]
    assert again.intern("C") == 2


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "symbols"
    SymbolTable(path)
    with pytest.raises(SymbolTableError, match="another writer"):
        SymbolTable(path)


def test_bad_names_and_full_table(tmp_path: Path) -> None:
    table = SymbolTable(tmp_path / "symbols", capacity=2)
    with pytest.raises(SymbolTableError, match="1 to 62 bytes"):
        table.intern("X" * 63)
    with pytest.raises(SymbolTableError, match="1 to 62 bytes"):
        table.intern("")
    table.intern("A")
    table.intern("B")
    with pytest.raises(SymbolTableError, match="full"):
        table.intern("C")


def test_reader_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SymbolTableError, match="no symbol table"):
        SymbolTableReader(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(SymbolTableError, match="bad magic"):
        SymbolTableReader(junk)
