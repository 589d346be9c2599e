"""Answers to the inspection calls, computed from a ``State``: one implementation for the
owner's ``Queue`` and for ``QueueReader``. Callers hold their own lock around these."""

from __future__ import annotations

from .arguments import kv_key as kv_key  # the check the owner applies too
from .config import check_job_id, check_queue_name
from .core.schedule import ScheduleSet
from .core.state import State
from .errors import InvalidArgument, JobNotFound
from .records import Attempt, JobRecord, JobStatus, QueueStats, Schedule

MAX_PAGE = 10_000


def job_record(state: State, job_id: str) -> JobRecord | None:
    """The record of job ``job_id``, or None if it is not kept."""
    job = state.jobs.get(job_id)
    return None if job is None else job.record()


def oldest_pending_at(state: State, queue: str) -> float | None:
    """The enqueue time of the oldest pending job of ``queue`` (None if none is pending).

    Looks at the head of each priority's lane, dropping stale entries on the way as
    ``State.peek_pending`` does: O(priorities) plus the stale entries it drops. A job that
    became pending again (retried, promoted) counts from its enqueue time.
    """
    index = state.queues.get(queue)
    if index is None or not index.counts[JobStatus.PENDING]:
        return None
    jobs = state.jobs
    oldest: float | None = None
    for lane in index.lanes.values():
        for job in (lane.fresh_head(jobs), lane.returned_head(jobs)):
            if job is not None and (oldest is None or job.enqueued_at < oldest):
                oldest = job.enqueued_at
    return oldest


def attempt_history(state: State, job_id: str) -> list[Attempt]:
    """The deliveries of ``job_id``, oldest first (empty for an unknown or unclaimed job)."""
    return [
        Attempt(
            attempt=e.attempt,
            claimed_at=e.claimed_at,
            finished_at=e.finished_at,
            outcome=e.outcome,
            error=e.error,
        )
        for e in state.history.get(job_id, ())
    ]


def queue_stats(state: State, queue: str) -> QueueStats:
    """The counts of ``queue`` (zeros for a queue the state does not know)."""
    index = state.queues.get(queue)
    if index is None:
        return QueueStats(queue=queue)
    c = index.counts
    return QueueStats(
        queue=queue,
        pending=c[JobStatus.PENDING],
        scheduled=c[JobStatus.SCHEDULED],
        claimed=c[JobStatus.CLAIMED],
        done=index.done_total,
        dead=c[JobStatus.DEAD],
    )


def check_page(queue: object, after: object, limit: object) -> None:
    """Validate the arguments of ``dead_jobs`` (before any lock is taken)."""
    check_queue_name(queue)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be an int in 1..{MAX_PAGE}, got {limit!r}")
    if after is not None:
        check_job_id(after, "after")


def dead_page(state: State, queue: str, after: str | None, limit: int) -> list[JobRecord]:
    """A page of ``queue``'s dead jobs in enqueue order after job ``after``."""
    check_page(queue, after, limit)
    after_seq = None
    if after is not None:
        ref = state.jobs.get(after)
        if ref is None:
            raise JobNotFound(f"dead_jobs: after={after!r} is not a known job")
        after_seq = state.seq_of(ref)
    return [j.record() for j in state.dead_page(queue, after_seq, limit)]


def schedule_record(s: ScheduleSet) -> Schedule:
    """The public record of a schedule as the state holds it."""
    return Schedule(
        name=s.name,
        cron=s.cron,
        queue=s.queue,
        payload=s.payload,
        timezone=s.timezone,
        next_run_at=s.next_run_at,
        last_run_at=s.last_run_at,
        priority=s.priority,
        max_attempts=s.max_attempts,
        headers=dict(s.headers) if s.headers else {},
    )


def schedules(state: State) -> list[Schedule]:
    """Every schedule, by name."""
    return [schedule_record(state.schedules[name]) for name in sorted(state.schedules)]
