"""Synthetic symbol definitions: tick/step grids and decimal-string formatting."""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal

from consolidator.sim.config import Venue

__all__ = [
    "SymbolSpec",
    "build_specs",
    "format_units",
    "make_spec",
    "spec_for_name",
]

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")

# symbol, base, quote, reference price, tick size, step size
_SPOT_CATALOGUE: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("BTCUSDT", "BTC", "USDT", "61837.63", "0.01", "0.00001"),
    ("ETHUSDT", "ETH", "USDT", "3456.78", "0.01", "0.0001"),
    ("PEPEUSDT", "PEPE", "USDT", "0.00000123", "0.00000001", "1"),
    ("ETHBTC", "ETH", "BTC", "0.05432", "0.00001", "0.0001"),
    ("BNBUSDT", "BNB", "USDT", "584.30", "0.01", "0.001"),
    ("XRPUSDT", "XRP", "USDT", "0.5234", "0.0001", "0.1"),
    ("DOGEUSDT", "DOGE", "USDT", "0.12345", "0.00001", "1"),
    ("SHIBUSDT", "SHIB", "USDT", "0.00001234", "0.00000001", "1"),
    ("SOLUSDT", "SOL", "USDT", "145.67", "0.01", "0.001"),
    ("ADAUSDT", "ADA", "USDT", "0.3512", "0.0001", "0.1"),
    ("LINKUSDT", "LINK", "USDT", "14.23", "0.01", "0.01"),
    ("BTCEUR", "BTC", "EUR", "56789.12", "0.01", "0.00001"),
)

_USDM_CATALOGUE: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("BTCUSDT", "BTC", "USDT", "61800.20", "0.10", "0.001"),
    ("ETHUSDT", "ETH", "USDT", "3456.78", "0.01", "0.001"),
    ("1000PEPEUSDT", "1000PEPE", "USDT", "0.0012300", "0.0000001", "1"),
    ("BNBUSDT", "BNB", "USDT", "584.300", "0.010", "0.01"),
    ("XRPUSDT", "XRP", "USDT", "0.5234", "0.0001", "0.1"),
    ("DOGEUSDT", "DOGE", "USDT", "0.123450", "0.000010", "1"),
    ("1000SHIBUSDT", "1000SHIB", "USDT", "0.012340", "0.000001", "1"),
    ("SOLUSDT", "SOL", "USDT", "145.6700", "0.0100", "1"),
    ("ADAUSDT", "ADA", "USDT", "0.35120", "0.00010", "1"),
    ("LINKUSDT", "LINK", "USDT", "14.230", "0.001", "0.01"),
)


def format_units(units: int, decimals: int) -> str:
    """Format a non-negative integer number of ``10**-decimals`` units as a decimal string.

    >>> format_units(6183763000000, 8)
    '61837.63000000'
    """
    if decimals == 0:
        return str(units)
    digits = str(units).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"


def _decimals(text: str) -> int:
    exponent = Decimal(text).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    written = len(text.partition(".")[2])
    return max(written, -exponent, 0)


