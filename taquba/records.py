"""Value types returned by the queue: job records, claims, stats and outcomes."""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
class QueueStats:
    """Job counts of one queue. ``done`` is cumulative; ``dead`` is the current dead set."""

    queue: str
    pending: int = 0
    scheduled: int = 0
    claimed: int = 0
    done: int = 0
    dead: int = 0


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


def record_of(values: tuple[Any, ...]) -> JobRecord:
    """A :class:`JobRecord` from its field values in declaration order (headers copied)."""
    (id, queue, payload, headers, status, attempts, max_attempts, priority, enqueued_at,
     run_at, claimed_at, lease_expires_at, completed_at, failed_at, last_error, dedup_key,
     cancel_requested) = values
    return JobRecord(id=id, queue=queue, payload=payload, headers=dict(headers),
                     status=status, attempts=attempts, max_attempts=max_attempts,
                     priority=priority, enqueued_at=enqueued_at, run_at=run_at,
                     claimed_at=claimed_at, lease_expires_at=lease_expires_at,
                     completed_at=completed_at, failed_at=failed_at, last_error=last_error,
                     dedup_key=dedup_key, cancel_requested=cancel_requested)


_CANCEL_LOCK = threading.Lock()  # creates a claim's cancel_requested event only once


class Claim:
    """A job handed to one worker under a lease.

    The claim is identified by the job id and its attempt number: once the job moves on
    (settled, reaped, cancelled, claimed again), settling this claim raises ``ClaimLost``.
    """

    __slots__ = ("_cancel", "_key", "_record", "_values", "lease_expires_at", "token")

    def __init__(self, *, record: JobRecord, lease_expires_at: float,
                 cancel_requested: threading.Event | None = None, token: Any = None) -> None:
        self._record: JobRecord | None = record
        self._values = (record.id, record.queue, record.payload, record.headers,
                        record.status, record.attempts, record.max_attempts, record.priority)
        self._key: bytes | None = None
        self.lease_expires_at = lease_expires_at
        self._cancel = cancel_requested
        self.token = token

    @classmethod
    def _of(cls, values: tuple[Any, ...], lease_expires_at: float, token: Any,
            key: bytes | None) -> Claim:
        """The queue's claims: the record is made from ``values`` when first asked for."""
        claim = object.__new__(cls)
        claim._record = None
        claim._values = values
        claim._key = key  # the id's binary form, for the ack's record
        claim.lease_expires_at = lease_expires_at
        claim._cancel = None
        claim.token = token
        return claim

    @property
    def record(self) -> JobRecord:
        """The job as it was when claimed."""
        record = self._record
        if record is None:
            record = self._record = record_of(self._values)
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

    @property
    def id(self) -> str:
        return self._values[0]  # type: ignore[no-any-return]

    @property
    def queue(self) -> str:
        return self._values[1]  # type: ignore[no-any-return]

    @property
    def payload(self) -> bytes:
        return self._values[2]  # type: ignore[no-any-return]

    @property
    def headers(self) -> Mapping[str, str]:
        return self.record.headers

    @property
    def attempts(self) -> int:
        return self._values[5]  # type: ignore[no-any-return]

    @property
    def priority(self) -> int:
        return self._values[7]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (f"Claim(id={self.id!r}, queue={self.queue!r}, attempts={self.attempts}, "
                f"lease_expires_at={self.lease_expires_at!r})")
