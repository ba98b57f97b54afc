"""Normalized market-data records, their binary layouts, and the lossless decimal codec.

Every value an exchange sends as a decimal is stored as an ``int64`` mantissa and an ``int8``
exponent (``value = mantissa * 10**exponent``). The codec keeps the digits exactly as sent, trailing
zeros included, so ``"61837.63000000"`` is stored as ``(6183763000000, -8)`` and both the value and
the original spelling are recoverable; anything it cannot hold exactly is refused with
`DecimalCodecError`, never rounded.

Times are integer nanoseconds since the Unix epoch: ``ts_event`` (the venue's event time, 0 when the
venue sends none), ``ts_recv`` (taken right after the frame left the socket) and ``ts_commit``
(stamped by the ring writer when the record is published).

Fixed-size records (trades, quotes) live in fixed rings and are read in batches as numpy structured
arrays. All of them begin with the same 32-byte prefix that the ring writer relies on::

    0        8          16         24          32
    +--------+----------+----------+-----------+----- record body ...
    | seq u8 | ts_event | ts_recv  | ts_commit |
    +--------+----------+----------+-----------+

Trade, 64 bytes (one cache line)::

    32 trade_id  u8      40 price_m  i8      48 qty_m  i8      56 symbol_id u4
    60 price_e   i1      61 qty_e    i1      62 side   u1      63 flags     u1

Quote (best bid/offer), 80 bytes::

    32 update_id u8 (0 = none)   40 bid_px_m i8   48 bid_qty_m i8   56 ask_px_m i8   64 ask_qty_m i8
    72 symbol_id u4   76 bid_px_e i1   77 bid_qty_e i1   78 ask_px_e i1   79 ask_qty_e i1

Variable-length records (depth updates, snapshots, events, raw frames) live in variable rings; the
ring's slot descriptor carries ``seq``, ``ts_commit`` and the record type, and the payload layouts
are in `consolidator.payloads`.
"""

from __future__ import annotations

import enum
import struct
from decimal import Decimal
from typing import Final

import numpy as np

from consolidator.errors import DecimalCodecError

