"""The fenced, append-only log: manifest versions, contiguous segments and checkpoints.

Layout under the store's root::

    manifest/<n:020d>               immutable, put-if-absent; the highest n is current
    segments/<seq:020d>             put-if-absent; contiguous; one per commit, or (stores
                                    that append) one block per commit up to a size
    checkpoints/<seq:020d>-<epoch:010d>  snapshot of the state after segment <seq>

Invariants (the argument for the first three is in FENCING.md):

- **Single writer.** Opening claims an epoch by creating manifest version ``n+1``, deletes
  every older version, replays, then fences the segment space by creating the next segment
  (empty) with put-if-absent, replaying any segment that beat it. A commit is acknowledged
  only after its segment (or block) is durable *and* a read-back finds this writer's current
  manifest version still there, byte for byte. A displaced writer therefore loses a
  put-if-absent or finds its version gone: it raises :class:`FencedError` and writes nothing
  more; nothing it acknowledged is lost, because every later open replays every segment.
- **Nothing accumulates.** Fences are ordinary segments: an open records those in its
  replay range as void (never read again) or, if it replayed no record, moves
  ``replay_from`` past them, and deletes them. It keeps only its own fence, for as long as
  it owns the root, so that the writer it displaced finds out without writing anything; the
  next owner deletes it. A root holds one manifest version, one checkpoint, the segments
  since and that fence, so an open costs a constant number of requests however many opens
  came before. Whatever a crash left (segments below ``replay_from``, unnamed checkpoints,
  older versions) the next open deletes, and a failed deletion is retried with the next
  checkpoint's.
- **Durable order.** A checkpoint object is written first, the manifest version that names
  it second (and confirmed newest by a listing), and only then are the segments, checkpoint
  and version it supersedes deleted.
- **Bounded replay.** A checkpoint is due once what a reopen would read (the last snapshot
  and the segments since) holds more than ``max(min_bytes, ratio * live state)`` superseded
  bytes, given the caller's estimate of its live state (otherwise: once the segments since
  exceed ``max(min_bytes, ratio * size of the last snapshot)``): reopening reads O(live
  state) bytes, and checkpoints never cost more than a constant factor of the log itself.
- **Appended segments** (local disk): a commit appends one block to the current segment
  (one ``fdatasync``) until it reaches ``segment_max_bytes``, then starts the next with a
  whole put-if-absent. An append checks, under the file's lock, that the next segment number
  does not exist (an opener's fence); an opener, once its fence is in place, reads the rest
  of that segment under the same lock. A checkpoint ends the current segment.
- **Torn tails.** A crash can leave the block being appended torn (format.py says exactly
  what that may look like). Replay accepts one only at the end of the segment the last
  session was appending to, with nothing after it but openers' empty fences. As soon as a
  clean close or the next open has settled a segment, the manifest records where its blocks
  end, and from then on it must hold whole, intact blocks up to there: any damage in it is
  :class:`CorruptionError` naming the object and offset. A segment its own writer followed
  with another one is never torn either. Each version also records the last segment
  written, so a segment missing up to there is corruption, the newest one included.
- The log speaks opaque bytes: records in, records out, snapshots in, snapshots out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import CorruptionError, FencedError, QueueBroken, StorageError
from ..storage import Appender, LocalStore, ObjectExists, ObjectNotFound, Store
from .cleanup import Collector
from .format import (
    MAGIC_CHECKPOINT,
    MAGIC_SEGMENT,
    MAX_APPENDED_BLOCK,
    decode,
    decode_blocks,
    encode,
    encode_block,
)
from .manifest import (
    CHECKPOINT_DIR,
    MANIFEST_DIR,
    SEGMENT_DIR,
    Manifest,
    decode_manifest,
    encode_manifest,
    manifest_key,
    parse_seq,
    segment_key,
    seq_name,
    void_ranges,
)
from .policy import checkpoint_due
from .segments import Tail, parse_segment

_OPEN_ATTEMPTS = 20
_FENCE_ATTEMPTS = 10_000


class Log:
    """A single-writer log on a :class:`Store`.

    Not thread-safe: one committer drives :meth:`append` and :meth:`checkpoint`. Only
    :meth:`check_fenced` may be called from another thread meanwhile.
    """

    def __init__(self, store: Store, *, checkpoint_min_bytes: int = 1024 * 1024,
                 checkpoint_ratio: float = 1.0, checkpoint_max_segments: int = 256,
                 background_cleanup: bool = False,
                 segment_max_bytes: int = 8 * 1024 * 1024) -> None:
        self.store = store
        self.segment_max_bytes = segment_max_bytes if store.supports_append else 0
        self._appender: Appender | None = None
        self._appender_seq = 0
        self._tail: Tail | None = None
        self.checkpoint_min_bytes = checkpoint_min_bytes
        self.checkpoint_ratio = checkpoint_ratio
        self.checkpoint_max_segments = checkpoint_max_segments
        self.segments_since_checkpoint = 0
        self.background_cleanup = background_cleanup
        self._collector = Collector(store, background=background_cleanup)
        self.nonce = os.urandom(12).hex()
        self.epoch = 0
        self._own: tuple[int, bytes] = (0, b"")  # this handle's manifest version and bytes
        self.checkpoint_name: str | None = None
        self.replay_from = 1
        self.next_seq = 1
        self.bytes_since_checkpoint = 0
        self.last_snapshot_size = 0
        self.live_at_checkpoint = 0  # the caller's live estimate when it was taken
        self.segments_written = 0
        self.checkpoints_written = 0
        self._settled: dict[int, int] = {}  # ends recorded by the version replay started from
        self._void: tuple[tuple[int, int], ...] = ()  # void ranges of this handle's version
        self._claimed_void: tuple[tuple[int, int], ...] = ()  # those replay started from
        self._through = 0  # the last segment this handle's version says was written
        self._empty: set[int] = set()  # segments from replay_from on known to hold nothing
        self._own_fence = 0  # kept while this handle owns the root (see "Nothing accumulates")
        self._legacy = False  # that version predates recorded ends
        self._ends: dict[int, int] = {}  # where each appended segment's blocks end, known now
        self._recorded: dict[int, int] | None = None  # the ends in this handle's version
        self._torn: Tail | None = None  # a segment ending mid-block, followed by fences only
        self._replayed = 0  # records replayed since the checkpoint
        self._broken: BaseException | None = None
        self._closed = False

    @property
    def manifest_n(self) -> int:
        """The number of this handle's current manifest version."""
        return self._own[0]

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, *, on_snapshot: Callable[[bytes], None],
             on_record: Callable[[bytes], None], **kwargs: Any) -> Log:
        """Claim the writer epoch, replay checkpoint and segments, fence the segment space,
        then settle what was replayed and delete what is no longer needed."""
        log = cls(store, **kwargs)
        log._claim_epoch()
        if log.checkpoint_name is not None:
            snapshot = log._read_checkpoint(log.checkpoint_name)
            log.last_snapshot_size = len(snapshot)
            on_snapshot(snapshot)
        below = log._replay_segments(on_record)
        log._fence(on_record)
        log._settle(below)
        return log

    def _manifest_numbers(self) -> list[int]:
        return sorted(n for n in (parse_seq(m) for m in self.store.list_dir(MANIFEST_DIR))
                      if n is not None)

    def _claim_epoch(self) -> None:
        for _ in range(_OPEN_ATTEMPTS):
            numbers = self._manifest_numbers()
            current = numbers[-1] if numbers else 0
            manifest = Manifest(None, 1, {})  # a new root records ends from the start
            if current:
                try:
                    manifest = self._read_manifest(current)
                except ObjectNotFound:
                    continue  # a writer removed it after creating a newer one: look again
            n = current + 1
            data = encode_manifest(n, self.nonce, manifest)
            try:
                self.store.put_if_absent(manifest_key(n), data)
            except ObjectExists:
                continue  # another opener won this number: re-read and try the next
            self.epoch = n
            self._own = (n, data)
            self.checkpoint_name, self.replay_from = manifest.checkpoint, manifest.replay_from
            self._legacy = manifest.ends is None
            self._settled = dict(manifest.ends or {})
            self._recorded = manifest.ends
            self._void = self._claimed_void = manifest.void
            self._through = manifest.through
            # Every older version goes before anything else is deleted (FENCING.md, step 2):
            # a displaced writer's read-back fails from now on.
            self.store.delete([manifest_key(m) for m in numbers])
            return
        raise self._fenced(f"could not claim the writer epoch after {_OPEN_ATTEMPTS} attempts; "
                           "other processes keep opening this root")

    def _read_manifest(self, n: int) -> Manifest:
        key = manifest_key(n)
        return decode_manifest(f"{self.store.description}/{key}", self.store.get(key))

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
        end = self._settled.get(seq)
        if end is not None:
            return self.store.get_range(segment_key(seq), 0, end)
        return self.store.get(segment_key(seq))

    def _parse_segment(self, seq: int, data: bytes) -> tuple[list[bytes], Tail]:
        return parse_segment(f"{self.store.description}/{segment_key(seq)}", seq, data,
                             self._settled.get(seq))

    def _read_rest(self, tail: Tail, *, locked: bool) -> list[bytes]:
        """Records appended to ``tail``'s segment after it was read; updates ``tail``."""
        key = segment_key(tail.seq)
        if locked and self.store.supports_append:
            rest = self.store.read_from_locked(key, tail.end)
        else:
            rest = self.store.get_range(key, tail.end, 2**62)
        records, end, torn = decode_blocks(f"{self.store.description}/{key}", rest, 0,
                                           base=tail.end)
        self.bytes_since_checkpoint += end
        tail.end += end
        tail.torn = torn
        self._ends[tail.seq] = tail.end
        self._replayed += len(records)
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
        self._follow(tail, records, on_record, recheck=recheck)

    def _follow(self, tail: Tail, records: list[bytes], on_record: Callable[[bytes], None],
                *, recheck: bool = False) -> None:
        """Apply the records of segment ``tail.seq``, which follows ``self._tail``."""
        seq = tail.seq
        prev = self._tail
        name = f"{self.store.description}/{SEGMENT_DIR}"
        if prev is not None and prev.blocks and not prev.settled and (recheck or not records):
            for r in self._read_rest(prev, locked=True):
                on_record(r)
        if prev is not None and prev.torn:
            # Only an opener's fence may follow a segment that ends mid-block: its writer
            # starts a new segment only after its last append succeeded.
            if records or tail.nonce == prev.nonce:
                raise CorruptionError(
                    f"{name}/{seq_name(prev.seq)}: ends in an incomplete block at byte "
                    f"{prev.end}, yet segment {seq_name(seq)} follows it")
            self._torn = prev
        torn = self._torn
        if records and torn is not None and torn.torn and not self._legacy:
            raise CorruptionError(
                f"{name}/{seq_name(torn.seq)}: ends in an incomplete block at byte "
                f"{torn.end}, yet segment {seq_name(seq)} holds records written after it")
        self.bytes_since_checkpoint += tail.end
        self.segments_since_checkpoint += 1
        self._replayed += len(records)
        if tail.blocks:
            self._ends[seq] = tail.end
        elif not records:
            self._empty.add(seq)
        for r in records:
            on_record(r)
        self._tail = tail

    def _replay_segments(self, on_record: Callable[[bytes], None]) -> list[int]:
        """Replay every segment from ``replay_from`` on; return the ones listed that are
        garbage (below it, or void)."""
        seqs = sorted(s for s in (parse_seq(n) for n in self.store.list_dir(SEGMENT_DIR))
                      if s is not None)
        void = Manifest(None, self.replay_from, None, self._void)
        garbage = [s for s in seqs if s < self.replay_from or void.is_void(s)]
        present = {s for s in seqs if s >= self.replay_from}
        top = max([*present, *(last for _, last in self._void), self._through],
                  default=self.replay_from - 1)
        top = max(top, self.replay_from - 1)
        for s in range(self.replay_from, top + 1):
            if s not in present and not void.is_void(s):
                later = min([p for p in present if p > s] or [top])
                raise CorruptionError(f"{self.store.description}/{SEGMENT_DIR}: segment "
                                      f"{seq_name(s)} is missing but {seq_name(later)} "
                                      f"{'exists' if later in present else 'was written'}")
        live = [s for s in range(self.replay_from, top + 1) if not void.is_void(s)]
        fetched: Any = map(self._get_segment, live)
        pool = None
        if len(live) > 1 and not self.store.supports_append:
            # Object stores: fetch ahead in parallel, apply strictly in order.
            pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="taquba-replay")
            fetched = pool.map(self._get_segment, live)
        try:
            data = iter(fetched)
            for s in range(self.replay_from, top + 1):
                if void.is_void(s):  # recorded as holding nothing: not read
                    self._follow(Tail(s, 0, False, False, "", True), [], on_record)
                else:
                    self._apply_segment(s, next(data), on_record)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.next_seq = top + 1
        return garbage

    def _fence(self, on_record: Callable[[bytes], None]) -> None:
        for _ in range(_FENCE_ATTEMPTS):
            data = self._segment_bytes(self.next_seq, ())
            try:
                self.store.put_if_absent(segment_key(self.next_seq), data)
            except ObjectExists:
                # The previous writer committed this one before noticing us: replay it.
                seq = self.next_seq
                self._apply_segment(seq, self.store.get(segment_key(seq)), on_record,
                                    recheck=True)
                self.next_seq += 1
                continue
            self.bytes_since_checkpoint += len(data)
            self._empty.add(self.next_seq)
            self._own_fence = self.next_seq
            self.next_seq += 1
            prev = self._tail
            if prev is not None and prev.blocks and not prev.settled:
                # Our fence is in place: what the displaced writer appended until now is all
                # it ever will (see "Appended segments").
                for r in self._read_rest(prev, locked=True):
                    on_record(r)
            self._tail = None
            return
        raise self._fenced("could not fence the segment space")

    def _settle(self, below: list[int]) -> None:
        """Record where the replayed appended segments end and which segments hold nothing
        (the fences: skipped outright if no record was replayed since the checkpoint), then
        delete what the log no longer needs, fences included."""
        garbage = [segment_key(s) for s in below]
        replay_from = self.replay_from
        empty = {s for s in self._empty if s >= replay_from}
        if self._replayed == 0:
            replay_from = self.next_seq
        void = void_ranges({s for s in empty if s >= replay_from})
        ends = {s: e for s, e in self._ends.items() if s >= replay_from}
        garbage += self._publish_manifest(self.checkpoint_name, replay_from, ends, void)
        # Fences read in this replay, now recorded as void or covered (those recorded void
        # before were listed with the garbage already); this handle's own fence stays.
        old_void = Manifest(None, 1, None, self._claimed_void)
        garbage += [segment_key(s) for s in sorted(empty - {self._own_fence})
                    if not old_void.is_void(s)]
        if self._replayed == 0:
            self.bytes_since_checkpoint = self.segments_since_checkpoint = 0
        if isinstance(self.store, LocalStore):
            for d in (SEGMENT_DIR, CHECKPOINT_DIR, MANIFEST_DIR):
                self.store.remove_temp_files(d)
        try:
            names = self.store.list_dir(CHECKPOINT_DIR)
            # Unnamed checkpoints are left by a crash between a checkpoint and its manifest,
            # or by a displaced writer; no version can come to name them now.
            garbage += [f"{CHECKPOINT_DIR}/{n}" for n in names if n != self.checkpoint_name]
            self.store.delete(garbage)
        except StorageError:
            pass  # garbage only: the next open tries again

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

    def _fenced(self, detail: str) -> FencedError:
        """Break the log for good as displaced by another writer; the error to raise."""
        exc = FencedError(f"{self.store.description}: {detail}; this handle has been fenced "
                          "off (another process has opened this root) and writes nothing more")
        self._broken = exc
        return exc

    def _publish_manifest(self, checkpoint: str | None, replay_from: int,
                          ends: dict[int, int],
                          void: tuple[tuple[int, int], ...] = ()) -> list[str]:
        through = self.next_seq - 1
        """Write the next manifest version and confirm it is the newest; return the keys of
        the older versions listed (now garbage). Breaks the log on any failure."""
        n = self.manifest_n + 1
        data = encode_manifest(self.epoch, self.nonce,
                               Manifest(checkpoint, replay_from, ends, void, through))
        try:
            self.store.put_if_absent(manifest_key(n), data)
        except ObjectExists as exc:
            raise self._fenced(f"manifest {seq_name(n)} was written by another process") from exc
        except StorageError as exc:
            # re-raise the same object: ``from None`` would erase the backend cause it holds
            raise self._fail(exc)  # noqa: B904
        try:
            numbers = self._manifest_numbers()
        except StorageError as exc:
            # n may be a number a newer writer had already deleted: unconfirmed, we stop.
            raise self._fail(exc)  # noqa: B904
        newest = numbers[-1] if numbers else 0
        if newest != n:
            raise self._fenced(f"manifest {seq_name(newest)} is newer than this handle's "
                               f"{seq_name(n)}")
        self._own = (n, data)
        self.checkpoint_name, self.replay_from = checkpoint, replay_from
        self._ends = dict(ends)
        self._recorded = dict(ends)
        self._void = void
        self._through = through
        return [manifest_key(m) for m in numbers if m < n]

    def _confirm_owner(self, seq: int, end: int | None = None) -> None:
        """After a write to segment ``seq`` (an appended block: ending at byte ``end``), read
        back this handle's manifest version (FENCING.md). If it is gone, another process has
        taken over: the log is fenced, and the write stands only if it lies where every
        open replays, according to the newest version."""
        n, expected = self._own
        try:
            data: bytes | None = self.store.get(manifest_key(n))
        except ObjectNotFound:
            data = None
        except StorageError as exc:
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause
        if data == expected:
            return
        fenced = self._fenced(f"manifest {seq_name(n)} of this handle is gone or replaced")
        try:
            newest = self._newest_manifest()
        except StorageError as exc:
            raise self._fenced(f"manifest {seq_name(n)} of this handle is gone or replaced, "
                               f"and the newest could not be read; segment {seq_name(seq)}, "
                               "written meanwhile, may still be replayed") from exc
        recorded = (newest.ends or {}).get(seq)
        if seq < newest.replay_from or newest.is_void(seq) or (
                end is not None and recorded is not None and end > recorded):
            raise fenced
        # Written before the new writer's fence: it replays this write (FENCING.md).

    def _newest_manifest(self) -> Manifest:
        for _ in range(_OPEN_ATTEMPTS):
            numbers = self._manifest_numbers()
            if not numbers:
                break
            try:
                return self._read_manifest(numbers[-1])
            except ObjectNotFound:
                continue  # replaced meanwhile: look again
        raise StorageError(f"{self.store.description}: no readable manifest version")

    def check_fenced(self) -> None:
        """Raise :class:`FencedError` if another process has opened this root.

        One small read: this handle's manifest version, which an opener deletes right after
        claiming the root. Once fenced, the log is broken for good, exactly as if a write
        had found out, and every later call raises that error without a request (a log
        broken by a storage failure raises :class:`QueueBroken`). A storage error during
        the read propagates and leaves the log as it was. Safe to call from any thread
        while the committer writes; does nothing on a closed log.
        """
        if self._closed:
            return
        self._check_writable()
        n, expected = self._own
        try:
            data: bytes | None = self.store.get(manifest_key(n))
        except ObjectNotFound:
            data = None
        if data == expected or self._own[0] != n:
            return  # intact, or replaced meanwhile by this handle's own newer version
        raise self._fenced(f"manifest {seq_name(n)} of this handle is gone or replaced")

    def append(self, records: Sequence[bytes]) -> int:
        """Write ``records`` as the next segment and return its sequence number.

        Returns only once the segment is durable and this handle is confirmed to be the
        writer. Raises :class:`FencedError` if another writer has taken over,
        :class:`StorageError` if the write failed after retries; in both cases the log is
        broken and writes nothing more.
        """
        self._check_writable()
        appender = self._appender
        if appender is not None:
            if records:
                block = encode_block(records)
                if appender.size + len(block) <= self.segment_max_bytes and \
                        len(block) <= MAX_APPENDED_BLOCK:
                    seq = self._append_block(appender, block)
                    self._confirm_owner(seq, appender.size)
                    return seq
            self._close_appender()  # the next segment takes this commit
        seq = self.next_seq
        key = segment_key(seq)
        try:
            if records and self.segment_max_bytes:
                data = encode(MAGIC_SEGMENT, {"epoch": self.epoch, "nonce": self.nonce,
                                              "seq": seq, "count": 0, "blocks": True}
                              ) + encode_block(records)
                self._appender = self.store.create_appendable(key, data,
                                                              self.segment_max_bytes)
                self._appender_seq = seq
            else:
                data = self._segment_bytes(seq, records)
                self.store.put_if_absent(key, data)
        except ObjectExists as exc:
            raise self._fenced(f"segment {seq_name(seq)} was written by another process") \
                from exc
        except StorageError as exc:
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause
        self.next_seq = seq + 1
        self.bytes_since_checkpoint += len(data)
        self.segments_written += 1
        self.segments_since_checkpoint += 1
        self._confirm_owner(seq, len(data) if self._appender is not None else None)
        return seq

    def _append_block(self, appender: Appender, block: bytes) -> int:
        seq = self.next_seq - 1
        try:
            appender.append(block, segment_key(seq + 1))
        except ObjectExists as exc:
            self._close_appender()
            raise self._fenced(f"segment {seq_name(seq + 1)} was created by another "
                               "process") from exc
        except StorageError as exc:
            self._close_appender()
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause
        self.bytes_since_checkpoint += len(block)
        self.segments_written += 1
        return seq

    def _close_appender(self) -> None:
        appender, self._appender = self._appender, None
        if appender is not None:
            self._ends[self._appender_seq] = appender.size
            appender.close()

    def checkpoint_due(self, live_bytes: int | None = None) -> bool:
        """Whether the next batch should carry a checkpoint (see :func:`checkpoint_due`)."""
        return checkpoint_due(self, live_bytes)

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
        name = f"{seq_name(seq)}-{self.epoch:010d}"
        data = encode(MAGIC_CHECKPOINT, {"epoch": self.epoch, "nonce": self.nonce, "seq": seq,
                                         "count": 1}, [snapshot])
        try:
            self.store.put_if_absent(f"{CHECKPOINT_DIR}/{name}", data)
        except ObjectExists as exc:
            raise self._fenced(f"checkpoint {name} already exists") from exc
        except StorageError as exc:
            raise self._fail(exc)  # noqa: B904 - keeps the backend cause
        old_checkpoint, old_from = self.checkpoint_name, self.replay_from
        garbage = self._publish_manifest(name, seq + 1, {})
        self.bytes_since_checkpoint = 0
        self.segments_since_checkpoint = 0
        self.last_snapshot_size = len(snapshot)
        self.live_at_checkpoint = live_bytes
        self.checkpoints_written += 1
        # The version that drops them is durable and the newest: now the covered objects
        # may go, fences included (FENCING.md). Deleting thousands of objects takes a while:
        # with background cleanup a helper thread does it, so the next commits are not held
        # up behind it.
        if old_checkpoint is not None:
            garbage.append(f"{CHECKPOINT_DIR}/{old_checkpoint}")
        garbage += [segment_key(s) for s in range(old_from, seq + 1) if s != self._own_fence]
        self._collector.submit(garbage)

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop writing: record the last segment written and where the current appended
        segment ends (so neither can go missing or pass for torn unnoticed), and wait (up
        to ``timeout``) for pending deletions."""
        if not self._closed and self._broken is None:
            if self._appender is not None:
                self._ends[self._appender_seq] = self._appender.size
            if self._recorded is not None and (self._ends != self._recorded
                                               or self._through != self.next_seq - 1):
                try:
                    self._confirm_owner(self.next_seq - 1)
                    if self._broken is None:  # a displaced handle writes no version
                        self._collector.submit(self._publish_manifest(
                            self.checkpoint_name, self.replay_from, dict(self._ends),
                            self._void))
                except (StorageError, QueueBroken):
                    pass  # the next open settles the segment instead
        self._closed = True
        self._close_appender()
        self._collector.close(timeout)
