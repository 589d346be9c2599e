"""Group commit: one write at a time, each carrying every record pending when it starts.

Callers submit records under the shared lock and get the :class:`Batch` their record is in:
a Future-like ticket that is resolved when the batch is durable (or has failed). A writer
takes the oldest pending batch, writes it (one segment, or one appended block) outside the
lock, then resolves it. While one write is in flight the next batch fills, so the records
per write grow with the number of concurrent callers.

Invariants:

- A waiter returns only once the batch holding its record is durable.
- Records become durable in the order they were submitted (batches are written in order,
  and segments are contiguous).
- One broken state: if a write fails, the committer stops for good. Every pending batch is
  failed at once, every waiter raises (a ``StorageError`` of the failure's kind, or
  ``FencedError``), and every later call raises ``QueueBroken``
  (:meth:`Committer.check_usable_locked`). Nothing durable is lost.
- A checkpoint snapshot is taken under the lock when the last pending batch is taken, so it
  describes exactly the state after that batch's segment.
- Whatever goes wrong in a write (even the snapshot callable raising) breaks the handle and
  fails every waiter: nobody waits forever on a writer that has died.

Who writes depends on what a write costs:

- **Object storage** (a PUT takes milliseconds): the ``taquba-committer`` thread writes
  every batch; handing a batch to it costs nothing next to the PUT.
- **Local disk with appended segments** (a write is one ``fdatasync``): handing the batch to
  a thread and waking the caller again would cost as much as the write, so a waiting caller
  that finds no write in flight writes the oldest batch itself (*inline*); when it is done,
  one waiter of the next batch is nudged to write that one. The thread writes only what
  nobody takes within ``INLINE_GRACE`` of the batch's first record (a ``claim``'s record
  has no waiter), and the checkpoints, so no caller waits behind one. Its timed waits are
  the deadlines of pending batches; while records keep coming it stays awake one grace
  period past the last batch instead of being woken for each new one (a wake-up per call
  would cost as much as the call), and it sleeps untimed once they stop.

Gathering: when a write returns, the callers it releases come straight back with their next
records while the others are already pending. Taking the batch at once would split the
callers into two alternating half-size batches, so the writer waits briefly (a quarter of
the last write's duration, at most ``MAX_LINGER``) for as many records as the last batch
and the pending ones together. A lone caller never waits.

Waking: a resolved batch wakes its first waiter, and each waiter wakes the next as it
returns, so the woken callers do not all compete for the interpreter at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .batch import Batch
from .errors import FencedError, QueueBroken, QueueClosed, StorageError
from .log import Log

logger = logging.getLogger("taquba.committer")

LINGER_FRACTION = 0.25
MAX_LINGER = 0.005
INLINE_GRACE = 0.01  # how long the thread leaves a batch nobody waits for to a caller


@dataclass
class CommitStats:
    records_committed: int = 0
    segments_written: int = 0
    bytes_committed: int = 0
    checkpoints_written: int = 0  # including those at close
    checkpoint_failures: int = 0
    checkpoints_at_close: int = 0


class Committer:
    """Drives one :class:`Log`: inline writers and a thread named ``taquba-committer``.

    ``lock`` is the caller's state lock (one is made if none is given): records are
    submitted under it, in the order the caller applies them. ``snapshot`` (called under the
    lock) and ``live_bytes`` enable checkpoints; ``inline`` (default: whether the log
    appends, i.e. local disk) lets waiting callers write batches themselves.
    """

    def __init__(
        self,
        log: Log,
        *,
        lock: threading.Lock | None = None,
        snapshot: Callable[[], bytes] | None = None,
        max_batch_bytes: int = 8 * 1024 * 1024,
        inline: bool | None = None,
        live_bytes: Callable[[], int] | None = None,
    ) -> None:
        self.log = log
        self.lock = lock if lock is not None else threading.Lock()
        self._work = threading.Condition(self.lock)  # wakes the thread
        self._gathered = threading.Condition(self.lock)  # wakes an inline writer gathering
        self._snapshot = snapshot
        self._live_bytes = live_bytes
        self.max_batch_bytes = max_batch_bytes
        self.inline = bool(log.segment_max_bytes) if inline is None else inline
        self._open = Batch()  # receives records
        self._full: deque[Batch] = deque()  # older batches that reached max_batch_bytes
        self._latest = Batch()  # the batch of the last record submitted (none yet: done)
        self._latest.set_result()
        self._pending = 0  # records in _full and _open
        self.submitted = 0  # records submitted so far
        self._failure: BaseException | None = None
        self._writing = False  # a write (or a checkpoint) is in flight
        self._checkpoint: tuple[bytes, int, int] | None = None  # for the thread to write
        self._batch_live = 0  # the live-bytes estimate of the snapshot being taken
        self._gather = 0  # records the next batch waits for (see "Gathering")
        self._linger = 0.0
        self._stopping = False
        self._idle = False  # the thread sleeps until woken
        self._awaits_write = False  # the thread sleeps until the write in flight ends
        self._closed = False
        # Combining ("submit many"): callers that queue items for one caller to apply.
        self._round_lock = threading.Lock()
        self._items: list[Any] = []
        self._round = Batch()  # resolved once the items queued in it are durable
        self._round_filled = threading.Condition(self._round_lock)
        self._round_target = 1 << 30  # items the next round waits for (see "Gathering")
        self._combiner = threading.Lock()
        self.stats = CommitStats()
        self._thread = threading.Thread(target=self._run, name="taquba-committer", daemon=True)
        self._thread.start()

    # -- the one broken state ------------------------------------------------------------

    @property
    def failure(self) -> BaseException | None:
        """The failure that broke this committer, or None."""
        return self._failure

    def check_usable_locked(self) -> None:
        """Raise what a call gets from a committer that takes no more records.

        ``FencedError`` once another process has taken over, ``QueueBroken`` after any
        other failure, ``QueueClosed`` while closing. The lock must be held.
        """
        if self._failure is not None:
            raise self.error_for(self._failure, own=False)
        if self._stopping:
            raise QueueClosed("the log is closing; no more records are accepted")

    @staticmethod
    def error_for(failure: BaseException, *, own: bool) -> BaseException:
        """The error a caller raises for ``failure``: the one place that builds it.

        ``own``: the caller's record was in a batch the failure lost (it gets the failure's
        own kind); otherwise it came later, to a handle already broken.
        """
        if isinstance(failure, FencedError):
            err: BaseException = FencedError(str(failure))
        elif own and isinstance(failure, StorageError):
            err = type(failure)(str(failure))
        elif own:
            err = QueueBroken(f"log write failed: {failure!r}")
        else:
            err = QueueBroken(
                f"the queue handle is broken by an earlier storage failure ({failure}); reopen it"
            )
        err.__cause__ = failure
        return err

    def _break_locked(self, exc: BaseException) -> None:
        """Enter the broken state: fail every pending batch and wake everyone, at once."""
        self._failure = exc
        for batch in (*self._full, self._open):
            batch.set_exception(exc)
        self._full.clear()
        self._open = Batch()
        self._pending = 0
        self._work.notify_all()
        self._gathered.notify_all()

    # -- caller side ---------------------------------------------------------------------

    def submit_locked(self, record: bytes) -> Batch:
        """Queue ``record`` for a write; return its batch. The lock must be held."""
        self.check_usable_locked()
        return self._add_locked(record)

    def submit_many_locked(self, records: Sequence[bytes]) -> Batch:
        """Queue ``records`` in order; return the batch of the last. The lock must be held."""
        self.check_usable_locked()
        batch = self._open
        for record in records:
            batch = self._add_locked(record)
        return batch

    def _add_locked(self, record: bytes) -> Batch:
        batch = self._open
        size = len(record)
        if batch.records and batch.nbytes + size > self.max_batch_bytes:
            self._full.append(batch)
            batch = self._open = Batch()
        if not batch.records:
            batch.opened = time.monotonic()
        batch.records.append(record)
        batch.nbytes += size
        self._latest = batch
        self.submitted += 1
        n = self._pending = self._pending + 1
        if self.inline:
            # The thread writes only what nobody took (see _run): wake it from an idle
            # sleep, not at every record.
            if self._idle and len(batch.records) == 1:
                self._work.notify()
            elif n == self._gather:
                self._gathered.notify()
        elif n == 1 or n == self._gather:
            self._work.notify()
        return batch

    def latest_locked(self) -> Batch:
        """The batch of the last record submitted (wait on it to flush everything)."""
        return self._latest

    def wait(self, batch: Batch, timeout: float | None = None, *, gather: bool = True) -> bool:
        """Block until ``batch`` is durable; False if ``timeout`` passes first.

        The lock must be held on entry; it is released on every exit, so a caller with
        nothing to do under it after the wait saves taking it again. Raises the error of a
        failure that lost the batch (see :meth:`error_for`). Inline, a caller whose batch
        is next and finds no write in flight writes it itself, after gathering the callers
        the last write released unless ``gather`` is false.
        """
        lock = self.lock
        held = True
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not batch.done():
                if self.inline and not self._writing and self._pending:
                    if gather:
                        self._writing = True  # others wait while this caller gathers
                        try:
                            self._gather_locked()
                        finally:
                            self._writing = False  # even if the wait is interrupted
                    if self._failure is None and self._pending:
                        self._write_locked(on_thread=False)
                    continue
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                batch.prepare_wait()
                lock.release()
                held = False
                if batch.wait(left):
                    break
                lock.acquire()
                held = True
        finally:
            if held:
                lock.release()
        error = batch.error()
        if error is not None:
            raise self.error_for(error, own=True)
        return True

    def wait_locked(self, batch: Batch, timeout: float | None = None) -> bool:
        """:meth:`wait`, with the lock held again on return."""
        try:
            return self.wait(batch, timeout)
        finally:
            self.lock.acquire()

    def append(self, record: bytes) -> None:
        """Append one record and return once it is durable (the lock must not be held)."""
        self.append_many([record])

    def append_many(self, records: Sequence[bytes]) -> None:
        """Append ``records`` in order and return once they are durable."""
        self.lock.acquire()
        try:
            batch = self.submit_many_locked(records)
        except BaseException:
            self.lock.release()
            raise
        self.wait(batch)

    # -- combining: submit many ------------------------------------------------------------
    #
    # A round gathers like a batch: it waits briefly (the linger of the last write) for as
    # many items as the last round and those queued during it together.
    #
    # With many threads, taking the state lock in turn costs each caller hand-offs of the
    # lock and of the interpreter. Instead a caller may queue an item: whichever caller
    # combines takes every queued item, applies them all in one lock hold (``apply``, which
    # submits their records, sharing records where it can) and waits for their durability
    # once; the others sleep on the round their item joined, a Batch resolved when it is
    # durable. A round resolves only after its items were applied and written.

    def combine(self, item: Any, apply: Callable[[list[Any]], Batch | None]) -> None:
        """Queue ``item`` for ``apply`` and return once it has been applied and is durable.

        ``apply(items)`` is called with the state lock held, in queue order, and returns
        the batch of the last record it submitted (None if it submitted none). It reports
        per-item results and errors on the items themselves. Raises what waiting on that
        batch raises (a storage failure), as :meth:`wait` does.
        """
        with self._round_lock:
            self._items.append(item)
            if len(self._items) == self._round_target:
                self._round_filled.notify()
            joined = self._round
            joined.prepare_wait()
        while True:
            if joined.done():  # applied and written by another caller's round
                error = joined.error()
                if error is not None:
                    raise self.error_for(error, own=True)
                return
            if self._combiner.acquire(False):
                try:
                    batch = self._combine_round(apply, joined)
                finally:
                    self._combiner.release()
                    with self._round_lock:
                        if self._items:  # queued meanwhile: one of them combines next
                            self._round.nudge()
                if batch is not None:
                    error = batch.error()
                    if error is not None:
                        raise self.error_for(error, own=True)
                    return
            elif joined.wait():
                error = joined.error()
                if error is not None:
                    raise self.error_for(error, own=True)
                return

    def _combine_round(
        self, apply: Callable[[list[Any]], Batch | None], joined: Batch
    ) -> Batch | None:
        """Apply and write the queued items; the batch of ``joined``'s items if they were
        among them (else None: the caller's round is still to come)."""
        with self._round_lock:
            if len(self._items) < self._round_target and self._linger > 0:
                # The callers the last round released are on their way back: a moment.
                self._round_filled.wait(self._linger)
            items, self._items = self._items, []
            done, self._round = self._round, Batch()
        if not items:
            return None
        last: Batch | None = None
        try:
            self.lock.acquire()
            try:
                last = apply(items)
            except BaseException:
                self.lock.release()
                raise
            if last is not None:
                self.wait(last, gather=False)
            else:
                self.lock.release()
        except BaseException as exc:
            lost = last.error() if last is not None and last.error() is not None else exc
            with self._round_lock:
                done._resolve(lost)
            if done is joined:
                return done  # the caller raises the failure as its own
            raise
        with self._round_lock:
            done._resolve(None if last is None else last.error())
            self._round_target = len(items) + len(self._items)
        return done if done is joined else None

    # -- writing -------------------------------------------------------------------------

    def _take_locked(self) -> tuple[Batch, bytes | None]:
        """The oldest pending batch, and the snapshot to checkpoint after it, if one is due."""
        if self._full:
            batch = self._full.popleft()
            self._pending -= len(batch.records)
            return batch, None
        snapshot = None
        if self._snapshot is not None:  # the state now is the state after the open batch
            live = None if self._live_bytes is None else self._live_bytes()
            if self.log.checkpoint_due(live):
                snapshot = self._snapshot()
                self._batch_live = live or 0
        batch = self._open
        self._open = Batch()
        self._pending = 0
        return batch, snapshot

    def _write_locked(self, *, on_thread: bool) -> None:
        """Write the oldest pending batch: lock held on entry and return, released for I/O.

        Requires a pending record, no write in flight and no failure.
        """
        try:
            batch, snapshot = self._take_locked()
        except BaseException as exc:
            logger.error("taquba snapshot failed; the handle is now broken: %s", exc)
            self._break_locked(exc)  # nothing was taken: every pending batch fails
            return
        self._writing = True
        failed: BaseException | None = None
        self.lock.release()
        try:
            started = time.monotonic()
            try:
                seq = self.log.append(batch.records)
            except BaseException as exc:
                failed = exc
            took = time.monotonic() - started
        finally:
            self.lock.acquire()
        if failed is not None:
            self._writing = False
            logger.error("taquba log write failed; the handle is now broken: %s", failed)
            batch.set_exception(failed)
            self._break_locked(failed)
            if not on_thread and not isinstance(failed, Exception):
                raise failed  # e.g. KeyboardInterrupt in the caller that was writing
            return
        n = len(batch.records)
        self._gather = n + self._pending
        self._linger = min(MAX_LINGER, LINGER_FRACTION * took)
        stats = self.stats
        stats.records_committed += n
        stats.segments_written += 1
        stats.bytes_committed += batch.nbytes
        batch.set_result()
        if snapshot is not None:
            self._checkpoint = (snapshot, seq, self._batch_live)
            if on_thread:
                self._checkpoint_locked()
            else:
                self._work.notify()  # the thread writes it; writes wait until it is done
            return
        self._writing = False
        self._hand_over_locked()

    def _hand_over_locked(self) -> None:
        """After a write: let the next one start."""
        if self._pending and self.inline:
            (self._full[0] if self._full else self._open).nudge()
        if (
            self._stopping
            or self._awaits_write
            or (self._pending and (self._idle or not self.inline))
        ):
            self._work.notify()  # the thread may be waiting for this write to end

    def _checkpoint_locked(self) -> None:
        """Write the checkpoint a write left (thread only; lock held, released for I/O)."""
        assert self._checkpoint is not None
        snapshot, seq, live = self._checkpoint
        failed: BaseException | None = None
        self.lock.release()
        try:
            try:
                self.log.checkpoint(snapshot, seq, live)
            except BaseException as exc:
                failed = exc
        finally:
            self.lock.acquire()
        self._checkpoint = None
        self._writing = False
        if failed is not None:
            # The segments are durable; only compaction failed. The log is broken (it
            # writes nothing after a failed put), so stop accepting records.
            if not isinstance(failed, FencedError):
                self.stats.checkpoint_failures += 1
            logger.error("taquba checkpoint failed; the handle is now broken: %s", failed)
            self._break_locked(failed)
            return
        self.stats.checkpoints_written += 1
        self._hand_over_locked()

    def _gather_locked(self) -> None:
        """Wait a little for the callers the last write released (see "Gathering")."""
        gather, self._gather = self._gather, 0
        if gather <= 1 or self._pending >= gather:
            return
        self._gather = gather
        deadline = time.monotonic() + self._linger
        cond = self._gathered if self.inline else self._work
        while self._pending < gather and not self._stopping and self._failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cond.wait(left)
        self._gather = 0

    def _run(self) -> None:
        seen = -1  # records submitted when the thread last looked
        with self.lock:
            while self._failure is None:
                if self._checkpoint is not None:
                    self._checkpoint_locked()
                    continue
                if self._writing:
                    # Inline, a caller is writing: look again when the oldest pending batch
                    # (or one that opens meanwhile) may need the thread.
                    left = 0.0
                    if self.inline and not self._stopping:
                        left = self._grace_left() if self._pending else INLINE_GRACE
                    if left > 0:
                        self._work.wait(left)
                    else:
                        self._awaits_write = True  # woken when the write ends
                        try:
                            self._work.wait()
                        finally:
                            self._awaits_write = False
                    continue
                if not self._pending:
                    if self._stopping:
                        return
                    if self.inline and self.submitted != seen:
                        # Records are coming and callers write them: stay awake for one
                        # grace period rather than be woken for the next batch.
                        seen = self.submitted
                        self._work.wait(INLINE_GRACE)
                        continue
                    self._idle = True  # the first record of the next batch wakes the thread
                    try:
                        self._work.wait()
                    finally:
                        self._idle = False
                    continue
                if self.inline and not self._stopping:
                    # Leave the batch to a caller who will wait for it anyway; write it if
                    # nobody has taken it within the grace period of its first record.
                    seen = self.submitted
                    left = self._grace_left()
                    if left > 0:
                        self._work.wait(left)
                        continue
                else:
                    self._gather_locked()
                    if self._writing or not self._pending:
                        continue
                self._write_locked(on_thread=True)

    def _grace_left(self) -> float:
        """Seconds until the oldest pending batch is the thread's to write (inline)."""
        oldest = self._full[0] if self._full else self._open
        return oldest.opened + INLINE_GRACE - time.monotonic()

    # -- shutdown --------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> bool:
        """Write what is pending, stop the thread, close the log. True if it stopped in time."""
        with self.lock:
            if self._closed:
                return True
            self._stopping = True
            self._work.notify_all()
            self._gathered.notify_all()
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        with self.lock:
            self._closed = True
        if stopped:
            self._checkpoint_at_close()
            self.log.close()
        return stopped

    def _checkpoint_at_close(self) -> None:
        """Checkpoint once everything is written, if the log since the last checkpoint
        outweighs the live state: the next open then reads the live state, not the history.

        A failure here loses nothing (every record is durable in its segment): it is logged
        and the close goes on; the next open replays the segments instead.
        """
        if self._snapshot is None or self._failure is not None:
            return
        with self.lock:
            live = None if self._live_bytes is None else self._live_bytes()
            if not self.log.checkpoint_due_at_close(live):
                return
            snapshot = self._snapshot()
        try:
            self.log.checkpoint(snapshot, self.log.next_seq - 1, live or 0)
        except Exception as exc:
            if not isinstance(exc, FencedError):
                self.stats.checkpoint_failures += 1
            logger.warning(
                "taquba checkpoint at close failed (nothing is lost; the next "
                "open replays the log instead): %s",
                exc,
            )
            return
        self.stats.checkpoints_written += 1
        self.stats.checkpoints_at_close += 1