__all__ = [
    "NO_SYMBOL",
    "QUOTE",
    "QUOTE_DTYPE",
    "RECORD_PREFIX_SIZE",
    "TRADE",
    "TRADE_DTYPE",
    "EventKind",
    "RecordType",
    "Side",
    "TradeFlag",
    "decimal_str",
    "decode_decimal",
    "encode_decimal",
    "parse_decimal",
    "to_decimal",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
EXP_MIN: Final = -128
EXP_MAX: Final = 127
NO_SYMBOL: Final = 0xFFFFFFFF
RECORD_PREFIX_SIZE: Final = 32


class RecordType(enum.IntEnum):
    """Record type tags, stored in ring headers and slot descriptors."""

    TRADE = 1
    QUOTE = 2
    DEPTH = 3
    SNAPSHOT = 4
    EVENT = 5
    RAW = 6


class Side(enum.IntEnum):
    """The taker's (aggressor's) side of a trade."""

    UNKNOWN = 0
    BUY = 1
    SELL = 2


class TradeFlag(enum.IntFlag):
    """Bits of the trade ``flags`` byte."""

    NONE = 0
    AGGREGATED = 1  # trade_id is an aggregate trade id (Binance aggTrade)
    OFF_BOOK = 2  # liquidation, insurance fund, ADL: not an order-book match


class EventKind(enum.IntEnum):
    """Kinds of event records in the ``events`` stream."""

    CONNECT = 1
    DISCONNECT = 2
    SUBSCRIBE = 3
    GAP = 4
    RESYNC = 5
    LOSS = 6
    ROTATION = 7
    SYMBOL_ADDED = 8
    SYMBOL_REMOVED = 9
    BOOK_SYNCED = 10
    WRITER_START = 11
    WRITER_STOP = 12
    PARSE_ERROR = 13
    SERVER_SHUTDOWN = 14
    RATE_LIMITED = 15


# ----------------------------------------------------------------------------------------------
# Fixed-size record layouts. The struct and the numpy dtype describe the same bytes; a test
# checks that every field sits at the same offset in both.

TRADE: Final = struct.Struct("<QqqqQqqIbbBB")
TRADE_DTYPE: Final = np.dtype(
    [
        ("seq", "<u8"),
        ("ts_event", "<i8"),
        ("ts_recv", "<i8"),
        ("ts_commit", "<i8"),
        ("trade_id", "<u8"),
        ("price_m", "<i8"),
        ("qty_m", "<i8"),
        ("symbol_id", "<u4"),
        ("price_e", "i1"),
        ("qty_e", "i1"),
        ("side", "u1"),
        ("flags", "u1"),
    ]
)

QUOTE: Final = struct.Struct("<QqqqQqqqqIbbbb")
QUOTE_DTYPE: Final = np.dtype(
    [
        ("seq", "<u8"),
        ("ts_event", "<i8"),
        ("ts_recv", "<i8"),
        ("ts_commit", "<i8"),
        ("update_id", "<u8"),
        ("bid_px_m", "<i8"),
        ("bid_qty_m", "<i8"),
        ("ask_px_m", "<i8"),
        ("ask_qty_m", "<i8"),
        ("symbol_id", "<u4"),
        ("bid_px_e", "i1"),
        ("bid_qty_e", "i1"),
        ("ask_px_e", "i1"),
        ("ask_qty_e", "i1"),
    ]
)

# ----------------------------------------------------------------------------------------------
# The decimal codec.

_DIGITS: Final = frozenset("0123456789")
_MAX_SCALE: Final = -EXP_MIN


def _checked(mantissa: int, exponent: int, text: object) -> tuple[int, int]:
    if not INT64_MIN <= mantissa <= INT64_MAX:
        # Trailing zeros cost mantissa range but carry no value: drop just enough of them to fit
        # ("95000000000.00000000" is 95000000000 exactly), and refuse only real precision.
        while mantissa % 10 == 0 and mantissa and not INT64_MIN <= mantissa <= INT64_MAX:
            mantissa //= 10
            exponent += 1
        if not INT64_MIN <= mantissa <= INT64_MAX:
            raise DecimalCodecError(
                f"decimal has more significant digits than an int64 mantissa holds: {text!r}"
            )
    if not EXP_MIN <= exponent <= EXP_MAX:
        raise DecimalCodecError(f"decimal exponent out of the int8 range: {text!r}")
    return mantissa, exponent


def encode_decimal(text: str | int) -> tuple[int, int]:
    """Encode a decimal string (or JSON integer) as ``(mantissa, exponent)``, exactly.

    Accepts plain notation (``"0.00000123"``, ``"-5"``, ``"61837.63000000"``) and scientific
    notation (``"1e-05"``, ``"1.5E+3"``). Digits are kept as sent: trailing zeros stay in the
    mantissa, unless they alone push it past int64; then just enough of them are dropped (the
    value is unchanged).

    Raises:
        DecimalCodecError: the text is not a finite decimal, or needs more than an int64 mantissa
            or an int8 exponent.
    """
    if type(text) is str and text.isascii():
        # Fast path, what Binance sends: unsigned plain notation. For ASCII text, str.isdigit()
        # is exactly [0-9] (no '_', spaces, signs or a second '.', which int() or the split
        # would let through).
        head, dot, frac = text.partition(".")
        if frac:
            if (
                head
                and (digits := head + frac).isdigit()
                and (mantissa := int(digits)) <= INT64_MAX
                and len(frac) <= _MAX_SCALE
            ):
                return mantissa, -len(frac)
        elif not dot and text.isdigit() and (mantissa := int(text)) <= INT64_MAX:
            return mantissa, 0
    if type(text) is int:
        return _checked(text, 0, text)
    if not isinstance(text, str):
        raise DecimalCodecError(f"not a decimal string: {text!r}")
    head, dot, frac = text.partition(".")
    body = head[1:] if head[:1] == "-" else head
    # Signed or overflowing plain notation (ASCII digits only: str.isdigit accepts '²' too).
    if body and _DIGITS.issuperset(body) and (not dot or (frac and _DIGITS.issuperset(frac))):
        return _checked(int(head + frac), -len(frac), text)
    return _encode_scientific(text)


def _encode_scientific(text: str) -> tuple[int, int]:
    mant_text, e, exp_text = text.lower().partition("e")
    if not e or not exp_text or not text.isascii():
        raise DecimalCodecError(f"not a decimal number: {text!r}")
    sign = exp_text[:1]
    exp_digits = exp_text[1:] if sign in ("+", "-") else exp_text
    if not exp_digits or not _DIGITS.issuperset(exp_digits):
        raise DecimalCodecError(f"not a decimal number: {text!r}")
    if "e" in mant_text:
        raise DecimalCodecError(f"not a decimal number: {text!r}")
    try:
        mantissa, exponent = encode_decimal(mant_text)
    except DecimalCodecError:
        raise DecimalCodecError(f"not a decimal number: {text!r}") from None
    shift = int(exp_digits)
    exponent += -shift if sign == "-" else shift
    return _checked(mantissa, exponent, text)


def to_decimal(mantissa: int, exponent: int) -> Decimal:
    """The exact `Decimal` of an encoded value, digits as sent."""
    sign = 1 if mantissa < 0 else 0
    digits = tuple(int(c) for c in str(abs(mantissa)))
    return Decimal((sign, digits, exponent))


def decode_decimal(mantissa: int, exponent: int) -> str:
    """The plain-notation string of an encoded value, digits as sent (trailing zeros kept)."""
    negative = mantissa < 0
    digits = str(-mantissa if negative else mantissa)
    if exponent >= 0:
        out = digits + "0" * exponent if mantissa else "0"
    else:
        scale = -exponent
        if len(digits) <= scale:
            digits = "0" * (scale - len(digits) + 1) + digits
        out = f"{digits[:-scale]}.{digits[-scale:]}"
    return f"-{out}" if negative else out


def decimal_str(mantissa: int, exponent: int) -> str:
    """Canonical plain notation: no exponent, no trailing fractional zeros ("61837.63", "0")."""
    text = decode_decimal(mantissa, exponent)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        return "0"
    return text


def parse_decimal(value: str | int | Decimal) -> tuple[int, int]:
    """Encode a `Decimal` (or anything `encode_decimal` takes), exactly."""
    if isinstance(value, Decimal):
        sign, digits, exp = value.as_tuple()
        if not isinstance(exp, int):
            raise DecimalCodecError(f"not a finite decimal: {value!r}")
        mantissa = int("".join(map(str, digits)) or "0")
        return _checked(-mantissa if sign else mantissa, exp, value)
    return encode_decimal(value)
