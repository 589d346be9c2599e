"""Worker loops: claim -> run the handler -> settle, with leases kept alive and clean shutdown.

Rules this module keeps:

- A handler's outcome decides the settlement: returning acks (returning a
  :class:`~taquba.SettlementEffects` acks with those effects, in the same record; effects
  the queue rejects nack the job with the reason), raising
  :class:`PermanentFailure` dead-letters with its reason, raising anything else nacks with
  the exception's text (the queue retries with backoff or dead-letters once attempts run out).
- Never more than ``concurrency`` jobs are claimed and unsettled at once: the loop claims
  only for free slots, and a slot is freed only after its job is settled.
- Waiting for work is ``q.claim(queue, wait=poll_interval)``: woken by enqueues, no busy
  polling. ``poll_interval`` is also how long it takes to notice ``shutdown``.
- Once ``shutdown`` is set no new job is claimed; every job already claimed runs to the end
  and is settled before the loop returns.
- A failing settlement (``ClaimLost`` because the job was cancelled or reaped, a storage
  error, ...) is logged and the loop goes on.
- A handler that raises a ``BaseException`` that is not an ``Exception``
  (``KeyboardInterrupt``, ``SystemExit``, ...) gives its job back and stops the loop, the same
  way in both loops: the job is released (:meth:`Queue.release`: pending again at once, no
  backoff, never dead for it, ``last_error`` "interrupted: <type>"), nothing new is claimed,
  every other job in flight runs to the end and is settled, and then the loop re-raises that
  exception.
- A queue that can no longer be used ends the loop the same way: once the handle is closed,
  broken or fenced (``QueueClosed``, ``QueueBroken``, ``FencedError``, which an idle handle
  learns from its fence check), the loop stops claiming, lets the jobs in flight finish, and
  re-raises, so a supervisor sees the process fail and can restart it.
- Every in-flight claim has its lease renewed by one ``taquba-lease-renewer`` thread at half
  the lease it was granted, so a handler may run longer than the lease.
- The queue process is the single writer. With an out-of-process executor (a
  ``ProcessPoolExecutor``, a Dask ``client.get_executor()``) the handler receives a
  picklable :class:`JobView` (no ``cancel_requested``) and returns its outcome; the
  ``taquba-worker-N`` thread that submitted it waits for the future and settles the job.
- No user code and no queue call runs under this module's locks.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from .config import Duration, check_queue_name, to_seconds
from .effects import SettlementEffects
from .errors import ClaimLost, InvalidArgument, QueueBroken, QueueClosed, exception_text
from .records import Claim

if TYPE_CHECKING:
    from .queue import Queue

logger = logging.getLogger("taquba.worker")
_MAX_WAIT = 3600.0  # longest single sleep (longer timeouts overflow Lock.acquire)

__all__ = [
    "Handler",
    "Job",
    "JobView",
    "PermanentFailure",
    "Worker",
    "run_worker",
    "run_worker_concurrent",
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
        return cls(id=claim.id, queue=claim.queue, payload=bytes(claim.payload),
                   headers=dict(claim.headers), attempts=claim.attempts,
                   priority=claim.priority)


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a handler ended. ``error`` is only set in-process (exceptions need not pickle);
    ``effects`` is what an ack also does."""

    kind: Literal["ack", "dead", "nack"]
    text: str = ""
    error: BaseException | None = None
    details: str = ""
    effects: SettlementEffects | None = None


_ACK = _Outcome("ack")


def _resolve(handler: Handler) -> Callable[[Any], object]:
    process = getattr(handler, "process", None)
    if callable(process):
        return process  # type: ignore[no-any-return]
    if callable(handler):
        return handler
    raise InvalidArgument(
        f"handler must be a callable or an object with a process(claim) method, got {handler!r}"
    )


