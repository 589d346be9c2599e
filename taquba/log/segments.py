"""Reading one segment for replay: its records, and how far they reach.

A whole segment (one object per commit) holds exactly the records its header counts. An
appended segment (local disk) holds blocks: where the manifest records its end, exactly the
blocks up to there; otherwise whatever follows its complete blocks is left for the log to
judge (format.py, "The torn-tail rule"), as its writer may be appending while it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptionError
from .format import MAGIC_SEGMENT, decode_blocks, decode_blocks_exact, decode_frames, decode_header


@dataclass
class Tail:
    """How far replay has read one segment."""

    seq: int
    end: int  # bytes consumed (for blocks: the end of the last complete block)
    torn: bool  # something other than zeros followed the complete blocks, when read
    blocks: bool  # an appended segment
    nonce: str  # its writer
    settled: bool  # it cannot grow: whole, or its end is recorded in the manifest


def parse_segment(name: str, seq: int, data: bytes, recorded: int | None
                  ) -> tuple[list[bytes], Tail]:
    """The records of segment ``seq`` (object ``name``, its bytes ``data``); ``recorded`` is
    where the manifest says its blocks end, if it does."""
    fields, pos = decode_header(name, MAGIC_SEGMENT, data)
    nonce = str(fields.get("nonce"))
    if not fields.get("blocks"):
        frames = decode_frames(name, memoryview(data), pos, len(data))
        if fields.get("count") != len(frames):
            raise CorruptionError(f"{name}: header says {fields.get('count')} frames, "
                                  f"found {len(frames)}")
        return frames, Tail(seq, len(data), False, False, nonce, True)
    if recorded is not None:
        records = decode_blocks_exact(name, data, pos, recorded)
        torn = False
        end = recorded
    else:
        # Its writer may be appending right now: what follows the complete blocks is judged
        # once read under the append lock, or once a later segment shows that nothing may
        # follow them.
        records, end, torn = decode_blocks(name, data, pos, judge=False)
    if not records:
        # The first block is published with the header, whole or not at all.
        raise CorruptionError(f"{name}: the first block is missing or truncated")
    return records, Tail(seq, end, torn, True, nonce, recorded is not None)
