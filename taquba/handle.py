"""The inside of a queue handle: its lock, its one mutation path, and when it refuses.

:class:`Handle` is the base of :class:`~taquba.queue.Queue` (through
:class:`~taquba.operations.Operations`); the public methods live in those two, and the work
in the modules by concern (producing.py, consuming.py, inspecting.py, intake.py), which all
work through what is here:

- :meth:`Handle._commit` is the one mutation path: a state change is one event
  (core/events.py), encoded, applied to the state and handed to the committer in one lock
  hold, so the log order is the apply order and replay rebuilds the same state;
- :meth:`Handle._ensure_open` / :meth:`Handle._check_open_locked` are the one "usable?"
  check: a closed, forked or fenced handle refuses every call before looking at its
  arguments; a broken committer refuses every change;
- :meth:`Handle._wait_reported_locked` makes reads report only durable state.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import arguments
from .batch import Batch
from .committer import Committer
from .config import OpenOptions, QueueConfig
from .core import events as ev
from .core.ids import IdGenerator
from .core.state import State
from .errors import ConfigError, FencedError, QueueBroken, QueueClosed
from .log import Log
from .records import Claim, WaitOutcome
from .storage import Store

if TYPE_CHECKING:
    pass

_MAX_WAIT = 3600.0  # longest single sleep; longer waits loop (Lock.acquire caps timeouts)


# Every open handle of this process, so that a forked child can disown them all at once.
# A dict of weak references: adding and removing are single atomic operations.
_LIVE: dict[int, weakref.ref[Handle]] = {}


def _disown_after_fork() -> None:
    """In a forked child: every handle inherited from the parent refuses every call."""
    for ref in list(_LIVE.values()):
        q = ref()
        if q is not None:
            q._forked_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)


def register(q: Handle) -> None:
    """Count ``q`` among this process's open handles (until it is closed or collected)."""
    key = id(q)
    _LIVE[key] = weakref.ref(q, lambda _, key=key: _LIVE.pop(key, None))  # type: ignore[misc]


def unregister(q: Handle) -> None:
    _LIVE.pop(id(q), None)


class Handle:
    """The state, the lock and the mutation path of one open queue (see the module docstring)."""

    def __init__(self, store: Store, options: OpenOptions, _log: Log, _state: State) -> None:
        self.store = store
        self.options = options
        self._clock: Callable[[], float] = options.clock or time.time
        self._lock = threading.Lock()
        self._state = _state
        self._ids = IdGenerator()
        self._claim_conds: dict[str, threading.Condition] = {}
        self._claim_waiting: dict[str, int] = {}  # claims asleep in each queue's condition
        self._completion = threading.Condition(self._lock)
        self._final: dict[str, tuple[Batch, WaitOutcome]] = {}
        self._waiters: dict[str, int] = {}
        self._claims: dict[str, Claim] = {}
        self._closed = False
        self._pid = os.getpid()
        self._forked = False  # this is a child forked from the process that opened the handle
        self._fenced: FencedError | None = None  # the fence check saw a newer writer
        self._refuse = False  # closed, forked or fenced: every call raises (see _ensure_open)
        # The batch of the last event a read may report: every event but claims and lease
        # renewals. Reads wait until it is durable (see the module docstring).
        self._reported: Batch | None = None
        self._enqueuers: collections.deque[None] = collections.deque()  # enqueues under way
        self.committer = Committer(
            _log,
            lock=self._lock,
            snapshot=self._state.snapshot,
            max_batch_bytes=options.max_batch_bytes,
            live_bytes=lambda: self._state.live_bytes,
        )

    def _wake_all_locked(self) -> None:
        for cond in self._claim_conds.values():
            cond.notify_all()
        self._completion.notify_all()

    def _forked_in_child(self) -> None:
        """Called in a forked child (no other thread runs): refuse everything, touch nothing."""
        self._forked = self._refuse = True

    def _ensure_open(self) -> None:
        """Every call starts here: a closed, forked or fenced handle refuses at once, before
        looking at the arguments or taking a lock."""
        if self._refuse:
            raise self._refusal()

    def _refusal(self) -> Exception:
        if self._closed:
            return QueueClosed("the queue is closed")
        if self._forked:
            return QueueBroken(
                f"this Queue was opened by process {self._pid} and cannot be used in process "
                f"{os.getpid()}, which was forked from it: a forked child must never write "
                "its parent's queue. To submit jobs from this process, open a taquba Producer "
                "in it (or a new Queue, which takes the queue over from the parent)"
            )
        fenced = self._fenced
        assert fenced is not None
        err = FencedError(str(fenced))
        err.__cause__ = fenced
        return err

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # -- the mutation path (lock held) -----------------------------------------------------

    def _check_open_locked(self) -> None:
        """The one "usable?" check of a call that changes state: raises ``QueueClosed``,
        ``FencedError`` or ``QueueBroken`` (see ``Committer.check_usable_locked``)."""
        self._ensure_open()
        self.committer.check_usable_locked()

    def _commit(self, event: ev.Event, *, reported: bool = True) -> Batch:
        """Make ``event`` happen: validate, encode, apply, submit. Lock held.

        The event is encoded before anything changes, so an event no record can hold
        (``ValueError``) leaves the state untouched. Returns the batch to wait on for
        durability. ``reported=False`` (claims, renewals) lets reads go ahead of its write.
        """
        committer = self.committer
        committer.check_usable_locked()
        record = event.encode()
        self._state.apply(event)
        batch = committer.submit_locked(record)
        if reported:
            self._reported = batch
        return batch

    def _wait_reported_locked(self, deadline: float = math.inf) -> bool:
        """Wait until every event a read may report is durable (lock held; released while
        waiting). False if ``deadline`` (``time.monotonic()``) passed first; raises the
        write's error if it failed."""
        batch = self._reported
        if batch is None:
            return True
        committer = self.committer
        while not batch.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            committer.wait_locked(batch, min(left, _MAX_WAIT))
            self._check_open_locked()
        error = batch.error()
        if error is not None:
            raise committer.error_for(error, own=True)
        return True

    def _wait(self, batch: Batch) -> None:
        """Wait until ``batch`` is durable; the lock is held on entry and released."""
        self.committer.wait(batch)

    def _wait_locked(self, batch: Batch) -> None:
        """Wait until ``batch`` is durable; the lock is held on entry and on return."""
        self.committer.wait_locked(batch)

    def _config(self, queue: str) -> QueueConfig:
        return self.options.config_for(queue)

    def _claim_cond(self, queue: str) -> threading.Condition:
        cond = self._claim_conds.get(queue)
        if cond is None:
            cond = self._claim_conds[queue] = threading.Condition(self._lock)
        return cond

    def _wake_claimers_locked(self, queue: str, n: int = 1) -> None:
        cond = self._claim_conds.get(queue)
        if cond is not None:
            cond.notify(n)

    def _finished_locked(self, job_id: str, batch: Batch, outcome: WaitOutcome) -> None:
        """Tell the completion waiters of ``job_id`` (if any) how it ended."""
        if job_id in self._waiters:
            self._final[job_id] = (batch, outcome)
            self._completion.notify_all()

    def _now(self) -> float:
        now = self._clock()
        if type(now) is not float:
            now = arguments.clock_seconds(now)
        if now - now != 0.0:  # NaN or infinite: no record could hold it
            raise ConfigError(f"OpenOptions.clock returned {now!r}, not a finite time")
        return now
