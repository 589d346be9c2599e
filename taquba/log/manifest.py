"""Manifest versions: what a reopen starts from, and the names of the log's objects.

A manifest version is an object ``manifest/<n:020d>`` with no frames, whose header holds:

- ``epoch``, ``nonce``: the writer that created it (its epoch is the number of the version it
  claimed when it opened);
- ``checkpoint``: the name of the snapshot to start from under ``checkpoints/``, or null;
- ``replay_from``: the first segment after that snapshot; every segment from there on, in
  order, without a gap, is replayed;
- ``ends`` (absent in roots written before it existed): for appended segments from
  ``replay_from`` on that a close or a later open has settled, where their blocks end. Such
  a segment is read only up to there and must hold whole, intact blocks up to there.
- ``void`` (optional): ranges ``[first, last]`` of segment numbers from ``replay_from`` on
  that hold nothing (openers' fences). They are not read, and may be absent or hold
  anything: once a version records them, their objects are deleted.
- ``through`` (optional): the last segment written when the version was; every segment from
  ``replay_from`` up to it must be there (unless void), so even the newest one cannot go
  missing unnoticed once a close or an open has recorded it.

The highest ``n`` is the current version. Any damage to it is :class:`CorruptionError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptionError
from .format import MAGIC_MANIFEST, decode, encode

MANIFEST_DIR = "manifest"
SEGMENT_DIR = "segments"
CHECKPOINT_DIR = "checkpoints"
MAX_MANIFEST_NUMBER = 2**63  # versions are numbered below it (the header stores 64-bit ints)


def seq_name(seq: int) -> str:
    return f"{seq:020d}"


def parse_seq(name: str) -> int | None:
    return int(name) if len(name) == 20 and name.isdigit() else None


def manifest_key(n: int) -> str:
    return f"{MANIFEST_DIR}/{seq_name(n)}"


def segment_key(seq: int) -> str:
    return f"{SEGMENT_DIR}/{seq_name(seq)}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """The content of one manifest version (see the module docstring)."""

    checkpoint: str | None
    replay_from: int
    ends: dict[int, int] | None  # None: written by a version that did not record ends
    void: tuple[tuple[int, int], ...] = ()  # sorted, disjoint, inclusive ranges
    through: int = 0  # the last segment written when this version was

    def is_void(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.void)


def void_ranges(seqs: set[int]) -> tuple[tuple[int, int], ...]:
    """``seqs`` as sorted, disjoint, inclusive ranges."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if ranges and ranges[-1][1] == s - 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return tuple(ranges)


def encode_manifest(epoch: int, nonce: str, manifest: Manifest) -> bytes:
    fields: dict[str, Any] = {
        "epoch": epoch,
        "nonce": nonce,
        "checkpoint": manifest.checkpoint,
        "replay_from": manifest.replay_from,
        "created_at": time.time(),
    }
    if manifest.ends is not None:
        fields["ends"] = {seq_name(s): e for s, e in sorted(manifest.ends.items())}
    if manifest.void:
        fields["void"] = [list(r) for r in manifest.void]
    if manifest.through:
        fields["through"] = manifest.through
    return encode(MAGIC_MANIFEST, fields)


def decode_manifest(name: str, data: bytes) -> Manifest:
    fields, _ = decode(name, MAGIC_MANIFEST, data)
    replay_from = fields.get("replay_from")
    if not isinstance(replay_from, int) or isinstance(replay_from, bool) or replay_from < 1:
        raise CorruptionError(f"{name}: manifest lacks a valid replay_from ({replay_from!r})")
    checkpoint = fields.get("checkpoint")
    if checkpoint is not None and (
        not isinstance(checkpoint, str) or "/" in checkpoint or not checkpoint
    ):
        raise CorruptionError(f"{name}: manifest names an invalid checkpoint {checkpoint!r}")
    raw = fields.get("ends")
    ends: dict[int, int] | None = None
    if raw is not None:
        if not isinstance(raw, dict):
            raise CorruptionError(f"{name}: manifest ends is not an object")
        ends = {}
        for key, end in raw.items():
            seq = parse_seq(key)
            if seq is None or not isinstance(end, int) or isinstance(end, bool) or end < 0:
                raise CorruptionError(f"{name}: manifest has an invalid end {key!r}: {end!r}")
            ends[seq] = end
    raw_void = fields.get("void", [])
    void: list[tuple[int, int]] = []
    if not isinstance(raw_void, list):
        raise CorruptionError(f"{name}: manifest void is not a list")
    for r in raw_void:
        if not (
            isinstance(r, list)
            and len(r) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            and replay_from <= r[0] <= r[1]
            and (not void or void[-1][1] < r[0] - 1)
        ):
            raise CorruptionError(f"{name}: manifest has an invalid void range {r!r}")
        void.append((r[0], r[1]))
    through = fields.get("through", 0)
    if not isinstance(through, int) or isinstance(through, bool) or through < 0:
        raise CorruptionError(f"{name}: manifest has an invalid through {through!r}")
    return Manifest(checkpoint, replay_from, ends, tuple(void), through)
