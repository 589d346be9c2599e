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

A segment on a store that can append (local disk) is instead a sequence of blocks: its header
says ``"blocks": true`` and ``count`` 0, and each commit is one block::

    b"TQBK" | record count (u32) | body length (u32) | CRC32 of the body (u32) | body

whose body is the records' frames. The first block is published with the header (whole or
absent); later ones are written after it, into space the writer reserves ahead and which
reads as zeros until written. A crash can leave the last block torn — it was never
acknowledged — and :func:`decode_blocks` reports where the complete blocks end; only the
log decides where a torn tail is acceptable. Damage that a torn write cannot explain is
always corruption.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import CorruptionError

OBJECT_FORMAT_VERSION = 1  # the framing of manifests, segments and checkpoints (records inside: core.codec)
MAGIC_MANIFEST = b"TQMF"
MAGIC_SEGMENT = b"TQSG"
MAGIC_CHECKPOINT = b"TQCP"
MAGIC_BLOCK = b"TQBK"

_PREFIX = struct.Struct(">4sHII")
_FRAME = struct.Struct(">II")
_BLOCK = struct.Struct(">4sIII")
MAX_FRAME = 2**32 - 1


def _header(magic: bytes, fields: dict[str, Any]) -> bytes:
    body = orjson.dumps(fields)
    return _PREFIX.pack(magic, OBJECT_FORMAT_VERSION, len(body), zlib.crc32(body)) + body


def frame(data: bytes) -> bytes:
    if len(data) > MAX_FRAME:
        raise ValueError(f"record of {len(data)} bytes is larger than {MAX_FRAME}")
    return _FRAME.pack(len(data), zlib.crc32(data)) + data


def encode(magic: bytes, fields: dict[str, Any], frames: Sequence[bytes] = ()) -> bytes:
    return _header(magic, fields) + encode_frames(frames)


def encode_block(records: Sequence[bytes]) -> bytes:
    """One appendable block holding ``records`` (see the module docstring)."""
    body = encode_frames(records)
    return _BLOCK.pack(MAGIC_BLOCK, len(records), len(body), zlib.crc32(body)) + body


