"""Binary framing of the three kinds of log object, and the rule for a torn last block.

Every object starts with the same header::

    magic (4 bytes: b"TQMF" manifest, b"TQSG" segment, b"TQCP" checkpoint)
    format version (u16, big-endian)
    header length (u32) + header CRC32 (u32)
    header: orjson object (kind-specific fields, always ``epoch`` and ``nonce``)

followed by frames, each ``length (u32) | CRC32 of the bytes (u32) | bytes``. A segment's
frames are its records (the header says how many); a checkpoint has one frame, the snapshot;
a manifest has none. Any mismatch (magic, version, length, CRC, count, bytes left over)
raises ``CorruptionError`` naming the object: nothing is ever skipped silently.

Appended segments
-----------------
A segment on a store that can append (local disk) is instead a sequence of blocks: its header
says ``"blocks": true`` and ``count`` 0, and each commit is one block::

    b"TQBK" | record count (u32, >= 1) | body length (u32) | CRC32 of the body (u32) | body

whose body is the records' frames (within a block whose CRC holds, the frames' own CRCs
are not checked again: the block's covers them). The first block is published with the header (whole or
absent); each later one is written after the one before, with one ``pwrite`` and one
``fdatasync``, into space the writer reserved ahead and filled with zeros (or, where space
cannot be reserved, at the end of the file). A later block is at most
``MAX_APPENDED_BLOCK`` bytes, header included. The blocks end where zeros (or the file) begin.

The torn-tail rule
------------------
A crash during an append leaves that block *torn*: of the 512-byte disk sectors it covers,
each either reached the disk with the bytes written or still reads as it did before — zeros.
Where space was not reserved, the file may also end inside the block, at a sector boundary
(a file system records a size that covers whole sectors written, or the whole write).
Nothing is written after a torn block (the writer appends only once the previous block is
durable), and the writer never acknowledged it. So the first invalid block at ``pos`` counts
as torn only if all of the following hold; otherwise the damage is ``CorruptionError``
naming the object and the byte offset. A sector's *share* is its part of the bytes from ``pos`` on, and a share
that is all zeros counts as "did not reach the disk".

1. Nothing follows: every byte after the block's end is zero, and no non-zero byte lies
   more than ``MAX_APPENDED_BLOCK`` bytes past ``pos``. If the block header itself did not
   reach the disk (its end is unknown), no plausible block header may appear after ``pos``.
2. What reached the disk is what the writer wrote: the magic bytes that reached the disk
   are ``TQBK``; a header that reached the disk whole declares at least one record and at
   most ``MAX_APPENDED_BLOCK`` bytes; every frame whose bytes all reached the disk has its
   CRC, and its length stays inside the block.
3. Something did not reach the disk: walking the frames from the start of the body meets a
   sector that did not reach the disk (or the end of the file, which must then lie on a
   sector boundary) before the block is complete and before the declared number of records
   is found. A block whose bytes are all there but whose checksum fails is damaged, not
   torn.

So a flipped bit anywhere in a block (header fields included) is corruption, and so is a
zeroed sector in the middle of a block whose later bytes survive, or any byte after it.
What the rule cannot tell apart is a sector of the last block zeroed after the fact from
the same sector never written, or a file cut at a block or sector boundary from a crash
that came earlier; that is why the log accepts a torn block only at the very end of the
segment its last session was appending to, and records where each segment ends as soon as
a close or the next open has settled it (see log.py).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import CorruptionError

OBJECT_FORMAT_VERSION = (
    1  # the framing of manifests, segments and checkpoints (records inside: core.codec)
)
MAGIC_MANIFEST = b"TQMF"
MAGIC_SEGMENT = b"TQSG"
MAGIC_CHECKPOINT = b"TQCP"
MAGIC_BLOCK = b"TQBK"

_PREFIX = struct.Struct(">4sHII")
_FRAME = struct.Struct(">II")
_BLOCK = struct.Struct(">4sIII")
BLOCK_HEADER = _BLOCK.size
MAX_FRAME = 2**32 - 1
SECTOR = 512
MAX_APPENDED_BLOCK = 1 << 20  # a larger batch starts a segment of its own


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
    body = view[pos : pos + hlen]
    if len(body) != hlen or zlib.crc32(body) != hcrc:
        raise CorruptionError(f"{name}: header checksum mismatch")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CorruptionError(f"{name}: undecodable header") from exc
    if not isinstance(fields, dict):
        raise CorruptionError(f"{name}: header is not an object")
    return fields, pos + hlen


def decode_frames(
    name: str, view: memoryview, pos: int, end: int, base: int = 0, *, checked: bool = True
) -> list[bytes]:
    """The frames in ``view[pos:end]``, which must hold whole frames and nothing else;
    ``base`` is the object offset of ``view[0]`` (for messages). ``checked`` false skips
    each frame's own CRC: for the frames of a block, whose CRC covers them all and has
    been checked already."""
    frames: list[bytes] = []
    append = frames.append
    unpack = _FRAME.unpack_from
    crc = zlib.crc32
    size = _FRAME.size
    while pos < end:
        if end - pos < size:
            raise CorruptionError(f"{name}: truncated frame header at byte {base + pos}")
        length, fcrc = unpack(view, pos)
        pos += size
        stop = pos + length
        if stop > end:
            raise CorruptionError(f"{name}: truncated frame at byte {base + pos - size}")
        if checked and crc(view[pos:stop]) != fcrc:
            raise CorruptionError(
                f"{name}: checksum mismatch in frame {len(frames)} at byte {base + pos - size}"
            )
        append(view[pos:stop].tobytes())
        pos = stop
    return frames


# -- blocks ------------------------------------------------------------------------------------


def _valid_block(
    name: str, view: memoryview, pos: int, base: int
) -> tuple[list[bytes], int] | None:
    """The records and end of a whole, valid block at ``pos``, or None if there is none."""
    end = len(view)
    if end - pos < _BLOCK.size:
        return None
    magic, count, length, bcrc = _BLOCK.unpack_from(view, pos)
    start = pos + _BLOCK.size
    stop = start + length
    if magic != MAGIC_BLOCK or count < 1 or stop > end or zlib.crc32(view[start:stop]) != bcrc:
        return None
    frames = decode_frames(name, view, start, stop, base, checked=False)
    if len(frames) != count:
        raise CorruptionError(
            f"{name}: block at byte {base + pos} says {count} records, holds {len(frames)}"
        )
    return frames, stop


def block_at(
    name: str, view: memoryview, pos: int, base: int = 0
) -> tuple[list[bytes], int] | None:
    """The records and end of the whole, valid block at ``view[pos:]``, or None if there is
    none there (yet); ``base`` is the object offset of ``view[0]`` (for messages)."""
    return _valid_block(name, view, pos, base)


def block_end(view: memoryview, pos: int) -> int | None:
    """Where the block starting at ``view[pos:]`` says it ends, or None if its header is
    not all there or not plausible (wrong magic, no records)."""
    if len(view) - pos < _BLOCK.size:
        return None
    magic, count, length, _ = _BLOCK.unpack_from(view, pos)
    if magic != MAGIC_BLOCK or count < 1:
        return None
    return int(pos + _BLOCK.size + length)


def _all_zero(view: memoryview, start: int, stop: int) -> bool:
    return not view[start:stop].tobytes().strip(b"\0")


def decode_blocks(
    name: str, data: bytes | memoryview, pos: int, base: int = 0, *, judge: bool = True
) -> tuple[list[bytes], int, bool]:
    """Records of the blocks from byte ``pos`` on: ``(records, end of the last complete
    block, whether a torn block follows it)``; ``base`` is the object offset of ``data[0]``.

    After the last complete block comes either nothing but zeros (space not used yet), or a
    block torn by an interrupted append (see "The torn-tail rule"); anything else raises
    :class:`CorruptionError`. Whether a torn block is acceptable where it is, only the log
    can say. Bytes read while an append may be in progress (``judge`` false) are not judged:
    whatever follows the complete blocks is reported as torn, for a later read under the
    append lock to settle.
    """
    view = memoryview(data)
    end = len(view)
    records: list[bytes] = []
    while pos < end:
        block = _valid_block(name, view, pos, base)
        if block is None:
            if _all_zero(view, pos, end):
                return records, pos, False
            if judge:
                check_interrupted_append(name, view, pos, base)
            return records, pos, True
        frames, pos = block
        records += frames
    return records, pos, False


def decode_blocks_exact(name: str, data: bytes | memoryview, pos: int, stop: int) -> list[bytes]:
    """Records of the blocks that fill ``data[pos:stop]`` exactly: an end recorded when the
    segment was settled. Damage anywhere before ``stop`` raises :class:`CorruptionError`."""
    view = memoryview(data)
    if len(view) < stop:
        raise CorruptionError(
            f"{name}: {len(view)} bytes, but its blocks were recorded to end at byte {stop}"
        )
    view = view[:stop]
    records: list[bytes] = []
    while pos < stop:
        block = _valid_block(name, view, pos, 0)
        if block is None:
            raise CorruptionError(
                f"{name}: damaged block at byte {pos} (its blocks were "
                f"recorded to end at byte {stop})"
            )
        frames, pos = block
        records += frames
    return records


def _zero_sectors(view: memoryview, start: int, stop: int, base: int) -> set[int]:
    """Indexes (``(base + offset) // SECTOR``) of the sectors whose share of
    ``view[start:stop]`` is all zeros."""
    zero: set[int] = set()
    pos = start
    while pos < stop:
        sector = (base + pos) // SECTOR
        nxt = min(stop, (sector + 1) * SECTOR - base)
        if _all_zero(view, pos, nxt):
            zero.add(sector)
        pos = nxt
    return zero


def _missing(zero: set[int], start: int, stop: int, base: int) -> bool:
    """Whether any byte of ``[start, stop)`` lies in a sector that did not reach the disk."""
    first, last = (base + start) // SECTOR, (base + stop - 1) // SECTOR
    return any(s in zero for s in range(first, last + 1))


def check_interrupted_append(name: str, data: bytes | memoryview, pos: int, base: int = 0) -> None:
    """Raise :class:`CorruptionError` unless ``data[pos:]`` is what an interrupted append of
    one block at ``pos`` can leave (see "The torn-tail rule"); ``base`` is the object offset
    of ``data[0]``."""
    view = memoryview(data)
    end = len(view)
    at = base + pos

    def damaged(what: str) -> CorruptionError:
        return CorruptionError(f"{name}: damaged block at byte {at}: {what}")

    used = pos + len(view[pos:].tobytes().rstrip(b"\0"))  # bytes from ``used`` on are zero
    limit = pos + MAX_APPENDED_BLOCK
    if used > limit:
        raise damaged(
            f"non-zero bytes up to byte {base + used - 1}, further than any block "
            "written there can reach"
        )
    reach = min(end, limit)
    zero = _zero_sectors(view, pos, reach, base)
    header_end = pos + _BLOCK.size
    for i in range(min(len(MAGIC_BLOCK), end - pos)):
        if not _missing(zero, pos + i, pos + i + 1, base) and view[pos + i] != MAGIC_BLOCK[i]:
            raise damaged(f"bad block magic {bytes(view[pos : pos + 4])!r}")
    if header_end > end and (base + end) % SECTOR:
        raise damaged(
            f"the object ends at byte {base + end}, inside its header and not at a sector boundary"
        )
    count: int | None = None
    if header_end <= end and not _missing(zero, pos, header_end, base):
        _, count, length, _ = _BLOCK.unpack_from(view, pos)
        if count < 1 or _BLOCK.size + length > MAX_APPENDED_BLOCK:
            raise damaged(f"implausible header ({count} records, {length} bytes)")
        stop = header_end + length
        if used > stop:
            raise damaged(f"bytes follow it at byte {base + max(stop, pos)}")
        if stop > end and (base + end) % SECTOR:
            raise damaged(
                f"the object ends at byte {base + end}, inside the block and not at "
                "a sector boundary"
            )
    else:
        stop = reach
        _no_block_follows(view, pos, used, base, damaged)
    # Walk the frames while their bytes are all on disk: each must be whole and intact.
    q = header_end
    found = 0
    while q < stop:
        if q + _FRAME.size > end or _missing(zero, q, q + _FRAME.size, base):
            break
        length, fcrc = _FRAME.unpack_from(view, q)
        hi = q + _FRAME.size + length
        if hi > stop:
            raise damaged(f"frame at byte {base + q} runs past the end of its block")
        if hi > end or _missing(zero, q + _FRAME.size, hi, base):
            break
        if zlib.crc32(view[q + _FRAME.size : hi]) != fcrc:
            raise damaged(f"checksum mismatch in the frame at byte {base + q}")
        found += 1
        q = hi
    if count is None:
        return  # the header did not reach the disk: the block is incomplete by that alone
    if q == stop:
        raise damaged("all of it is on disk, yet it does not match its header")
    if found >= count:
        raise damaged(f"all {count} records are on disk and intact, yet the block is invalid")


def _no_block_follows(view: memoryview, pos: int, used: int, base: int, damaged: Any) -> None:
    """Raise if a plausible block header starts after ``pos`` (its own header did not reach
    the disk, so where it ends is unknown)."""
    data = view[:used].tobytes()
    q = data.find(MAGIC_BLOCK, pos + 1)
    while q != -1:
        if q + _BLOCK.size <= len(view):
            _, count, length, _ = _BLOCK.unpack_from(view, q)
            if count >= 1 and _BLOCK.size + length <= MAX_APPENDED_BLOCK:
                raise damaged(f"a block header at byte {base + q} follows it")
        q = data.find(MAGIC_BLOCK, q + 1)


def decode(name: str, magic: bytes, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split an object into its header fields and its frames, verifying everything.

    A block segment's records are returned as its frames; a torn last block is corruption
    here (the log alone decides when one is acceptable). A manifest holds no frames.
    """
    fields, pos = decode_header(name, magic, data)
    view = memoryview(data)
    if fields.get("blocks"):
        records, end, torn = decode_blocks(name, view, pos)
        if torn:
            raise CorruptionError(f"{name}: truncated block at byte {end}")
        return fields, records
    frames = decode_frames(name, view, pos, len(view))
    expected = 0 if magic == MAGIC_MANIFEST else fields.get("count")
    if expected is not None and expected != len(frames):
        raise CorruptionError(f"{name}: header says {expected} frames, found {len(frames)}")
    return fields, frames
