"""The durable journal: segment format, recovery, the flusher, history->live reading, replay.

Modules: `segment` (the on-disk format), `files` (paths, listing, sequential reading),
`recovery` (torn tails, corruption, `next_seq`), `appender` (one stream's segments on the writing
side), `task` (one ring into one journal), `flusher` (the process), `position` (the published
durable positions), `symbols` (the persisted symbol table, `restore_symbols`), `compress` (zstd of
closed segments), `cursor` and `history` (reading), `replay` and `main` (commands).
"""

from consolidator.journal.history import HistoryReader, next_seq, restore_symbols
from consolidator.journal.position import read_positions

__all__ = ["HistoryReader", "next_seq", "read_positions", "restore_symbols"]
