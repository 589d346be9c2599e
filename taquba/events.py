"""Encoding of the queue's log records (events) and snapshots.

An event is ``kind (u8) | meta length (u32) | meta (orjson) | blobs``, each blob being
``length (u32) | bytes``. Payloads and KV keys/values travel as raw blobs, never base64;
a payload is written once, in its enqueue event, and later events name the job by id.
The log frames each event with its own length and CRC32, so no checksum is repeated here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

from .errors import CorruptionError

ENQUEUE = 1
CLAIM = 2
RENEW = 3
ACK = 4
FAIL = 5
CANCEL = 6
REQUEUE_DEAD = 7
PROMOTE = 8
PURGE = 9
KV_DELETE = 10
RELEASE = 11
SNAPSHOT = 100

_HEAD = struct.Struct(">BI")
_LEN = struct.Struct(">I")

Event = tuple[int, dict[str, Any], list[bytes]]


def encode(kind: int, meta: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    body = orjson.dumps(meta)
    parts = [_HEAD.pack(kind, len(body)), body]
    pack = _LEN.pack
    for b in blobs:
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def decode(data: bytes) -> Event:
    try:
        kind, mlen = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        meta = orjson.loads(data[pos:pos + mlen])
        pos += mlen
        blobs: list[bytes] = []
        end = len(data)
        unpack = _LEN.unpack_from
        while pos < end:
            (n,) = unpack(data, pos)
            pos += 4
            if pos + n > end:
                raise ValueError("blob runs past the end of the record")
            blobs.append(data[pos:pos + n])
            pos += n
    except (struct.error, ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptionError(f"undecodable queue record: {exc}") from exc
    if not isinstance(meta, dict):
        raise CorruptionError("queue record metadata is not an object")
    return kind, meta, blobs
