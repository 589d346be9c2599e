"""Running one claimed job: what a handler may be given, how its end maps to a settlement,
and the thread that keeps the leases of running jobs alive.

Rules this module keeps:

- A handler's outcome decides the settlement: returning acks (returning a
  :class:`~taquba.SettlementEffects` acks with those effects, in the same record; effects
  the queue rejects nack the job with the reason), raising :class:`PermanentFailure`
  dead-letters with its reason, raising anything else nacks with the exception's text.
- A failing settlement (``ClaimLost``, a storage error, ...) is logged, never raised.
- One :class:`LeaseRenewer` thread renews every registered claim at half the lease it was
  granted. It sleeps until the first registered lease is due: registering a claim wakes
  it only when that claim is due before its planned wake-up, so while short jobs flow it
  wakes about twice per lease length, not once per job.
- No user code and no queue call runs under this module's locks.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from .effects import SettlementEffects
from .errors import ClaimLost, InvalidArgument, QueueBroken, QueueClosed, exception_text
from .records import Claim

if TYPE_CHECKING:
    from .batch import Batch
    from .queue import Queue

logger = logging.getLogger("taquba.worker")
MAX_WAIT = 3600.0  # longest single sleep (longer timeouts overflow Lock.acquire)

__all__ = [
    "MAX_WAIT",
    "Handler",
    "Job",
    "JobView",
    "LeaseRenewer",
    "Outcome",
    "PermanentFailure",
    "Worker",
    "call_handler",
    "confirm",
    "log_outcome",
    "release",
    "resolve",
    "run_remote",
    "settle",
]


class PermanentFailure(Exception):
    """Raised by a handler to dead-letter its job at once, with ``reason`` as its last error."""

    def __init__(self, reason: str = "permanent failure") -> None:
        super().__init__(reason)
        self.reason = str(reason)


@runtime_checkable
class Job(Protocol):
    """What a handler may read from the job it is given: a :class:`Claim` or a :class:`JobView`."""

    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def attempts(self) -> int: ...

    @property
    def priority(self) -> int: ...


@runtime_checkable
class Worker(Protocol):
    """A handler object: ``process(claim)`` returns to ack (a ``SettlementEffects`` to ack
    with those effects), raises to nack or dead-letter."""

    def process(self, claim: Claim) -> object: ...


Handler: TypeAlias = Callable[[Claim], object] | Worker


@dataclass(frozen=True, slots=True)
class JobView:
    """The picklable part of a claim, handed to handlers that run in another process."""

    id: str
    queue: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1
    priority: int = 0

    @classmethod
    def from_claim(cls, claim: Claim) -> JobView:
        """The picklable fields of ``claim`` (copies: the view shares nothing with it)."""
        return cls(
            id=claim.id,
            queue=claim.queue,
            payload=bytes(claim.payload),
            headers=dict(claim.headers),
            attempts=claim.attempts,
            priority=claim.priority,
        )


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a handler ended. ``error`` is only set in-process (exceptions need not pickle);
    ``effects`` is what an ack also does."""

    kind: Literal["ack", "dead", "nack"]
    text: str = ""
    error: BaseException | None = None
    details: str = ""
    effects: SettlementEffects | None = None


ACK = Outcome("ack")


def resolve(handler: Handler) -> Callable[[Any], object]:
    process = getattr(handler, "process", None)
    if callable(process):
        return process  # type: ignore[no-any-return]
    if callable(handler):
        return handler
    raise InvalidArgument(
        f"handler must be a callable or an object with a process(claim) method, got {handler!r}"
    )


def call_handler(process: Callable[[Any], object], job: Any) -> Outcome:
    """Run ``process`` (a handler as :func:`resolve` returns it) on ``job`` and map how it
    ended to an outcome. Never raises Exception."""
    try:
        result = process(job)
        if result is None:
            return ACK
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so it does not warn
            raise TypeError("the handler returned an awaitable; async handlers are not supported")
    except PermanentFailure as exc:
        return Outcome("dead", exc.reason)
    except Exception as exc:
        return Outcome("nack", exception_text(exc), exc, traceback.format_exc())
    if isinstance(result, SettlementEffects):
        return Outcome("ack", effects=result)
    return ACK


def run_remote(handler: Handler, job: JobView) -> Outcome:
    """Entry point in the executor's process: the outcome travels back without the exception."""
    outcome = call_handler(resolve(handler), job)
    if outcome.error is not None:
        return Outcome(outcome.kind, outcome.text, None, outcome.details, outcome.effects)
    return outcome


def _interrupted(exc: BaseException) -> str:
    return f"interrupted: {type(exc).__name__} {exc}".strip()


def release(q: Queue, claim: Claim, exc: BaseException) -> None:
    """Give back the job whose handler raised ``exc`` (not an Exception); log, never raise."""
    try:
        q.release(claim, _interrupted(exc))
    except Exception:
        logger.exception("could not release job %s after %s", claim.id, type(exc).__name__)
    else:
        logger.warning("job %s released: its handler raised %s", claim.id, type(exc).__name__)


_VERBS = {"ack": "ack", "dead": "dead-letter", "nack": "nack"}


