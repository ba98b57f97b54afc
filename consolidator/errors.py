"""The exception tree.

Every error the project raises on purpose derives from `ConsolidatorError`, and its message names
the offending file, key or value, so the command-line front ends can print it as one line.
"""

__all__ = [
    "ConfigError",
    "ConsolidatorError",
    "DecimalCodecError",
    "RecordError",
    "RingError",
    "RingFormatError",
    "RingFullError",
    "RingLockedError",
    "SymbolTableError",
]


class ConsolidatorError(Exception):
    """Root of every error raised on purpose by consolidator."""


class ConfigError(ConsolidatorError):
    """Bad configuration or usage: the command exits with status 2."""


class DecimalCodecError(ConsolidatorError, ValueError):
    """A decimal value cannot be held exactly by the (int64 mantissa, int8 exponent) codec."""


class RecordError(ConsolidatorError, ValueError):
    """A record cannot be encoded (too many levels, a field out of range, ...)."""


class SymbolTableError(ConsolidatorError):
    """The symbol table file is full, corrupt, or a name does not fit."""


class RingError(ConsolidatorError):
    """A ring cannot be created, opened or written."""


class RingFormatError(RingError):
    """A ring file has the wrong magic, version or an inconsistent layout."""


class RingFullError(RingError):
    """The file system has no room for a new ring (found at creation, never as a SIGBUS later)."""


class RingLockedError(RingError):
    """Another live writer holds the ring."""
