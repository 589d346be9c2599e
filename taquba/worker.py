"""Worker loops: claim -> run the handler -> settle, with leases kept alive and clean shutdown.

Rules this module keeps:

- A handler's outcome decides the settlement: returning acks (returning a
  :class:`~taquba.SettlementEffects` acks with those effects, in the same record; effects
  the queue rejects nack the job with the reason), raising
  :class:`PermanentFailure` dead-letters with its reason, raising anything else nacks with
  the exception's text (the queue retries with backoff or dead-letters once attempts run out).
- Never more than ``concurrency`` jobs are claimed and unsettled at once:
  ``run_worker_concurrent`` runs ``concurrency`` ``taquba-worker-N`` threads, each
  claiming one job, running it and settling it before it claims the next.
- Waiting for work is ``q.claim(queue, wait=poll_interval)``: woken by enqueues, no busy
  polling. ``poll_interval`` is also how long it takes to notice ``shutdown``.
- Once ``shutdown`` is set no new job is claimed; every job already claimed runs to the end
  and is settled before the loop returns. The same happens to ``run_worker_concurrent``
  loops still running when the interpreter exits (run from a daemon thread).
- A worker thread does not stop for its ack's write: it settles a job's ack, claims and
  runs its next job, settles that, and only then waits until the earlier ack is durable
  (normally it already is: the write went on meanwhile). So one ack per thread is in
  flight at most, and every ack is durable before the loop returns. A crash can lose only
  acks not yet durable, whose jobs are delivered again (as a job in flight is). A lost ack
  is logged ("could not ack job ...") and the next claim stops the loop with the error.
  Nacks and dead-letters are waited for at once. (Tasks results ride on the ack: a
  ``TaskResult.get`` returns only once the ack is durable.)
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
  the lease it was granted, so a handler may run longer than the lease
  (:class:`~taquba.handling.LeaseRenewer`; it wakes only for jobs that run that long).
- The queue process is the single writer. With an out-of-process executor (a
  ``ProcessPoolExecutor``, a Dask ``client.get_executor()``) the handler receives a
  picklable :class:`JobView` (no ``cancel_requested``) and returns its outcome; the
  ``taquba-worker-N`` thread that submitted it waits for the future and settles the job.
- Outcomes, settlements and lease renewal are in :mod:`taquba.handling`; this module
  holds the loops.
- No user code and no queue call runs under this module's locks.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import threading
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeAlias

from .config import Duration, check_queue_name, to_seconds
from .errors import InvalidArgument, QueueBroken, QueueClosed, exception_text
from .handling import (
    MAX_WAIT,
    Handler,
    Job,
    JobView,
    LeaseRenewer,
    Outcome,
    PermanentFailure,
    Worker,
    call_handler,
    confirm,
    log_outcome,
    release,
    resolve,
    run_remote,
    settle,
)
from .records import Claim

if TYPE_CHECKING:
    from .batch import Batch
    from .queue import Queue

logger = logging.getLogger("taquba.worker")

__all__ = [
    "Handler",
    "Job",
    "JobView",
    "PermanentFailure",
    "Worker",
    "run_worker",
    "run_worker_concurrent",
]


# --------------------------------------------------------------------------- loops


def _check_common(queue: str, handler: Handler, poll_interval: Duration) -> float:
    check_queue_name(queue)
    if inspect.iscoroutinefunction(resolve(handler)):
        raise InvalidArgument(f"handler {handler!r} is async; handlers must be synchronous")
    return min(to_seconds(poll_interval, "poll_interval", allow_zero=False), MAX_WAIT)


def run_worker(
    q: Queue,
    queue: str,
    handler: Handler,
    *,
    shutdown: threading.Event,
    poll_interval: Duration = 1.0,
) -> None:
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

    Durability: a nack or dead-letter is durable before the loop goes on; an ack is
    confirmed durable after the next job's settlement (the write goes on while that job
    runs), and every ack before the loop returns. A job whose settlement was lost (a
    crash) is delivered again.
    """
    poll = _check_common(queue, handler, poll_interval)
    process = resolve(handler)
    renewer = LeaseRenewer(q)
    renewer.start()
    logger.info("worker started on queue %r", queue)
    acked: _Acked | None = None
    try:
        while not shutdown.is_set():
            claim = _claim(q, queue, 1, poll, shutdown)
            if claim:
                acked = _process_local(q, process, claim[0], renewer, acked)
    finally:
        if acked is not None:
            confirm(q, *acked)
        renewer.stop()
        logger.info("worker on queue %r stopped", queue)