def settle(q: Queue, claim: Claim, outcome: Outcome, *, later: bool = False) -> Batch | None:
    """Settle ``claim`` as ``outcome`` says; log (never raise) when the settlement fails.

    With ``later``, an ack is not waited for: the batch holding it is returned, for
    :func:`confirm` (None when nothing is left to wait for).
    """
    kind = outcome.kind
    try:
        if kind == "ack":
            try:
                if later:
                    return q._ack_later(claim, outcome.effects)
                q.ack(claim, outcome.effects)
            except InvalidArgument as exc:
                if outcome.effects is None:
                    raise
                logger.warning(
                    "job %s: the effects its handler returned were rejected: %s", claim.id, exc
                )
                q.nack(claim, f"invalid settlement effects: {exc}")
        elif kind == "dead":
            q.dead_letter(claim, outcome.text)
        else:
            q.nack(claim, outcome.error if outcome.error is not None else outcome.text)
    except ClaimLost:
        if claim.cancel_requested.is_set():
            logger.info(
                "job %s was cancelled while it ran; its %s is dropped", claim.id, _VERBS[kind]
            )
        else:
            logger.warning(
                "could not %s job %s: its claim was lost (lease expired, or the "
                "job was settled or cancelled elsewhere)",
                _VERBS[kind],
                claim.id,
            )
    except Exception:
        logger.exception("could not %s job %s", _VERBS[kind], claim.id)
    return None


def confirm(q: Queue, claim: Claim, batch: Batch) -> None:
    """Wait until the ack of ``claim`` that :func:`settle` left in ``batch`` is durable;
    log (never raise) when it was lost."""
    if batch.done() and batch.error() is None:
        return
    try:
        q._await(batch)
    except Exception:
        logger.exception("could not ack job %s", claim.id)


def log_outcome(claim: Claim, outcome: Outcome) -> None:
    if outcome.kind == "dead":
        logger.warning(
            "job %s (attempt %d) failed permanently: %s", claim.id, claim.attempts, outcome.text
        )
    elif outcome.kind == "nack":
        logger.warning(
            "job %s (attempt %d) failed: %s\n%s",
            claim.id,
            claim.attempts,
            outcome.text,
            outcome.details.rstrip(),
        )


# --------------------------------------------------------------------------- lease renewal


@dataclass(slots=True)
class _Lease:
    claim: Claim
    length: float
    due: float  # time.monotonic() of the next renewal


def _granted_lease(claim: Claim) -> float:
    """The lease length the queue granted, measured on the queue's own clock."""
    if claim.lease_expires_at > claim.claimed_at:
        return claim.lease_expires_at - claim.claimed_at
    return max(claim.lease_expires_at - time.time(), 0.1)


class LeaseRenewer:
    """One thread renewing every registered claim at half its lease, until it is removed.

    The thread sleeps until ``_wake``, the earliest renewal it knows of (``inf``: until
    notified); :meth:`add` notifies it only for a claim due before that.
    """

    _RETRY_FRACTION = (
        0.1  # after a failed (not lost) renewal, try again this share of a lease later
    )

    def __init__(self, q: Queue) -> None:
        self._q = q
        self._lock = threading.Lock()  # taken directly on the per-job paths (add, remove)
        self._cond = threading.Condition(self._lock)
        self._leases: dict[int, _Lease] = {}
        self._stopped = False
        self._wake = math.inf
        self._adds = 0  # claims added so far; with no lease left, adds since the last look
        self._idle_wait = 0.0  # half the last lease added: how soon an idle renewer looks again
        self._thread = threading.Thread(target=self._run, name="taquba-lease-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def add(self, claim: Claim) -> None:
        length = _granted_lease(claim)
        due = time.monotonic() + length / 2
        lease = _Lease(claim, length, due)
        with self._lock:
            self._leases[id(claim)] = lease
            self._adds += 1
            self._idle_wait = length / 2
            if due < self._wake:
                self._wake = due
                self._cond.notify()

    def remove(self, claim: Claim) -> None:
        with self._lock:
            self._leases.pop(id(claim), None)

    def _due(self) -> list[_Lease]:
        """Wait (lock held) until some lease is due or the renewer stops; return those due.

        With no lease registered, it sleeps until notified, unless claims were added since
        it last looked (short jobs flow): then it plans to look again half a lease later,
        so that the next claims, due after that, need not wake it.
        """
        seen = self._adds
        while not self._stopped:
            now = time.monotonic()
            leases = self._leases.values()
            due = [lease for lease in leases if lease.due <= now]
            if due:
                self._wake = now  # renewing: nothing added meanwhile can be due sooner
                return due
            if leases:
                self._wake = min(lease.due for lease in leases)
            elif self._adds != seen:
                seen = self._adds
                self._wake = now + self._idle_wait
            else:
                self._wake = math.inf
            self._cond.wait(None if self._wake == math.inf else min(self._wake - now, MAX_WAIT))
        return []

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due()
                if not due:
                    return
                for lease in due:  # not due again until this renewal has been tried
                    lease.due = math.inf
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: _Lease) -> None:
        claim = lease.claim
        try:
            self._q.renew_lease(claim, lease.length)
        except ClaimLost:
            with self._cond:
                current = self._leases.get(id(claim)) is lease
                if current:
                    del self._leases[id(claim)]
            if current:  # not yet removed: the handler still runs without a lease
                log = logger.info if claim.cancel_requested.is_set() else logger.warning
                log(
                    "lost the lease of job %s while its handler runs (the job was cancelled, "
                    "or its lease expired)",
                    claim.id,
                )
            return
        except (QueueClosed, QueueBroken) as exc:
            self.remove(claim)
            logger.warning("cannot renew the lease of job %s any more: %s", claim.id, exc)
            return
        except Exception:
            logger.exception("could not renew the lease of job %s; retrying", claim.id)
            delay = lease.length * self._RETRY_FRACTION
        else:
            logger.debug("renewed the lease of job %s for %.3fs", claim.id, lease.length)
            delay = lease.length / 2
        with self._cond:  # (the renewer's own thread: it looks at the leases again next)
            if self._leases.get(id(claim)) is lease:
                lease.due = time.monotonic() + delay