def _call(handler: Handler, job: Any) -> _Outcome:
    """Run ``handler`` on ``job`` and map how it ended to an outcome. Never raises Exception."""
    try:
        result = _resolve(handler)(job)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so it does not warn
            raise TypeError("the handler returned an awaitable; async handlers are not supported")
    except PermanentFailure as exc:
        return _Outcome("dead", exc.reason)
    except Exception as exc:
        return _Outcome("nack", exception_text(exc), exc, traceback.format_exc())
    if isinstance(result, SettlementEffects):
        return _Outcome("ack", effects=result)
    return _ACK


def _run_remote(handler: Handler, job: JobView) -> _Outcome:
    """Entry point in the executor's process: the outcome travels back without the exception."""
    outcome = _call(handler, job)
    if outcome.error is not None:
        return _Outcome(outcome.kind, outcome.text, None, outcome.details, outcome.effects)
    return outcome


def _interrupted(exc: BaseException) -> str:
    return f"interrupted: {type(exc).__name__} {exc}".strip()


def _release(q: Queue, claim: Claim, exc: BaseException) -> None:
    """Give back the job whose handler raised ``exc`` (not an Exception); log, never raise."""
    try:
        q.release(claim, _interrupted(exc))
    except Exception:
        logger.exception("could not release job %s after %s", claim.id, type(exc).__name__)
    else:
        logger.warning("job %s released: its handler raised %s", claim.id, type(exc).__name__)


def _settle(q: Queue, claim: Claim, outcome: _Outcome) -> None:
    """Settle ``claim`` as ``outcome`` says; log (never raise) when the settlement fails."""
    verb = {"ack": "ack", "dead": "dead-letter", "nack": "nack"}[outcome.kind]
    try:
        if outcome.kind == "ack" and outcome.effects is not None:
            try:
                q.ack(claim, outcome.effects)
            except InvalidArgument as exc:
                logger.warning("job %s: the effects its handler returned were rejected: %s",
                               claim.id, exc)
                q.nack(claim, f"invalid settlement effects: {exc}")
        elif outcome.kind == "ack":
            q.ack(claim)
        elif outcome.kind == "dead":
            q.dead_letter(claim, outcome.text)
        else:
            q.nack(claim, outcome.error if outcome.error is not None else outcome.text)
    except ClaimLost:
        if claim.cancel_requested.is_set():
            logger.info("job %s was cancelled while it ran; its %s is dropped", claim.id, verb)
        else:
            logger.warning("could not %s job %s: its claim was lost (lease expired, or the "
                           "job was settled or cancelled elsewhere)", verb, claim.id)
    except Exception:
        logger.exception("could not %s job %s", verb, claim.id)
    else:
        logger.debug("job %s: %s", claim.id, verb)


def _log_outcome(claim: Claim, outcome: _Outcome) -> None:
    if outcome.kind == "dead":
        logger.warning("job %s (attempt %d) failed permanently: %s",
                       claim.id, claim.attempts, outcome.text)
    elif outcome.kind == "nack":
        logger.warning("job %s (attempt %d) failed: %s\n%s", claim.id, claim.attempts,
                       outcome.text, outcome.details.rstrip())


# --------------------------------------------------------------------------- lease renewal


@dataclass(slots=True)
class _Lease:
    claim: Claim
    length: float
    due: float  # time.monotonic() of the next renewal


def _granted_lease(claim: Claim) -> float:
    """The lease length the queue granted, measured on the queue's own clock."""
    claimed_at = claim.record.claimed_at
    if claimed_at is not None and claim.lease_expires_at > claimed_at:
        return claim.lease_expires_at - claimed_at
    return max(claim.lease_expires_at - time.time(), 0.1)


