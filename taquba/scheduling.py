"""Cron schedules of :class:`~taquba.queue.Queue`: adding, removing, and firing them.

Functions of the queue handle ``q`` (the methods of ``Queue`` call them after their
``QueueClosed`` check); the ones named ``*_locked`` expect ``q._lock`` held. Every change
goes through ``q._commit(event)`` (events in core/schedule.py).

What holds:

- A schedule is durable once ``add_schedule`` returns, and checkpoints carry it.
- Each occurrence is enqueued exactly once, through crashes and takeovers: firing is one
  ``ScheduleFired`` record that holds the job and moves the schedule past the occurrence,
  so replay finds both or neither, and a new owner fires only what the old one's durable
  log had not. The job also carries the dedup key ``taquba-schedule:<name>:<occurrence>``,
  so an occurrence whose job is still pending or scheduled is never enqueued twice.
- After a downtime (or a stalled scheduler) the missed occurrences give one job, for the
  latest of them; the schedule then waits for the first occurrence after now.
- A fired job has the schedule's options and two more headers: ``taquba-schedule`` (the
  schedule's name) and ``taquba-occurrence`` (the occurrence, in epoch seconds).
- Occurrences come from taquba/cron.py (cronsim in the schedule's IANA time zone), computed
  here and recorded in the events: replay needs neither a clock nor a time zone database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import arguments, views
from .config import MAX_HEADER_BYTES, EnqueueOptions, check_headers, check_queue_name
from .core import events as ev
from .cron import CronSpec
from .errors import InvalidArgument
from .records import Schedule

if TYPE_CHECKING:
    from .handle import Handle

logger = logging.getLogger("taquba.queue")

SCHEDULE_HEADER = "taquba-schedule"
OCCURRENCE_HEADER = "taquba-occurrence"
MAX_NAME_BYTES = 255
_RESERVED = (SCHEDULE_HEADER, OCCURRENCE_HEADER)


def check_name(name: object) -> str:
    """A schedule name: a non-empty str of at most ``MAX_NAME_BYTES`` UTF-8 bytes."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"schedule name must be a non-empty str, got {name!r:.80}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"schedule name is not valid UTF-8: {name!r:.80}") from None
    if size > MAX_NAME_BYTES:
        raise InvalidArgument(
            f"schedule name is {size} UTF-8 bytes, the limit is {MAX_NAME_BYTES}: {name[:40]!r}..."
        )
    return name


def dedup_key(name: str, occurrence: float) -> str:
    """The dedup key of the job of ``name``'s occurrence at ``occurrence``."""
    return f"taquba-schedule:{name}:{occurrence:.0f}"


def _job_options(name: str, options: object) -> tuple[int | None, int | None, dict[str, str]]:
    """The priority, max_attempts and headers a schedule's jobs get from ``options``."""
    if options is None:
        return None, None, {}
    if not isinstance(options, EnqueueOptions):
        raise InvalidArgument(f"options must be an EnqueueOptions, got {type(options).__name__}")
    for field in ("run_at", "delay", "dedup_key", "job_id"):
        if getattr(options, field):
            raise InvalidArgument(
                f"a schedule's options cannot set {field}: each occurrence "
                "gets its own job, due at once, with its own dedup key"
            )
    headers = check_headers(options.headers)
    for reserved in _RESERVED:
        if reserved in headers:
            raise InvalidArgument(f"header {reserved!r} is set by the schedule itself")
    extra = len(name.encode()) + len(SCHEDULE_HEADER) + len(OCCURRENCE_HEADER) + 20
    if (
        sum(len(k.encode()) + len(v.encode()) for k, v in headers.items()) + extra
        > MAX_HEADER_BYTES
    ):
        raise InvalidArgument(
            f"the schedule's headers and its own two exceed {MAX_HEADER_BYTES} bytes"
        )
    return options.priority, options.max_attempts, headers


def add(
    q: Handle,
    name: str,
    cron: str,
    queue: str,
    payload: object,
    options: EnqueueOptions | None,
    timezone: str,
) -> Schedule:
    """Add (or replace) schedule ``name``; returns it once it is durable."""
    check_name(name)
    spec = CronSpec(cron, timezone)
    check_queue_name(queue)
    data = arguments.payload_bytes(payload, "payload")
    priority, max_attempts, headers = _job_options(name, options)
    with q._lock:
        q._check_open_locked()
        now = q._now()
        old = q._state.schedules.get(name)
        event = ev.ScheduleSet(
            name,
            cron,
            timezone,
            queue,
            data,
            spec.next_after(now),
            None if old is None else old.last_run_at,
            priority,
            max_attempts,
            headers or None,
        )
        q._wait_locked(q._commit(event))
        return views.schedule_record(event)


def remove(q: Handle, name: str) -> bool:
    """Remove schedule ``name``; whether there was one. Returns once that is durable."""
    check_name(name)
    with q._lock:
        q._check_open_locked()
        if name not in q._state.schedules:
            q._wait_locked(q.committer.latest_locked())
            return False
        q._wait_locked(q._commit(ev.ScheduleRemoved(name)))
        return True


def fire_due_locked(q: Handle, now: float) -> int:
    """Fire every schedule due at ``now`` (see the module docstring); how many jobs that
    enqueued. Not waited for durably: a firing lost in a crash is made again after it."""
    state = q._state
    due = sorted(
        (s for s in state.schedules.values() if s.next_run_at <= now),
        key=lambda s: (s.next_run_at, s.name),
    )
    enqueued = 0
    for schedule in due:
        try:
            spec = CronSpec(schedule.cron, schedule.timezone)
            next_run_at = spec.next_after(now)
            latest = spec.last_at_or_before(now)
        except InvalidArgument as exc:  # say, the time zone database lost the zone
            logger.error("schedule %r cannot fire: %s", schedule.name, exc)
            continue
        occurrence = (
            schedule.next_run_at if latest is None or latest < schedule.next_run_at else latest
        )
        job = _job_locked(q, schedule, occurrence, now)
        q._commit(ev.ScheduleFired(schedule.name, occurrence, next_run_at, job))
        if job is not None:
            enqueued += 1
            q._wake_claimers_locked(schedule.queue)
    return enqueued


def _job_locked(
    q: Handle, schedule: ev.ScheduleSet, occurrence: float, now: float
) -> ev.Enqueued | None:
    """The enqueue of ``schedule``'s job for ``occurrence`` (None if its dedup key is held)."""
    key = dedup_key(schedule.name, occurrence)
    index = q._state.queues.get(schedule.queue)
    if index is not None and key in index.dedup:
        return None
    cfg = q._config(schedule.queue)
    priority = cfg.default_priority if schedule.priority is None else schedule.priority
    max_attempts = cfg.max_attempts if schedule.max_attempts is None else schedule.max_attempts
    headers = dict(schedule.headers or {})
    headers[SCHEDULE_HEADER] = schedule.name
    headers[OCCURRENCE_HEADER] = f"{occurrence:.0f}"
    jobs = q._state.jobs
    job_id = q._ids.new(now)
    while job_id in jobs:
        job_id = q._ids.new(now)
    return ev.Enqueued(
        schedule.queue,
        now,
        [job_id],
        [schedule.payload],
        priority,
        max_attempts,
        [ev.JobSpec(priority, max_attempts, None, key, headers)],
    )
