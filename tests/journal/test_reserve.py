"""Sequence reservations: start above anything possibly used, renew ahead, trim at a clean stop."""

from __future__ import annotations

from pathlib import Path

from consolidator.journal.reserve import SequenceReservation, load_reserved
from tests.wait import wait_until


def test_a_new_writer_starts_above_the_reservation_and_the_journal(tmp_path: Path) -> None:
    assert load_reserved(tmp_path, "f") == {}
    first = SequenceReservation(tmp_path, "f", ahead=1000)
    assert first.start_of("trades", 40) == 40
    first.reserve_now({"trades": 40, "events": 3})
    assert load_reserved(tmp_path, "f") == {"trades": 1040, "events": 1003}
    # A crash: the next writer knows nothing but the file.
    again = SequenceReservation(tmp_path, "f", ahead=1000)
    assert again.start_of("trades", 500) == 1040, "numbers up to 1040 may have been used"
    assert again.start_of("trades", 2000) == 2000, "the journal may already be beyond it"
    assert again.start_of("quotes", 7) == 7


def test_renewal_happens_in_the_background_before_the_tail_gets_there(tmp_path: Path) -> None:
    reservation = SequenceReservation(tmp_path, "f", ahead=1000)
    reservation.reserve_now({"trades": 0})
    reservation.check({"trades": 100})
    assert load_reserved(tmp_path, "f") == {"trades": 1000}, "far from the limit: no renewal"
    reservation.check({"trades": 600})
    wait_until(lambda: load_reserved(tmp_path, "f") == {"trades": 1600}, 60, "the renewal")
    assert reservation.overruns == 0
    reservation.check({"trades": 5000})
    assert reservation.overruns == 1, "passing the reservation is counted, never waited for"


def test_a_clean_stop_trims_to_the_tails(tmp_path: Path) -> None:
    reservation = SequenceReservation(tmp_path, "f", ahead=1000)
    reservation.reserve_now({"trades": 10})
    reservation.release({"trades": 25})
    assert SequenceReservation(tmp_path, "f").start_of("trades", 25) == 25


def test_an_unreadable_file_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "f" / "reserved"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_reserved(tmp_path, "f") == {}
