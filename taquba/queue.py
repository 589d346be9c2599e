"""The public ``Queue``: validation, the lock, and waiting for durability.

Rules this module keeps:

- One ``threading.Lock`` guards the state; Conditions on it wake claimers (one per named
  queue), completion waiters and durability waiters (in the committer). No user code and no
  storage I/O run under the lock.
- Every argument is validated before anything changes: a bad call raises an
  ``InvalidArgument`` (or ``ClaimLost`` / ``JobNotFound``) and leaves the state untouched.
- A state change is made by one event: it is applied to the in-memory state and handed to
  the committer in the same lock hold, so the log order is the apply order and replay
  rebuilds the same state.
- ``enqueue*``, ``ack``, ``nack``, ``dead_letter``, ``cancel``, ``requeue_dead_job`` and
  ``kv_delete`` return only once their event is durable. ``claim``, ``renew_lease`` and the
  background ticks do not wait: losing one only causes a redelivery or a repeated tick.
- A read reports only durable state: ``get_job``, ``stats``, ``list_queues``, ``dead_jobs``,
  ``kv_get``, ``wait_for_completion`` (and ``cancel``'s ``NOT_FOUND``) wait until every event
  applied before them is durable, except claims and lease renewals, whose loss only causes a
  redelivery. If that write fails they raise its error, as the writer's caller does.
- A handle serves only the process that opened it. In a child forked from that process every
  call raises ``QueueBroken`` before taking any lock (another thread of the parent may have
  held one at the fork), and nothing of the child writes, flushes or deletes the parent's
  objects; ``close`` in the child only marks the handle closed.
- Once the handle knows it has been fenced (a write lost to a newer writer, or
  ``check_fence_now`` saw a newer manifest), every call raises ``FencedError``, reads included.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import events as ev
from .background import Background
from .committer import LINGER_FRACTION, MAX_LINGER, Committer
from .config import (
    MAX_KV_KEY_SIZE,
    MAX_KV_VALUE_SIZE,
    MAX_PAYLOAD_SIZE,
    Buffer,
    EnqueueOptions,
    OpenOptions,
    QueueConfig,
    check_job_id,
    check_queue_name,
    to_bytes,
    to_seconds,
)
from .errors import (
    ClaimLost,
    ConfigError,
    FencedError,
    InvalidArgument,
    JobNotFound,
    KvValueTooLarge,
    QueueBroken,
    QueueClosed,
    exception_text,
)
from .ids import IdGenerator
from .inbox import Submission, SubmitCancel, SubmitEnqueue
from .intake import OwnerIntake
from .log import Log
from .records import (
    CancelOutcome,
    Claim,
    EnqueueResult,
    JobRecord,
    JobStatus,
    QueueStats,
    WaitOutcome,
    WaitStatus,
)
from .state import Job, State
from .storage import Store, open_store

logger = logging.getLogger("taquba.queue")

MAX_BATCH_JOBS = 100_000
MAX_ERROR_CHARS = 16 * 1024
MAX_CLAIM_BATCH = 10_000
_TERMINAL = (JobStatus.DONE, JobStatus.DEAD)
_PLAIN = EnqueueOptions()
_MAX_WAIT = 3600.0  # longest single sleep; longer waits loop (Lock.acquire caps timeouts)

# Every open handle of this process, so that a forked child can disown them all at once.
# A dict of weak references: adding and removing are single atomic operations.
_LIVE: dict[int, weakref.ref[Queue]] = {}


def _disown_after_fork() -> None:
    """In a forked child: every handle inherited from the parent refuses every call."""
    for ref in list(_LIVE.values()):
        q = ref()
        if q is not None:
            q._forked_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)


def _error_text(error: object) -> str:
    if isinstance(error, BaseException):
        text = exception_text(error)
    elif isinstance(error, str):
        text = error
    else:
        raise InvalidArgument(f"error must be a str or an exception, got {type(error).__name__}")
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "... [truncated]"
    return _storable(text)


def _storable(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot hold) written as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class _Request:
    """An enqueue waiting for a combining caller (see ``Queue._combine``)."""

    __slots__ = ("args", "done", "error", "next", "result", "ticket", "wake")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.done = False
        self.next: _Request | None = None  # whom this caller wakes once it runs again
        self.error: Exception | None = None
        self.result: tuple[str, bool] = ("", False)
        self.ticket = 0
        self.wake = threading.Lock()
        self.wake.acquire()


def _payload(value: object, name: str) -> bytes:
    data = value if type(value) is bytes else to_bytes(value, name)
    if len(data) > MAX_PAYLOAD_SIZE:
        raise InvalidArgument(f"payload is {len(data)} bytes; the limit is {MAX_PAYLOAD_SIZE}")
    return data


def _wait_seconds(value: object, name: str) -> float:
    """A wait: a duration, or ``math.inf`` for no limit."""
    if isinstance(value, float) and value == math.inf:
        return math.inf
    return to_seconds(value, name)


def _clock_seconds(value: object) -> float:
    """A clock's reading that is not a plain float, as epoch seconds (``ConfigError`` if none)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    text = repr(value)
    if len(text) > 60:
        text = text[:40] + "..."
    raise ConfigError(f"OpenOptions.clock returned {text} ({type(value).__name__}), not epoch "
                      "seconds as a finite float or int")


