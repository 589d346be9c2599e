"""Group commit: one write at a time, each carrying every record pending when it starts.

Callers append records to a pending batch under the shared lock and, for calls with a
durability promise, wait. A writer takes the whole pending batch, writes it (one segment, or
one appended block) outside the lock, then advances the durable sequence and wakes the
waiters. While one write is in flight the next batch accumulates, so the records per write
grow with the number of concurrent callers.

Who writes depends on what a write costs:

- **Object storage** (a PUT takes milliseconds): the ``taquba-committer`` thread does every
  write; handing a batch to it costs nothing next to the PUT.
- **Local disk with appended segments** (a write is one ``fdatasync``, a fraction of a
  millisecond): handing the batch to a thread and waking the caller again would cost about
  as much as the write itself, so a waiting caller that finds no write in flight writes the
  batch itself (*inline*), then wakes the others. The thread still writes records nobody
  waits for (a ``claim``'s), but only after a short grace period in which a caller is
  likely to take them along, and it writes checkpoints, so no caller waits behind one.
  Callers do not wake the thread for each record: while records keep coming it looks for
  such records every few milliseconds, and it sleeps for good once they stop.

On a small machine the cost to beat is the thread switch, not the write: waking a thread
and handing it the GIL takes tens of microseconds. So a caller sleeps at most once per call,
a woken caller returns without taking the lock again, and the callers a write releases are
woken one after another rather than all at once (see "sleeping and waking" below).

Invariants:

- A waiter returns only once the durable sequence has passed its record.
- Records become durable in the order they were submitted (segments are contiguous).
- If a segment cannot be written, the committer stops for good: the waiters of that batch and
  of everything still pending raise (a ``StorageError`` of the failure's kind, or
  ``FencedError``), and every later call raises ``QueueBroken``. Nothing durable is lost.
- A checkpoint snapshot is taken under the lock at the moment a batch is taken whole, so it
  describes exactly the state after that batch's segment.
- Gathering: when a PUT returns, the callers it releases come straight back with their next
  records while the other half of the callers is already pending. Taking the batch at once
  would split the callers into two alternating half-size batches, so the committer waits
  briefly (at most a quarter of the last write's duration, and never more than 5 ms) for
  as many records as the last batch and the pending ones together. A lone caller never
  waits.
- Whatever goes wrong in a write (even the snapshot callable raising) breaks the handle and
  wakes every waiter: nobody waits forever on a writer that has died.
"""

from __future__ import annotations

import logging
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import FencedError, QueueBroken, QueueClosed, StorageError
from .log import Log

logger = logging.getLogger("taquba.committer")

LINGER_FRACTION = 0.25
MAX_LINGER = 0.005
INLINE_GRACE = 0.001  # how long the thread leaves unwaited records to an inline writer
INLINE_POLL = 0.01  # how often it looks for them while records keep coming


@dataclass
class CommitStats:
    records_committed: int = 0
    segments_written: int = 0
    bytes_committed: int = 0
    checkpoints_written: int = 0
    checkpoint_failures: int = 0