def encode_frames(frames: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    pack = _FRAME.pack
    crc = zlib.crc32
    for data in frames:
        parts.append(pack(len(data), crc(data)))
        parts.append(data)
    return b"".join(parts)


def decode_header(name: str, magic: bytes, data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """The header fields of an object and the offset where its body starts."""
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise CorruptionError(f"{name}: object of {len(view)} bytes is too short for a header")
    got_magic, version, hlen, hcrc = _PREFIX.unpack_from(view, 0)
    if got_magic != magic:
        raise CorruptionError(f"{name}: bad magic {bytes(got_magic)!r}, expected {magic!r}")
    if version != OBJECT_FORMAT_VERSION:
        raise CorruptionError(
            f"{name}: format version {version} is not supported (this build reads {OBJECT_FORMAT_VERSION})"
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
    return fields, pos + hlen


def decode_frames(name: str, view: memoryview, pos: int, end: int) -> list[bytes]:
    """The frames in ``view[pos:end]``, which must hold whole frames and nothing else."""
    frames: list[bytes] = []
    unpack = _FRAME.unpack_from
    crc = zlib.crc32
    while pos < end:
        if end - pos < _FRAME.size:
            raise CorruptionError(f"{name}: truncated frame header at byte {pos}")
        length, fcrc = unpack(view, pos)
        pos += _FRAME.size
        if length > end - pos:
            raise CorruptionError(f"{name}: truncated frame at byte {pos - _FRAME.size}")
        chunk = view[pos:pos + length]
        if crc(chunk) != fcrc:
            raise CorruptionError(f"{name}: checksum mismatch in frame {len(frames)} at byte "
                                  f"{pos - _FRAME.size}")
        frames.append(chunk.tobytes())
        pos += length
    return frames


_SECTOR = 512
MAX_APPENDED_BLOCK = 1 << 20  # a larger batch starts a segment of its own


def _zero(view: memoryview, start: int, stop: int) -> bool:
    chunk = view[start:stop].tobytes()
    return chunk.count(0) == len(chunk)


def _unwritten_sector(view: memoryview, start: int, stop: int, base: int) -> bool:
    """Whether some disk sector's share of ``[start, stop)`` is all zeros (never written);
    ``base`` is the file offset of ``view[0]``."""
    pos = start
    while pos < stop:
        nxt = min(stop, (base + pos) // _SECTOR * _SECTOR + _SECTOR - base)
        if _zero(view, pos, nxt):
            return True
        pos = nxt
    return False


def _torn(view: memoryview, pos: int, stop: int | None, base: int) -> bool:
    """Whether the invalid block at ``pos`` (declared to end at ``stop``, if its header
    could be read) is what a crash during its write leaves: it runs past the end of the
    data, or some sector it spans was never written; and nothing follows it."""
    end = len(view)
    if stop is not None and stop > end:
        return True
    if end - pos < _BLOCK.size:
        return True  # a header cut short by the end of the data
    reach = stop if stop is not None else min(end, pos + _BLOCK.size + MAX_APPENDED_BLOCK)
    return _zero(view, reach, end) and _unwritten_sector(view, pos, reach, base)


def decode_blocks(name: str, data: bytes | memoryview, pos: int, base: int = 0
                  ) -> tuple[list[bytes], int, bool]:
    """Records of the blocks from byte ``pos`` on: ``(records, end of the last complete
    block, whether a torn block follows it)``; ``base`` is the file offset of ``data[0]``.

    Appends go to space reserved ahead (zero-filled), so the blocks end where zeros begin.
    A crash during an append can leave its block torn: running past the end of the data,
    or with sectors the write never reached still zero, and nothing after it. Damage a
    torn write cannot explain raises :class:`CorruptionError`.
    """
    view = memoryview(data)
    end = len(view)
    records: list[bytes] = []
    while pos < end:
        if end - pos < _BLOCK.size or _zero(view, pos, pos + _BLOCK.size):
            if _zero(view, pos, end):
                return records, pos, False  # unused space
            if _torn(view, pos, None, base):
                return records, pos, True
            raise CorruptionError(f"{name}: bytes after the end of the blocks at byte {pos}")
        magic, count, length, bcrc = _BLOCK.unpack_from(view, pos)
        start = pos + _BLOCK.size
        stop = start + length
        if magic != MAGIC_BLOCK:
            if _torn(view, pos, None, base):
                return records, pos, True
            raise CorruptionError(f"{name}: bad block magic {bytes(magic)!r} at byte {pos}")
        if stop > end or zlib.crc32(view[start:stop]) != bcrc:
            if _torn(view, pos, stop, base):
                return records, pos, True
            raise CorruptionError(f"{name}: checksum mismatch in the block at byte {pos}")
        frames = decode_frames(name, view, start, stop)
        if len(frames) != count:
            raise CorruptionError(f"{name}: block at byte {pos} says {count} records, "
                                  f"holds {len(frames)}")
        records += frames
        pos = stop
    return records, pos, False


def decode(name: str, magic: bytes, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split an object into its header fields and its frames, verifying everything.

    A block segment's records are returned as its frames; an incomplete last block is
    corruption here (the log alone decides when one is acceptable).
    """
    fields, pos = decode_header(name, magic, data)
    view = memoryview(data)
    if fields.get("blocks"):
        records, end, torn = decode_blocks(name, view, pos)
        if torn:
            raise CorruptionError(f"{name}: truncated block at byte {end}")
        return fields, records
    frames = decode_frames(name, view, pos, len(view))
    expected = fields.get("count")
    if expected is not None and expected != len(frames):
        raise CorruptionError(f"{name}: header says {expected} frames, found {len(frames)}")
    return fields, frames
