"""Group commit: the one thread that writes segments.

Callers append records to a pending batch under the shared lock and, for calls with a
durability promise, wait. The committer thread takes the whole pending batch, writes it as
one segment outside the lock, then advances the durable sequence and wakes the waiters.
While one PUT is in flight the next batch accumulates, so the records per PUT grow with the
number of concurrent callers.

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
- Whatever goes wrong in the thread (even the snapshot callable raising) breaks the handle
  and wakes every waiter: nobody waits forever on a thread that has died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import FencedError, QueueBroken, QueueClosed, StorageError
from .log import Log

logger = logging.getLogger("taquba.committer")

LINGER_FRACTION = 0.25
MAX_LINGER = 0.005


@dataclass
class CommitStats:
    records_committed: int = 0
    segments_written: int = 0
    bytes_committed: int = 0
    checkpoints_written: int = 0
    checkpoint_failures: int = 0


class Committer:
    """Drives one :class:`Log` from a dedicated thread named ``taquba-committer``."""

    def __init__(self, log: Log, *, lock: threading.Lock | None = None,
                 snapshot: Callable[[], bytes] | None = None,
                 max_batch_bytes: int = 8 * 1024 * 1024) -> None:
        self.log = log
        self.lock = lock if lock is not None else threading.Lock()
        self._work = threading.Condition(self.lock)
        self._durable = threading.Condition(self.lock)
        self._snapshot = snapshot
        self.max_batch_bytes = max_batch_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._submitted = 0  # tickets handed out: the n-th record submitted has ticket n
        self._taken = 0  # tickets taken by the committer thread
        self._durable_upto = 0  # every ticket <= this is durable
        self._failure: BaseException | None = None
        self._gather = 0  # records the next batch waits for (see "Gathering")
        self._linger = 0.0
        self._stopping = False
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
        """Queue ``record`` for the next segment; return its ticket. Lock must be held."""
        self.check_writable_locked()
        self._pending.append(record)
        self._pending_bytes += len(record)
        self._submitted += 1
        if len(self._pending) == 1 or len(self._pending) == self._gather:
            self._work.notify()
        return self._submitted

    def wait_locked(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until ``ticket`` is durable. Lock must be held. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._durable_upto < ticket:
            if self._failure is not None:
                raise self._failure_error()
            if deadline is None:
                self._durable.wait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._durable.wait(left)
        return True

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

    # -- the committer thread --------------------------------------------------------------

    def _take_batch_locked(self) -> tuple[list[bytes], bytes | None]:
        if self._pending_bytes <= self.max_batch_bytes:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            snapshot = None
            if self._snapshot is not None and self.log.checkpoint_due():
                snapshot = self._snapshot()
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

    def _gather_locked(self) -> None:
        """Wait a little for the callers the last write released (see "Gathering")."""
        gather, self._gather = self._gather, 0
        if gather <= 1 or len(self._pending) >= gather:
            return
        self._gather = gather
        deadline = time.monotonic() + self._linger
        while len(self._pending) < gather and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._work.wait(left)
        self._gather = 0

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self._pending and not self._stopping:
                    self._work.wait()
                if not self._pending:
                    return
                self._gather_locked()
                try:
                    batch, snapshot = self._take_batch_locked()
                except BaseException as exc:
                    self._break_locked(exc)
                    failed: BaseException | None = exc
                else:
                    failed = None
                    end = self._taken + len(batch)
                    self._taken = end
            if failed is not None:
                logger.error("taquba snapshot failed; the handle is now broken: %s", failed)
                return
            started = time.monotonic()
            try:
                seq = self.log.append(batch)
            except BaseException as exc:
                self._break(exc)
                return
            took = time.monotonic() - started
            with self.lock:
                self._gather = len(batch) + len(self._pending)
                self._linger = min(MAX_LINGER, LINGER_FRACTION * took)
                self._durable_upto = end
                self.stats.records_committed += len(batch)
                self.stats.segments_written += 1
                self.stats.bytes_committed += sum(len(r) for r in batch)
                self._durable.notify_all()
            if snapshot is not None:
                try:
                    self.log.checkpoint(snapshot, seq)
                    self.stats.checkpoints_written += 1
                except FencedError as exc:
                    self._break(exc)
                    return
                except BaseException as exc:
                    # The segments are durable; only compaction failed. The log is broken
                    # (it writes nothing after a failed put), so stop accepting records.
                    self.stats.checkpoint_failures += 1
                    self._break(exc)
                    return

    def _break(self, exc: BaseException) -> None:
        logger.error("taquba log write failed; the handle is now broken: %s", exc)
        with self.lock:
            self._break_locked(exc)

    def _break_locked(self, exc: BaseException) -> None:
        self._failure = exc
        self._pending = []
        self._pending_bytes = 0
        self._durable.notify_all()
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