class Committer:
    """Drives one :class:`Log`: inline writers and a thread named ``taquba-committer``.

    ``inline`` (default: whether the log appends, i.e. local disk) lets waiting callers write
    batches themselves; see the module docstring.
    """

    def __init__(self, log: Log, *, lock: threading.Lock | None = None,
                 snapshot: Callable[[], bytes] | None = None,
                 max_batch_bytes: int = 8 * 1024 * 1024, inline: bool | None = None,
                 live_bytes: Callable[[], int] | None = None) -> None:
        self.log = log
        self.lock = lock if lock is not None else threading.Lock()
        self._work = threading.Condition(self.lock)
        # Waiters sleep in the gate of their own batch, so a finished write wakes only the
        # callers it made durable: the records pending now (``_next``) or in flight.
        self._next: deque[Any] = deque()
        self._in_flight: deque[Any] = deque()
        self._spare: deque[Any] = deque()  # becomes _next at the next write
        self._ready: deque[Any] = deque()  # durable callers still asleep: see _sleep
        self._gathered = threading.Condition(self.lock)  # an inline writer's gathering
        self._snapshot = snapshot
        self._live_bytes = live_bytes  # estimate of the snapshot's size (Log.checkpoint_due)
        self._batch_live = 0
        self.max_batch_bytes = max_batch_bytes
        self.inline = bool(log.segment_max_bytes) if inline is None else inline
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._submitted = 0  # tickets handed out: the n-th record submitted has ticket n
        self._taken = 0  # tickets taken by a writer
        self._durable_upto = 0  # every ticket <= this is durable
        self._failure: BaseException | None = None
        self._writing = False  # a write (or a checkpoint) is in flight
        self._checkpoint: tuple[bytes, int, int] | None = None  # for the thread to write
        self._gather = 0  # records the next batch waits for (see "Gathering")
        self._linger = 0.0
        self._stopping = False
        self._idle = False  # the thread sleeps until woken (nothing for it to do)
        self._closed = False
        self.stats = CommitStats()
        self._thread = threading.Thread(target=self._run, name="taquba-committer", daemon=True)
        self._thread.start()

    # -- caller side (lock held) ---------------------------------------------------------

    def check_writable_locked(self) -> None:
        """Raise if nothing more can be committed."""
        if self._failure is not None:
            raise self._broken_error()
        if self._stopping:
            raise QueueClosed("the log is closing; no more records are accepted")

    def submit_locked(self, record: bytes) -> int:
        """Queue ``record`` for the next write; return its ticket. Lock must be held."""
        self.check_writable_locked()
        self._pending.append(record)
        self._pending_bytes += len(record)
        self._submitted += 1
        n = len(self._pending)
        if self.inline:
            # The thread only writes what nobody took (see _run): wake it from an idle
            # sleep, not at every record.
            if n == 1 and self._idle:
                self._work.notify()
            elif n == self._gather:
                self._gathered.notify()
        elif n == 1 or n == self._gather:
            self._work.notify()
        return self._submitted

    def wait_locked(self, ticket: int, timeout: float | None = None, *,
                    gather: bool = True) -> bool:
        """Block until ``ticket`` is durable. Lock must be held. False on timeout.

        Inline, a caller whose record is pending and finds no write in flight writes the
        batch itself (releasing the lock meanwhile, as waiting would), after gathering the
        callers the last write released unless ``gather`` is false (a caller that has
        gathered its batch already, as the queue's combined enqueues do).
        """
        try:
            return self.wait_released(ticket, timeout, gather=gather)
        finally:
            self.lock.acquire()

    def wait_released(self, ticket: int, timeout: float | None = None, *,
                      gather: bool = True) -> bool:
        """:meth:`wait_locked`, but the lock (held on entry) is released on every exit.

        A caller with nothing to do under the lock after its wait saves taking it again.
        """
        lock = self.lock
        held = True
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._durable_upto < ticket:
                if self._failure is not None:
                    raise self._failure_error()
                pending = self._taken < ticket
                if pending and self.inline and not self._writing:
                    if gather:
                        self._writing = True  # others wait while this caller gathers
                        try:
                            self._gather_locked()
                        finally:
                            self._writing = False  # even if the wait is interrupted
                    if self._failure is None and self._pending:
                        self._write_locked(on_thread=False)
                    continue
                gate = self._next if pending else self._in_flight
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                held = False
                self._sleep(gate, left)
                if self._durable_upto >= ticket:
                    return True
                lock.acquire()
                held = True
            return True
        finally:
            if held:
                lock.release()

    # -- convenience for callers that do not hold the lock ----------------------------------

    def append(self, record: bytes) -> None:
        """Append one record and return once it is durable."""
        self.append_many([record])

    def append_many(self, records: Sequence[bytes]) -> None:
        with self.lock:
            ticket = 0
            for r in records:
                ticket = self.submit_locked(r)
            self.wait_locked(ticket)

    @property
    def submitted(self) -> int:
        """The ticket of the last record submitted (wait on it to flush everything)."""
        return self._submitted

    @property
    def durable_upto(self) -> int:
        return self._durable_upto

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    # -- writing -------------------------------------------------------------------------

    def _take_batch_locked(self) -> tuple[list[bytes], bytes | None]:
        if self._pending_bytes <= self.max_batch_bytes:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            snapshot = None
            if self._snapshot is not None:
                live = None if self._live_bytes is None else self._live_bytes()
                if self.log.checkpoint_due(live):
                    snapshot = self._snapshot()
                    self._batch_live = live or 0
            return batch, snapshot
        size = 0
        cut = 0
        for i, r in enumerate(self._pending):
            if cut and size + len(r) > self.max_batch_bytes:
                break
            size += len(r)
            cut = i + 1
        batch = self._pending[:cut]
        del self._pending[:cut]
        self._pending_bytes -= size
        return batch, None

    def _write_locked(self, *, on_thread: bool) -> None:
        """Write the pending batch: lock held on entry and on return, released for the I/O.

        Requires a pending record, no write in flight and no failure.
        """
        try:
            batch, snapshot = self._take_batch_locked()
        except BaseException as exc:
            logger.error("taquba snapshot failed; the handle is now broken: %s", exc)
            self._break_locked(exc)
            return
        end = self._taken = self._taken + len(batch)
        self._writing = True
        # The waiters of this batch now wait for this write; later ones for the next.
        # (The spare was the in-flight condition of a write whose waiters were all woken;
        # a waiter re-checks its ticket after every wake-up, so reusing it is safe.)
        done, self._in_flight, self._next = self._next, self._next, self._spare
        failed: BaseException | None = None
        self.lock.release()
        try:
            started = time.monotonic()
            try:
                seq = self.log.append(batch)
            except BaseException as exc:
                failed = exc
            took = time.monotonic() - started
        finally:
            self.lock.acquire()
        if failed is not None:
            self._writing = False
            logger.error("taquba log write failed; the handle is now broken: %s", failed)
            self._break_locked(failed)
            if not on_thread and not isinstance(failed, Exception):
                raise failed  # e.g. KeyboardInterrupt in the caller that was writing
            return
        self._gather = len(batch) + len(self._pending)
        self._linger = min(MAX_LINGER, LINGER_FRACTION * took)
        self._durable_upto = end
        self.stats.records_committed += len(batch)
        self.stats.segments_written += 1
        self.stats.bytes_committed += sum(len(r) for r in batch)
        if done:
            first = done.popleft()
            self._ready.extend(done)
            done.clear()
            first.release()
        self._spare = done
        if snapshot is not None:
            self._checkpoint = (snapshot, seq, self._batch_live)
            if on_thread:
                self._checkpoint_locked()
            else:
                self._work.notify()  # the thread writes it; writes wait until it is done
            return
        self._writing = False
        self._hand_over_locked()

    # -- sleeping and waking ------------------------------------------------------------------
    #
    # A write makes a whole batch of callers durable at once. Waking them all at once would
    # have each find another holding the GIL and sleep again until it is free: on a machine
    # where a thread switch is dear, a second switch per call. So the writer wakes the first;
    # each caller, once running, wakes the next (_ready holds the rest, in order); a caller's
    # wake-up comes about when the one before it is back in its own code. A woken caller that
    # is not durable (chosen to write the next batch) wakes one too: an extra chain is
    # harmless, a broken one is not.

    def _sleep(self, gate: deque[Any], timeout: float | None) -> None:
        """Release the lock (held) and sleep on ``gate`` until woken or ``timeout``."""
        waiter = allocate_lock()
        waiter.acquire()
        gate.append(waiter)
        self.lock.release()
        try:
            woken = waiter.acquire() if timeout is None else waiter.acquire(True, timeout)
        except BaseException:
            self._leave(gate, waiter)
            raise
        if woken:
            self._wake_next()
        else:
            self._leave(gate, waiter)

    def _leave(self, gate: deque[Any], waiter: Any) -> None:
        """A sleeper that stops waiting: withdraw, or pass on the wake-up it was given.

        Under the lock, as writers move sleepers from a gate to ``_ready`` under it: a
        sleeper found in neither has been woken (or is being), and wakes the next instead.
        """
        with self.lock:
            for waiters in (gate, self._ready):
                try:
                    waiters.remove(waiter)
                    return
                except ValueError:
                    pass
        self._wake_next()

    def _wake_next(self) -> None:
        try:
            self._ready.popleft().release()
        except IndexError:
            pass

    def _hand_over_locked(self) -> None:
        """After a write: let the next one start."""
        if self.inline and self._pending:
            try:
                self._next.popleft().release()  # one waiter of the pending batch writes it
            except IndexError:
                pass
        if self._stopping or (self._pending and (self._idle or not self.inline)):
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
        if gather <= 1 or len(self._pending) >= gather:
            return
        self._gather = gather
        deadline = time.monotonic() + self._linger
        cond = self._gathered if self.inline else self._work
        while len(self._pending) < gather and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cond.wait(left)
        self._gather = 0

    def _run(self) -> None:
        seen = -1  # the tickets submitted when the thread last looked (inline)
        with self.lock:
            while self._failure is None:
                if self._checkpoint is not None:
                    self._checkpoint_locked()
                    continue
                if self.inline and not self._stopping and (self._pending
                                                           or self._submitted != seen):
                    # Leave the batch to a caller who will wait for it anyway, and write
                    # what nobody took within the grace period. While records keep coming,
                    # callers do not wake the thread (a wake-up per call would cost as much
                    # as the call): it looks again when the grace period is over.
                    seen = self._submitted
                    taken = self._taken
                    self._work.wait(INLINE_GRACE if self._pending else INLINE_POLL)
                    if self._taken == taken and self._pending and not self._writing \
                            and self._checkpoint is None and self._failure is None \
                            and not self._stopping:
                        self._write_locked(on_thread=True)
                    continue
                if self._writing or not self._pending:
                    if self._stopping and not self._writing:
                        return
                    self._idle = True  # the next record wakes the thread
                    try:
                        self._work.wait()
                    finally:
                        self._idle = False
                    continue
                self._gather_locked()
                if self._writing or not self._pending:
                    continue
                self._write_locked(on_thread=True)

    def _break_locked(self, exc: BaseException) -> None:
        self._failure = exc
        self._pending = []
        self._pending_bytes = 0
        for waiters in (self._next, self._in_flight, self._ready):
            while waiters:
                waiters.popleft().release()
        self._work.notify_all()

    def _failure_error(self) -> BaseException:
        """The error for a caller whose record was lost in the failure."""
        exc = self._failure
        assert exc is not None
        if isinstance(exc, FencedError):
            err: BaseException = FencedError(str(exc))
        elif isinstance(exc, StorageError):
            err = type(exc)(str(exc))
        else:
            err = QueueBroken(f"log write failed: {exc!r}")
        err.__cause__ = exc
        return err

    def _broken_error(self) -> BaseException:
        exc = self._failure
        assert exc is not None
        if isinstance(exc, FencedError):
            err: BaseException = FencedError(str(exc))
        else:
            err = QueueBroken(f"the queue handle is broken by an earlier storage failure "
                              f"({exc}); reopen it")
        err.__cause__ = exc
        return err

    # -- shutdown --------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> bool:
        """Write what is pending, stop the thread, close the log. True if it stopped in time."""
        with self.lock:
            if self._closed:
                return True
            self._stopping = True
            self._work.notify_all()
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        with self.lock:
            self._closed = True
        if stopped:
            self.log.close()
        return stopped
