"""The methods of :class:`~taquba.Queue` that look at jobs and operate on them, and its
background ticks (reaper sweep, scheduler, fence check, intake from producers), and its
cron schedules.

``Queue`` inherits them from :class:`Operations`; each checks that the handle is usable
and hands the work to ``inspecting.py``. The rules of ``queue.py``'s docstring hold here.
"""

from __future__ import annotations

from . import consuming, inspecting, scheduling, views
from .batch import Batch
from .config import Buffer, Duration, EnqueueOptions
from .effects import SettlementEffects
from .effects import check as effects_check
from .handle import Handle
from .intake import OwnerIntake
from .records import Attempt, CancelOutcome, Claim, JobRecord, QueueStats, Schedule, WaitOutcome


class Operations(Handle):
    """Looking at jobs, operating on them, and the background ticks: part of
    :class:`~taquba.Queue`'s public API (see there for the errors every method raises)."""

    _intake: OwnerIntake  # set by Queue.__init__

    # -- the worker loops' acks ---------------------------------------------------------------

    def _ack_later(self, claim: Claim, effects: SettlementEffects | None = None) -> Batch | None:
        """``Queue.ack`` that returns the batch holding the ack instead of waiting for it
        to be durable (for the worker loops; wait with :meth:`_await`)."""
        self._ensure_open()
        return consuming.ack(self, claim, effects_check(effects), wait=False)  # type: ignore[arg-type]

    def _await(self, batch: Batch) -> None:
        """Wait until ``batch`` (from :meth:`_ack_later`) is durable; raise what lost it."""
        self._lock.acquire()
        self._wait(batch)

    # -- inspecting and operating -----------------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        """A snapshot of the job ``job_id``.

        Args:
            job_id: 1-128 characters of ``[A-Za-z0-9_-]``.

        Returns:
            A frozen :class:`JobRecord`, or None if there is no such job (any more: an
            acked job is kept only for ``QueueConfig.keep_done``).

        Raises:
            InvalidArgument: a malformed id.
            StorageError: a write this read waited for failed.

        Durability: reports only durable state (it returns once every change made before
        it, claims and renewals aside, is durable).
        """
        self._ensure_open()
        return inspecting.get_job(self, job_id)

    def attempt_history(self, job_id: str) -> list[Attempt]:
        """The deliveries of job ``job_id``, oldest first: one :class:`Attempt` each.

        Args:
            job_id: 1-128 characters of ``[A-Za-z0-9_-]``.

        Returns:
            One entry per delivery with its claim and finish times, its outcome
            (``"acked"``, ``"nacked"``, ``"dead"``, ``"lease_expired"``, ``"cancelled"``,
            ``"abandoned"``, or None while it runs) and its error. At most the last ten
            deliveries, kept while the job's record is kept (a job acked without
            ``keep_done``, or cancelled while waiting, takes its history with it). Empty
            for a job never delivered or not known.

        Raises:
            InvalidArgument: a malformed id.
            StorageError: a write this read waited for failed.

        Durability: reports only durable state, as :meth:`get_job`.
        """
        self._ensure_open()
        return inspecting.attempt_history(self, job_id)

    def stats(self, queue: str) -> QueueStats:
        """The job counts of ``queue``.

        Args:
            queue: the queue's name.

        Returns:
            A :class:`QueueStats`, all zero for a queue never used. ``done`` counts every
            ack since the queue began; ``dead`` is the current dead set.

        Raises:
            InvalidArgument: a bad queue name.
            StorageError: a write this read waited for failed.

        Durability: reports only durable state, as :meth:`get_job`.
        """
        self._ensure_open()
        return inspecting.stats(self, queue)

    def list_queues(self) -> list[str]:
        """The names of the queues that have had jobs.

        Returns:
            The names, sorted.

        Raises:
            StorageError: a write this read waited for failed.

        Durability: reports only durable state, as :meth:`get_job`.
        """
        self._ensure_open()
        return inspecting.list_queues(self)

    def dead_jobs(
        self, queue: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """A page of the dead jobs of ``queue``, in enqueue order.

        Args:
            queue: the queue's name.
            after: the last id of the previous page (None: from the start).
            limit: the page size, 1..10000.

        Returns:
            Up to ``limit`` dead jobs as frozen :class:`JobRecord` objects; fewer (or
            none) at the end.

        Raises:
            InvalidArgument: a bad argument.
            JobNotFound: ``after`` is not a known job.
            StorageError: a write this read waited for failed.

        Durability: reports only durable state, as :meth:`get_job`.
        """
        self._ensure_open()
        return inspecting.dead_jobs(self, queue, after, limit)

    def requeue_dead_job(self, job_id: str) -> None:
        """Move a dead job back to pending with its attempts reset.

        Args:
            job_id: the dead job's id.

        Raises:
            InvalidArgument: a malformed id.
            JobNotFound: the job is not dead (or does not exist).
            StorageError: the record could not be written; the handle is broken.

        Durability: returns once the change is durable.
        """
        self._ensure_open()
        inspecting.requeue_dead_job(self, job_id)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Remove a pending or scheduled job, or ask a claimed one to stop.

        Args:
            job_id: the job's id.

        Returns:
            ``REMOVED`` (it will never run), ``REQUESTED`` (claimed: the request is
            persisted and ``claim.cancel_requested`` is set; a nack or an expired lease
            then kills the job instead of retrying it, while an ack still completes it) or
            ``NOT_FOUND`` (no such job, or it is done or dead).

        Raises:
            InvalidArgument: a malformed id.
            StorageError: the record could not be written; the handle is broken.

        Durability: returns once the change is durable (``NOT_FOUND`` once everything
        before it is).
        """
        self._ensure_open()
        return inspecting.cancel(self, job_id)

    def wait_for_completion(self, job_id: str, timeout: Duration) -> WaitOutcome:
        """Block until the job is done or dead, or ``timeout`` passes.

        Args:
            job_id: the job to wait for.
            timeout: seconds, a ``timedelta``, or ``math.inf``.

        Returns:
            ``WaitOutcome(COMPLETED, record)`` once the job is done or dead (the record is
            None for a job acked without ``keep_done``), ``TIMED_OUT``, or ``NOT_FOUND``
            for an unknown or cancelled job.

        Raises:
            InvalidArgument: a bad id or timeout.
            QueueClosed: the queue closed meanwhile.
            StorageError: the write of the outcome failed.

        Durability: an outcome is reported once it is durable.
        """
        self._ensure_open()
        return inspecting.wait_for_completion(self, job_id, timeout)

    # -- background ticks ------------------------------------------------------------------

    def reap_now(self) -> int:
        """Put back (or dead-letter) jobs whose lease expired, and sweep retention.

        The reaper thread calls this every ``OpenOptions.reaper_interval``; tests call it
        with a manual clock. A job whose attempts are spent, or whose cancellation was
        requested, goes dead; the others become pending again. Done and dead jobs past
        ``keep_done`` / ``dead_retention`` are deleted.

        Returns:
            How many expired claims were moved.

        Durability: not waited for: a lost reap is done again by the next one.
        """
        self._ensure_open()
        return inspecting.reap(self)

    def promote_scheduled_now(self) -> int:
        """Make scheduled jobs whose time has come pending, and fire the cron schedules
        that are due.

        The scheduler thread calls this every ``OpenOptions.scheduler_interval`` (claims
        also promote the due jobs of their queue first); tests call it with a manual clock.

        Returns:
            How many jobs were made pending or enqueued by schedules.

        Durability: not waited for: a tick lost in a crash is made again after it.
        """
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
            now = self._now()
            return inspecting.promote_locked(self, now) + scheduling.fire_due_locked(self, now)

    # -- cron schedules (scheduling.py) -------------------------------------------------------

    def add_schedule(
        self,
        name: str,
        cron: str,
        queue: str,
        payload: Buffer = b"",
        *,
        options: EnqueueOptions | None = None,
        timezone: str = "UTC",
    ) -> Schedule:
        """Enqueue ``payload`` into ``queue`` at every occurrence of ``cron``.

        Args:
            name: the schedule's name (1-255 UTF-8 bytes); re-adding a name replaces it.
            cron: a 5-field cron expression or a macro (``@hourly``, ``@daily``, ...).
            queue: the queue's name.
            payload: the jobs' bytes.
            options: ``priority``, ``max_attempts`` and ``headers`` of the jobs (the other
                fields of :class:`EnqueueOptions` are refused).
            timezone: the IANA time zone the expression is read in (daylight saving
                included; see ``taquba.cron``).

        Returns:
            The :class:`Schedule`, with its ``next_run_at`` (the first occurrence after now).

        Raises:
            InvalidArgument: a bad name, cron expression, time zone, queue name, payload or
                option (nothing changes).

        Every due occurrence is enqueued exactly once, across restarts and takeovers; after
        a downtime the missed occurrences give one catch-up job. Durability: returns once
        the schedule is durable.
        """
        self._ensure_open()
        return scheduling.add(self, name, cron, queue, payload, options, timezone)

    def remove_schedule(self, name: str) -> bool:
        """Remove the schedule ``name``.

        Returns:
            False if there was none.

        Durability: returns once the removal is durable.
        """
        self._ensure_open()
        return scheduling.remove(self, name)

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name.

        Durability: reports only durable state, as :meth:`get_job`.
        """
        self._ensure_open()
        with self._lock:
            self._check_open_locked()
            out = views.schedules(self._state)
            self._wait_reported_locked()
            return out

    def check_fence_now(self) -> None:
        """Ask the storage, with one small request, whether another process has opened this
        root since this handle did.

        The background thread ``taquba-fence-check`` calls this every
        ``OpenOptions.fence_check_interval`` seconds; a handle learns it was fenced at its
        next write anyway, so this is what tells an idle or read-only handle.

        Raises:
            FencedError: another process has opened the root; from now on every call on
                this handle raises it.
            StorageError: the storage could not be asked.

        Durability: writes nothing.
        """
        self._ensure_open()
        inspecting.check_fence(self)

    # -- intake from producers (intake.py) ----------------------------------------------------

    def intake_now(self) -> int:
        """Take in what :class:`~taquba.Producer` processes submitted, now.

        The intake thread calls this every ``OpenOptions.inbox_interval`` or sooner; tests
        call it directly.

        Returns:
            How many submissions were applied (enqueues that hit a dedup key, cancels of
            unknown jobs and the like count too); 0 when intake is turned off
            (``inbox_interval=None``).

        Raises:
            StorageError: the inbox could not be read or the intake not made durable.

        Durability: each inbox object is applied as one durable event together with its
        producer's high-water mark, then deleted, so every submission takes effect exactly
        once (see ``taquba.inbox``).
        """
        self._ensure_open()
        return self._intake.round()

    def inbox_marks(self) -> dict[str, int]:
        """The producers the queue has taken submissions from, for inspection.

        Returns:
            Each producer id with the ``seq`` of the last inbox object taken in from it.

        Durability: reports the state as applied, which may include an intake whose write
        is still under way.
        """
        self._ensure_open()
        with self._lock:
            self._ensure_open()
            return {p: seq for p, (seq, _) in self._state.inbox_marks.items()}
