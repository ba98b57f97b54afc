"""The decimal codec, record layouts and payload encodings."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consolidator.errors import DecimalCodecError, RecordError
from consolidator.payloads import (
    DEPTH_HEADER,
    LEVEL,
    LEVEL_DTYPE,
    Depth,
    Event,
    Raw,
    decode_depth,
    decode_event,
    decode_raw,
    depth_levels,
    encode_depth,
    encode_event,
    encode_raw,
)
from consolidator.records import (
    QUOTE,
    QUOTE_DTYPE,
    TRADE,
    TRADE_DTYPE,
    EventKind,
    decimal_str,
    decode_decimal,
    encode_decimal,
    parse_decimal,
    to_decimal,
)

EXCHANGE_STRINGS = [
    "0.00000123",
    "61837.63000000",
    "123456789012.5",
    "0",
    "0.00000000",
    "-42.10",
    "100",
    "92294.5",
]


@pytest.mark.parametrize("text", EXCHANGE_STRINGS)
def test_plain_strings_round_trip_digit_for_digit(text: str) -> None:
    assert decode_decimal(*encode_decimal(text)) == text
    assert to_decimal(*encode_decimal(text)) == Decimal(text)


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("1e-05", Decimal("0.00001"), "0.00001"),
        ("101872.0", Decimal("101872"), "101872"),
        ("1.5E+3", Decimal("1500"), "1500"),
        ("2.5e2", Decimal("250"), "250"),
        ("61837.63000000", Decimal("61837.63"), "61837.63"),
        ("0.00000000", Decimal(0), "0"),
        ("-0.0", Decimal(0), "0"),
    ],
)
def test_scientific_and_canonical_forms(text: str, value: Decimal, canonical: str) -> None:
    encoded = encode_decimal(text)
    assert to_decimal(*encoded) == value
    assert decimal_str(*encoded) == canonical


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("95000000000.00000000", (9_500_000_000_000_000_000 // 10, -7)),
        ("92233720368.54775807", (9_223_372_036_854_775_807, -8)),
        ("-95000000000.00000000", (-950_000_000_000_000_000, -7)),
        ("100000000000000000000", (1_000_000_000_000_000_000, 2)),
        ("1." + "0" * 200, (1_000_000_000_000_000_000, -18)),
    ],
)
def test_trailing_zeros_give_way_before_precision_is_refused(
    text: str, encoded: tuple[int, int]
) -> None:
    assert encode_decimal(text) == encoded
    assert to_decimal(*encoded) == Decimal(text)


def test_the_smallest_exponent_is_accepted_in_plain_notation() -> None:
    assert encode_decimal("0." + "0" * 127 + "1") == (1, -128)


def test_json_integers_are_accepted() -> None:
    assert encode_decimal(101872) == (101872, 0)


@pytest.mark.parametrize(
    "bad",
    ["", "1.", ".5", "1_000", " 1", "1 ", "nan", "inf", "1e", "1e+", "²", "١٢", "0x10", "--1",
     "1e5e5", "99999999999999999999", "1e200", "1e-200", "+1", "1.2.3", "1..2", "1.2.", "1.-2",
     "1.+2", "1. 2", "1._2", "0." + "0" * 128 + "1"],
)  # fmt: skip
def test_what_cannot_be_held_exactly_is_refused(bad: str) -> None:
    with pytest.raises(DecimalCodecError, match="decimal"):
        encode_decimal(bad)


def test_non_strings_are_refused() -> None:
    with pytest.raises(DecimalCodecError):
        encode_decimal(1.5)  # type: ignore[arg-type]


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: len(d.as_tuple().digits) <= 18 and -100 <= int(d.as_tuple().exponent) <= 100
    )
)
def test_any_decimal_round_trips_exactly(value: Decimal) -> None:
    plain = format(value, "f")
    encoded = encode_decimal(plain)
    assert to_decimal(*encoded) == value
    # Digits are kept as spelled; only the sign of a negative zero is not representable.
    assert decode_decimal(*encoded) == (plain.lstrip("-") if value.is_zero() else plain)
    assert Decimal(decimal_str(*encoded)) == value
    assert to_decimal(*parse_decimal(value)) == value
    scientific = f"{value:e}"
    assert to_decimal(*encode_decimal(scientific)) == Decimal(scientific)


@given(st.integers(min_value=-(10**18), max_value=10**18), st.integers(min_value=-30, max_value=0))
def test_plain_spelling_is_kept_digit_for_digit(mantissa: int, exponent: int) -> None:
    text = decode_decimal(mantissa, exponent)
    assert encode_decimal(text) == (mantissa, exponent) or mantissa == 0
    assert decode_decimal(*encode_decimal(text)) == text


@given(st.text(max_size=12))
def test_arbitrary_text_is_encoded_exactly_or_refused(text: str) -> None:
    try:
        mantissa, exponent = encode_decimal(text)
    except DecimalCodecError:
        return
    assert to_decimal(mantissa, exponent) == Decimal(text)


@given(st.text(alphabet="0123456789.-+eE_ ", max_size=24))
def test_number_like_text_is_encoded_exactly_or_refused(text: str) -> None:
    try:
        mantissa, exponent = encode_decimal(text)
    except DecimalCodecError:
        return
    assert -(2**63) <= mantissa < 2**63
    assert -128 <= exponent <= 127
    assert to_decimal(mantissa, exponent) == Decimal(text)


@pytest.mark.parametrize(("record", "dtype"), [(TRADE, TRADE_DTYPE), (QUOTE, QUOTE_DTYPE)])
def test_struct_and_dtype_describe_the_same_bytes(record: object, dtype: np.dtype[np.void]) -> None:
    import struct

    assert isinstance(record, struct.Struct)
    assert record.size == dtype.itemsize
    values = tuple(range(1, len(dtype.names or ()) + 1))
    packed = record.pack(*values)
    row = np.frombuffer(packed, dtype)[0]
    assert tuple(int(v) for v in row.tolist()) == values


def test_trade_record_is_one_cache_line() -> None:
    assert TRADE_DTYPE.itemsize == 64
    assert TRADE_DTYPE.names is not None
    assert TRADE_DTYPE.names[:4] == ("seq", "ts_event", "ts_recv", "ts_commit")
    assert QUOTE_DTYPE.names is not None
    assert QUOTE_DTYPE.names[:4] == ("seq", "ts_event", "ts_recv", "ts_commit")


def test_depth_payload_round_trips_with_hundreds_of_levels() -> None:
    bids = [(6_183_763_000_000 - i, -8, 1000 + i, -3) for i in range(500)]
    asks = [(6_183_764_000_000 + i, -8, 0, 0) for i in range(300)]
    depth = Depth(1, 2, 7, 100, 160, 99, bids, asks)
    payload = encode_depth(depth)
    assert len(payload) == DEPTH_HEADER.size + LEVEL.size * 800
    assert decode_depth(payload) == depth
    bid_arr, ask_arr = depth_levels(bytes(payload))
    assert bid_arr.dtype == LEVEL_DTYPE
    assert len(bid_arr) == 500
    assert len(ask_arr) == 300
    assert int(bid_arr["price_m"][3]) == bids[3][0]
    assert int(ask_arr["qty_m"][0]) == 0


def test_depth_without_previous_id_keeps_none() -> None:
    depth = Depth(1, 2, 3, 10, 12, None, [], [(1, 0, 2, 0)], snapshot=True)
    assert decode_depth(encode_depth(depth), snapshot=True) == depth


def test_out_of_range_depth_field_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="out of range"):
        encode_depth(Depth(1, 2, 3, -1, 12, None, [], []))


def test_event_and_raw_payloads_round_trip() -> None:
    event = Event(EventKind.GAP, '{"expected": 5, "got": 9}', 4, 123)
    assert decode_event(encode_event(event)) == event
    raw = Raw(99, 3, b'{"e":"trade"}')
    assert decode_raw(encode_raw(raw)) == raw


def test_unknown_event_kind_decodes_as_an_int() -> None:
    payload = encode_event(Event(EventKind.GAP, "x"))
    patched = payload[:12] + (999).to_bytes(2, "little") + payload[14:]
    assert decode_event(patched).kind == 999