class _LeaseRenewer:
    """One thread renewing every registered claim at half its lease, until it is removed."""

    _RETRY_FRACTION = 0.1  # after a failed (not lost) renewal, try again this share of a lease later

    def __init__(self, q: Queue) -> None:
        self._q = q
        self._cond = threading.Condition()
        self._leases: dict[int, _Lease] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="taquba-lease-renewer",
                                        daemon=True)

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
        with self._cond:
            self._leases[id(claim)] = _Lease(claim, length, time.monotonic() + length / 2)
            self._cond.notify_all()

    def remove(self, claim: Claim) -> None:
        with self._cond:
            self._leases.pop(id(claim), None)

    def _due(self) -> list[_Lease]:
        """Wait (lock held) until some lease is due or the renewer stops; return those due."""
        while not self._stopped:
            now = time.monotonic()
            due = [lease for lease in self._leases.values() if lease.due <= now]
            if due:
                return due
            wake = min((lease.due for lease in self._leases.values()
                        if lease.due != float("inf")), default=None)
            self._cond.wait(None if wake is None else min(wake - now, _MAX_WAIT))
        return []

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due()
                if not due:
                    return
                for lease in due:  # not due again until this renewal has been tried
                    lease.due = float("inf")
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
                log("lost the lease of job %s while its handler runs (the job was cancelled, "
                    "or its lease expired)", claim.id)
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
        with self._cond:
            if self._leases.get(id(claim)) is lease:
                lease.due = time.monotonic() + delay
                self._cond.notify_all()


# --------------------------------------------------------------------------- loops


def _check_common(queue: str, handler: Handler, poll_interval: Duration) -> float:
    check_queue_name(queue)
    if inspect.iscoroutinefunction(_resolve(handler)):
        raise InvalidArgument(f"handler {handler!r} is async; handlers must be synchronous")
    return min(to_seconds(poll_interval, "poll_interval", allow_zero=False), _MAX_WAIT)


def run_worker(q: Queue, queue: str, handler: Handler, *, shutdown: threading.Event,
               poll_interval: Duration = 1.0) -> None:
    """Process jobs of ``queue`` one at a time, in the calling thread, until ``shutdown`` is set.

    Each job is claimed, handed to ``handler`` and settled by how the handler ended:
    returning acks it, raising :class:`PermanentFailure` dead-letters it with its reason,
    raising any other ``Exception`` nacks it (retried with backoff, or dead once its
    attempts are spent). The claim's lease is renewed while the handler runs. A failing
    settlement (the claim was lost to a cancel or the reaper, a storage error) is logged
    and the loop goes on.

    Args:
        q: the open queue.
        queue: the queue's name.
        handler: a callable taking the :class:`Claim`, or an object with a
            ``process(claim)`` method (:class:`Worker`); it must be synchronous.
        shutdown: set it to stop: the job in hand finishes and is settled first.
        poll_interval: the longest wait for a job before looking at ``shutdown`` again
            (seconds or a ``timedelta``, > 0; default 1 s). Enqueues wake the wait at once.

    Returns:
        None, once ``shutdown`` is set and the job in hand is settled.

    Raises:
        InvalidArgument: a bad queue name, handler (not callable, or async) or
            ``poll_interval``, before anything is claimed.
        QueueClosed, QueueBroken, FencedError: the queue can no longer be used (found by
            the next claim, after the job in hand was settled or its settlement failed).
        BaseException: a handler's ``KeyboardInterrupt``, ``SystemExit`` or other
            non-``Exception``, re-raised after its job is released (:meth:`Queue.release`).

    Durability: every settlement returns once it is durable, as :meth:`Queue.ack` and the
    others do; a job whose settlement was lost (a crash) is delivered again.
    """
    poll = _check_common(queue, handler, poll_interval)
    renewer = _LeaseRenewer(q)
    renewer.start()
    logger.info("worker started on queue %r", queue)
    try:
        while not shutdown.is_set():
            claim = _claim(q, queue, 1, poll, shutdown)
            if claim:
                _process_local(q, handler, claim[0], renewer)
    finally:
        renewer.stop()
        logger.info("worker on queue %r stopped", queue)


def _claim(q: Queue, queue: str, slots: int, poll: float,
           shutdown: threading.Event) -> list[Claim]:
    """Claim up to ``slots`` jobs, waiting up to ``poll``. Errors other than a closed or
    broken queue (or a bad argument) are logged and retried after ``poll``."""
    try:
        if slots == 1:
            claim = q.claim(queue, wait=poll)
            return [] if claim is None else [claim]
        return q.claim_batch(queue, slots, wait=poll)
    except (QueueClosed, QueueBroken, InvalidArgument):
        raise
    except Exception:
        logger.exception("claiming from queue %r failed; retrying in %.3gs", queue, poll)
        shutdown.wait(poll)
        return []


