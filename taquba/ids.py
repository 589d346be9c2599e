"""Job ids: 26-character, time-ordered, monotonic within the process.

48 bits of milliseconds then 80 random bits, in Crockford base32 (like a ULID). When two ids
fall in the same millisecond (or the clock steps back) the random part is incremented, so
ids from one process always sort in creation order.
"""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1


class IdGenerator:
    """Not thread-safe: the queue calls it under its lock."""

    def __init__(self) -> None:
        self._last = 0

    def new(self, now: float) -> str:
        ms = max(0, int(now * 1000)) & ((1 << 48) - 1)
        value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        if value <= self._last:
            value = self._last + 1
        self._last = value
        chars = []
        for _ in range(26):
            chars.append(_ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(chars))
