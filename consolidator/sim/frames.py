"""Server-side WebSocket frames encoded once, so the simulator can send them many times.

RFC 6455 section 5.2: a server frame is unmasked; FIN + opcode in the first byte, then the
payload length in 7 bits, or 126 + a 16-bit length, or 127 + a 64-bit length.
"""

from __future__ import annotations

__all__ = ["ws_text_frame"]


def ws_text_frame(payload: bytes) -> bytes:
    """Encode ``payload`` as one unmasked, final WebSocket text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload
