"""``Task``: one registered function, and how a call of it becomes a job.

Rules this module keeps:

- Calling a ``Task`` runs the function inline, as a plain call; ``delay``, ``schedule`` and
  ``follow_up`` turn a call into a job through the ``Tasks`` registry it belongs to, which
  checks every argument before anything is enqueued.
- ``follow_up`` only collects: the jobs asked for while a task runs (in this thread, or
  this context) are made by whoever runs the task, with its ack, and only if it succeeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ..config import EnqueueOptions, PointInTime
from ..errors import InvalidArgument
from .results import TaskResult

if TYPE_CHECKING:
    from . import Tasks

__all__ = ["FollowUp", "Periodic", "Task", "follow_ups"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Periodic:
    """When a periodic task runs: a checked cron expression in a time zone."""

    cron: str
    timezone: str


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A job asked for by ``Task.follow_up`` while a task runs, made when it succeeds."""

    task: Task[Any, Any]
    payload: bytes
    job_id: str
    result: TaskResult[Any]


# The follow-ups of the task running in this thread (None: no task is running).
follow_ups: ContextVar[list[FollowUp] | None] = ContextVar("taquba_tasksfollow_ups", default=None)


class Task(Generic[P, R]):
    """A registered function. Calling it runs it inline; :meth:`delay` and :meth:`schedule`
    make a job of the call. Made by :meth:`Tasks.task`, never directly."""

    def __init__(
        self,
        tasks: Tasks,
        func: Callable[P, R],
        *,
        name: str,
        queue: str,
        max_attempts: int | None,
        priority: int | None,
        store_result: bool,
        result_retention: float | None,
    ) -> None:
        self.tasks = tasks
        self.func = func
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.priority = priority
        self.store_result = store_result
        self.result_retention = result_retention
        # The options of the job that deletes a result of this task (made once: frozen).
        self.expiry_options = (
            None
            if result_retention is None or not store_result
            else EnqueueOptions(delay=result_retention)
        )
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as a plain call (no job, no JSON)."""
        return self.func(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """Make a job that calls this task with these arguments, to run as soon as possible.

        Returns once the job is durable (enqueued by the owner, or submitted through a
        ``Producer``). With ``Tasks(immediate=True)`` the task runs here, first.

        Raises:
            InvalidArgument: an argument JSON cannot carry (nothing is enqueued).
            StorageError: the job could not be written.
        """
        return self.tasks._submit(self, args, kwargs, None)

    def follow_up(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[R]:
        """From inside a running task: make a job of this call if, and when, the running
        task succeeds.

        The job is created in the same atomic record as the running task's ack (a
        settlement effect): if the running task fails, or its worker dies before the ack,
        no follow-up exists; once it is acked, every follow-up does, exactly once. The
        returned result's ``id`` is the follow-up's job id (chosen now). With
        ``Tasks(immediate=True)`` the follow-ups run inline after the task returns.

        Raises:
            InvalidArgument: no task is running in this thread (use :meth:`delay`), or an
                argument JSON cannot carry.
        """
        return self.tasks._follow_up(self, args, kwargs)

    def schedule(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        delay: float | Any = None,
        run_at: PointInTime | None = None,
        priority: int | None = None,
        dedup_key: str | None = None,
        job_id: str | None = None,
        max_attempts: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TaskResult[R]:
        """Make a job that calls this task with ``args`` and ``kwargs``, with enqueue options.

        ``delay`` (a duration) or ``run_at`` (a point in time) hold the job until then;
        ``priority``, ``max_attempts`` override the task's own; ``dedup_key``, ``job_id``
        and ``headers`` are as for ``Queue.enqueue``. With a ``dedup_key`` held by a
        pending job, the result is that job's.

        Raises:
            InvalidArgument: a bad option, or an argument JSON cannot carry (nothing is
                enqueued).
        """
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise InvalidArgument(
                f"args must be a sequence of arguments, got {type(args).__name__}"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise InvalidArgument(f"kwargs must be a mapping, got {type(kwargs).__name__}")
        options = EnqueueOptions(
            delay=delay,
            run_at=run_at,
            priority=self.priority if priority is None else priority,
            dedup_key=dedup_key,
            job_id=job_id,
            max_attempts=self.max_attempts if max_attempts is None else max_attempts,
            headers=headers,
        )
        return self.tasks._submit(self, tuple(args), dict(kwargs or {}), options)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, queue={self.queue!r})"


def _default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def _describe(func: Callable[..., Any]) -> str:
    code = getattr(func, "__code__", None)
    where = f" at {code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    return f"{_default_name(func)}{where}"
