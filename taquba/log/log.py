"""The fenced, append-only log: a manifest chain, contiguous segments and checkpoints.

Layout under the store's root::

    manifest/<n:020d>               immutable, put-if-absent; the highest n is current
    segments/<seq:020d>             put-if-absent; contiguous; one per commit, or (stores
                                    that append) one block per commit up to a size
    checkpoints/<seq:020d>-<epoch:010d>  snapshot of the state after segment <seq>

Invariants:

- **Single writer.** Opening claims an epoch by creating manifest ``n+1`` with
  put-if-absent, then fences the segment space by creating the next segment (empty) with
  put-if-absent, replaying any segment that beat it. Every later object this writer creates
  is also put-if-absent, so once another process has opened the root, this writer's next
  write loses and raises :class:`FencedError`; nothing it acknowledged is lost because the
  newer writer replays every segment that exists.
- **A busy writer yields.** An opener fences by winning one segment number, but a writer
  that commits back to back can win the race for every next number for as long as it stays
  busy (each lost attempt costs the opener a PUT and two GETs, the writer one PUT). So the
  writer re-lists the manifests before every ``EPOCH_CHECK_EVERY``-th segment and stops
  (:class:`FencedError`) once a newer epoch exists: an opener chases at most that many
  commits. This is liveness only; safety never depends on it.
- **Fences outlive compaction.** The key a displaced writer would write next is always an
  empty segment (the fence of a later opener), so empty segments are never deleted: a
  checkpoint that dropped one would reopen the very key a stale writer is about to take.
  They cost one small object per open. Likewise a checkpoint deletes nothing unless, after
  its manifest is durable, re-listing the manifests shows that version is still the newest
  (manifest numbers are pruned and so can be re-created by a stale writer).
- **Durable order.** A checkpoint object is written first, the manifest that points at it
  second, and only after that manifest is durable are the segments and checkpoint it covers
  deleted.
- **Bounded replay.** A checkpoint is due once what a reopen would read (the last snapshot
  and the segments since) holds more than ``max(min_bytes, ratio * live state)`` superseded
  bytes, given the caller's estimate of its live state (otherwise: once the segments since
  exceed ``max(min_bytes, ratio * size of the last snapshot)``): reopening reads O(live
  state) bytes, and checkpoints never cost more than a constant factor of the log itself.
- **Appended segments** (local disk): a commit appends one block to the current segment
  (one ``fdatasync``) until it reaches ``segment_max_bytes``, then starts the next with a
  whole put-if-absent. An append checks, under the file's lock, that the next segment number
  does not exist: the fence of an opener. An opener, once its fence is in place, reads the
  tail of the segment before it under that lock, so every block the displaced writer
  acknowledged is replayed and no later one can land. A crash can leave the last block of a
  segment torn — never acknowledged — which replay accepts only where no later commit of
  that writer can follow: at the end of the log, or before an opener's fence. A checkpoint
  ends the current segment, since it covers that segment whole.
- The log speaks opaque bytes: records in, records out, snapshots in, snapshots out.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptionError, FencedError, QueueBroken, StorageError
from ..storage import Appender, LocalStore, ObjectExists, ObjectNotFound, Store
from .format import (
    MAGIC_CHECKPOINT,
    MAGIC_MANIFEST,
    MAGIC_SEGMENT,
    MAX_APPENDED_BLOCK,
    decode,
    decode_blocks,
    decode_frames,
    decode_header,
    encode,
    encode_block,
)

MANIFEST_DIR = "manifest"
SEGMENT_DIR = "segments"
CHECKPOINT_DIR = "checkpoints"
_OPEN_ATTEMPTS = 20
_FENCE_ATTEMPTS = 10_000
EPOCH_CHECK_EVERY = 64
_KEEP_MANIFESTS = 2


def _seq_name(seq: int) -> str:
    return f"{seq:020d}"


def _parse_seq(name: str) -> int | None:
    return int(name) if len(name) == 20 and name.isdigit() else None


@dataclass
class _Tail:
    """How far replay has read the last segment it applied."""

    seq: int
    end: int  # bytes consumed (the end of the last complete block)
    torn: bool  # an incomplete block followed, when it was read
    blocks: bool  # an appendable segment


class Log:
    """A single-writer log on a :class:`Store`. Not thread-safe: one committer drives it."""

    def __init__(self, store: Store, *, checkpoint_min_bytes: int = 1024 * 1024,
                 checkpoint_ratio: float = 1.0, checkpoint_max_segments: int = 256,
                 background_cleanup: bool = False,
                 segment_max_bytes: int = 8 * 1024 * 1024) -> None:
        self.store = store
        self.segment_max_bytes = segment_max_bytes if store.supports_append else 0
        self._appender: Appender | None = None
        self._tail: _Tail | None = None
        self.checkpoint_min_bytes = checkpoint_min_bytes
        self.checkpoint_ratio = checkpoint_ratio
        self.checkpoint_max_segments = checkpoint_max_segments
        self.segments_since_checkpoint = 0
        self.background_cleanup = background_cleanup
        self._cleaner: _Cleaner | None = None
        self.nonce = os.urandom(12).hex()
        self.epoch = 0
        self.manifest_n = 0
        self.checkpoint_name: str | None = None
        self.replay_from = 1
        self.next_seq = 1
        self.bytes_since_checkpoint = 0
        self.last_snapshot_size = 0
        self.live_at_checkpoint = 0  # the caller's live estimate when it was taken
        self.segments_written = 0
        self.checkpoints_written = 0
        self._empty_segments: set[int] = set()  # fences at or after replay_from: never deleted
        self._broken: BaseException | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, *, on_snapshot: Callable[[bytes], None],
             on_record: Callable[[bytes], None], **kwargs: Any) -> Log:
        """Claim the writer epoch, replay checkpoint and segments, fence the segment space."""
        log = cls(store, **kwargs)
        log._claim_epoch()
        if log.checkpoint_name is not None:
            snapshot = log._read_checkpoint(log.checkpoint_name)
            log.last_snapshot_size = len(snapshot)
            on_snapshot(snapshot)
        log._replay_segments(on_record)
        log._fence(on_record)
        if isinstance(store, LocalStore):
            for d in (SEGMENT_DIR, CHECKPOINT_DIR, MANIFEST_DIR):
                store.remove_temp_files(d)
        log._remove_orphan_checkpoints()
        return log

    def _remove_orphan_checkpoints(self) -> None:
        """Delete checkpoints the current manifest does not name.

        They are left by a crash between a checkpoint and its manifest, or by a displaced
        writer; now that this handle owns the epoch, no manifest can come to name them.
        """
        try:
            names = self.store.list_dir(CHECKPOINT_DIR)
            orphans = [f"{CHECKPOINT_DIR}/{n}" for n in names if n != self.checkpoint_name]
            self.store.delete(orphans)
        except StorageError:
            pass  # garbage only: the next open tries again

    def _manifest_fields(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "nonce": self.nonce, "checkpoint": self.checkpoint_name,
                "replay_from": self.replay_from, "created_at": time.time()}

    def _claim_epoch(self) -> None:
        for _ in range(_OPEN_ATTEMPTS):
            names = [n for n in self.store.list_dir(MANIFEST_DIR) if _parse_seq(n) is not None]
            current = 0
            if names:
                current = int(names[-1])
                try:
                    fields = self._read_manifest(current)
                except ObjectNotFound:
                    continue  # a writer removed it after creating a newer one: look again
                self.checkpoint_name = fields.get("checkpoint")
                self.replay_from = int(fields["replay_from"])
            n = current + 1
            data = encode(MAGIC_MANIFEST, self._manifest_fields(n))
            try:
                self.store.put_if_absent(f"{MANIFEST_DIR}/{_seq_name(n)}", data)
            except ObjectExists:
                continue  # another opener won this number: re-read and try the next
            self.epoch = self.manifest_n = n
            self._prune_manifests(names)
            return
        raise FencedError(f"{self.store.description}: could not claim the writer epoch after "
                          f"{_OPEN_ATTEMPTS} attempts; other processes keep opening this root")

    def _read_manifest(self, n: int) -> dict[str, Any]:
        key = f"{MANIFEST_DIR}/{_seq_name(n)}"
        fields, _ = decode(f"{self.store.description}/{key}", MAGIC_MANIFEST, self.store.get(key))
        if not isinstance(fields.get("replay_from"), int):
            raise CorruptionError(f"{self.store.description}/{key}: manifest lacks replay_from")
        return fields

    def _read_checkpoint(self, name: str) -> bytes:
        key = f"{CHECKPOINT_DIR}/{name}"
        try:
            data = self.store.get(key)
        except ObjectNotFound:
            raise CorruptionError(f"{self.store.description}/{key}: checkpoint named by the "
                                  "manifest is missing") from None
        _, frames = decode(f"{self.store.description}/{key}", MAGIC_CHECKPOINT, data)
        if len(frames) != 1:
            raise CorruptionError(f"{self.store.description}/{key}: expected one snapshot frame")
        return frames[0]

    def _get_segment(self, seq: int) -> bytes:
        return self.store.get(f"{SEGMENT_DIR}/{_seq_name(seq)}")

    def _parse_segment(self, seq: int, data: bytes) -> tuple[list[bytes], _Tail]:
        name = f"{self.store.description}/{SEGMENT_DIR}/{_seq_name(seq)}"
        fields, pos = decode_header(name, MAGIC_SEGMENT, data)
        if not fields.get("blocks"):
            frames = decode_frames(name, memoryview(data), pos, len(data))
            if fields.get("count") != len(frames):
                raise CorruptionError(f"{name}: header says {fields.get('count')} frames, "
                                      f"found {len(frames)}")
            return frames, _Tail(seq, len(data), False, False)
        records, end, torn = decode_blocks(name, data, pos)
        if end == pos:
            # The first block is published with the header, whole or not at all.
            raise CorruptionError(f"{name}: the first block is missing or truncated")
        return records, _Tail(seq, end, torn, True)

    def _read_rest(self, tail: _Tail, *, locked: bool) -> list[bytes]:
        """Records appended to ``tail``'s segment after it was read; updates ``tail``."""
        key = f"{SEGMENT_DIR}/{_seq_name(tail.seq)}"
        if locked and self.store.supports_append:
            rest = self.store.read_from_locked(key, tail.end)
        else:
            rest = self.store.get_range(key, tail.end, 2**62)
        records, end, torn = decode_blocks(f"{self.store.description}/{key}", rest, 0,
                                           base=tail.end)
        self.bytes_since_checkpoint += end
        tail.end += end
        tail.torn = torn
        return records

    def _apply_segment(self, seq: int, data: bytes, on_record: Callable[[bytes], None], *,
                       recheck: bool = False) -> None:
        """Apply segment ``seq`` (its bytes as read), after the one before it.

        The segment before may have grown since it was read unless ``seq`` was already listed
        when it was read and was started by its writer: a writer starts a segment only after
        its last append. Otherwise (``recheck``, or ``seq`` is an opener's empty fence) its
        rest is read under the append lock, which the fence makes final.
        """
        records, tail = self._parse_segment(seq, data)
        prev = self._tail
        if prev is not None and prev.blocks and (recheck or not records):
            for r in self._read_rest(prev, locked=True):
                on_record(r)
        if prev is not None and prev.torn and records:
            # Only an opener's fence may follow a segment that ends mid-block: a writer
            # starts a new segment only after its last append succeeded.
            raise CorruptionError(
                f"{self.store.description}/{SEGMENT_DIR}/{_seq_name(prev.seq)}: ends in an "
                f"incomplete block at byte {prev.end}, yet segment {_seq_name(seq)} follows it")
        self.bytes_since_checkpoint += tail.end
        self.segments_since_checkpoint += 1
        if not records:
            self._empty_segments.add(seq)
        for r in records:
            on_record(r)
        self._tail = tail

    def _replay_segments(self, on_record: Callable[[bytes], None]) -> None:
        seqs = sorted(s for s in (_parse_seq(n) for n in self.store.list_dir(SEGMENT_DIR))
                      if s is not None and s >= self.replay_from)
        expected = self.replay_from
        for s in seqs:
            if s != expected:
                raise CorruptionError(f"{self.store.description}/{SEGMENT_DIR}: segment "
                                      f"{_seq_name(expected)} is missing but {_seq_name(s)} exists")
            expected += 1
        if len(seqs) > 1 and not isinstance(self.store, LocalStore):
            # Object stores: fetch ahead in parallel, apply strictly in order.
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="taquba-replay") as pool:
                for s, data in zip(seqs, pool.map(self._get_segment, seqs)):
                    self._apply_segment(s, data, on_record)
        else:
            for s in seqs:
                self._apply_segment(s, self._get_segment(s), on_record)
        self.next_seq = expected

    def _fence(self, on_record: Callable[[bytes], None]) -> None:
        for _ in range(_FENCE_ATTEMPTS):
            data = self._segment_bytes(self.next_seq, ())
            try:
                self.store.put_if_absent(f"{SEGMENT_DIR}/{_seq_name(self.next_seq)}", data)
            except ObjectExists:
                # The previous writer committed this one before noticing us: replay it.
                seq = self.next_seq
                self._apply_segment(seq, self._get_segment(seq), on_record, recheck=True)
                self.next_seq += 1
                continue
            self.bytes_since_checkpoint += len(data)
            self._empty_segments.add(self.next_seq)
            self.next_seq += 1
            prev = self._tail
            if prev is not None and prev.blocks:
                # Our fence is in place: what the displaced writer appended until now is all
                # it ever will (see "Appended segments").
                for r in self._read_rest(prev, locked=True):
                    on_record(r)
            self._tail = None
            return
        raise FencedError(f"{self.store.description}: could not fence the segment space")

    # -- writing -------------------------------------------------------------------------

    def _segment_bytes(self, seq: int, records: Sequence[bytes]) -> bytes:
        return encode(MAGIC_SEGMENT, {"epoch": self.epoch, "nonce": self.nonce, "seq": seq,
                                      "count": len(records)}, records)

    def _check_writable(self) -> None:
        if self._closed:
            raise QueueBroken(f"{self.store.description}: log is closed")
        if self._broken is not None:
            if isinstance(self._broken, QueueBroken):
                raise self._broken
            raise QueueBroken(f"{self.store.description}: log is broken: {self._broken}") \
                from self._broken

    def _fail(self, exc: BaseException) -> BaseException:
        self._broken = exc
        return exc

    def append(self, records: Sequence[bytes]) -> int:
        """Write ``records`` as the next segment and return its sequence number.

        Returns only once the segment is durable. Raises :class:`FencedError` if another
        writer has taken over, :class:`StorageError` if the write failed after retries; in
        both cases the log is broken and writes nothing more.
        """
        self._check_writable()
        if self.segments_written and self.segments_written % EPOCH_CHECK_EVERY == 0:
            self._yield_to_newer_epoch()
        appender = self._appender
        if appender is not None:
            if records:
                block = encode_block(records)
                if appender.size + len(block) <= self.segment_max_bytes and \
                        len(block) <= MAX_APPENDED_BLOCK:
                    return self._append_block(appender, block)
            self._close_appender()  # the next segment takes this commit
        seq = self.next_seq
        key = f"{SEGMENT_DIR}/{_seq_name(seq)}"
        try:
            if records and self.segment_max_bytes:
                data = encode(MAGIC_SEGMENT, {"epoch": self.epoch, "nonce": self.nonce,
                                              "seq": seq, "count": 0, "blocks": True}
                              ) + encode_block(records)
                self._appender = self.store.create_appendable(key, data,
                                                              self.segment_max_bytes)
            else:
                data = self._segment_bytes(seq, records)
                self.store.put_if_absent(key, data)
        except ObjectExists as exc:
            raise self._fail(FencedError(
                f"{self.store.description}: segment {_seq_name(seq)} was written by another "
                "process; this handle has been fenced off (another Queue.open took over)")) from exc
        except StorageError as exc:
            # re-raise the same object: ``from None`` would erase the backend cause it holds
            raise self._fail(exc)  # noqa: B904
        self.next_seq = seq + 1
        self.bytes_since_checkpoint += len(data)
        self.segments_written += 1
        self.segments_since_checkpoint += 1
        if not records:
            self._empty_segments.add(seq)
        return seq

    def _append_block(self, appender: Appender, block: bytes) -> int:
        seq = self.next_seq - 1
        try:
            appender.append(block, f"{SEGMENT_DIR}/{_seq_name(seq + 1)}")
        except ObjectExists as exc:
            self._close_appender()
            raise self._fail(FencedError(
                f"{self.store.description}: segment {_seq_name(seq + 1)} was created by another "
                "process; this handle has been fenced off (another Queue.open took over)")
            ) from exc
        except StorageError as exc:
            self._close_appender()
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause
        self.bytes_since_checkpoint += len(block)
        self.segments_written += 1
        return seq

    def _close_appender(self) -> None:
        appender, self._appender = self._appender, None
        if appender is not None:
            appender.close()

    def _newest_manifest(self) -> int:
        return max((s for s in (_parse_seq(m) for m in self.store.list_dir(MANIFEST_DIR))
                    if s is not None), default=0)

    def _yield_to_newer_epoch(self) -> None:
        """Stop if another process has claimed a newer epoch (see "A busy writer yields")."""
        try:
            newest = self._newest_manifest()
        except StorageError:
            return  # only a liveness aid: the segment fence still protects the data
        if newest > self.manifest_n:
            raise self._fail(FencedError(
                f"{self.store.description}: manifest {_seq_name(newest)} is newer than this "
                f"handle's {_seq_name(self.manifest_n)}; another process has opened this root "
                "and this handle has been fenced off"))

    def checkpoint_due(self, live_bytes: int | None = None) -> bool:
        """Whether the next batch should carry a checkpoint.

        Given ``live_bytes``, the caller's estimate of what a snapshot would hold now: once
        what a reopen would read (the last snapshot plus the log since) exceeds it by more
        than ``max(checkpoint_min_bytes, checkpoint_ratio * live)`` of superseded bytes. A
        backlog that is still live is not copied again, and a reopen reads at most about
        ``(1 + ratio)`` times the live state plus the floor. Without it: once the log since
        the last checkpoint outgrows ``max(floor, ratio * the last snapshot)``. Either way,
        past ``checkpoint_max_segments`` segments only the log outgrowing the last snapshot
        is required, which bounds the objects a reopen reads.
        """
        if self.segments_since_checkpoint >= self.checkpoint_max_segments and \
                self.bytes_since_checkpoint > self.last_snapshot_size:
            return True
        if live_bytes is not None:
            if self.live_at_checkpoint > 0:
                # Calibrate the estimate against what the last snapshot really took.
                live = live_bytes * self.last_snapshot_size / self.live_at_checkpoint
            else:
                live = live_bytes
            superseded = self.last_snapshot_size + self.bytes_since_checkpoint - live
            return superseded > max(self.checkpoint_min_bytes, self.checkpoint_ratio * live)
        proportional = int(self.checkpoint_ratio * self.last_snapshot_size)
        if self.segments_since_checkpoint >= self.checkpoint_max_segments:
            # Many small segments: reopening costs a request each, so compact as soon as
            # the log outgrows the live state even below the byte floor.
            return self.bytes_since_checkpoint > proportional
        return self.bytes_since_checkpoint > max(self.checkpoint_min_bytes, proportional)

    def checkpoint(self, snapshot: bytes, seq: int, live_bytes: int = 0) -> None:
        """Record ``snapshot`` as the state after segment ``seq`` and drop what it covers.

        ``seq`` must be the last segment appended (the caller takes the snapshot in step
        with its records); ``live_bytes`` is the caller's estimate of the snapshot's size,
        the same measure it passes to :meth:`checkpoint_due`.
        """
        self._check_writable()
        if seq != self.next_seq - 1:
            raise ValueError(f"checkpoint for segment {seq}, but the last segment is "
                             f"{self.next_seq - 1}")
        self._close_appender()  # the checkpoint covers this segment whole: start a new one
        name = f"{_seq_name(seq)}-{self.epoch:010d}"
        data = encode(MAGIC_CHECKPOINT, {"epoch": self.epoch, "nonce": self.nonce, "seq": seq,
                                         "count": 1}, [snapshot])
        old_checkpoint, old_from = self.checkpoint_name, self.replay_from
        try:
            self.store.put_if_absent(f"{CHECKPOINT_DIR}/{name}", data)
            self.checkpoint_name, self.replay_from = name, seq + 1
            n = self.manifest_n + 1
            manifest = encode(MAGIC_MANIFEST, self._manifest_fields(self.epoch))
            try:
                self.store.put_if_absent(f"{MANIFEST_DIR}/{_seq_name(n)}", manifest)
            except ObjectExists as exc:
                self.checkpoint_name, self.replay_from = old_checkpoint, old_from
                raise self._fail(FencedError(
                    f"{self.store.description}: manifest {_seq_name(n)} was written by another "
                    "process; this handle has been fenced off")) from exc
        except StorageError as exc:
            self.checkpoint_name, self.replay_from = old_checkpoint, old_from
            if isinstance(exc, ObjectExists):
                raise self._fail(FencedError(
                    f"{self.store.description}: checkpoint {name} already exists; this handle "
                    "has been fenced off")) from exc
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause (see append)
        self.manifest_n = n
        self.bytes_since_checkpoint = 0
        self.segments_since_checkpoint = 0
        self.last_snapshot_size = len(snapshot)
        self.live_at_checkpoint = live_bytes
        self.checkpoints_written += 1
        # Our manifest number may have existed before and been pruned: only if ours is still
        # the newest version are we the writer, and only the writer may delete.
        try:
            newest = self._newest_manifest()
        except StorageError:
            return  # Unsure whether we still own the root: delete nothing.
        if newest != n:
            raise self._fail(FencedError(
                f"{self.store.description}: manifest {_seq_name(newest)} is newer than this "
                f"handle's {_seq_name(n)}; this handle has been fenced off"))
        # The manifest that drops them is durable: now the covered objects may go, except
        # the fences (see the module docstring).
        garbage = [f"{SEGMENT_DIR}/{_seq_name(s)}" for s in range(old_from, seq + 1)
                   if s not in self._empty_segments]
        self._empty_segments = {s for s in self._empty_segments if s > seq}
        if old_checkpoint is not None:
            garbage.append(f"{CHECKPOINT_DIR}/{old_checkpoint}")
        garbage += [f"{MANIFEST_DIR}/{_seq_name(m)}" for m in
                    range(max(1, n - _KEEP_MANIFESTS - 1), n - _KEEP_MANIFESTS + 1)]
        # Deleting thousands of objects takes a while: a helper thread does it so the
        # next commits are not held up behind it.
        if not self.background_cleanup:
            try:
                self.store.delete(garbage)
            except StorageError:
                pass  # Unreferenced leftovers are harmless; open removes orphan checkpoints.
            return
        if self._cleaner is None:
            self._cleaner = _Cleaner(self.store)
        self._cleaner.submit(garbage)

    def _prune_manifests(self, names: list[str]) -> None:
        old = [f"{MANIFEST_DIR}/{n}" for n in names[:-_KEEP_MANIFESTS]] if len(names) > \
            _KEEP_MANIFESTS else []
        if old:
            try:
                self.store.delete(old)
            except StorageError:
                pass

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop writing; wait (up to ``timeout``) for pending deletions of covered objects."""
        self._closed = True
        self._close_appender()
        if self._cleaner is not None:
            self._cleaner.close(timeout)

    # -- TEMPORARY: check_fenced, a stand-in to be replaced by the log's own version -------

    def check_fenced(self) -> None:
        """Raise :class:`FencedError` if a newer manifest than this writer's exists.

        One listing of ``manifest/``. Safe beside this writer's own checkpoint: a newer
        manifest that carries this writer's nonce is its own, written a moment ago.
        """
        if self._broken is not None:
            self._check_writable()
        own = self.manifest_n
        newest = self._newest_manifest()
        if newest <= max(own, self.manifest_n):
            return
        if newest == self.manifest_n + 1:
            try:
                fields = self._read_manifest(newest)
            except ObjectNotFound:
                fields = {}
            if fields.get("nonce") == self.nonce:
                return  # this writer's checkpoint manifest, not yet recorded as current
        raise self._fail(FencedError(
            f"{self.store.description}: manifest {_seq_name(newest)} is newer than this "
            f"handle's {_seq_name(self.manifest_n)}; another process has opened this root "
            "and this handle has been fenced off"))




class _Cleaner:
    """Deletes covered objects on a daemon thread named ``taquba-cleaner``, in order.

    Only garbage reaches it: objects that the durable manifest no longer names. A deletion
    that fails leaves harmless leftovers (open removes orphan checkpoints).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="taquba-cleaner", daemon=True)
        self._thread.start()

    def submit(self, keys: list[str]) -> None:
        self._jobs.put(keys)

    def _run(self) -> None:
        while True:
            keys = self._jobs.get()
            if keys is None:
                return
            try:
                self.store.delete(keys)
            except StorageError:
                pass

    def close(self, timeout: float | None) -> None:
        self._jobs.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