class Queue:
    """A durable task queue on one fsspec root. Open it with :meth:`Queue.open`."""

    def __init__(self, store: Store, options: OpenOptions, *, _log: Log, _state: State) -> None:
        self.store = store
        self.options = options
        self._clock: Callable[[], float] = options.clock or time.time
        self._lock = threading.Lock()
        self._state = _state
        self._ids = IdGenerator()
        self._claim_conds: dict[str, threading.Condition] = {}
        self._claim_waiting: dict[str, int] = {}  # claims asleep in each queue's condition
        self._completion = threading.Condition(self._lock)
        self._final: dict[str, tuple[int, WaitOutcome]] = {}
        self._waiters: dict[str, int] = {}
        self._claims: dict[str, Claim] = {}
        self._closed = False
        self._pid = os.getpid()
        self._forked = False  # this is a child forked from the process that opened the handle
        self._fenced: FencedError | None = None  # the fence check saw a newer writer
        self._refuse = False  # closed, forked or fenced: every call raises (see _ensure_open)
        # The ticket of the last event a read may report: every event but claims and lease
        # renewals. Reads wait until it is durable (see the module docstring).
        self._reported = 0
        self._requests: collections.deque[_Request] = collections.deque()
        self._enqueuers: collections.deque[None] = collections.deque()  # calls under way
        self._combiner = threading.Lock()
        self._gathered = threading.Event()
        self._gather_target = 1 << 30  # requests the next combine waits for
        self._linger = 0.0
        self.committer = Committer(_log, lock=self._lock, snapshot=self._state.snapshot,
                                   max_batch_bytes=options.max_batch_bytes,
                                   live_bytes=lambda: self._state.live_bytes)
        self._combining = self.committer.inline
        self._intake = OwnerIntake(
            self, float(options.inbox_busy_interval),  # type: ignore[arg-type]
            None if options.inbox_interval is None else float(options.inbox_interval))  # type: ignore[arg-type]
        self._background = Background(
            reap=self.reap_now, reaper_interval=float(options.reaper_interval),  # type: ignore[arg-type]
            promote=self.promote_scheduled_now,
            scheduler_interval=float(options.scheduler_interval),  # type: ignore[arg-type]
            check_fence=self.check_fence_now,
            fence_check_interval=None if options.fence_check_interval is None
            else float(options.fence_check_interval),  # type: ignore[arg-type]
            intake=self._intake.tick if self._intake.enabled else None,
            intake_interval=self._intake.pace.busy)
        key = id(self)
        _LIVE[key] = weakref.ref(self, lambda _, key=key: _LIVE.pop(key, None))  # type: ignore[misc]

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, location: Any, path: str | None = None, options: OpenOptions | None = None,
             *, storage_options: Mapping[str, Any] | None = None) -> Queue:
        """Open (or create) the queue at ``location`` and take over as its single writer."""
        if options is None:
            options = OpenOptions()
        elif not isinstance(options, OpenOptions):
            raise ConfigError(f"options must be an OpenOptions, got {type(options).__name__}")
        store = open_store(location, path, storage_options=storage_options,
                           retries=options.storage_retries,
                           retry_delay=float(options.storage_retry_delay),  # type: ignore[arg-type]
                           retry_budget=float(options.storage_retry_budget))  # type: ignore[arg-type]
        holder = [State()]

        def on_snapshot(data: bytes) -> None:
            holder[0] = State.restore(data)

        def on_record(data: bytes) -> None:
            holder[0].apply_bytes(data)

        log = Log.open(store, on_snapshot=on_snapshot, on_record=on_record,
                       checkpoint_min_bytes=options.checkpoint_min_bytes,
                       checkpoint_ratio=options.checkpoint_ratio,
                       checkpoint_max_segments=options.checkpoint_max_segments,
                       segment_max_bytes=options.segment_max_bytes,
                       background_cleanup=True)
        q = cls(store, options, _log=log, _state=holder[0])
        q._release_previous_claims()
        if options.background_threads:
            q._background.start()
        return q

    def _release_previous_claims(self) -> None:
        """Jobs a previous process held go back to pending, or dead once attempts are spent.

        This is what the reaper would do when their leases expire, done at once: the process
        that held them is gone, so waiting out the lease would only delay the retry.
        """
        with self._lock:
            claimed = self._state.claimed_jobs()
            if not claimed:
                return
            now = self._now()
            spent = [j for j in claimed if j.attempts >= j.max_attempts or j.cancel_requested]
            ids = [j.id for j in claimed if j not in spent]
            logger.info("requeueing %d job(s) claimed by a previous process; %d dead-lettered "
                        "with their attempts used up", len(ids), len(spent))
            for job in spent:
                reason = "cancelled: " if job.cancel_requested else ""
                self._fail_locked(job, now, f"{reason}claim abandoned by a previous process",
                                  dead=True)
            if ids:
                self._commit_locked(ev.encode_release(ids), self._state.on_release, ids)
                for job_id in ids:
                    self._wake_claimers_locked(self._state.jobs[job_id].queue)

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Stop the background threads, write what is pending, close the log. Idempotent.

        In a process forked from the one that opened the handle, ``close`` writes nothing
        and takes no lock: it only marks this copy of the handle closed.
        """
        if timeout is not None:
            timeout = min(to_seconds(timeout, "timeout"), threading.TIMEOUT_MAX)
        if self._forked:
            self._closed = self._refuse = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = self._refuse = True
            self._wake_all_locked()
        _LIVE.pop(id(self), None)
        self._background.stop(timeout)
        if not self.committer.close(timeout):
            logger.warning("taquba committer did not stop within %s s", timeout)
        self.store.close()

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
                "in it (or a new Queue, which takes the queue over from the parent)")
        fenced = self._fenced
        assert fenced is not None
        err = FencedError(str(fenced))
        err.__cause__ = fenced
        return err

    @property
    def closed(self) -> bool:
        return self._closed

    # -- helpers (lock held) ---------------------------------------------------------------

    def _check_open_locked(self) -> None:
        self._ensure_open()
        self.committer.check_writable_locked()

    def _config(self, queue: str) -> QueueConfig:
        return self.options.config_for(queue)

    def _commit_locked(self, record: bytes, apply: Callable[..., None], *args: Any,
                       reported: bool = True) -> int:
        """Apply one event and queue its record for the log; return its durability ticket.

        ``record`` is the event encoded (events.py) from the same ``args`` that ``apply``
        (a ``State.on_*`` method) takes, so replaying the record rebuilds this change. It is
        encoded before anything changes: an encoding error leaves the state untouched.
        ``reported=False`` (claims, renewals) lets reads go ahead of the record's write.
        """
        committer = self.committer
        committer.check_writable_locked()
        apply(*args)
        ticket = committer.submit_locked(record)
        if reported:
            self._reported = ticket
        return ticket

    def _wait_durable_locked(self, ticket: int) -> None:
        self.committer.wait_locked(ticket)

    def _wait_reported_locked(self, deadline: float = math.inf) -> bool:
        """Wait until every event a read may report is durable (lock held; released while
        waiting). False if ``deadline`` (``time.monotonic()``) passed first; raises the
        write's error if it failed."""
        ticket = self._reported
        committer = self.committer
        while committer.durable_upto < ticket:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            committer.wait_locked(ticket, min(left, _MAX_WAIT))
            self._check_open_locked()
        return True

    def _claim_cond(self, queue: str) -> threading.Condition:
        cond = self._claim_conds.get(queue)
        if cond is None:
            cond = self._claim_conds[queue] = threading.Condition(self._lock)
        return cond

    def _wake_claimers_locked(self, queue: str, n: int = 1) -> None:
        cond = self._claim_conds.get(queue)
        if cond is not None:
            cond.notify(n)

    def _finished_locked(self, job_id: str, ticket: int, outcome: WaitOutcome) -> None:
        if job_id in self._waiters:
            self._final[job_id] = (ticket, outcome)
            self._completion.notify_all()

    def _current_job_locked(self, claim: object, action: str) -> Job:
        if not isinstance(claim, Claim):
            raise InvalidArgument(f"{action} needs a Claim, got {type(claim).__name__}")
        self._check_open_locked()
        job = self._state.jobs.get(claim.id)
        if self._claims.get(claim.id) is not claim or job is None \
                or job.status is not JobStatus.CLAIMED or job.attempts != claim.attempts:
            state = "gone" if job is None else job.status.value
            raise ClaimLost(f"cannot {action} job {claim.id!r} (attempt {claim.attempts}): the "
                            f"claim is no longer current (the job is {state})")
        return job

    def _now(self) -> float:
        now = self._clock()
        if type(now) is not float:
            now = _clock_seconds(now)
        if now - now != 0.0:  # NaN or infinite: no record could hold it
            raise ConfigError(f"OpenOptions.clock returned {now!r}, not a finite time")
        return now

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, queue: str, payload: Buffer, **options: Any) -> str:
        """Enqueue one job; keyword options as in :class:`EnqueueOptions`. Returns its id."""
        self._ensure_open()
        if not options:
            return self._enqueue_one(queue, payload, _PLAIN, ())[0]
        try:
            opts = EnqueueOptions(**options)
        except TypeError as exc:
            raise InvalidArgument(f"unknown enqueue option: {exc}") from None
        return self._enqueue_one(queue, payload, opts, ())[0]

    def enqueue_with(self, queue: str, payload: Buffer, options: EnqueueOptions) -> str:
        """Enqueue one job with explicit :class:`EnqueueOptions`. Returns its id."""
        self._ensure_open()
        if not isinstance(options, EnqueueOptions):
            raise InvalidArgument(f"options must be an EnqueueOptions, got {type(options).__name__}")
        return self._enqueue_one(queue, payload, options, ())[0]

    def enqueue_batch(self, queue: str, payloads: Iterable[Buffer]) -> list[str]:
        """Enqueue many jobs atomically (all or nothing); ids in input order."""
        self._ensure_open()
        if isinstance(payloads, (bytes, bytearray, memoryview, str)):
            raise InvalidArgument("payloads must be an iterable of bytes payloads, not a single "
                                  "payload")
        try:
            items = list(payloads)
        except TypeError:
            raise InvalidArgument(
                f"payloads must be an iterable of bytes, got {type(payloads).__name__}") from None
        n = len(items)
        if n > MAX_BATCH_JOBS:
            raise InvalidArgument(f"a batch holds at most {MAX_BATCH_JOBS} jobs, got {n}")
        check_queue_name(queue)
        if not n:
            with self._lock:
                self._check_open_locked()
            return []
        # The common case (all bytes, none too large) is checked at C speed.
        data: list[bytes] = items  # type: ignore[assignment]
        if set(map(type, items)) != {bytes} or max(map(len, items)) > MAX_PAYLOAD_SIZE:
            data = [_payload(p, "payload" if n == 1 else f"payloads[{i}]")
                    for i, p in enumerate(items)]
        cfg = self._config(queue)
        with self._lock:
            job_ids, ticket = self._enqueue_plain_locked(queue, data, cfg.default_priority,
                                                         cfg.max_attempts)
            self._wait_durable_locked(ticket)
        return job_ids

    def _enqueue_plain_locked(self, queue: str, data: list[bytes], priority: int,
                              max_attempts: int) -> tuple[list[str], int]:
        """Jobs that differ only by payload, in one record: (their ids, the ticket)."""
        self._check_open_locked()
        state = self._state
        now = self._now()
        job_ids = self._ids.new_many(now, len(data))
        if not state.jobs.keys().isdisjoint(job_ids):
            job_ids = self._fresh_ids_locked(job_ids, now)
        record = ev.encode_enqueue_plain(queue, now, job_ids, data, priority, max_attempts)
        ticket = self._commit_locked(record, state.on_enqueue_plain, queue, now, job_ids,
                                     data, priority, max_attempts)
        self._wake_claimers_locked(queue, len(data))
        return job_ids, ticket

    def _fresh_ids_locked(self, job_ids: list[str], now: float) -> list[str]:
        """``job_ids`` with those already in use (a caller's chosen ids) replaced."""
        jobs = self._state.jobs
        out = []
        for job_id in job_ids:
            while job_id in jobs:
                job_id = self._ids.new(now)
            out.append(job_id)
        return out

    def enqueue_with_kv(self, queue: str, payload: Buffer, kv_writes: Mapping[bytes, Buffer],
                        options: EnqueueOptions | None = None) -> EnqueueResult:
        """Enqueue one job and apply ``kv_writes`` in the same atomic record.

        On a dedup hit nothing is written and ``is_new`` is False.
        """
        self._ensure_open()
        if options is None:
            options = _PLAIN
        elif not isinstance(options, EnqueueOptions):
            raise InvalidArgument(f"options must be an EnqueueOptions, got {type(options).__name__}")
        if not isinstance(kv_writes, Mapping):
            raise InvalidArgument(
                f"kv_writes must be a mapping of bytes to bytes, got {type(kv_writes).__name__}")
        kv: list[tuple[bytes, bytes]] = []
        for k, v in kv_writes.items():
            key = self._kv_key(k)
            value = to_bytes(v, "KV value")
            if len(value) > MAX_KV_VALUE_SIZE:
                raise KvValueTooLarge(f"KV value for key {key[:64]!r} is {len(value)} bytes; the "
                                      f"limit is MAX_KV_VALUE_SIZE = {MAX_KV_VALUE_SIZE}")
            kv.append((key, value))
        return EnqueueResult(*self._enqueue_one(queue, payload, options, kv))

    def _enqueue_one(self, queue: str, payload: object, opts: EnqueueOptions,
                     kv: Sequence[tuple[bytes, bytes]]) -> tuple[str, bool]:
        """Enqueue one job (and ``kv``); return its id and whether it is new (no dedup hit)."""
        check_queue_name(queue)
        data = _payload(payload, "payload")
        dedup_key = opts.dedup_key
        if dedup_key is not None:
            try:
                dedup_key.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(f"EnqueueOptions.dedup_key is not valid UTF-8: "
                                      f"{dedup_key[:40]!r}") from None
        cfg = self._config(queue)
        priority = cfg.default_priority if opts.priority is None else opts.priority
        max_attempts = cfg.max_attempts if opts.max_attempts is None else opts.max_attempts
        headers = dict(opts.headers) if opts.headers else None
        args = (queue, data, opts, priority, max_attempts, headers, dedup_key, kv)
        active = self._enqueuers
        active.append(None)  # deque appends and pops are atomic: len() counts callers
        try:
            if self._combining and (len(active) > 1 or self._requests):
                # Other enqueues are under way: let one caller apply all that gather while
                # a write is in flight (see _combine). A lone caller goes straight through.
                return self._enqueue_combined(args)
            lock = self._lock
            lock.acquire()
            try:
                job_id, new, ticket = self._enqueue_one_locked(*args)
            except BaseException:
                lock.release()
                raise
            self.committer.wait_released(ticket)
            return job_id, new
        finally:
            active.pop()

    def _enqueue_combined(self, args: tuple[Any, ...]) -> tuple[str, bool]:
        """Hand the enqueue to whichever caller is combining (or combine): see ``_combine``."""
        req = _Request(args)
        requests = self._requests
        requests.append(req)
        if len(requests) >= self._gather_target:
            self._gathered.set()
        combiner = self._combiner
        try:
            while not req.done:
                if combiner.acquire(False):
                    try:
                        self._combine()
                    finally:
                        combiner.release()
                        if requests:  # arrived while we combined: its caller may be asleep
                            try:
                                requests[0].wake.release()
                            except (IndexError, RuntimeError):
                                pass  # gone, or already woken
                    continue
                req.wake.acquire()
        except BaseException:
            # Interrupted (KeyboardInterrupt): withdraw the request if nobody has taken it.
            try:
                requests.remove(req)
            except ValueError:
                pass
            raise
        finally:
            nxt = req.next
            if nxt is not None:  # pass the wake-up on (see _combine)
                req.next = None
                try:
                    nxt.wake.release()
                except RuntimeError:
                    pass  # the combiner itself: not asleep
        if req.error is not None:
            raise req.error
        if self.committer.durable_upto < req.ticket:
            with self._lock:  # the write failed: raise this caller's own error
                self._wait_durable_locked(req.ticket)
        return req.result

    def _combine(self) -> None:
        """Apply the waiting enqueues in one lock hold and wait for them in one write.

        With many threads, taking the lock in turn costs each caller several hand-offs of
        the lock and the GIL; here one caller does the work of all who are waiting, and wakes
        each once.
        """
        batch: list[_Request] = []
        requests = self._requests
        target = self._gather_target
        if len(requests) < target and self._linger > 0:
            # Callers the last write released are on their way back: give them a moment.
            self._gathered.clear()
            if len(requests) < target:
                self._gathered.wait(self._linger)
        while requests:
            try:
                batch.append(requests.popleft())
            except IndexError:
                break
        if not batch:
            return
        taken = 0
        try:
            with self._lock:
                last = 0
                while taken < len(batch):
                    # Plain enqueues of one queue in a row (no options beyond its defaults'
                    # kind, no KV) share one record, as enqueue_batch's jobs do.
                    group = self._plain_run(batch, taken)
                    try:
                        if len(group) > 1:
                            args = group[0].args
                            job_ids, ticket = self._enqueue_plain_locked(
                                args[0], [req.args[1] for req in group], args[3], args[4])
                            for req, job_id in zip(group, job_ids):
                                req.ticket = ticket
                                req.result = (job_id, True)
                        else:
                            req = group[0]
                            job_id, new, req.ticket = self._enqueue_one_locked(*req.args)
                            req.result = (job_id, new)
                        last = max(last, group[0].ticket)
                    except Exception as exc:
                        for req in group:
                            req.error = exc
                    taken += len(group)
                if last:
                    started = time.monotonic()
                    try:
                        self.committer.wait_locked(last, gather=False)
                    except Exception:
                        pass  # each caller raises its own error (see _enqueue_combined)
                    self._linger = min(MAX_LINGER, LINGER_FRACTION * (time.monotonic() - started))
                self._gather_target = len(batch) + len(requests)
        finally:
            # Requests not applied (this caller was interrupted) go back for another caller.
            requests.extendleft(reversed(batch[taken:]))
            # Wake the first caller; each wakes the next once it runs again, so that they
            # do not all find the GIL taken and sleep twice (see Committer._sleep).
            woken = batch[:taken]
            for i, req in enumerate(woken):
                req.done = True
                if i:
                    woken[i - 1].next = req
            if woken:
                try:
                    woken[0].wake.release()
                except RuntimeError:
                    pass

    @staticmethod
    def _plain_key(args: tuple[Any, ...]) -> tuple[str, int, int] | None:
        """(queue, priority, max attempts) of a plain enqueue's ``args``, else None."""
        queue, _, opts, priority, max_attempts, headers, dedup_key, kv = args
        if headers or dedup_key is not None or kv or opts.job_id is not None \
                or opts.run_at is not None or opts.delay:
            return None
        return queue, priority, max_attempts

    @classmethod
    def _plain_run(cls, batch: list[_Request], start: int) -> list[_Request]:
        """The requests from ``start`` on that can share one plain record (at least one)."""
        key = cls._plain_key(batch[start].args)
        end = start + 1
        if key is not None:
            while end < len(batch) and cls._plain_key(batch[end].args) == key:
                end += 1
        return batch[start:end]

    def _enqueue_one_locked(self, queue: str, data: bytes, opts: EnqueueOptions, priority: int,
                            max_attempts: int, headers: dict[str, str] | None,
                            dedup_key: str | None, kv: Sequence[tuple[bytes, bytes]]
                            ) -> tuple[str, bool, int]:
        """The locked part of an enqueue: (id, is new, ticket to wait for)."""
        self._check_open_locked()
        state = self._state
        now = self._now()
        if dedup_key is not None:
            index = state.queues.get(queue)
            existing = None if index is None else index.dedup.get(dedup_key)
            if existing is not None:
                # A dedup hit: what we point at must be durable.
                return existing, False, self.committer.submitted
        job_id = opts.job_id
        if job_id is not None:
            if job_id in state.jobs:
                raise InvalidArgument(f"job_id {job_id!r} is already in use")
        else:
            job_id = self._ids.new(now)
            while job_id in state.jobs:
                job_id = self._ids.new(now)
        run_at: float | None = None
        if opts.run_at is not None:
            run_at = float(opts.run_at)  # type: ignore[arg-type]
        elif opts.delay:
            run_at = now + float(opts.delay)  # type: ignore[arg-type]
        if run_at is not None and run_at <= now:
            run_at = None
        jobs = [(job_id, data, priority, max_attempts, run_at, dedup_key, headers)]
        record = ev.encode_enqueue(queue, now, jobs, kv)
        ticket = self._commit_locked(record, state.on_enqueue, queue, now, jobs, kv)
        if run_at is None:
            self._wake_claimers_locked(queue)
        return job_id, True, ticket

    # -- KV --------------------------------------------------------------------------------

    @staticmethod
    def _kv_key(key: object) -> bytes:
        data = to_bytes(key, "KV key")
        if not data:
            raise InvalidArgument("KV key must not be empty")
        if len(data) > MAX_KV_KEY_SIZE:
            raise InvalidArgument(f"KV key is {len(data)} bytes; the limit is {MAX_KV_KEY_SIZE}")
        return data

    def kv_get(self, key: Buffer) -> bytes | None:
        """The value stored under ``key`` in the caller's KV namespace, or None."""
        self._ensure_open()
        data = self._kv_key(key)
        with self._lock:
            self._check_open_locked()
            value = self._state.kv.get(data)
            self._wait_reported_locked()
            return value

    def kv_delete(self, key: Buffer) -> None:
        """Delete ``key`` from the caller's KV namespace (durably). Missing keys are fine."""
        self._ensure_open()
        data = self._kv_key(key)
        with self._lock:
            self._check_open_locked()
            if data not in self._state.kv:
                self._wait_durable_locked(self.committer.submitted)
                return
            keys = [data]
            ticket = self._commit_locked(ev.encode_kv_delete(keys), self._state.on_kv_delete,
                                         keys)
            self._wait_durable_locked(ticket)

    # -- consuming ---------------------------------------------------------------------------

    def claim(self, queue: str, lease: Any = None, *, wait: Any = 0.0) -> Claim | None:
        """Claim the first pending job of ``queue``; wait up to ``wait`` seconds for one."""
        self._ensure_open()
        claims = self._claim(queue, 1, lease, wait)
        return claims[0] if claims else None

    def claim_batch(self, queue: str, max_jobs: int, lease: Any = None, *,
                    wait: Any = 0.0) -> list[Claim]:
        """Claim up to ``max_jobs`` pending jobs (waiting up to ``wait`` for the first)."""
        self._ensure_open()
        if not isinstance(max_jobs, int) or isinstance(max_jobs, bool) \
                or not 1 <= max_jobs <= MAX_CLAIM_BATCH:
            raise InvalidArgument(f"max_jobs must be an int in 1..{MAX_CLAIM_BATCH}, got "
                                  f"{max_jobs!r}")
        return self._claim(queue, max_jobs, lease, wait)

    def _claim(self, queue: str, max_jobs: int, lease: Any, wait: Any) -> list[Claim]:
        check_queue_name(queue)
        lease_s = None if lease is None else to_seconds(lease, "lease", allow_zero=False)
        wait_s = 0.0 if type(wait) in (float, int) and wait == 0 else _wait_seconds(wait, "wait")
        if lease_s is None:
            lease_s = float(self._config(queue).lease)  # type: ignore[arg-type]
        deadline = time.monotonic() + wait_s if wait_s else 0.0
        with self._lock:
            state = self._state
            while True:
                self._check_open_locked()
                now = self._now()
                if state.scheduled:
                    self._promote_locked(now)
                job = state.peek_pending(queue)
                if job is not None:
                    break
                if not wait_s:
                    return []
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                next_due = state.next_due()
                if next_due is not None:
                    left = min(left, max(0.001, next_due - now))
                waiting = self._claim_waiting
                waiting[queue] = waiting.get(queue, 0) + 1
                try:
                    self._claim_cond(queue).wait(min(left, _MAX_WAIT))
                finally:
                    if waiting[queue] == 1:  # the last waiter: drop the queue's condition
                        del waiting[queue]
                        del self._claim_conds[queue]
                    else:
                        waiting[queue] -= 1
            claims: list[Claim] = []
            while job is not None:
                claims.append(self._claim_job_locked(job, now, lease_s))
                if len(claims) == max_jobs and not self._claim_waiting.get(queue):
                    break
                job = state.peek_pending(queue)
                if len(claims) == max_jobs:
                    if job is not None:
                        self._wake_claimers_locked(queue)  # more work for the next waiter
                    break
        return claims

    def _claim_job_locked(self, job: Job, now: float, lease: float) -> Claim:
        attempts = job.attempts + 1
        job_id = job.id
        key = ev.id_key(job_id)
        self._commit_locked(ev.encode_claim(job_id, attempts, now, lease, key),
                            self._state.on_claim, job_id, attempts, now, lease, reported=False)
        # The state computed the expiry as now + lease too: the same float.
        claim = Claim._of(job.values(), now + lease, attempts, key)
        if job.cancel_requested:  # requested while a previous process held the job
            claim.cancel_requested.set()
        self._claims[job_id] = claim
        return claim

    def ack(self, claim: Claim) -> None:
        """Mark the claimed job done. Raises ``ClaimLost`` if the claim is not current."""
        self._ensure_open()
        lock = self._lock
        lock.acquire()
        try:
            job = self._current_job_locked(claim, "ack")
            job_id = job.id
            keep = self._config(job.queue).keep_done is not None
            now = self._now()
            ticket = self._commit_locked(ev.encode_ack(job_id, keep, now, claim._key),
                                         self._state.on_ack, job_id, keep, now)
            del self._claims[job_id]
            if job_id in self._waiters:
                # The job is done now: with keep, its record shows it (completed_at set).
                self._finished_locked(job_id, ticket, WaitOutcome(
                    WaitStatus.COMPLETED, job.record() if keep else None))
        except BaseException:
            lock.release()
            raise
        self.committer.wait_released(ticket)

    def nack(self, claim: Claim, error: object) -> None:
        """Report a failed attempt: retry after backoff, or dead once attempts are spent."""
        self._ensure_open()
        text = _error_text(error)
        with self._lock:
            job = self._current_job_locked(claim, "nack")
            now = self._now()
            if job.cancel_requested:
                ticket = self._fail_locked(job, now, f"cancelled: {text}", dead=True)
            elif job.attempts >= job.max_attempts:
                ticket = self._fail_locked(job, now, text, dead=True)
            else:
                delay = self._config(job.queue).backoff(job.attempts)
                ticket = self._fail_locked(job, now, text, dead=False,
                                           run_at=now + delay if delay else None)
            self._wait_durable_locked(ticket)

    def dead_letter(self, claim: Claim, reason: str) -> None:
        """Move the claimed job straight to the dead set with ``reason`` as its last error."""
        self._ensure_open()
        if not isinstance(reason, str):
            raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")
        text = _error_text(reason)
        with self._lock:
            job = self._current_job_locked(claim, "dead_letter")
            ticket = self._fail_locked(job, self._now(), text, dead=True)
            self._wait_durable_locked(ticket)

    def release(self, claim: Claim, reason: str = "released") -> None:
        """Give the claimed job back: pending again at once, with ``reason`` as its last error.

        Unlike ``nack`` there is no backoff and the job never goes dead for it: the attempt
        stays counted in ``attempts`` (as a crash's would), so a released job may later run
        more than ``max_attempts`` times in all. A job whose cancellation was requested goes
        to the dead set instead, as any ending attempt of it would. The worker loops release
        the job whose handler raised ``KeyboardInterrupt``, ``SystemExit`` or another
        ``BaseException`` that is not an ``Exception``.
        """
        self._ensure_open()
        if not isinstance(reason, str):
            raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")
        text = _error_text(reason)
        with self._lock:
            job = self._current_job_locked(claim, "release")
            now = self._now()
            if job.cancel_requested:
                ticket = self._fail_locked(job, now, f"cancelled: {text}", dead=True)
            else:
                ticket = self._fail_locked(job, now, text, dead=False)
            self._wait_durable_locked(ticket)

    def _fail_locked(self, job: Job, now: float, error: str, *, dead: bool,
                     run_at: float | None = None) -> int:
        if dead:
            to, run_at = ev.TO_DEAD, None
        elif run_at is not None and run_at > now:
            to = ev.TO_SCHEDULED
        else:
            to, run_at = ev.TO_PENDING, None
        job_id = job.id
        ticket = self._commit_locked(ev.encode_fail(job_id, to, now, run_at, error),
                                     self._state.on_fail, job_id, to, now, run_at, error)
        self._claims.pop(job_id, None)
        if dead:
            self._finished_locked(job_id, ticket, WaitOutcome(WaitStatus.COMPLETED, job.record()))
        elif to == ev.TO_PENDING:
            self._wake_claimers_locked(job.queue)
        return ticket

    def renew_lease(self, claim: Claim, extension: Any) -> None:
        """Extend the claim's lease to now + ``extension``; updates ``claim.lease_expires_at``."""
        self._ensure_open()
        seconds = to_seconds(extension, "extension", allow_zero=False)
        with self._lock:
            job = self._current_job_locked(claim, "renew the lease of")
            expires = self._now() + seconds
            self._commit_locked(ev.encode_renew(job.id, expires), self._state.on_renew, job.id,
                                expires, reported=False)
            claim.lease_expires_at = expires

    # -- inspecting and operating ----------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        self._ensure_open()
        check_job_id(job_id)
        with self._lock:
            self._check_open_locked()
            job = self._state.jobs.get(job_id)
            record = None if job is None else job.record()
            self._wait_reported_locked()
            return record

    def stats(self, queue: str) -> QueueStats:
        self._ensure_open()
        check_queue_name(queue)
        with self._lock:
            self._check_open_locked()
            index = self._state.queues.get(queue)
            if index is None:
                stats = QueueStats(queue=queue)
            else:
                c = index.counts
                stats = QueueStats(queue=queue, pending=c[JobStatus.PENDING],
                                   scheduled=c[JobStatus.SCHEDULED],
                                   claimed=c[JobStatus.CLAIMED], done=index.done_total,
                                   dead=c[JobStatus.DEAD])
            self._wait_reported_locked()
            return stats

    def list_queues(self) -> list[str]:
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
            names = sorted(self._state.queues)
            self._wait_reported_locked()
            return names

    def dead_jobs(self, queue: str, *, after: str | None = None, limit: int = 100
                  ) -> list[JobRecord]:
        """A page of dead jobs in enqueue order; ``after`` is the last id of the previous page."""
        self._ensure_open()
        check_queue_name(queue)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise InvalidArgument(f"limit must be an int in 1..10000, got {limit!r}")
        if after is not None:
            check_job_id(after, "after")
        with self._lock:
            self._check_open_locked()
            after_seq = None
            if after is not None:
                ref = self._state.jobs.get(after)
                if ref is None:
                    raise JobNotFound(f"dead_jobs: after={after!r} is not a known job")
                after_seq = ref.seq
            page = [j.record() for j in self._state.dead_page(queue, after_seq, limit)]
            self._wait_reported_locked()
            return page

    def requeue_dead_job(self, job_id: str) -> None:
        """Move a dead job back to pending with its attempts reset."""
        self._ensure_open()
        check_job_id(job_id)
        with self._lock:
            self._check_open_locked()
            job = self._state.jobs.get(job_id)
            if job is None or job.status is not JobStatus.DEAD:
                state = "unknown" if job is None else job.status.value
                raise JobNotFound(f"job {job_id!r} is not dead (it is {state})")
            ticket = self._commit_locked(ev.encode_requeue_dead(job_id),
                                         self._state.on_requeue_dead, job_id)
            self._wake_claimers_locked(job.queue)
            self._wait_durable_locked(ticket)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Remove a pending/scheduled job, or ask a running one to stop."""
        self._ensure_open()
        check_job_id(job_id)
        with self._lock:
            self._check_open_locked()
            job = self._state.jobs.get(job_id)
            if job is None or job.status in _TERMINAL:
                self._wait_reported_locked()  # report "gone" or "finished" once it is durable
                return CancelOutcome.NOT_FOUND
            if job.status is JobStatus.CLAIMED:
                if not job.cancel_requested:
                    ticket = self._commit_locked(ev.encode_cancel(job_id),
                                                 self._state.on_cancel, job_id)
                    claim = self._claims.get(job_id)
                    if claim is not None:
                        claim.cancel_requested.set()
                    self._wait_durable_locked(ticket)
                return CancelOutcome.REQUESTED
            ticket = self._commit_locked(ev.encode_cancel(job_id), self._state.on_cancel, job_id)
            self._finished_locked(job_id, ticket, WaitOutcome(WaitStatus.NOT_FOUND))
            self._wait_durable_locked(ticket)
            return CancelOutcome.REMOVED

    def wait_for_completion(self, job_id: str, timeout: Any) -> WaitOutcome:
        """Block until the job is done or dead, or ``timeout`` seconds pass."""
        self._ensure_open()
        check_job_id(job_id)
        seconds = _wait_seconds(timeout, "timeout")
        deadline = time.monotonic() + seconds
        with self._lock:
            self._check_open_locked()
            job = self._state.jobs.get(job_id)
            if job is None or job.status in _TERMINAL:
                # Finished (or gone) already: report it once that is durable.
                outcome = WaitOutcome(WaitStatus.NOT_FOUND) if job is None else \
                    WaitOutcome(WaitStatus.COMPLETED, job.record())
                if not self._wait_reported_locked(deadline):
                    return WaitOutcome(WaitStatus.TIMED_OUT)
                return outcome
            self._waiters[job_id] = self._waiters.get(job_id, 0) + 1
            try:
                while job_id not in self._final:
                    self._check_open_locked()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return WaitOutcome(WaitStatus.TIMED_OUT)
                    self._completion.wait(min(left, _MAX_WAIT))
                ticket, outcome = self._final[job_id]
                while self.committer.durable_upto < ticket:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return WaitOutcome(WaitStatus.TIMED_OUT)
                    self.committer.wait_locked(ticket, min(left, _MAX_WAIT))
                return outcome
            finally:
                self._waiters[job_id] -= 1
                if not self._waiters[job_id]:
                    del self._waiters[job_id]
                    self._final.pop(job_id, None)

    # -- intake from producers ---------------------------------------------------------------

    def intake_now(self) -> int:
        """Take in what :class:`~taquba.Producer` processes submitted, now.

        Each inbox object is applied as one durable event together with its producer's
        high-water mark, then deleted, so every submission takes effect exactly once (see
        ``taquba.inbox``). The intake thread calls this every ``OpenOptions.inbox_interval``
        or sooner; tests call it directly. Returns how many submissions were applied
        (enqueues that hit a dedup key, cancels of unknown jobs and the like count too).
        Returns 0 when intake is turned off (``inbox_interval=None``).

        Raises:
            QueueClosed, QueueBroken, FencedError: as every call.
            StorageError: the inbox could not be read or the intake not made durable.
        """
        self._ensure_open()
        return self._intake.round()

    def inbox_marks(self) -> dict[str, int]:
        """Each producer id with the last inbox ``seq`` taken in from it (for inspection)."""
        with self._lock:
            self._ensure_open()
            return {p: seq for p, (seq, _) in self._state.inbox_marks.items()}

    def _intake_object_locked(self, producer: str, seq: int, subs: Sequence[Submission],
                              now: float) -> tuple[int, int]:
        """Apply one inbox object as one INTAKE record: (its ticket, submissions applied)."""
        self.committer.check_writable_locked()
        state = self._state
        records: list[bytes] = []
        wake: dict[str, int] = {}
        removed: list[str] = []
        for sub in subs:
            if isinstance(sub, SubmitEnqueue):
                record = self._intake_enqueue_locked(sub, now)
                if record is None:
                    continue
                records.append(record)
                if sub.run_at is None or sub.run_at <= now:
                    wake[sub.queue] = wake.get(sub.queue, 0) + len(sub.job_ids)
                continue
            job = state.jobs.get(sub.job_id)
            if job is None:
                continue
            if isinstance(sub, SubmitCancel):
                if job.status in _TERMINAL or job.cancel_requested:
                    continue
                records.append(ev.encode_cancel(job.id))
                if job.status is JobStatus.CLAIMED:
                    claim = self._claims.get(job.id)
                    if claim is not None:
                        claim.cancel_requested.set()
                else:
                    removed.append(job.id)
                state.on_cancel(job.id)
            elif job.status is JobStatus.DEAD:
                records.append(ev.encode_requeue_dead(job.id))
                state.on_requeue_dead(job.id)
                wake[job.queue] = wake.get(job.queue, 0) + 1
        ticket = self._commit_locked(ev.encode_intake(producer, seq, now, records),
                                     self._set_mark_locked, producer, seq, now)
        for job_id in removed:
            self._finished_locked(job_id, ticket, WaitOutcome(WaitStatus.NOT_FOUND))
        for name, n in wake.items():
            self._wake_claimers_locked(name, n)
        return ticket, len(subs)

    def _set_mark_locked(self, producer: str, seq: int, now: float) -> None:
        state = self._state
        state.on_intake(producer, seq, now, ())

    def _intake_enqueue_locked(self, sub: SubmitEnqueue, now: float) -> bytes | None:
        """Apply one submitted enqueue; its record, or None when it creates nothing."""
        state = self._state
        queue = sub.queue
        try:
            check_queue_name(queue)
        except InvalidArgument:
            logger.warning("inbox: dropped a submission with a bad queue name %r", queue)
            return None
        if sub.dedup_key is not None:
            index = state.queues.get(queue)
            if index is not None and sub.dedup_key in index.dedup:
                return None  # a dedup hit: no job
        if any(job_id in state.jobs for job_id in sub.job_ids):
            logger.warning("inbox: dropped a submission to %r whose job id is in use", queue)
            return None
        cfg = self._config(queue)
        priority = cfg.default_priority if sub.priority is None else sub.priority
        max_attempts = cfg.max_attempts if sub.max_attempts is None else sub.max_attempts
        run_at = sub.run_at if sub.run_at is not None and sub.run_at > now else None
        headers = sub.headers or None
        jobs = [(job_id, payload, priority, max_attempts, run_at, sub.dedup_key, headers)
                for job_id, payload in zip(sub.job_ids, sub.payloads)]
        record = ev.encode_enqueue(queue, now, jobs, ())
        state.on_enqueue(queue, now, jobs, ())
        return record

    # -- background ticks --------------------------------------------------------------------

    def reap_now(self) -> int:
        """Requeue (or dead-letter) jobs whose lease expired and sweep retention.

        Returns how many expired claims were moved.
        """
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
            now = self._now()
            expired = self._state.expired_leases(now)
            for job in expired:
                if job.cancel_requested:
                    self._fail_locked(job, now, "cancelled: lease expired", dead=True)
                else:
                    self._fail_locked(job, now, "lease expired",
                                      dead=job.attempts >= job.max_attempts)
            purge: list[str] = []
            for name in list(self._state.queues):
                cfg = self._config(name)
                done_before = math.inf if cfg.keep_done is None else now - float(cfg.keep_done)  # type: ignore[arg-type]
                dead_before = None if cfg.dead_retention is None else \
                    now - float(cfg.dead_retention)  # type: ignore[arg-type]
                purge += self._state.sweepable(name, done_before, dead_before)
            if purge:
                self._commit_locked(ev.encode_purge(purge), self._state.on_purge, purge)
            return len(expired)

    def promote_scheduled_now(self) -> int:
        """Move scheduled jobs whose time has come to pending; returns how many."""
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
            return self._promote_locked(self._now())

    def check_fence_now(self) -> None:
        """Ask the storage, with one small request, whether another process has opened this
        root since this handle did; if so raise ``FencedError``, here and from every later call.

        The background thread ``taquba-fence-check`` calls this every
        ``OpenOptions.fence_check_interval`` seconds; a handle learns it was fenced at its
        next write anyway, so this is what tells an idle or read-only handle.
        """
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
        check = getattr(self.committer.log, "check_fenced", None)
        if check is None:
            return
        try:
            check()
        except FencedError as exc:
            with self._lock:
                if self._fenced is None:
                    logger.error("taquba: this handle has been fenced off: %s", exc)
                    self._fenced = exc
                    self._refuse = True
                    self._wake_all_locked()
            raise

    def _promote_locked(self, now: float) -> int:
        due = self._state.due_scheduled(now)
        if not due:
            return 0
        job_ids = [j.id for j in due]
        self._commit_locked(ev.encode_promote(job_ids), self._state.on_promote, job_ids)
        counts: dict[str, int] = {}
        for job in due:
            counts[job.queue] = counts.get(job.queue, 0) + 1
        for name, n in counts.items():
            self._wake_claimers_locked(name, n)
        return len(due)

    def __repr__(self) -> str:
        return f"Queue({self.store.description!r}{', closed' if self._closed else ''})"