def _process_local(q: Queue, handler: Handler, claim: Claim, renewer: _LeaseRenewer) -> None:
    """Run ``handler`` on ``claim`` in this thread and settle it."""
    logger.debug("job %s (attempt %d) started", claim.id, claim.attempts)
    renewer.add(claim)
    try:
        outcome = _call(handler, claim)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: give the job back, re-raise
        renewer.remove(claim)
        _release(q, claim, exc)
        raise
    renewer.remove(claim)
    _log_outcome(claim, outcome)
    _settle(q, claim, outcome)


class _ConcurrentRunner:
    """State of one ``run_worker_concurrent`` call."""

    def __init__(self, q: Queue, queue: str, handler: Handler, concurrency: int,
                 shutdown: threading.Event, poll: float, executor: Executor | None) -> None:
        self.q = q
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.shutdown = shutdown
        self.poll = poll
        self.executor = executor  # None: run handlers in the taquba-worker-N threads
        self.cond = threading.Condition()
        self.in_flight = 0
        self.fatal: BaseException | None = None  # stops claiming; re-raised after the drain
        self.refused = False  # our own pool refused work (interpreter exiting): stop claiming
        self.renewer = _LeaseRenewer(q)
        names = itertools.count(1)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="taquba-worker",
                                       initializer=_name_thread, initargs=(names,))

    def run(self) -> None:
        self.renewer.start()
        logger.info("worker started on queue %r (concurrency %d, %s)", self.queue,
                    self.concurrency, "in-process threads" if self.executor is None
                    else type(self.executor).__name__)
        try:
            self._loop()
        finally:
            self._drain()
            self.pool.shutdown(wait=True)
            self.renewer.stop()
            logger.info("worker on queue %r stopped", self.queue)
        if self.fatal is not None:
            raise self.fatal

    def _stopping(self) -> bool:
        return self.shutdown.is_set() or self.fatal is not None or self.refused

    def _free_slots(self) -> int:
        """Wait until a slot is free (or we are stopping); return how many are free."""
        with self.cond:
            while self.in_flight >= self.concurrency and not self._stopping():
                self.cond.wait(self.poll)  # the shutdown Event cannot notify us: re-check it
            return 0 if self._stopping() else self.concurrency - self.in_flight

    def _loop(self) -> None:
        while True:
            free = self._free_slots()
            if free == 0:
                return
            for claim in _claim(self.q, self.queue, free, self.poll, self.shutdown):
                with self.cond:
                    self.in_flight += 1
                try:
                    self.pool.submit(self._process, claim)
                except RuntimeError:  # the interpreter is exiting: run it here, then stop
                    logger.warning("cannot start a worker thread (interpreter exiting?); "
                                   "running job %s in the loop thread and stopping", claim.id)
                    self.refused = True
                    self._process(claim)

    def _drain(self) -> None:
        with self.cond:
            if self.in_flight:
                logger.info("worker on queue %r: waiting for %d job(s) in flight",
                            self.queue, self.in_flight)
            while self.in_flight:
                self.cond.wait()

    def _stop_with(self, exc: BaseException) -> None:
        """Stop claiming; ``run`` re-raises ``exc`` (the first such) once the drain is over."""
        with self.cond:
            if self.fatal is None:
                self.fatal = exc
            self.cond.notify_all()

    def _process(self, claim: Claim) -> None:
        try:
            if self.executor is None:
                _process_local(self.q, self.handler, claim, self.renewer)
            else:
                self._process_on_executor(claim, self.executor)
        except BaseException as exc:  # the handler's KeyboardInterrupt, SystemExit, ...
            logger.warning("worker on queue %r stops: job %s raised %s", self.queue, claim.id,
                           type(exc).__name__)
            self._stop_with(exc)
        finally:
            with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()

    def _process_on_executor(self, claim: Claim, executor: Executor) -> None:
        logger.debug("job %s (attempt %d) submitted to %s", claim.id, claim.attempts,
                     type(executor).__name__)
        self.renewer.add(claim)
        try:
            if isinstance(executor, ThreadPoolExecutor):  # same process: the real claim
                future = executor.submit(_call, self.handler, claim)
            else:
                future = executor.submit(_run_remote, self.handler, JobView.from_claim(claim))
        except RuntimeError as exc:  # the executor was shut down: nothing more can run
            self.renewer.remove(claim)
            logger.error("executor refused job %s (%s); the worker stops", claim.id, exc)
            self.fatal = self.fatal or exc
            _settle(self.q, claim, _Outcome("nack", f"executor refused the job: {exc}", exc))
            return
        try:
            outcome = future.result()
        except Exception as exc:  # the executor failed (worker died, unpicklable, ...)
            outcome = _Outcome("nack", exception_text(exc), exc,
                               "".join(traceback.format_exception(exc)))
        except BaseException as exc:  # the handler's KeyboardInterrupt, SystemExit, ...
            self.renewer.remove(claim)
            _release(self.q, claim, exc)
            raise
        finally:
            self.renewer.remove(claim)
        if not isinstance(outcome, _Outcome):
            outcome = _Outcome("nack", f"executor returned {outcome!r}, not an outcome")
        _log_outcome(claim, outcome)
        _settle(self.q, claim, outcome)


