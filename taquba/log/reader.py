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

from ..errors import CorruptionError
from ..storage import ObjectNotFound, Store
from .format import MAGIC_CHECKPOINT, decode, decode_blocks
from .manifest import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Manifest, decode_manifest
from .manifest import parse_seq as _parse_seq
from .manifest import seq_name as _seq_name
from .replay import parse_segment

_RELOAD_ATTEMPTS = 20


class _Restart(Exception):
    """An object the reader needed is gone: start over from the newest manifest."""


class RootNotFound(Exception):
    """The root holds no queue (no manifest)."""


class LogReader:
    """Follows the log at a store without writing. Not thread-safe: callers serialise."""

    def __init__(
        self,
        store: Store,
        *,
        on_snapshot: Callable[[bytes | None], None],
        on_record: Callable[[bytes], None],
    ) -> None:
        self.store = store
        self._on_snapshot = on_snapshot
        self._on_record = on_record
        self.manifest_n = 0
        self.manifest = Manifest(None, 1, None)
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
        raise CorruptionError(
            f"{self.store.description}: the log kept changing under the "
            f"reader ({_RELOAD_ATTEMPTS} restarts in one refresh)"
        )

    # -- reading ---------------------------------------------------------------------------

    def _newest_manifest(self) -> tuple[int, Manifest]:
        for _ in range(_RELOAD_ATTEMPTS):
            names = [
                s
                for s in (_parse_seq(n) for n in self.store.list_dir(MANIFEST_DIR))
                if s is not None
            ]
            if not names:
                raise RootNotFound(f"{self.store.description}: no queue here (no manifest)")
            n = max(names)
            key = f"{MANIFEST_DIR}/{_seq_name(n)}"
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                continue  # pruned after a newer one was written: list again
            return n, decode_manifest(f"{self.store.description}/{key}", data)
        raise _Restart

    def _reload(self) -> None:
        n, manifest = self._newest_manifest()
        name = manifest.checkpoint
        snapshot: bytes | None = None
        if name is not None:
            key = f"{CHECKPOINT_DIR}/{name}"
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                raise _Restart from None  # replaced by a newer checkpoint meanwhile
            _, frames = decode(f"{self.store.description}/{key}", MAGIC_CHECKPOINT, data)
            if len(frames) != 1:
                raise CorruptionError(
                    f"{self.store.description}/{key}: expected one snapshot frame"
                )
            snapshot = frames[0]
        self._on_snapshot(snapshot)
        self.reloads += 1
        self.manifest_n = n
        self.manifest = manifest
        self.checkpoint_name = name
        self.next_seq = manifest.replay_from
        self._tail_end = 0
        self._tail_open = False
        self._catch_up()

    def _catch_up(self) -> bool:
        # Segments first, then manifests: a checkpoint's manifest is durable before the
        # segments it covers are deleted, so if a segment we need was gone from this
        # listing, the manifest listing after it shows the newer version.
        listed = {
            s for s in (_parse_seq(n) for n in self.store.list_dir(SEGMENT_DIR)) if s is not None
        }
        newest = max(
            (
                s
                for s in (_parse_seq(n) for n in self.store.list_dir(MANIFEST_DIR))
                if s is not None
            ),
            default=0,
        )
        if newest != self.manifest_n:
            key = f"{MANIFEST_DIR}/{_seq_name(newest)}"
            try:
                manifest = decode_manifest(f"{self.store.description}/{key}", self.store.get(key))
            except ObjectNotFound:
                raise _Restart from None
            needed = self.next_seq - 1 if self._tail_open else self.next_seq
            if manifest.replay_from > needed or manifest.checkpoint != self.checkpoint_name:
                raise _Restart  # a checkpoint covers what we have not read: start from it
            self.manifest_n = newest
            self.manifest = manifest
        changed = False
        if self._tail_open:
            # The segment we stopped in: final if a later one exists, else maybe growing.
            final = self.next_seq in listed
            changed |= self._read_tail(self.next_seq - 1, locked=final)
            if final:
                self._tail_open = False
        if listed and self.next_seq not in listed and any(s > self.next_seq for s in listed):
            raise _Restart  # what we need next was collected: a newer checkpoint exists
        while True:
            seq = self.next_seq
            if self.manifest.is_void(seq):  # an opener's fence, recorded empty: not read
                self.next_seq += 1
                continue
            if seq not in listed:
                break
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
        ends = self.manifest.ends or {}
        records, tail = parse_segment(name, seq, data, ends.get(seq))
        self.next_seq = seq + 1
        for r in records:
            self._on_record(r)
        self._tail_end = tail.end
        self._tail_open = not tail.settled
        if final and self._tail_open:
            self._read_tail(seq, locked=True)
            self._tail_open = False

    def _read_tail(self, seq: int, *, locked: bool) -> bool:
        """Apply the blocks appended to segment ``seq`` since the last read."""
        key = f"{SEGMENT_DIR}/{_seq_name(seq)}"
        try:
            if locked and self.store.appendable:
                rest = self.store.read_from_locked(key, self._tail_end)
            else:
                rest = self.store.get_range(key, self._tail_end, 2**62)
        except ObjectNotFound:
            raise _Restart from None
        if not rest:
            return False
        records, end, _torn = decode_blocks(
            f"{self.store.description}/{key}", rest, 0, base=self._tail_end, judge=False
        )
        self._tail_end += end
        for r in records:
            self._on_record(r)
        return bool(records)
