"""A Future-like ticket for the durability of one write's records.

The committer puts each record into the open :class:`Batch`; whoever writes the batch
resolves it (:meth:`Batch.set_result` once it is durable, :meth:`Batch.set_exception`
once it is lost), and callers wait on it (:meth:`Batch.wait`). One Condition per batch,
made only when somebody sleeps on it; a resolved batch wakes its first waiter and each
waiter wakes the next, so the woken callers do not all compete for the interpreter at once.
The owner resolves, nudges and prepares waits under one lock of its own.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Gate(threading.Condition):
    """A ``Condition`` over a fresh ``Lock``, made in a fraction of the time
    ``Condition(Lock())`` takes (which probes the lock for methods a plain lock lacks);
    a batch somebody sleeps on makes one."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self._lock = lock
        self.acquire = lock.acquire  # type: ignore[method-assign]
        self.release = lock.release  # type: ignore[method-assign]
        self._waiters: deque[Any] = deque()

    def pass_on(self) -> None:
        """Wake the next waiter, if any (the lock is held)."""
        if self._waiters:
            self.notify()


class Batch:
    """The records of one write, and a ticket for their durability (like a ``Future``).

    :meth:`wait` returns True once the batch is resolved; :meth:`set_result` and
    :meth:`set_exception` resolve it, once. The owner (the committer) resolves, nudges and
    calls :meth:`prepare_wait` under one lock, so the Condition is made only for a batch
    somebody sleeps on: most batches on local disk are written by their only waiter.
    """

    __slots__ = ("_cond", "_done", "_error", "_nudged", "nbytes", "opened", "records")

    def __init__(self) -> None:
        self._cond: Gate | None = None
        self._done = False
        self._error: BaseException | None = None
        self._nudged = False
        self.records: list[bytes] = []
        self.nbytes = 0
        self.opened = 0.0  # monotonic time of its first record

    def done(self) -> bool:
        """Whether the batch is resolved: durable (:meth:`error` is None) or lost."""
        return self._done

    def error(self) -> BaseException | None:
        """The failure that lost this batch, or None (durable, or not resolved yet)."""
        return self._error

    def prepare_wait(self) -> None:
        """Make the Condition a waiter sleeps on. Call it under the owner's lock, before
        releasing that lock to :meth:`wait`, so a resolution in between is not missed."""
        if self._cond is None:
            self._cond = Gate()

    def set_result(self) -> None:
        """Mark the batch durable and wake its waiters (one by one: see :meth:`wait`).

        Called once, by whoever wrote the batch, after the write returned; a batch is
        resolved only once (by this or :meth:`set_exception`).
        """
        self._resolve(None)

    def set_exception(self, exc: BaseException) -> None:
        """Mark the batch lost to ``exc`` and wake its waiters, who then raise it.

        Args:
            exc: the error of the failed write (a ``StorageError``, or ``FencedError``
                when a newer writer took over).
        """
        self._resolve(exc)

    def _resolve(self, exc: BaseException | None) -> None:
        cond = self._cond
        if cond is None:  # nobody waits
            self._error = exc
            self._done = True
            return
        with cond:
            self._error = exc
            self._done = True
            cond.notify()

    def nudge(self) -> None:
        """Wake one waiter, or the next to wait, without resolving: it is to write the batch.

        :meth:`wait` then returns False to that waiter, once.
        """
        cond = self._cond
        if cond is None:
            self._nudged = True
            return
        with cond:
            if not self._done:
                self._nudged = True
                cond.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the batch is resolved, ``timeout`` passes, or a nudge comes.

        Args:
            timeout: the longest wait in seconds (None: no limit).

        Returns:
            Whether the batch is resolved (then look at :meth:`error`); False after a
            timeout or a nudge. A waiter that returns resolved wakes the next one.

        Requires :meth:`prepare_wait` first (an ``AssertionError`` otherwise).
        """
        cond = self._cond
        assert cond is not None, "prepare_wait() first"
        with cond:
            if not self._done and not self._nudged:
                cond.wait(timeout)
            if self._done:
                cond.pass_on()
                return True
            self._nudged = False
            return False
