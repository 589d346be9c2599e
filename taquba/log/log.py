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
- **Bounded replay.** Checkpoints follow the live state (policy.py): reopening reads
  O(live state) bytes, and checkpoints cost a constant factor of the log itself.
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
from typing import Any

from ..errors import CorruptionError, FencedError, QueueBroken, StorageError
from ..storage import Appender, ObjectExists, ObjectNotFound, Store
from .cleanup import Collector
from .format import (
    MAGIC_CHECKPOINT,
    MAGIC_SEGMENT,
    MAX_APPENDED_BLOCK,
    decode,
    encode,
    encode_block,
)
from .manifest import (
    CHECKPOINT_DIR,
    MANIFEST_DIR,
    MAX_MANIFEST_NUMBER,
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
from .policy import checkpoint_due, checkpoint_due_at_close
from .replay import Replay

_OPEN_ATTEMPTS = 20
_FENCE_ATTEMPTS = 10_000


class Log:
    """A single-writer log on a :class:`Store`.

    Not thread-safe: one committer drives :meth:`append` and :meth:`checkpoint`. Only
    :meth:`check_fenced` may be called from another thread meanwhile.
    """

    def __init__(
        self,
        store: Store,
        *,
        checkpoint_min_bytes: int = 512 * 1024,
        checkpoint_ratio: float = 1.0,
        checkpoint_max_segments: int = 256,
        background_cleanup: bool = False,
        segment_max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.segment_max_bytes = segment_max_bytes if store.appendable else 0
        self._appender: Appender | None = None
        self._appender_seq = 0
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
        self._void: tuple[tuple[int, int], ...] = ()  # void ranges of this handle's version
        self._through = 0  # the last segment this handle's version says was written
        self._own_fence = 0  # kept while this handle owns the root (see "Nothing accumulates")
        self._ends: dict[int, int] = {}  # where each appended segment's blocks end, known now
        self._recorded: dict[int, int] | None = None  # the ends in this handle's version
        self._broken: BaseException | None = None
        self._closed = False

    @property
    def manifest_n(self) -> int:
        """The number of this handle's current manifest version."""
        return self._own[0]

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        store: Store,
        *,
        on_snapshot: Callable[[bytes], None],
        on_record: Callable[[bytes], None],
        **kwargs: Any,
    ) -> Log:
        """Claim the writer epoch, replay checkpoint and segments, fence the segment space,
        then settle what was replayed and delete what is no longer needed."""
        log = cls(store, **kwargs)
        manifest = log._claim_epoch()
        if log.checkpoint_name is not None:
            snapshot = log._read_checkpoint(log.checkpoint_name)
            log.last_snapshot_size = len(snapshot)
            on_snapshot(snapshot)
        replay = Replay(store, manifest, on_record)
        below = replay.run()
        log._fence(replay)
        log._settle(replay, below)
        return log

    def _manifest_numbers(self) -> list[int]:
        return sorted(
            n for n in (parse_seq(m) for m in self.store.list_dir(MANIFEST_DIR)) if n is not None
        )

    def _claim_epoch(self) -> Manifest:
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
            if n >= MAX_MANIFEST_NUMBER:
                raise CorruptionError(
                    f"{self.store.description}/{manifest_key(current)}: a manifest number past "
                    f"{MAX_MANIFEST_NUMBER - 1} cannot be a version this library wrote (a "
                    "foreign or damaged name under manifest/)"
                )
            data = encode_manifest(n, self.nonce, manifest)
            try:
                self.store.put_if_absent(manifest_key(n), data)
            except ObjectExists:
                continue  # another opener won this number: re-read and try the next
            self.epoch = n
            self._own = (n, data)
            self.checkpoint_name, self.replay_from = manifest.checkpoint, manifest.replay_from
            self._recorded = manifest.ends
            self._void = manifest.void
            self._through = manifest.through
            # Every older version goes before anything else is deleted (FENCING.md, step 2):
            # a displaced writer's read-back fails from now on.
            self.store.delete([manifest_key(m) for m in numbers])
            return manifest
        raise self._fenced(
            f"could not claim the writer epoch after {_OPEN_ATTEMPTS} attempts; "
            "other processes keep opening this root"
        )

    def _read_manifest(self, n: int) -> Manifest:
        key = manifest_key(n)
        return decode_manifest(f"{self.store.description}/{key}", self.store.get(key))

    def _read_checkpoint(self, name: str) -> bytes:
        key = f"{CHECKPOINT_DIR}/{name}"
        try:
            data = self.store.get(key)
        except ObjectNotFound:
            raise CorruptionError(
                f"{self.store.description}/{key}: checkpoint named by the manifest is missing"
            ) from None
        _, frames = decode(f"{self.store.description}/{key}", MAGIC_CHECKPOINT, data)
        if len(frames) != 1:
            raise CorruptionError(f"{self.store.description}/{key}: expected one snapshot frame")
        return frames[0]

    def _fence(self, replay: Replay) -> None:
        for _ in range(_FENCE_ATTEMPTS):
            seq = replay.next_seq
            data = self._segment_bytes(seq, ())
            try:
                self.store.put_if_absent(segment_key(seq), data)
            except ObjectExists:
                # The previous writer committed this one before noticing us: replay it.
                replay.apply(seq, self.store.get(segment_key(seq)), recheck=True)
                replay.next_seq = seq + 1
                continue
            replay.fenced(seq, len(data))
            self._own_fence = seq
            return
        raise self._fenced("could not fence the segment space")

    def _settle(self, replay: Replay, below: list[int]) -> None:
        """Record where the replayed appended segments end and which segments hold nothing
        (the fences: skipped outright if no record was replayed since the checkpoint), then
        delete what the log no longer needs, fences included."""
        self.next_seq = replay.next_seq
        garbage = [segment_key(s) for s in below]
        replay_from = self.replay_from
        empty = {s for s in replay.empty if s >= replay_from}
        if replay.records == 0:
            replay_from = self.next_seq
        else:
            self.bytes_since_checkpoint = replay.bytes
            self.segments_since_checkpoint = replay.segments
        void = void_ranges({s for s in empty if s >= replay_from})
        ends = {s: e for s, e in replay.ends.items() if s >= replay_from}
        garbage += self._publish_manifest(self.checkpoint_name, replay_from, ends, void)
        # Fences read in this replay, now recorded as void or covered (those recorded void
        # before were listed with the garbage already); this handle's own fence stays.
        garbage += [
            segment_key(s)
            for s in sorted(empty - {self._own_fence})
            if not replay.manifest.is_void(s)
        ]
        if self.store.leaves_temp_files:
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
        return encode(
            MAGIC_SEGMENT,
            {"epoch": self.epoch, "nonce": self.nonce, "seq": seq, "count": len(records)},
            records,
        )

    def _check_writable(self) -> None:
        if self._closed:
            raise QueueBroken(f"{self.store.description}: log is closed")
        if self._broken is not None:
            if isinstance(self._broken, QueueBroken):
                raise self._broken
            raise QueueBroken(
                f"{self.store.description}: log is broken: {self._broken}"
            ) from self._broken

    def _fail(self, exc: BaseException) -> BaseException:
        self._broken = exc
        return exc

    def _fenced(self, detail: str) -> FencedError:
        """Break the log for good as displaced by another writer; the error to raise."""
        exc = FencedError(
            f"{self.store.description}: {detail}; this handle has been fenced "
            "off (another process has opened this root) and writes nothing more"
        )
        self._broken = exc
        return exc

    def _publish_manifest(
        self,
        checkpoint: str | None,
        replay_from: int,
        ends: dict[int, int],
        void: tuple[tuple[int, int], ...] = (),
    ) -> list[str]:
        through = self.next_seq - 1
        """Write the next manifest version and confirm it is the newest; return the keys of
        the older versions listed (now garbage). Breaks the log on any failure."""
        n = self.manifest_n + 1
        data = encode_manifest(
            self.epoch, self.nonce, Manifest(checkpoint, replay_from, ends, void, through)
        )
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
            raise self._fenced(
                f"manifest {seq_name(newest)} is newer than this handle's {seq_name(n)}"
            )
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
            raise self._fenced(
                f"manifest {seq_name(n)} of this handle is gone or replaced, "
                f"and the newest could not be read; segment {seq_name(seq)}, "
                "written meanwhile, may still be replayed"
            ) from exc
        recorded = (newest.ends or {}).get(seq)
        if (
            seq < newest.replay_from
            or newest.is_void(seq)
            or (end is not None and recorded is not None and end > recorded)
        ):
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
                if (
                    appender.size + len(block) <= self.segment_max_bytes
                    and len(block) <= MAX_APPENDED_BLOCK
                ):
                    seq = self._append_block(appender, block)
                    self._confirm_owner(seq, appender.size)
                    return seq
            self._close_appender()  # the next segment takes this commit
        seq = self.next_seq
        key = segment_key(seq)
        try:
            if records and self.segment_max_bytes:
                data = encode(
                    MAGIC_SEGMENT,
                    {
                        "epoch": self.epoch,
                        "nonce": self.nonce,
                        "seq": seq,
                        "count": 0,
                        "blocks": True,
                    },
                ) + encode_block(records)
                self._appender = self.store.create_appendable(key, data, self.segment_max_bytes)
                self._appender_seq = seq
            else:
                data = self._segment_bytes(seq, records)
                self.store.put_if_absent(key, data)
        except ObjectExists as exc:
            raise self._fenced(f"segment {seq_name(seq)} was written by another process") from exc
        except ObjectNotFound as exc:
            # Created, then gone before it could be opened for appending: only a newer
            # writer deletes segments (it replayed this one, checkpointed and collected it).
            raise self._fenced(
                f"segment {seq_name(seq)} was removed by another process "
                "right after this handle created it"
            ) from exc
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
            raise self._fenced(
                f"segment {seq_name(seq + 1)} was created by another process"
            ) from exc
        except ObjectNotFound as exc:
            # Only a newer writer deletes a segment (it replayed it, then checkpointed).
            self._close_appender()
            raise self._fenced(f"segment {seq_name(seq)} was removed by another process") from exc
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

    def checkpoint_due_at_close(self, live_bytes: int | None = None) -> bool:
        """Whether a clean close should checkpoint (see :func:`checkpoint_due_at_close`)."""
        return (
            self._broken is None and not self._closed and checkpoint_due_at_close(self, live_bytes)
        )

    def checkpoint(self, snapshot: bytes, seq: int, live_bytes: int = 0) -> None:
        """Record ``snapshot`` as the state after segment ``seq`` and drop what it covers.

        ``seq`` must be the last segment appended (the caller takes the snapshot in step
        with its records); ``live_bytes`` is the caller's estimate of the snapshot's size,
        the same measure it passes to :meth:`checkpoint_due`.
        """
        self._check_writable()
        if seq != self.next_seq - 1:
            raise ValueError(
                f"checkpoint for segment {seq}, but the last segment is {self.next_seq - 1}"
            )
        self._close_appender()  # the checkpoint covers this segment whole: start a new one
        name = f"{seq_name(seq)}-{self.epoch:010d}"
        data = encode(
            MAGIC_CHECKPOINT,
            {"epoch": self.epoch, "nonce": self.nonce, "seq": seq, "count": 1},
            [snapshot],
        )
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
            if self._recorded is not None and (
                self._ends != self._recorded or self._through != self.next_seq - 1
            ):
                try:
                    self._confirm_owner(self.next_seq - 1)
                    if self._broken is None:  # a displaced handle writes no version
                        self._collector.submit(
                            self._publish_manifest(
                                self.checkpoint_name, self.replay_from, dict(self._ends), self._void
                            )
                        )
                except (StorageError, QueueBroken):
                    pass  # the next open settles the segment instead
        self._closed = True
        self._close_appender()
        self._collector.close(timeout)
