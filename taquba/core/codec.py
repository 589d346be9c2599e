"""The building blocks of the binary encoding of records (events.py) and snapshots
(snapshot.py).

Every record and snapshot starts with a tag byte, ``RECORD_FORMAT_VERSION << 4 | kind``, so data
of another format version is recognised and rejected rather than misread. Then fields::

    uvarint  unsigned LEB128, at most 10 bytes (values < 2**64)
    f64      IEEE 754 double, big-endian: timestamps round-trip exactly; never NaN or inf
    str      uvarint byte length | UTF-8
    bytes    uvarint length | raw bytes (payloads, KV keys and values: never base64)
    headers  uvarint n | n x (str name | str value)
    id       a canonical job id (exactly what ids.IdGenerator makes) is stored as its
             16-byte value; any other id (user-supplied) as u8 length (1..128) | ASCII.
             Which form is used is said by a flag bit of the record or, in id lists, by a
             leading u8: 0 = the 16-byte value follows, else the length of the text
    dur      uvarint 2*s for a whole number of seconds s, or uvarint 1 then an f64

Decoding is strict. :class:`Reader` raises :class:`Corrupt` for anything out of place
(a read past the end, an overlong varint, invalid UTF-8, a bad id, a count larger than the
bytes left); the decoders turn it into ``CorruptionError`` naming the record.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence

from ..errors import CorruptionError
from . import ids

RECORD_FORMAT_VERSION = 2  # 1 was the orjson encoding of 0.1.0.dev0, never released

MAX_TEXT_ID = 128
MAX_UVARINT = (1 << 64) - 1
MAX_U32 = (1 << 32) - 1

F64 = struct.Struct(">d")
pack_f64 = F64.pack
_unpack_f64 = F64.unpack_from
_TEXT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}").fullmatch


EXTENDED = 14  # the record kind followed by a uvarint sub-kind (see events.py)

# The text of recently read 16-byte ids: a job's id is read back several times in a short
# stretch of log (its claim, then its ack), and making the text costs more than a look-up.
_RECENT_IDS: dict[bytes, str] = {}
_RECENT_MAX = 4096


def id_text(key: bytes) -> str:
    """The canonical id whose stored 16-byte value is ``key``."""
    text = _RECENT_IDS.get(key)
    if text is None:
        if len(_RECENT_IDS) >= _RECENT_MAX:
            _RECENT_IDS.clear()
        text = _RECENT_IDS[key] = ids.encode(int.from_bytes(key, "big"))
    return text


def tag(kind: int) -> int:
    return RECORD_FORMAT_VERSION << 4 | kind


def extended_head(sub_kind: int) -> bytearray:
    """The start of an EXTENDED record of ``sub_kind``."""
    buf = bytearray((tag(EXTENDED),))
    put_uvarint(buf, sub_kind)
    return buf


def check_tag(data: bytes) -> int:
    """The tag of ``data``, after checking its format version."""
    if not data:
        raise CorruptionError("empty queue record")
    t = data[0]
    version = t >> 4
    if version != RECORD_FORMAT_VERSION:
        # The unversioned orjson records of 0.1.0.dev0 began with their kind: 1-11, or 100.
        old = (
            " (written by taquba 0.1.0.dev0, whose data is not readable)"
            if 1 <= t <= 11 or t == 100
            else ""
        )
        raise CorruptionError(
            f"queue record format version {version} is not supported "
            f"(this build reads {RECORD_FORMAT_VERSION}); first byte {t:#04x}{old}"
        )
    return t


# -- writing ---------------------------------------------------------------------------------


def put_uvarint(buf: bytearray, v: int) -> None:
    if not 0 <= v <= MAX_UVARINT:
        raise ValueError(f"{v!r} does not fit an unsigned varint")
    while v >= 0x80:
        buf.append((v & 0x7F) | 0x80)
        v >>= 7
    buf.append(v)


def put_str(buf: bytearray, s: str) -> None:
    raw = s.encode("utf-8")
    n = len(raw)
    if n < 0x80:
        buf.append(n)
    else:
        put_uvarint(buf, n)
    buf += raw


def put_blob(buf: bytearray, b: bytes) -> None:
    n = len(b)
    if n < 0x80:
        buf.append(n)
    else:
        put_uvarint(buf, n)
    buf += b


def put_headers(buf: bytearray, headers: Mapping[str, str]) -> None:
    put_uvarint(buf, len(headers))
    for k, v in headers.items():
        put_str(buf, k)
        put_str(buf, v)


def put_time(buf: bytearray, t: float) -> None:
    if t - t != 0.0:  # NaN or infinite: the decoder would reject the record
        raise ValueError(f"time {t!r} is not finite")
    buf += pack_f64(t)


def text_id(job_id: str) -> bytes:
    """u8 length | ASCII: the stored form of an id that is not canonical."""
    raw = job_id.encode("ascii")
    if not 1 <= len(raw) <= MAX_TEXT_ID:
        raise ValueError(f"job id of {len(raw)} characters cannot be stored")
    return bytes((len(raw),)) + raw


def put_listed_id(buf: bytearray, job_id: str) -> None:
    """An id with its leading form byte (0 then the value, or the text's length)."""
    value = ids.decode(job_id)
    if value is None:
        buf += text_id(job_id)
    else:
        buf.append(0)
        buf += value.to_bytes(16, "big")


def put_dur(buf: bytearray, seconds: float) -> None:
    if seconds.is_integer() and 0 <= seconds < 2**53:
        put_uvarint(buf, int(seconds) << 1)
    else:
        if not 0 <= seconds <= 1.8e308:
            raise ValueError(f"duration {seconds!r} is not a finite non-negative number")
        buf.append(1)
        buf += pack_f64(seconds)


# -- single-job records and id lists (events.py) ----------------------------------------

F_TEXT_ID = 0x01  # a single-job record's flag: the id is stored as text


def id_key(job_id: str) -> bytes | None:
    """The 16 bytes a canonical id is stored as, or None for an id stored as text."""
    value = ids.decode(job_id)
    return None if value is None else value.to_bytes(16, "big")


def single_head(kind: int, flags: int, job_id: str, key: bytes | None = None) -> bytearray:
    """The head of a single-job record: tag, flags (with ``F_TEXT_ID`` as needed), the id."""
    if key is None:
        key = id_key(job_id)
    if key is None:
        buf = bytearray((tag(kind), flags | F_TEXT_ID))
        buf += text_id(job_id)
    else:
        buf = bytearray((tag(kind), flags))
        buf += key
    return buf


def single_id(r: Reader, flags: int) -> str:
    """The id of a single-job record whose flags are ``flags``."""
    return r.text_id() if flags & F_TEXT_ID else r.value_id()


def id_list_record(kind: int, job_ids: Sequence[str]) -> bytes:
    """A record of a list of ids: tag, count, each id with its form byte."""
    buf = bytearray((tag(kind),))
    put_uvarint(buf, len(job_ids))
    for job_id in job_ids:
        put_listed_id(buf, job_id)
    return bytes(buf)


# -- reading ---------------------------------------------------------------------------------


class Corrupt(Exception):
    """Raised by :class:`Reader` with a specific reason; reported as ``CorruptionError``."""


class Reader:
    """Reads fields from ``data`` at ``pos``, checking every bound."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def finish(self) -> None:
        if self.pos != self.end:
            raise Corrupt(f"{self.end - self.pos} trailing bytes")

    def u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise Corrupt(f"truncated at byte {pos}")
        self.pos = pos + 1
        return self.data[pos]

    def flags(self, known: int) -> int:
        flags = self.u8()
        if flags & ~known:
            raise Corrupt(f"unknown flags {flags:#04x} at byte {self.pos - 1}")
        return flags

    def uvarint(self) -> int:
        data = self.data
        pos = self.pos
        end = self.end
        if pos < end and data[pos] < 0x80:
            self.pos = pos + 1
            return data[pos]
        start = pos
        value = 0
        shift = 0
        while True:
            if pos >= end:
                raise Corrupt(f"truncated varint at byte {start}")
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift >= 70:
                raise Corrupt(f"overlong varint at byte {start}")
        if value > MAX_UVARINT:
            raise Corrupt(f"varint out of range at byte {start}")
        self.pos = pos
        return value

    def u32(self, what: str) -> int:
        value = self.uvarint()
        if value > MAX_U32:
            raise Corrupt(f"{what} {value} out of range")
        return value

    def positive(self, what: str) -> int:
        value = self.uvarint()
        if not 1 <= value <= MAX_U32:
            raise Corrupt(f"{what} {value} out of range")
        return value

    def count(self, min_size: int) -> int:
        """A count of items of at least ``min_size`` bytes each, checked against the rest."""
        n = self.uvarint()
        if n * min_size > self.end - self.pos:
            raise Corrupt(f"count {n} before byte {self.pos} exceeds the record")
        return n

    def take(self, n: int) -> bytes:
        pos = self.pos
        end = pos + n
        if end > self.end:
            raise Corrupt(f"{n} bytes at byte {pos} run past the end ({self.end})")
        self.pos = end
        return self.data[pos:end]

    def blob(self) -> bytes:
        return self.take(self.uvarint())

    def text(self) -> str:
        raw = self.take(self.uvarint())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Corrupt(f"invalid UTF-8 before byte {self.pos}") from None

    def headers(self) -> dict[str, str]:
        n = self.count(2)
        out = {}
        for _ in range(n):
            key = self.text()
            out[key] = self.text()
        if len(out) != n:
            raise Corrupt("duplicate header name")
        return out

    def time(self) -> float:
        pos = self.pos
        if pos + 8 > self.end:
            raise Corrupt(f"truncated time at byte {pos}")
        self.pos = pos + 8
        value: float = _unpack_f64(self.data, pos)[0]
        if not math.isfinite(value):
            raise Corrupt(f"non-finite time {value!r} at byte {pos}")
        return value

    def dur(self) -> float:
        x = self.uvarint()
        if not x & 1:
            return float(x >> 1)
        if x != 1:
            raise Corrupt(f"bad duration marker {x}")
        value = self.time()
        if value < 0:
            raise Corrupt(f"negative duration {value!r}")
        return value

    def id_value(self) -> int:
        pos = self.pos
        if pos + 16 > self.end:
            raise Corrupt(f"truncated job id at byte {pos}")
        self.pos = pos + 16
        return int.from_bytes(self.data[pos : pos + 16], "big")

    def value_id(self) -> str:
        pos = self.pos
        if pos + 16 > self.end:
            raise Corrupt(f"truncated job id at byte {pos}")
        self.pos = pos + 16
        return id_text(self.data[pos : pos + 16])

    def text_id(self) -> str:
        n = self.u8()
        if not 1 <= n <= MAX_TEXT_ID:
            raise Corrupt(f"bad job id length {n} at byte {self.pos - 1}")
        return self._text_id(n)

    def _text_id(self, n: int) -> str:
        raw = self.take(n)
        text = raw.decode("ascii", "replace")
        if not _TEXT_ID(text):
            raise Corrupt(f"invalid job id {raw[:40]!r} before byte {self.pos}")
        return text

    def listed_id(self) -> str:
        n = self.u8()
        if n == 0:
            return self.value_id()
        if n > MAX_TEXT_ID:
            raise Corrupt(f"bad job id length {n} at byte {self.pos - 1}")
        return self._text_id(n)

    def id_list(self) -> list[str]:
        return [self.listed_id() for _ in range(self.count(2))]
