"""The consuming side of :class:`~taquba.queue.Queue`: claims and how they are settled.

Functions of the queue handle ``q`` (the methods of ``Queue`` call them after their
``QueueClosed`` check); the ones named ``*_locked`` expect ``q._lock`` held. Every change
goes through ``q._commit(event)``.

A claim is current while the job is claimed with the claim's attempt number and the claim
is the one the queue handed out; settling or renewing any other raises ``ClaimLost`` and
changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import arguments
from .batch import Batch
from .config import EnqueueOptions, check_queue_name, to_seconds
from .core import attempts
from .core import events as ev
from .core.codec import id_key
from .core.jobs import Job
from .effects import SettlementEffects
from .errors import ClaimLost, InvalidArgument
from .producing import job_event_locked
from .records import Claim, JobStatus, WaitOutcome, WaitStatus

if TYPE_CHECKING:
    from .handle import Handle
    from .queue import Queue

logger = logging.getLogger("taquba.queue")

MAX_CLAIM_BATCH = 10_000
_PLAIN = EnqueueOptions()


def claim(q: Queue, queue: str, max_jobs: int, lease: object, wait: object) -> list[Claim]:
    """Up to ``max_jobs`` claims on ``queue``, waiting up to ``wait`` for the first."""
    check_queue_name(queue)
    lease_s = None if lease is None else to_seconds(lease, "lease", allow_zero=False)
    wait_s = (
        0.0 if type(wait) in (float, int) and wait == 0 else arguments.wait_seconds(wait, "wait")
    )
    if lease_s is None:
        lease_s = float(q._config(queue).lease)  # type: ignore[arg-type]
    deadline = time.monotonic() + wait_s if wait_s else 0.0
    with q._lock:
        state = q._state
        while True:
            q._check_open_locked()
            now = q._now()
            if state.scheduled:
                promote_due_locked(q, now)
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
            waiting = q._claim_waiting
            waiting[queue] = waiting.get(queue, 0) + 1
            try:
                q._claim_cond(queue).wait(min(left, 3600.0))
            finally:
                if waiting[queue] == 1:  # the last waiter: drop the queue's condition
                    del waiting[queue]
                    del q._claim_conds[queue]
                else:
                    waiting[queue] -= 1
        claims: list[Claim] = []
        while job is not None:
            claims.append(claim_job_locked(q, job, now, lease_s))
            if len(claims) == max_jobs and not q._claim_waiting.get(queue):
                break
            job = state.peek_pending(queue)
            if len(claims) == max_jobs:
                if job is not None:
                    q._wake_claimers_locked(queue)  # more work for the next waiter
                break
    return claims


def promote_due_locked(q: Handle, now: float) -> int:
    """Make the scheduled jobs due at ``now`` pending and wake their claimers."""
    due = q._state.due_scheduled(now)
    if not due:
        return 0
    q._commit(ev.Promoted([j.id for j in due]))
    counts: dict[str, int] = {}
    for job in due:
        counts[job.queue] = counts.get(job.queue, 0) + 1
    for name, n in counts.items():
        q._wake_claimers_locked(name, n)
    return len(due)


def claim_job_locked(q: Queue, job: Job, now: float, lease: float) -> Claim:
    """Claim ``job`` (pending) for ``lease`` seconds from ``now``."""
    attempts = job.attempts + 1
    job_id = job.id
    key = id_key(job_id)
    q._commit(ev.Claimed(job_id, attempts, now, lease, key), reported=False)
    # The state computed the expiry as now + lease too: the same float.
    detail = job.detail
    assert detail is not None
    c = Claim(
        job,
        attempts=attempts,
        claimed_at=now,
        lease_expires_at=now + lease,
        last_error=detail.last_error,
        key=key,
    )
    if detail.cancel_requested:  # requested while a previous process held the job
        c.cancel_requested.set()
    q._claims[job_id] = c
    return c


def current_job_locked(q: Queue, claim: object, action: str) -> Job:
    """The job of ``claim`` if the claim is current; else ``ClaimLost``."""
    if not isinstance(claim, Claim):
        raise InvalidArgument(f"{action} needs a Claim, got {type(claim).__name__}")
    q._check_open_locked()
    job = q._state.jobs.get(claim.id)
    if (
        q._claims.get(claim.id) is not claim
        or job is None
        or job.status is not JobStatus.CLAIMED
        or job.attempts != claim.attempts
    ):
        state = "gone" if job is None else job.status.value
        raise ClaimLost(
            f"cannot {action} job {claim.id!r} (attempt {claim.attempts}): the "
            f"claim is no longer current (the job is {state})"
        )
    return job


def ack(
    q: Queue, claim: Claim, effects: SettlementEffects | None = None, *, wait: bool = True
) -> Batch | None:
    """Settle ``claim`` as done, with ``effects`` in the same record; wait until durable.

    With ``wait=False`` return the batch holding the ack instead of waiting for it (the
    worker loops wait for it later, see ``taquba.handling.Settling``)."""
    lock = q._lock
    lock.acquire()
    try:
        job = current_job_locked(q, claim, "ack")
        job_id = job.id
        keep = q._config(job.queue).keep_done is not None
        now = q._now() if keep or effects is not None else None
        acked = ev.Acked(job_id, keep, now if keep else None, claim._key)
        event: ev.Event = acked
        woken: list[str] = []
        if effects is not None:
            assert now is not None
            event, woken = with_effects_locked(q, acked, effects, now)
        batch = q._commit(event)
        del q._claims[job_id]
        for name in woken:
            q._wake_claimers_locked(name)
        if job_id in q._waiters:
            # The job is done now: with keep, its record shows it (completed_at set).
            q._finished_locked(
                job_id, batch, WaitOutcome(WaitStatus.COMPLETED, job.record() if keep else None)
            )
    except BaseException:
        lock.release()
        raise
    if not wait:
        lock.release()
        return batch
    q._wait(batch)
    return None


def nack(q: Queue, claim: Claim, text: str, effects: SettlementEffects | None = None) -> None:
    """Settle ``claim`` as failed with ``text``: retry after backoff, or dead (only then
    with ``effects``, which are checked either way)."""
    with q._lock:
        job = current_job_locked(q, claim, "nack")
        now = q._now()
        if job.cancel_requested:
            batch = fail_locked(
                q,
                job,
                now,
                f"cancelled: {text}",
                dead=True,
                cause=attempts.CAUSE_CANCEL,
                effects=effects,
            )
        elif job.attempts >= job.max_attempts:
            batch = fail_locked(q, job, now, text, dead=True, effects=effects)
        else:
            if effects is not None:  # not applied, but checked as if the job went dead
                with_effects_locked(q, ev.Acked(job.id, False), effects, now)
            delay = q._config(job.queue).backoff(job.attempts)
            batch = fail_locked(
                q, job, now, text, dead=False, run_at=now + delay if delay else None
            )
        q._wait_locked(batch)


def dead_letter(
    q: Queue, claim: Claim, text: str, effects: SettlementEffects | None = None
) -> None:
    """Settle ``claim`` by moving the job to the dead set with ``text``, and ``effects``."""
    with q._lock:
        job = current_job_locked(q, claim, "dead_letter")
        q._wait_locked(fail_locked(q, job, q._now(), text, dead=True, effects=effects))


def release(q: Queue, claim: Claim, text: str) -> None:
    """Give the job of ``claim`` back at once with ``text`` (dead if cancel was requested)."""
    with q._lock:
        job = current_job_locked(q, claim, "release")
        now = q._now()
        if job.cancel_requested:
            batch = fail_locked(
                q, job, now, f"cancelled: {text}", dead=True, cause=attempts.CAUSE_CANCEL
            )
        else:
            batch = fail_locked(q, job, now, text, dead=False)
        q._wait_locked(batch)


def fail_locked(
    q: Handle,
    job: Job,
    now: float,
    error: str,
    *,
    dead: bool,
    run_at: float | None = None,
    cause: int = attempts.CAUSE_HANDLER,
    effects: SettlementEffects | None = None,
) -> Batch:
    """End the current attempt of ``job`` at ``now`` with ``error``: dead (then with
    ``effects``, in the same record), scheduled or pending. ``cause``
    (``attempts.CAUSES``) says why, for the attempt history."""
    event: ev.Failed
    if dead:
        event = ev.Failed(job.id, ev.TO_DEAD, now, None, error, cause)
    elif run_at is not None and run_at > now:
        event = ev.Failed(job.id, ev.TO_SCHEDULED, now, run_at, error, cause)
    else:
        event = ev.Failed(job.id, ev.TO_PENDING, now, None, error, cause)
    record: ev.Event = event
    woken: list[str] = []
    if dead and effects is not None:
        record, woken = with_effects_locked(q, event, effects, now)
    batch = q._commit(record)
    q._claims.pop(job.id, None)
    for name in woken:
        q._wake_claimers_locked(name)
    if dead:
        q._finished_locked(job.id, batch, WaitOutcome(WaitStatus.COMPLETED, job.record()))
    elif event.to == ev.TO_PENDING:
        q._wake_claimers_locked(job.queue)
    return batch


def with_effects_locked(
    q: Handle, settlement: ev.Acked | ev.Failed, effects: SettlementEffects, now: float
) -> tuple[ev.Event, list[str]]:
    """The record of ``settlement`` with ``effects`` (see taquba.effects), and the queues
    that get a pending job from it. Changes nothing: raises ``InvalidArgument`` (a
    ``job_id`` already in use) before anything is committed.

    A follow-up whose dedup key a pending or scheduled job of its queue holds, or an
    earlier follow-up of this settlement took, is left out. With nothing left, the record
    is the plain settlement.
    """
    state = q._state
    out: list[ev.Effect] = []
    woken: list[str] = []
    taken_ids: set[str] = set()
    taken_keys: set[tuple[str, str]] = set()
    for i, request in enumerate(effects.enqueue):
        queue = request.queue
        opts = request.options or _PLAIN
        dedup_key = opts.dedup_key
        if dedup_key is not None:
            index = state.queues.get(queue)
            if (index is not None and dedup_key in index.dedup) or (queue, dedup_key) in taken_keys:
                continue
            taken_keys.add((queue, dedup_key))
        cfg = q._config(queue)
        priority = cfg.default_priority if opts.priority is None else opts.priority
        max_attempts = cfg.max_attempts if opts.max_attempts is None else opts.max_attempts
        try:
            job_id, event, pending = job_event_locked(
                q, queue, request.payload, opts, priority, max_attempts, now, [], taken_ids
            )
        except InvalidArgument as exc:
            raise InvalidArgument(f"effects.enqueue[{i}]: {exc}") from None
        taken_ids.add(job_id)
        out.append(event)
        if pending:
            woken.append(queue)
    if effects.kv_writes:
        out.append(ev.KvWritten(list(effects.kv_writes.items())))
    if effects.kv_deletes:
        out.append(ev.KvDeleted(list(effects.kv_deletes)))
    if not out:
        return settlement, woken
    return ev.Settled(settlement, out), woken


def renew_lease(q: Queue, claim: Claim, extension: object) -> None:
    """Move the lease of ``claim`` to now + ``extension``."""
    seconds = to_seconds(extension, "extension", allow_zero=False)
    with q._lock:
        job = current_job_locked(q, claim, "renew the lease of")
        expires = q._now() + seconds
        q._commit(ev.Renewed(job.id, expires), reported=False)
        claim.lease_expires_at = expires


def release_previous_claims(q: Queue) -> None:
    """Jobs a previous process held go back to pending, or dead once attempts are spent.

    This is what the reaper would do when their leases expire, done at once: the process
    that held them is gone, so waiting out the lease would only delay the retry.
    """
    with q._lock:
        claimed = q._state.claimed_jobs()
        if not claimed:
            return
        now = q._now()
        spent = [j for j in claimed if j.attempts >= j.max_attempts or j.cancel_requested]
        ids = [j.id for j in claimed if j not in spent]
        logger.info(
            "requeueing %d job(s) claimed by a previous process; %d dead-lettered "
            "with their attempts used up",
            len(ids),
            len(spent),
        )
        for job in spent:
            reason = "cancelled: " if job.cancel_requested else ""
            fail_locked(
                q,
                job,
                now,
                f"{reason}claim abandoned by a previous process",
                dead=True,
                cause=attempts.CAUSE_ABANDONED,
            )
        if ids:
            q._commit(ev.Released(ids))
            for job_id in ids:
                q._wake_claimers_locked(q._state.jobs[job_id].queue)