def _claim(q: Queue, queue: str, slots: int, poll: float, shutdown: threading.Event) -> list[Claim]:
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


_Acked: TypeAlias = "tuple[Claim, Batch]"  # an ack not yet confirmed durable, and its batch


def _process_local(
    q: Queue,
    process: Callable[[Any], object],
    claim: Claim,
    renewer: LeaseRenewer,
    previous: _Acked | None,
) -> _Acked | None:
    """Run ``process`` (the resolved handler) on ``claim`` in this thread and settle it.

    An ack is not waited for here: this returns it, and the thread's next settlement
    confirms it (``previous``) once its own record is in, so a flow of jobs keeps one ack
    per thread in flight instead of stopping for every write.
    """
    renewer.add(claim)
    try:
        outcome = call_handler(process, claim)
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: give the job back, re-raise
        renewer.remove(claim)
        release(q, claim, exc)
        raise
    renewer.remove(claim)
    if outcome.kind != "ack":
        log_outcome(claim, outcome)
    batch = settle(q, claim, outcome, later=True)
    if previous is not None:
        confirm(q, *previous)
    return None if batch is None else (claim, batch)


class _ConcurrentRunner:
    """State of one ``run_worker_concurrent`` call: ``concurrency`` worker threads, each
    looping claim -> run -> settle, and the calling thread waiting for them."""

    def __init__(
        self,
        q: Queue,
        queue: str,
        handler: Handler,
        concurrency: int,
        shutdown: threading.Event,
        poll: float,
        executor: Executor | None,
    ) -> None:
        self.q = q
        self.queue = queue
        self.handler = handler
        self.process = resolve(handler)
        self.concurrency = concurrency
        self.shutdown = shutdown
        self.poll = poll
        self.executor = executor  # None: run handlers in the taquba-worker-N threads
        self.lock = threading.Lock()
        self.fatal: BaseException | None = None  # stops claiming; re-raised after the drain
        self.stopping = threading.Event()  # set with fatal, or when the caller is interrupted
        self.renewer = LeaseRenewer(q)
        self.threads: list[threading.Thread] = []

    def run(self) -> None:
        self.renewer.start()
        _running.add(self)
        logger.info(
            "worker started on queue %r (concurrency %d, %s)",
            self.queue,
            self.concurrency,
            "in-process threads" if self.executor is None else type(self.executor).__name__,
        )
        threads = self.threads
        try:
            for n in range(1, self.concurrency + 1):
                thread = threading.Thread(target=self._work, name=f"taquba-worker-{n}", daemon=True)
                # Listed before it starts: its first job may be under way (and the interpreter
                # exiting, see _stop_at_exit) before this thread runs again.
                threads.append(thread)
                try:
                    thread.start()  # RuntimeError when the interpreter is exiting: stop
                except BaseException:
                    threads.remove(thread)
                    raise
            self._join(threads)
        except BaseException:  # KeyboardInterrupt in the caller, a thread refused: drain
            self.stopping.set()
            if any(t.is_alive() for t in threads):
                logger.info("worker on queue %r: waiting for the jobs in flight", self.queue)
            self._join(threads)
            raise
        finally:
            _running.discard(self)
            self.renewer.stop()
            logger.info("worker on queue %r stopped", self.queue)
        if self.fatal is not None:
            raise self.fatal

    @staticmethod
    def _join(threads: list[threading.Thread]) -> None:
        for thread in threads:
            while thread.is_alive():
                thread.join(MAX_WAIT)

    def _stop_with(self, exc: BaseException) -> None:
        """Stop claiming; ``run`` re-raises ``exc`` (the first such) once the drain is over."""
        with self.lock:
            if self.fatal is None:
                self.fatal = exc
        self.stopping.set()

    def _work(self) -> None:
        """One worker thread: claim, run and settle one job at a time until stopping."""
        q, queue, poll, shutdown, stopping = (
            self.q,
            self.queue,
            self.poll,
            self.shutdown,
            self.stopping,
        )
        process, renewer, executor = self.process, self.renewer, self.executor
        acked: _Acked | None = None  # this thread's last ack, until confirmed durable
        try:
            while not (shutdown.is_set() or stopping.is_set()):
                try:
                    claims = _claim(q, queue, 1, poll, shutdown)
                except BaseException as exc:  # closed, broken or fenced: stop, re-raise in run
                    self._stop_with(exc)
                    return
                if not claims:
                    continue
                claim = claims[0]
                try:
                    if executor is None:
                        acked = _process_local(q, process, claim, renewer, acked)
                    else:
                        self._process_on_executor(claim, executor)
                except BaseException as exc:  # the handler's KeyboardInterrupt, SystemExit
                    logger.warning(
                        "worker on queue %r stops: job %s raised %s",
                        queue,
                        claim.id,
                        type(exc).__name__,
                    )
                    self._stop_with(exc)
                    return
        finally:
            if acked is not None:
                confirm(q, *acked)

    def _process_on_executor(self, claim: Claim, executor: Executor) -> None:
        logger.debug(
            "job %s (attempt %d) submitted to %s", claim.id, claim.attempts, type(executor).__name__
        )
        self.renewer.add(claim)
        try:
            if isinstance(executor, ThreadPoolExecutor):  # same process: the real claim
                future = executor.submit(call_handler, self.process, claim)
            else:
                future = executor.submit(run_remote, self.handler, JobView.from_claim(claim))
        except RuntimeError as exc:  # the executor was shut down: nothing more can run
            self.renewer.remove(claim)
            logger.error("executor refused job %s (%s); the worker stops", claim.id, exc)
            self._stop_with(exc)
            settle(self.q, claim, Outcome("nack", f"executor refused the job: {exc}", exc))
            return
        try:
            outcome = future.result()
        except Exception as exc:  # the executor failed (worker died, unpicklable, ...)
            outcome = Outcome(
                "nack", exception_text(exc), exc, "".join(traceback.format_exception(exc))
            )
        except BaseException as exc:  # the handler's KeyboardInterrupt, SystemExit, ...
            self.renewer.remove(claim)
            release(self.q, claim, exc)
            raise
        finally:
            self.renewer.remove(claim)
        if not isinstance(outcome, Outcome):
            outcome = Outcome("nack", f"executor returned {outcome!r}, not an outcome")
        log_outcome(claim, outcome)
        settle(self.q, claim, outcome)


_running: weakref.WeakSet[_ConcurrentRunner] = weakref.WeakSet()


def _stop_at_exit() -> None:
    """The interpreter is exiting (its non-daemon threads are about to be joined): every
    ``run_worker_concurrent`` stops claiming, and its jobs in flight finish and settle."""
    runners = list(_running)
    for runner in runners:
        runner.stopping.set()
    for runner in runners:
        runner._join(list(runner.threads))


# Where the interpreter offers it (CPython, as concurrent.futures uses it): run before the
# worker threads, which are daemons, would be cut off.
_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    _register_atexit(_stop_at_exit)


def run_worker_concurrent(
    q: Queue,
    queue: str,
    handler: Handler,
    *,
    concurrency: int,
    shutdown: threading.Event,
    poll_interval: Duration = 1.0,
    executor: Executor | None = None,
) -> None:
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
