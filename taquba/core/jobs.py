"""One job's in-memory state, laid out for a large backlog.

A pending job is most of what a queue holds, so :class:`Job` keeps only what every job has
(id, kind, payload, enqueue time) in slots of its own. Its queue, priority and attempt
limit are a :class:`JobKind`, one object shared by every job with the same three (a queue
holds a handful of them). Its status, its sequence number and what only some jobs have —
attempts made, a schedule, a lease, a completion or failure time, an error, a dedup key,
headers, a cancel request — live in a :class:`JobDetail` that is made when a job first
needs one (a job that has been delivered has one anyway, for its claim time). A freshly
enqueued job without options has none: no dict for absent headers, no slots for times it
does not have, no int for its seq.

What holds:

- a job without a detail is pending, and its sequence number (its place in enqueue
  order) is kept by its lane only (lane.py), with no int object of its own;
- a job with a detail has its status and its sequence number there; the state
  (state.py) makes the detail, taking the seq from the lane, and never drops it.

Values shared by many jobs are shared objects, not copies: the kind, the enqueue time of a
batch, and the status are the same object for every job that holds them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..records import JobRecord, JobStatus

_NO_HEADERS: Mapping[str, str] = {}
PENDING = JobStatus.PENDING


class JobDetail:
    """The fields a job has only at times, with its status and sequence number."""

    __slots__ = (
        "attempts",
        "cancel_requested",
        "claimed_at",
        "completed_at",
        "dedup_key",
        "failed_at",
        "headers",
        "last_error",
        "lease_expires_at",
        "run_at",
        "seq",
        "status",
    )

    def __init__(self, seq: int, status: JobStatus = PENDING) -> None:
        self.seq = seq
        self.status = status
        self.attempts = 0
        self.run_at: float | None = None
        self.claimed_at: float | None = None
        self.lease_expires_at: float | None = None
        self.completed_at: float | None = None
        self.failed_at: float | None = None
        self.last_error: str | None = None
        self.dedup_key: str | None = None
        self.headers: Mapping[str, str] | None = None
        self.cancel_requested = False


class JobKind:
    """What many jobs share and never change: their queue, priority and attempt limit."""

    __slots__ = ("max_attempts", "priority", "queue")

    def __init__(self, queue: str, priority: int, max_attempts: int) -> None:
        self.queue = queue
        self.priority = priority
        self.max_attempts = max_attempts


class JobKinds:
    """One :class:`JobKind` per (queue, priority, attempt limit), made on first use."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, int, int], JobKind] = {}

    def get(self, queue: str, priority: int, max_attempts: int) -> JobKind:
        key = (queue, priority, max_attempts)
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._kinds[key] = JobKind(queue, priority, max_attempts)
        return kind


class Job:
    """One job's mutable state (internal: callers get frozen :class:`JobRecord` copies).

    Only the state machine (state.py) and snapshot decoding change a job.
    """

    __slots__ = ("detail", "enqueued_at", "id", "kind", "payload")

    # Positional arguments allowed: replay makes one per enqueued job, and keywords cost.
    def __init__(
        self,
        id: str,
        kind: JobKind,
        payload: bytes,
        enqueued_at: float,
        detail: JobDetail | None = None,
    ) -> None:
        self.id = id
        self.kind = kind
        self.payload = payload
        self.enqueued_at = enqueued_at
        self.detail = detail

    @property
    def status(self) -> JobStatus:
        """PENDING without a detail, else the detail's."""
        d = self.detail
        return PENDING if d is None else d.status

    # The kind's fields.

    @property
    def queue(self) -> str:
        return self.kind.queue

    @property
    def priority(self) -> int:
        return self.kind.priority

    @property
    def max_attempts(self) -> int:
        return self.kind.max_attempts

    # The occasional fields, read through the detail (None / empty / False / 0 without one).

    @property
    def attempts(self) -> int:
        d = self.detail
        return 0 if d is None else d.attempts

    @property
    def run_at(self) -> float | None:
        d = self.detail
        return None if d is None else d.run_at

    @property
    def claimed_at(self) -> float | None:
        d = self.detail
        return None if d is None else d.claimed_at

    @property
    def lease_expires_at(self) -> float | None:
        d = self.detail
        return None if d is None else d.lease_expires_at

    @property
    def completed_at(self) -> float | None:
        d = self.detail
        return None if d is None else d.completed_at

    @property
    def failed_at(self) -> float | None:
        d = self.detail
        return None if d is None else d.failed_at

    @property
    def last_error(self) -> str | None:
        d = self.detail
        return None if d is None else d.last_error

    @property
    def dedup_key(self) -> str | None:
        d = self.detail
        return None if d is None else d.dedup_key

    @property
    def headers(self) -> Mapping[str, str]:
        d = self.detail
        if d is None or d.headers is None:
            return _NO_HEADERS
        return d.headers

    @property
    def cancel_requested(self) -> bool:
        d = self.detail
        return d is not None and d.cancel_requested

    def record(self) -> JobRecord:
        """A frozen copy of this job as the public API shows it."""
        d = self.detail
        if d is None:
            return JobRecord(
                id=self.id,
                queue=self.queue,
                payload=self.payload,
                headers={},
                status=PENDING,
                attempts=0,
                max_attempts=self.max_attempts,
                priority=self.priority,
                enqueued_at=self.enqueued_at,
            )
        return JobRecord(
            id=self.id,
            queue=self.queue,
            payload=self.payload,
            headers=dict(d.headers or {}),
            status=d.status,
            attempts=d.attempts,
            max_attempts=self.max_attempts,
            priority=self.priority,
            enqueued_at=self.enqueued_at,
            run_at=d.run_at,
            claimed_at=d.claimed_at,
            lease_expires_at=d.lease_expires_at,
            completed_at=d.completed_at,
            failed_at=d.failed_at,
            last_error=d.last_error,
            dedup_key=d.dedup_key,
            cancel_requested=d.cancel_requested,
        )

    def __repr__(self) -> str:
        return f"Job({self.id!r}, queue={self.queue!r}, status={self.status.value})"
