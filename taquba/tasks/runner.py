"""Running the task queues of one owned ``Queue``: one worker loop per queue, and the
schedules of periodic tasks.

Rules this module keeps:

- Every queue gets its own ``run_worker_concurrent`` loop in a ``taquba-tasks-<queue>``
  thread, with ``concurrency`` jobs in flight each, all stopping on one internal event.
- The caller's ``shutdown`` event is watched by the calling thread (it cannot notify us);
  once it is set, or once any loop ends with an error (a fenced, broken or closed queue,
  a handler's ``SystemExit``), every loop stops claiming and finishes its jobs in flight.
  Then the first error is re-raised.
- A periodic task's schedule is (re)written only when it differs from what the registry
  wants: re-adding a schedule restarts it from now, which would lose the catch-up job of
  a downtime. Schedules named with :data:`SCHEDULE_PREFIX` whose task is not registered
  are removed; other schedules are never touched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import EnqueueOptions, to_seconds
from ..errors import InvalidArgument
from ..worker import run_worker_concurrent

if TYPE_CHECKING:
    from ..queue import Queue
    from ..records import Claim

logger = logging.getLogger("taquba.tasks")

__all__ = ["SCHEDULE_PREFIX", "PeriodicJob", "dispatch_error", "keep_schedules", "run_queues"]

SCHEDULE_PREFIX = "taquba.tasks:"  # a periodic task's schedule is named prefix + task name


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    """The schedule a periodic task wants on the queue."""

    name: str
    cron: str
    timezone: str
    queue: str
    payload: bytes
    priority: int | None
    max_attempts: int | None


def keep_schedules(q: Queue, wanted: Sequence[PeriodicJob]) -> None:
    """Make the queue's schedules named with :data:`SCHEDULE_PREFIX` match ``wanted``."""
    existing = {s.name: s for s in q.list_schedules() if s.name.startswith(SCHEDULE_PREFIX)}
    for job in wanted:
        current = existing.pop(job.name, None)
        if current is not None and (
            current.cron,
            current.timezone,
            current.queue,
            bytes(current.payload),
            current.priority,
            current.max_attempts,
        ) == (job.cron, job.timezone, job.queue, job.payload, job.priority, job.max_attempts):
            continue
        q.add_schedule(
            job.name,
            job.cron,
            job.queue,
            job.payload,
            timezone=job.timezone,
            options=EnqueueOptions(priority=job.priority, max_attempts=job.max_attempts),
        )
        logger.info("schedule %r: %s (%s) on queue %r", job.name, job.cron, job.timezone, job.queue)
    for name in existing:
        q.remove_schedule(name)
        logger.info("schedule %r removed: its task is not registered", name)


def dispatch_error(name: str, queue: str, known: Sequence[str]) -> str:
    """The last error of a job naming a task this worker does not know."""
    shown = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
    return (
        f"unknown task {name!r} (queue {queue!r}): no task of that name is registered "
        f"in this worker; registered: {shown or 'none'}"
    )


def run_queues(
    q: Queue,
    queues: Sequence[str],
    handler: Callable[[Claim], object],
    *,
    shutdown: threading.Event,
    concurrency: int,
    poll_interval: float,
) -> None:
    """Run ``handler`` on every queue of ``queues`` until ``shutdown`` is set (see module)."""
    if not hasattr(shutdown, "is_set") or not hasattr(shutdown, "wait"):
        raise InvalidArgument(f"shutdown must be a threading.Event, got {shutdown!r}")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidArgument(f"concurrency must be an int >= 1, got {concurrency!r}")
    poll = to_seconds(poll_interval, "poll_interval", allow_zero=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(queue: str) -> None:
        try:
            run_worker_concurrent(
                q, queue, handler, concurrency=concurrency, shutdown=stop, poll_interval=poll
            )
        except BaseException as exc:
            logger.error("task worker on queue %r stopped: %s", queue, exc)
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=loop, args=(name,), name=f"taquba-tasks-{name}", daemon=True)
        for name in queues
    ]
    for thread in threads:
        thread.start()
    logger.info(
        "running tasks on %s (concurrency %d each)", ", ".join(repr(n) for n in queues), concurrency
    )
    try:
        while not stop.is_set():
            if shutdown.wait(poll):
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _close_quietly(q: Queue) -> None:
    from ..errors import TaqubaError

    try:
        q.close()
    except TaqubaError:  # fenced or broken: the worker loop has reported it already
        pass
