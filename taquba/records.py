"""Value types returned by the queue: job records, claims, stats, schedules and outcomes."""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class JobStatus(str, enum.Enum):
    """The lifecycle state of a job."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


class CancelOutcome(str, enum.Enum):
    """What :meth:`taquba.Queue.cancel` did."""

    REMOVED = "removed"
    REQUESTED = "requested"
    NOT_FOUND = "not_found"

    def __str__(self) -> str:
        return self.value


class WaitStatus(str, enum.Enum):
    """How :meth:`taquba.Queue.wait_for_completion` ended."""

    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    NOT_FOUND = "not_found"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """A snapshot of one job. Timestamps are epoch seconds."""

    id: str
    queue: str
    payload: bytes
    headers: Mapping[str, str]
    status: JobStatus
    attempts: int
    max_attempts: int
    priority: int
    enqueued_at: float
    run_at: float | None = None
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = None
    dedup_key: str | None = None
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One delivery of a job, from :meth:`taquba.Queue.attempt_history`.

    ``attempt`` is the job's attempt number (1 on first delivery; it starts again after
    ``requeue_dead_job``). ``outcome`` is None while the delivery runs, else one of
    ``"acked"``, ``"nacked"`` (failed, retried), ``"dead"`` (failed, the job went dead),
    ``"lease_expired"`` (the reaper took it back, or killed the job), ``"cancelled"`` (it
    ended after a cancel request: the job went dead) or ``"abandoned"`` (the process that
    held it died: ``finished_at`` is None, as the time is unknown, unless the job went
    dead for it). ``error`` is the failure's text.
    """

    attempt: int
    claimed_at: float
    finished_at: float | None = None
    outcome: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """Job counts of one queue. ``done`` is cumulative; ``dead`` is the current dead set."""

    queue: str
    pending: int = 0
    scheduled: int = 0
    claimed: int = 0
    done: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """A cron schedule (see :meth:`taquba.Queue.add_schedule`). Times are epoch seconds.

    ``next_run_at`` is the next occurrence to fire; ``last_run_at`` the last one fired (None
    before the first). ``priority``, ``max_attempts`` and ``headers`` are the options of its
    jobs (None: the queue's defaults).
    """

    name: str
    cron: str
    queue: str
    payload: bytes
    timezone: str
    next_run_at: float
    last_run_at: float | None = None
    priority: int | None = None
    max_attempts: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """Outcome of :meth:`taquba.Queue.enqueue_with_kv`."""

    id: str
    is_new: bool


@dataclass(frozen=True, slots=True)
class WaitOutcome:
    """Outcome of :meth:`taquba.Queue.wait_for_completion`."""

    status: WaitStatus
    record: JobRecord | None = None


class ClaimedJob(Protocol):
    """What a :class:`Claim` reads of the queue's job: the fields a job never changes."""

    id: str
    payload: bytes
    enqueued_at: float

    @property
    def queue(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def dedup_key(self) -> str | None: ...


_CANCEL_LOCK = threading.Lock()  # creates a claim's cancel_requested event only once


class Claim:
    """A job handed to one worker under a lease, made by :meth:`taquba.Queue.claim`.

    The claim is identified by the job id and its attempt number: once the job moves on
    (settled, reaped, cancelled, claimed again), settling this claim raises ``ClaimLost``.
    ``lease_expires_at`` follows ``renew_lease``; everything else is as it was when claimed.
    """

    __slots__ = (
        "_cancel",
        "_job",
        "_key",
        "_last_error",
        "_record",
        "attempts",
        "claimed_at",
        "lease_expires_at",
    )

    def __init__(
        self,
        job: ClaimedJob,
        *,
        attempts: int,
        claimed_at: float,
        lease_expires_at: float,
        last_error: str | None = None,
        key: bytes | None = None,
    ) -> None:
        self._job = job
        self.attempts = attempts
        self.claimed_at = claimed_at
        self.lease_expires_at = lease_expires_at
        self._last_error = last_error
        self._key = key  # the id's binary form, for the ack's record
        self._record: JobRecord | None = None
        self._cancel: threading.Event | None = None

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def queue(self) -> str:
        return self._job.queue

    @property
    def payload(self) -> bytes:
        return self._job.payload

    @property
    def priority(self) -> int:
        return self._job.priority

    @property
    def headers(self) -> Mapping[str, str]:
        return self.record.headers

    @property
    def record(self) -> JobRecord:
        """The job as it was when claimed (``cancel_requested`` as the event is now)."""
        record = self._record
        if record is None:
            job = self._job
            cancel = self._cancel
            record = self._record = JobRecord(
                id=job.id,
                queue=job.queue,
                payload=job.payload,
                headers=dict(job.headers),
                status=JobStatus.CLAIMED,
                attempts=self.attempts,
                max_attempts=job.max_attempts,
                priority=job.priority,
                enqueued_at=job.enqueued_at,
                claimed_at=self.claimed_at,
                lease_expires_at=self.lease_expires_at,
                last_error=self._last_error,
                dedup_key=job.dedup_key,
                cancel_requested=cancel is not None and cancel.is_set(),
            )
        return record

    @property
    def cancel_requested(self) -> threading.Event:
        """Set when ``cancel`` targets this running job (made when first asked for)."""
        event = self._cancel
        if event is None:
            with _CANCEL_LOCK:
                event = self._cancel
                if event is None:
                    event = self._cancel = threading.Event()
        return event

    def __repr__(self) -> str:
        return (
            f"Claim(id={self.id!r}, queue={self.queue!r}, attempts={self.attempts}, "
            f"lease_expires_at={self.lease_expires_at!r})"
        )
