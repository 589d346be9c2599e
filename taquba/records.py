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


_CANCEL_LOCK = threading.Lock()  # creates a claim's cancel_requested event only once


class Claim:
    """A job handed to one worker under a lease.

    The claim is identified by the job id and its attempt number: once the job moves on
    (settled, reaped, cancelled, claimed again), settling this claim raises ``ClaimLost``.
    """

    __slots__ = ("_cancel", "lease_expires_at", "record", "token")

    def __init__(self, *, record: JobRecord, lease_expires_at: float,
                 cancel_requested: threading.Event | None = None, token: Any = None) -> None:
        self.record = record
        self.lease_expires_at = lease_expires_at
        self._cancel = cancel_requested
        self.token = token

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
        return self.record.id

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def payload(self) -> bytes:
        return self.record.payload

    @property
    def headers(self) -> Mapping[str, str]:
        return self.record.headers

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def priority(self) -> int:
        return self.record.priority

    def __repr__(self) -> str:
        return (f"Claim(id={self.id!r}, queue={self.queue!r}, attempts={self.attempts}, "
                f"lease_expires_at={self.lease_expires_at!r})")
