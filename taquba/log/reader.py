"""A read-only follower of the log: what another process uses to see the owner's state.

``LogReader`` reads the newest manifest, its checkpoint and the segments after it, and
hands their snapshot and records to the caller, exactly as ``Log.open`` does for the
writer; :meth:`LogReader.refresh` then reads only what was added since.

Rules it keeps:

- It never creates, overwrites or deletes an object. On local disk it may take the
  segment file's lock for a moment (see below); that writes nothing.
- Every segment that exists from the manifest's ``replay_from`` on is part of the log: a
  displaced writer's segment write loses its put-if-absent to the fence, so a segment
  that is listed was written by the owner of its epoch, and the owner replays it too.
- An appended segment (local disk) may end in a block being written right now: the reader
  stops before an incomplete block and reads on from there at the next refresh. Once the
  next segment exists, the previous one is final; its rest is read under the file's lock,
  as an opener does, so an append that passed its fence check is complete by then.
- The owner deletes objects after a checkpoint. A segment or checkpoint that vanishes
  between listing and reading, or a gap in the segments the reader still needs, means a
  newer checkpoint exists: the reader starts over from the newest manifest (a *reload*,
  reported to the caller through ``on_snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CorruptionError
from ..storage import ObjectNotFound, Store
from .format import (
    MAGIC_CHECKPOINT,
    MAGIC_MANIFEST,
    MAGIC_SEGMENT,
    decode,
    decode_blocks,
    decode_frames,
    decode_header,
)
from .log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, _parse_seq, _seq_name

_RELOAD_ATTEMPTS = 20


class _Restart(Exception):
    """An object the reader needed is gone: start over from the newest manifest."""


class RootNotFound(Exception):
    """The root holds no queue (no manifest)."""


class LogReader:
    """Follows the log at a store without writing. Not thread-safe: callers serialise."""

    def __init__(self, store: Store, *, on_snapshot: Callable[[bytes | None], None],
                 on_record: Callable[[bytes], None]) -> None:
        self.store = store
        self._on_snapshot = on_snapshot
        self._on_record = on_record
        self.manifest_n = 0
        self.checkpoint_name: str | None = None
        self.next_seq = 1  # the first segment not yet applied in full
        self._tail_end = 0  # bytes of segment next_seq - 1 applied (appended segments)
        self._tail_open = False  # segment next_seq - 1 may still grow
        self.reloads = 0

    # -- public ----------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Catch up with the log; True if anything new was applied.

        Raises:
            RootNotFound: no manifest exists under the root.
            CorruptionError: a durable object is damaged.
        """
        for _ in range(_RELOAD_ATTEMPTS):
            try:
                if self.manifest_n == 0:
                    self._reload()
                    return True
                return self._catch_up()
            except _Restart:
                self.manifest_n = 0
        raise CorruptionError(f"{self.store.description}: the log kept changing under the "
                              f"reader ({_RELOAD_ATTEMPTS} restarts in one refresh)")

    # -- reading ---------------------------------------------------------------------------

    def _newest_manifest(self) -> tuple[int, dict[str, Any]]:
        for _ in range(_RELOAD_ATTEMPTS):
            names = [s for s in (_parse_seq(n) for n in self.store.list_dir(MANIFEST_DIR))
                     if s is not None]
            if not names:
                raise RootNotFound(f"{self.store.description}: no queue here (no manifest)")
            n = max(names)
            key = f"{MANIFEST_DIR}/{_seq_name(n)}"
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                continue  # pruned after a newer one was written: list again
            fields, _ = decode(f"{self.store.description}/{key}", MAGIC_MANIFEST, data)
            if not isinstance(fields.get("replay_from"), int):
                raise CorruptionError(f"{self.store.description}/{key}: manifest lacks "
                                      "replay_from")
            return n, fields
        raise _Restart

    def _reload(self) -> None:
        n, fields = self._newest_manifest()
        name = fields.get("checkpoint")
        snapshot: bytes | None = None
        if name is not None:
            key = f"{CHECKPOINT_DIR}/{name}"
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                raise _Restart from None  # replaced by a newer checkpoint meanwhile
            _, frames = decode(f"{self.store.description}/{key}", MAGIC_CHECKPOINT, data)
            if len(frames) != 1:
                raise CorruptionError(f"{self.store.description}/{key}: expected one "
                                      "snapshot frame")
            snapshot = frames[0]
        self._on_snapshot(snapshot)
        self.reloads += 1
        self.manifest_n = n
        self.checkpoint_name = name
        self.next_seq = int(fields["replay_from"])
        self._tail_end = 0
        self._tail_open = False
        self._catch_up()

    def _catch_up(self) -> bool:
        # Segments first, then manifests: a checkpoint's manifest is durable before the
        # segments it covers are deleted, so if a segment we need was gone from this
        # listing, the manifest listing after it shows the newer version.
        listed = {s for s in (_parse_seq(n) for n in self.store.list_dir(SEGMENT_DIR))
                  if s is not None}
        newest = max((s for s in (_parse_seq(n) for n in self.store.list_dir(MANIFEST_DIR))
                      if s is not None), default=0)
        if newest != self.manifest_n:
            key = f"{MANIFEST_DIR}/{_seq_name(newest)}"
            try:
                fields, _ = decode(f"{self.store.description}/{key}", MAGIC_MANIFEST,
                                   self.store.get(key))
            except ObjectNotFound:
                raise _Restart from None
            needed = self.next_seq - 1 if self._tail_open else self.next_seq
            if not isinstance(fields.get("replay_from"), int) or fields["replay_from"] > needed:
                raise _Restart  # a checkpoint covers what we have not read: start from it
            self.manifest_n = newest
        changed = False
        if self._tail_open:
            # The segment we stopped in: final if a later one exists, else maybe growing.
            final = self.next_seq in listed
            changed |= self._read_tail(self.next_seq - 1, locked=final)
            if final:
                self._tail_open = False
        if listed and self.next_seq not in listed and \
                any(s > self.next_seq for s in listed):
            raise _Restart  # what we need next was collected: a newer checkpoint exists
        while self.next_seq in listed:
            seq = self.next_seq
            key = f"{SEGMENT_DIR}/{_seq_name(seq)}"
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                raise _Restart from None
            self._apply_segment(seq, data, final=seq + 1 in listed)
            changed = True
        return changed

    def _apply_segment(self, seq: int, data: bytes, *, final: bool) -> None:
        name = f"{self.store.description}/{SEGMENT_DIR}/{_seq_name(seq)}"
        fields, pos = decode_header(name, MAGIC_SEGMENT, data)
        self.next_seq = seq + 1
        if not fields.get("blocks"):
            frames = decode_frames(name, memoryview(data), pos, len(data))
            if fields.get("count") != len(frames):
                raise CorruptionError(f"{name}: header says {fields.get('count')} frames, "
                                      f"found {len(frames)}")
            self._tail_open = False
            for r in frames:
                self._on_record(r)
            return
        records, end, _torn = decode_blocks(name, data, pos)
        for r in records:
            self._on_record(r)
        self._tail_end = end
        self._tail_open = True
        if final:
            self._read_tail(seq, locked=True)
            self._tail_open = False

    def _read_tail(self, seq: int, *, locked: bool) -> bool:
        """Apply the blocks appended to segment ``seq`` since the last read."""
        key = f"{SEGMENT_DIR}/{_seq_name(seq)}"
        try:
            if locked and self.store.supports_append:
                rest = self.store.read_from_locked(key, self._tail_end)
            else:
                rest = self.store.get_range(key, self._tail_end, 2**62)
        except ObjectNotFound:
            raise _Restart from None
        if not rest:
            return False
        records, end, _torn = decode_blocks(f"{self.store.description}/{key}", rest, 0,
                                            base=self._tail_end)
        self._tail_end += end
        for r in records:
            self._on_record(r)
        return bool(records)
