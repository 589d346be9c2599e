"""Job ids: 26-character, time-ordered, monotonic within the process.

48 bits of milliseconds then 80 random bits, in Crockford's base32 alphabet, most
significant bits first, so ids sort like their values. When two ids
fall in the same millisecond (or the clock steps back) the random part is incremented, so
ids from one process always sort in creation order.
"""

from __future__ import annotations

import base64
import os

# base32's alphabet mapped onto Crockford's, which sorts in ASCII order like the values.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
_RANDOM_BITS = 80
_MS_MASK = (1 << 48) - 1


class IdGenerator:
    """Not thread-safe: the queue calls it under its lock."""

    def __init__(self) -> None:
        self._last = 0

    def new(self, now: float) -> str:
        ms = max(0, int(now * 1000)) & _MS_MASK
        if ms <= self._last >> _RANDOM_BITS:
            value = self._last + 1  # same millisecond (or the clock stepped back)
        else:
            value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        self._last = value
        # 128 bits in 26 base32 digits (the last holds 3 bits); the padding is dropped.
        raw = base64.b32encode(value.to_bytes(16, "big"))[:26]
        return raw.translate(_TO_CROCKFORD).decode("ascii")