def _units(text: str, decimals: int) -> int:
    return int(Decimal(text).scaleb(decimals))


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One tradable symbol: its grids and its text formatting.

    Prices are kept as integer ticks and quantities as integer steps; strings are produced
    with a fixed number of decimals.

    Attributes:
        symbol: Uppercase symbol, e.g. ``BTCUSDT``.
        base: Base asset.
        quote: Quote asset.
        price_decimals: Decimals of every price string.
        tick: Tick size in ``10**-price_decimals`` units.
        qty_decimals: Decimals of every quantity string.
        step: Step size in ``10**-qty_decimals`` units.
        tick_precision: Decimals of the tick size itself (USD-M ``pricePrecision``).
        step_precision: Decimals of the step size itself (USD-M ``quantityPrecision``).
        ref_ticks: Initial mid price, in ticks.
    """

    symbol: str
    base: str
    quote: str
    price_decimals: int
    tick: int
    qty_decimals: int
    step: int
    tick_precision: int
    step_precision: int
    ref_ticks: int

    @property
    def stream_prefix(self) -> str:
        """Lowercase symbol as used in stream names."""
        return self.symbol.lower()

    def price(self, ticks: int) -> str:
        """Price string of ``ticks``."""
        return format_units(ticks * self.tick, self.price_decimals)

    def qty(self, steps: int) -> str:
        """Quantity string of ``steps``."""
        return format_units(steps * self.step, self.qty_decimals)

    def zero_qty(self) -> str:
        """The zero quantity string (level removal)."""
        return format_units(0, self.qty_decimals)


def make_spec(
    symbol: str,
    base: str,
    quote: str,
    ref_price: str,
    tick_size: str,
    step_size: str,
    fixed_decimals: int | None,
) -> SymbolSpec:
    """Build a spec from decimal strings.

    Args:
        symbol: Uppercase symbol name.
        base: Base asset.
        quote: Quote asset.
        ref_price: Initial mid price.
        tick_size: Price increment.
        step_size: Quantity increment.
        fixed_decimals: Decimals of all strings (spot: 8) or None for the grid's own.
    """
    tick_precision = _decimals(tick_size)
    step_precision = _decimals(step_size)
    price_decimals = tick_precision if fixed_decimals is None else fixed_decimals
    qty_decimals = step_precision if fixed_decimals is None else fixed_decimals
    tick = _units(tick_size, price_decimals)
    step = _units(step_size, qty_decimals)
    if tick <= 0 or step <= 0:
        raise ValueError(f"{symbol}: tick and step must be positive")
    ref_ticks = _units(ref_price, price_decimals) // tick
    if ref_ticks < 2:
        raise ValueError(f"{symbol}: reference price must be at least two ticks")
    return SymbolSpec(
        symbol=symbol,
        base=base,
        quote=quote,
        price_decimals=price_decimals,
        tick=tick,
        qty_decimals=qty_decimals,
        step=step,
        tick_precision=tick_precision,
        step_precision=step_precision,
        ref_ticks=ref_ticks,
    )


def _split_pair(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-3], symbol[-3:]


def _random_grid(rng: random.Random) -> tuple[str, str, str]:
    price_exp = rng.randint(-5, 4)
    mantissa = Decimal(rng.randint(1000, 9999)) / 1000
    tick_exp = max(price_exp - 4, -8)
    step_exp = min(0, max(-5, -price_exp - 1))
    ref = (mantissa.scaleb(price_exp)).quantize(Decimal(1).scaleb(tick_exp))
    return str(ref), str(Decimal(1).scaleb(tick_exp)), str(Decimal(1).scaleb(step_exp))


def _plain(text: str) -> str:
    value = Decimal(text)
    return f"{value:f}"


def _catalogue(venue: Venue) -> tuple[tuple[str, str, str, str, str, str], ...]:
    return _SPOT_CATALOGUE if venue is Venue.SPOT else _USDM_CATALOGUE


def spec_for_name(symbol: str, venue: Venue, seed: int, fixed_decimals: int | None) -> SymbolSpec:
    """The spec of a named symbol: from the catalogue, else a seeded random grid."""
    if not _SYMBOL_RE.match(symbol):
        raise ValueError(f"invalid symbol name {symbol!r} (uppercase letters/digits)")
    for entry in _catalogue(venue):
        if entry[0] == symbol:
            return make_spec(*entry, fixed_decimals=fixed_decimals)
    base, quote = _split_pair(symbol)
    rng = random.Random(zlib.crc32(symbol.encode()) ^ seed)
    ref, tick, step = (_plain(x) for x in _random_grid(rng))
    return make_spec(symbol, base, quote, ref, tick, step, fixed_decimals)


def build_specs(
    venue: Venue, names: tuple[str, ...], count: int, seed: int, fixed_decimals: int | None
) -> list[SymbolSpec]:
    """Specs for an explicit name list, or for the first ``count`` generated symbols.

    Generated symbols start with the built-in catalogue (BTC-like, tiny-price PEPE-like,
    cross pairs...) and continue with ``S0001USDT``-style names on random grids.
    """
    if names:
        if len(set(names)) != len(names):
            raise ValueError("duplicate symbol in --symbols")
        return [spec_for_name(n, venue, seed, fixed_decimals) for n in names]
    specs: list[SymbolSpec] = []
    catalogue = _catalogue(venue)
    for i in range(count):
        if i < len(catalogue):
            specs.append(make_spec(*catalogue[i], fixed_decimals=fixed_decimals))
        else:
            name = f"S{i - len(catalogue) + 1:04d}USDT"
            specs.append(spec_for_name(name, venue, seed, fixed_decimals))
    return specs
