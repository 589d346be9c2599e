"""Job ids: 26-character, time-ordered, monotonic within the process.

An id is a 128-bit value, 48 bits of milliseconds then 80 random bits, written as 26 digits
of Crockford's base32 alphabet, most significant bits first; the value is shifted left by
two bits to fill the 130 bits of 26 digits, so the last digit's two low bits are always
zero. Ids therefore sort like their values. When two ids fall in the same millisecond (or
the clock steps back) the value is incremented, so ids from one process always sort in
creation order.

This module is the one place that knows the layout: :func:`encode` turns a value into its
text and :func:`decode` turns a *canonical* text (exactly what :func:`encode` produces)
back into its value, which is how the log stores generated ids in 16 bytes.

Encoding works on 10-bit groups (two digits each) with a precomputed table of the 1,024
two-digit strings. Consecutive ids of one millisecond differ in their last group unless
the increment carries out of the low 8 bits of the value, so the generator re-encodes only
that group and keeps the first 24 digits of the previous id.
"""

from __future__ import annotations

import os

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_LENGTH = 26
_RANDOM_BITS = 80
_MS_MASK = (1 << 48) - 1
_MAX_VALUE = (1 << 128) - 1

# _PAIRS[g] is the two digits of the 10-bit group g.
_PAIRS = tuple(a + b for a in ALPHABET for b in ALPHABET)
# The last two digits of an id hold the value's low 8 bits (shifted left by two).
TAILS = tuple(_PAIRS[low << 2] for low in range(256))

# Crockford digits -> the digits int(..., 32) reads; every other byte -> "!", which int()
# rejects (so do signs, spaces and underscores int() would otherwise accept: all map to "!").
_FROM_CROCKFORD = bytes(
    ord("0123456789abcdefghijklmnopqrstuv"[ALPHABET.index(chr(c))])
    if chr(c) in ALPHABET
    else ord("!")
    for c in range(256)
)


def encode(value: int) -> str:
    """The 26-digit text of a 128-bit id value."""
    if not 0 <= value <= _MAX_VALUE:
        raise ValueError(f"id value {value!r} is not a 128-bit unsigned integer")
    p = _PAIRS
    # Split the 130-bit number (value << 2) into 40 + 50 + 40 bits: shifts on small ints
    # are cheaper than on one 130-bit int.
    a = value >> 88
    b = (value >> 38) & 0x3FFFFFFFFFFFF
    c = (value << 2) & 0xFFFFFFFFFF
    return "".join(
        (
            p[a >> 30],
            p[a >> 20 & 1023],
            p[a >> 10 & 1023],
            p[a & 1023],
            p[b >> 40],
            p[b >> 30 & 1023],
            p[b >> 20 & 1023],
            p[b >> 10 & 1023],
            p[b & 1023],
            p[c >> 30],
            p[c >> 20 & 1023],
            p[c >> 10 & 1023],
            p[c & 1023],
        )
    )


def successor(text: str, value: int) -> str:
    """The text of ``value`` given ``text``, the text of ``value - 1``."""
    low = value & 0xFF
    return text[:24] + TAILS[low] if low else encode(value)


def decode(text: str) -> int | None:
    """The value of a canonical id text, or None if ``encode`` could not have produced it.

    Canonical means exactly 26 upper-case Crockford digits whose last digit has its two
    low bits clear; then ``encode(decode(text)) == text``.
    """
    if len(text) != ID_LENGTH:
        return None
    try:
        n = int(text.encode("ascii").translate(_FROM_CROCKFORD), 32)
    except ValueError:  # also UnicodeEncodeError
        return None
    if n & 3:
        return None
    return n >> 2


class IdGenerator:
    """Not thread-safe: the queue calls it under its lock."""

    __slots__ = ("_last", "_text")

    def __init__(self) -> None:
        self._last = -1  # no id yet: the first one always draws fresh random bits
        self._text = ""

    def new(self, now: float) -> str:
        """A new id for a job created at ``now`` (epoch seconds)."""
        ms = max(0, int(now * 1000)) & _MS_MASK
        last = self._last
        if ms <= last >> _RANDOM_BITS:
            # Same millisecond (or the clock stepped back): the next value.
            value = last + 1
            low = value & 0xFF
            text = self._text[:24] + TAILS[low] if low else encode(value)
        else:
            value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
            text = encode(value)
        self._last = value
        self._text = text
        return text

    def new_many(self, now: float, n: int) -> list[str]:
        """``n`` new ids for jobs created together at ``now``: the same as ``n`` calls of
        :meth:`new` with one clock reading, in creation order."""
        if n <= 0:
            return []
        out = [self.new(now)]
        if n > 1:
            out += following(self._text, self._last, n - 1)
            self._last += n - 1
            self._text = out[-1]
        return out


def following(text: str, value: int, n: int) -> list[str]:
    """The texts of the ``n`` values after ``value``, whose text is ``text`` (the caller
    makes sure they stay within 128 bits)."""
    out: list[str] = []
    tails = TAILS
    while n:
        low = value & 0xFF
        if low == 0xFF:  # the next value carries out of the last group
            value += 1
            text = encode(value)
            out.append(text)
            n -= 1
            continue
        # The values low+1 .. up to 255 share the first 24 digits of ``text``.
        take = min(n, 0xFF - low)
        head = text[:24]
        out += [head + tails[k] for k in range(low + 1, low + 1 + take)]
        value += take
        text = out[-1]
        n -= take
    return out
