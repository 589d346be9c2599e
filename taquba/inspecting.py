"""Looking at jobs and operating on them: the inspecting side of
:class:`~taquba.queue.Queue`, and the background ticks (reaper sweep, scheduler).

Functions of the queue handle ``q`` (the methods of ``Queue``, in operations.py, call them
after their ``QueueClosed`` check); the ones named ``*_locked`` expect ``q._lock`` held. Reads look at
the in-memory state under the lock; every change goes through ``q._commit(event)``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from . import arguments, views
from .config import check_job_id, check_queue_name
from .consuming import fail_locked, promote_due_locked
from .core import attempts
from .core import events as ev
from .errors import FencedError, JobNotFound
from .records import (
    Attempt,
    CancelOutcome,
    JobRecord,
    JobStatus,
    QueueStats,
    WaitOutcome,
    WaitStatus,
)

if TYPE_CHECKING:
    from .handle import Handle

logger = logging.getLogger("taquba.queue")

_TERMINAL = (JobStatus.DONE, JobStatus.DEAD)
_MAX_WAIT = 3600.0  # longest single sleep; longer waits loop

promote_locked = promote_due_locked


def get_job(q: Handle, job_id: str) -> JobRecord | None:
    check_job_id(job_id)
    with q._lock:
        q._check_open_locked()
        record = views.job_record(q._state, job_id)
        q._wait_reported_locked()
        return record


def attempt_history(q: Handle, job_id: str) -> list[Attempt]:
    """The deliveries of ``job_id``, oldest first (as reported: once durable)."""
    check_job_id(job_id)
    with q._lock:
        q._check_open_locked()
        history = views.attempt_history(q._state, job_id)
        q._wait_reported_locked()
        return history


def stats(q: Handle, queue: str) -> QueueStats:
    check_queue_name(queue)
    with q._lock:
        q._check_open_locked()
        result = views.queue_stats(q._state, queue)
        q._wait_reported_locked()
        return result


def list_queues(q: Handle) -> list[str]:
    with q._lock:
        q._check_open_locked()
        names = sorted(q._state.queues)
        q._wait_reported_locked()
        return names


def dead_jobs(q: Handle, queue: str, after: str | None, limit: int) -> list[JobRecord]:
    views.check_page(queue, after, limit)
    with q._lock:
        q._check_open_locked()
        page = views.dead_page(q._state, queue, after, limit)
        q._wait_reported_locked()
        return page


def requeue_dead_job(q: Handle, job_id: str) -> None:
    check_job_id(job_id)
    with q._lock:
        q._check_open_locked()
        job = q._state.jobs.get(job_id)
        if job is None or job.status is not JobStatus.DEAD:
            state = "unknown" if job is None else job.status.value
            raise JobNotFound(f"job {job_id!r} is not dead (it is {state})")
        batch = q._commit(ev.DeadRequeued(job_id))
        q._wake_claimers_locked(job.queue)
        q._wait_locked(batch)


def cancel(q: Handle, job_id: str) -> CancelOutcome:
    check_job_id(job_id)
    with q._lock:
        q._check_open_locked()
        job = q._state.jobs.get(job_id)
        if job is None or job.status in _TERMINAL:
            q._wait_reported_locked()  # report "gone" or "finished" once it is durable
            return CancelOutcome.NOT_FOUND
        if job.status is JobStatus.CLAIMED:
            if not job.cancel_requested:
                batch = q._commit(ev.Cancelled(job_id))
                claim = q._claims.get(job_id)
                if claim is not None:
                    claim.cancel_requested.set()
                q._wait_locked(batch)
            return CancelOutcome.REQUESTED
        batch = q._commit(ev.Cancelled(job_id))
        q._finished_locked(job_id, batch, WaitOutcome(WaitStatus.NOT_FOUND))
        q._wait_locked(batch)
        return CancelOutcome.REMOVED


def wait_for_completion(q: Handle, job_id: str, timeout: object) -> WaitOutcome:
    check_job_id(job_id)
    seconds = arguments.wait_seconds(timeout, "timeout")
    deadline = time.monotonic() + seconds
    with q._lock:
        q._check_open_locked()
        job = q._state.jobs.get(job_id)
        if job is None or job.status in _TERMINAL:
            # Finished (or gone) already: report it once that is durable.
            outcome = (
                WaitOutcome(WaitStatus.NOT_FOUND)
                if job is None
                else WaitOutcome(WaitStatus.COMPLETED, job.record())
            )
            if not q._wait_reported_locked(deadline):
                return WaitOutcome(WaitStatus.TIMED_OUT)
            return outcome
        q._waiters[job_id] = q._waiters.get(job_id, 0) + 1
        try:
            while job_id not in q._final:
                q._check_open_locked()
                left = deadline - time.monotonic()
                if left <= 0:
                    return WaitOutcome(WaitStatus.TIMED_OUT)
                q._completion.wait(min(left, _MAX_WAIT))
            batch, outcome = q._final[job_id]
            while not batch.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return WaitOutcome(WaitStatus.TIMED_OUT)
                q.committer.wait_locked(batch, min(left, _MAX_WAIT))
            error = batch.error()
            if error is not None:
                raise q.committer.error_for(error, own=True)
            return outcome
        finally:
            q._waiters[job_id] -= 1
            if not q._waiters[job_id]:
                del q._waiters[job_id]
                q._final.pop(job_id, None)


def reap(q: Handle) -> int:
    """Requeue (or dead-letter) jobs whose lease expired and sweep retention."""
    with q._lock:
        q._check_open_locked()
        now = q._now()
        state = q._state
        expired = state.expired_leases(now)
        for job in expired:
            if job.cancel_requested:
                fail_locked(
                    q, job, now, "cancelled: lease expired", dead=True, cause=attempts.CAUSE_CANCEL
                )
            else:
                fail_locked(
                    q,
                    job,
                    now,
                    "lease expired",
                    dead=job.attempts >= job.max_attempts,
                    cause=attempts.CAUSE_LEASE,
                )
        purge: list[str] = []
        for name in list(state.queues):
            cfg = q._config(name)
            done_before = math.inf if cfg.keep_done is None else now - float(cfg.keep_done)  # type: ignore[arg-type]
            dead_before = None if cfg.dead_retention is None else now - float(cfg.dead_retention)  # type: ignore[arg-type]
            purge += state.sweepable(name, done_before, dead_before)
        if purge:
            q._commit(ev.Purged(purge))
        return len(expired)


def check_fence(q: Handle) -> None:
    """Ask the log whether a newer writer exists; if so, the handle refuses from now on."""
    with q._lock:
        q._check_open_locked()
    check = getattr(q.committer.log, "check_fenced", None)
    if check is None:
        return
    try:
        check()
    except FencedError as exc:
        with q._lock:
            if q._fenced is None:
                logger.error("taquba: this handle has been fenced off: %s", exc)
                q._fenced = exc
                q._refuse = True
                q._wake_all_locked()
        raise