def _name_thread(names: Iterator[int]) -> None:
    threading.current_thread().name = f"taquba-worker-{next(names)}"


def run_worker_concurrent(q: Queue, queue: str, handler: Handler, *, concurrency: int,
                          shutdown: threading.Event, poll_interval: Duration = 1.0,
                          executor: Executor | None = None) -> None:
    """Process jobs of ``queue`` with up to ``concurrency`` in flight, until ``shutdown`` is set.

    Handlers run on threads named ``taquba-worker-N``, or on ``executor`` when one is given:
    a ``ThreadPoolExecutor`` gets the :class:`Claim` itself; any other executor (a
    ``ProcessPoolExecutor``, a Dask ``client.get_executor()``) gets a picklable
    :class:`JobView`, and the queue process settles the job when the future resolves. The
    executor is not shut down here. Outcomes settle jobs as in :func:`run_worker`, and never
    more than ``concurrency`` jobs are claimed and unsettled at once.

    Args:
        q: the open queue.
        queue: the queue's name.
        handler: as for :func:`run_worker`; picklable when ``executor`` is a
            ``ProcessPoolExecutor``.
        concurrency: the most jobs in flight, an int >= 1.
        shutdown: set it to stop: claiming stops and every job in flight is finished and
            settled before this returns.
        poll_interval: as for :func:`run_worker`.
        executor: where handlers run (None: threads of this call).

    Returns:
        None, once ``shutdown`` is set and every job in flight is settled.

    Raises:
        InvalidArgument: a bad queue name, handler, ``concurrency``, ``poll_interval`` or
            ``executor``, or a handler that does not pickle for a process pool, before
            anything is claimed.
        QueueClosed, QueueBroken, FencedError: the queue can no longer be used; claiming
            stops and it is re-raised once the jobs in flight are settled.
        BaseException: a handler's ``KeyboardInterrupt``, ``SystemExit`` or other
            non-``Exception`` (its job released), re-raised the same way.

    Durability: as for :func:`run_worker`.
    """
    poll = _check_common(queue, handler, poll_interval)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidArgument(f"concurrency must be an int >= 1, got {concurrency!r}")
    if executor is not None and not isinstance(executor, Executor):
        raise InvalidArgument(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    if isinstance(executor, ProcessPoolExecutor):
        try:
            pickle.dumps(handler)
        except Exception as exc:
            raise InvalidArgument(
                f"a handler run on a ProcessPoolExecutor must be picklable: {exc}"
            ) from exc
    _ConcurrentRunner(q, queue, handler, concurrency, shutdown, poll, executor).run()
