"""Binary framing of the three kinds of log object.

Every object starts with the same header::

    magic (4 bytes: b"TQMF" manifest, b"TQSG" segment, b"TQCP" checkpoint)
    format version (u16, big-endian)
    header length (u32) + header CRC32 (u32)
    header: orjson object (kind-specific fields, always ``epoch`` and ``nonce``)

followed by frames, each ``length (u32) | CRC32 of the bytes (u32) | bytes``. A segment's
frames are its records (the header says how many); a checkpoint has one frame, the snapshot;
a manifest has none. Any mismatch (magic, version, length, CRC, count) raises
``CorruptionError`` naming the object: nothing is ever skipped silently.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import CorruptionError

FORMAT_VERSION = 1
MAGIC_MANIFEST = b"TQMF"
MAGIC_SEGMENT = b"TQSG"
MAGIC_CHECKPOINT = b"TQCP"

_PREFIX = struct.Struct(">4sHII")
_FRAME = struct.Struct(">II")
MAX_FRAME = 2**32 - 1


def _header(magic: bytes, fields: dict[str, Any]) -> bytes:
    body = orjson.dumps(fields)
    return _PREFIX.pack(magic, FORMAT_VERSION, len(body), zlib.crc32(body)) + body


def frame(data: bytes) -> bytes:
    if len(data) > MAX_FRAME:
        raise ValueError(f"record of {len(data)} bytes is larger than {MAX_FRAME}")
    return _FRAME.pack(len(data), zlib.crc32(data)) + data


def encode(magic: bytes, fields: dict[str, Any], frames: Sequence[bytes] = ()) -> bytes:
    parts = [_header(magic, fields)]
    pack = _FRAME.pack
    crc = zlib.crc32
    for data in frames:
        parts.append(pack(len(data), crc(data)))
        parts.append(data)
    return b"".join(parts)


def decode(name: str, magic: bytes, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split an object into its header fields and its frames, verifying everything."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise CorruptionError(f"{name}: object of {len(view)} bytes is too short for a header")
    got_magic, version, hlen, hcrc = _PREFIX.unpack_from(view, 0)
    if got_magic != magic:
        raise CorruptionError(f"{name}: bad magic {bytes(got_magic)!r}, expected {magic!r}")
    if version != FORMAT_VERSION:
        raise CorruptionError(
            f"{name}: format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )
    pos = _PREFIX.size
    body = view[pos:pos + hlen]
    if len(body) != hlen or zlib.crc32(body) != hcrc:
        raise CorruptionError(f"{name}: header checksum mismatch")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CorruptionError(f"{name}: undecodable header") from exc
    if not isinstance(fields, dict):
        raise CorruptionError(f"{name}: header is not an object")
    pos += hlen
    frames: list[bytes] = []
    end = len(view)
    unpack = _FRAME.unpack_from
    crc = zlib.crc32
    while pos < end:
        if end - pos < _FRAME.size:
            raise CorruptionError(f"{name}: truncated frame header at byte {pos}")
        length, fcrc = unpack(view, pos)
        pos += _FRAME.size
        chunk = view[pos:pos + length]
        if len(chunk) != length:
            raise CorruptionError(f"{name}: truncated frame at byte {pos - _FRAME.size}")
        if crc(chunk) != fcrc:
            raise CorruptionError(f"{name}: checksum mismatch in frame {len(frames)} at byte "
                                  f"{pos - _FRAME.size}")
        frames.append(chunk.tobytes())
        pos += length
    expected = fields.get("count")
    if expected is not None and expected != len(frames):
        raise CorruptionError(f"{name}: header says {expected} frames, found {len(frames)}")
    return fields, frames
