"""Tasks: plain functions run as jobs, by name, with JSON arguments and stored results.

::

    from taquba.tasks import Tasks

    tasks = Tasks("./data/q")

    @tasks.task(queue="email", max_attempts=5, store_result=True)
    def send(address: str) -> str: ...

    r = send.delay("a@example.com")     # a job on queue "email"; send(...) still runs inline
    r.get(timeout=10.0)                 # the return value, once a worker has run it
    tasks.run_worker(shutdown=event, concurrency=8)   # owns the queue, runs every task queue

Rules this package keeps:

- A task is registered under a unique name (by default ``module.qualname``); registering a
  second task of the same name raises ``InvalidArgument``. The name travels in the job's
  payload (see :mod:`taquba.tasks.codec`), and a worker runs a job by looking that name up.
- ``delay`` and ``schedule`` check every argument before anything is enqueued. In the
  process that owns the queue (inside :meth:`Tasks.run_worker`, or with a ``Queue`` given
  to ``Tasks``) they enqueue on it; in any other process they submit through a
  ``Producer``, so a web process never takes the queue over from its worker.
- A worker acks a task's job with its effects in one atomic record: the result (a KV
  entry), the job that deletes that result once its retention has passed (on
  :data:`RESULTS_QUEUE`), and the jobs the task asked for with ``follow_up``. A task that
  fails leaves none of them.
- Results are read through the owning ``Queue`` or, elsewhere, a ``QueueReader``: waiting
  for a result never fences the owner.
- ``@tasks.periodic(cron)`` tasks run on a schedule of the queue that
  :meth:`Tasks.run_worker` keeps in line with the registry (see :mod:`taquba.tasks.runner`).
- ``Tasks(..., immediate=True)`` runs ``delay`` and ``schedule`` inline, with arguments
  and result passed through JSON exactly as a worker would, and opens no queue.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, overload

from ..config import (
    EnqueueOptions,
    OpenOptions,
    check_max_attempts,
    check_priority,
    check_queue_name,
)
from ..core.ids import IdGenerator
from ..cron import CronSpec
from ..effects import EnqueueRequest, SettlementEffects
from ..errors import ConfigError, InvalidArgument, exception_text
from ..handling import PermanentFailure
from ..producer import Producer
from ..queue import Queue
from ..reader import QueueReader
from ..records import Claim
from .codec import (
    BadTaskPayload,
    decode_call,
    decode_result,
    encode_call,
    encode_result,
    result_key,
)
from .results import TaskFailed, TaskResult, _expire, _retention, _Source
from .runner import (
    SCHEDULE_PREFIX,
    PeriodicJob,
    _close_quietly,
    dispatch_error,
    keep_schedules,
    run_queues,
)
from .task import FollowUp, Periodic, Task, _default_name, _describe, follow_ups

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_RESULT_RETENTION",
    "RESULTS_QUEUE",
    "SCHEDULE_PREFIX",
    "Task",
    "TaskFailed",
    "TaskResult",
    "Tasks",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
DEFAULT_RESULT_RETENTION = 24 * 3600.0
RESULTS_QUEUE = "taquba.tasks.results"  # jobs that delete a stored result when it expires


class Tasks:
    """A registry of tasks on one queue root, and the way to run them.

    Args:
        location: the queue's root, as for ``Queue.open`` (a path, a URL or an fsspec
            filesystem); or an open ``Queue`` that this process owns, which the tasks use
            as it is (``close`` leaves it open). May be None only with ``immediate=True``.
        path: the root inside ``location`` when it is a filesystem object.
        storage_options: passed to fsspec when ``location`` is a URL.
        options: the ``OpenOptions`` that :meth:`run_worker` opens the queue with.
        immediate: run ``delay`` and ``schedule`` inline and synchronously (for tests).
        default_queue: the queue of a task that names none.
        result_retention: how long a stored result is kept after its job is done (a
            duration; None keeps results until deleted). Tasks may override it.
    """

    def __init__(
        self,
        location: Any = None,
        path: str | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        options: OpenOptions | None = None,
        immediate: bool = False,
        default_queue: str = DEFAULT_QUEUE,
        result_retention: float | Any = DEFAULT_RESULT_RETENTION,
    ) -> None:
        if location is None and not immediate:
            raise ConfigError("Tasks needs a location (or immediate=True)")
        if options is not None and not isinstance(options, OpenOptions):
            raise ConfigError(f"options must be an OpenOptions, got {type(options).__name__}")
        self.location = location
        self.path = path
        self.storage_options = dict(storage_options or {})
        self.options = options
        self.immediate = bool(immediate)
        self.default_queue = check_queue_name(default_queue)
        self.result_retention = _retention(result_retention)
        self._registry: dict[str, Task[Any, Any]] = {}
        self._lock = threading.Lock()
        self._queue: Queue | None = location if isinstance(location, Queue) else None
        self._producer: Producer | None = None
        self._readers: dict[int, QueueReader] = {}
        self._ids = IdGenerator()
        self._periodic: dict[str, Periodic] = {}

    # -- registering -----------------------------------------------------------------------

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        store_result: bool = False,
        result_retention: float | Any = ...,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        store_result: bool = False,
        result_retention: float | Any = ...,
    ) -> Any:
        """Register a function as a task: ``@tasks.task`` or ``@tasks.task(queue=..., ...)``.

        Args:
            name: the name jobs carry (default ``module.qualname``); unique in this registry.
            queue: the queue its jobs go to (default: ``default_queue``).
            max_attempts: deliveries before the job goes dead (default: the queue's config).
            priority: the jobs' priority (default: the queue's config).
            store_result: keep the return value for ``TaskResult.get`` (as JSON, at most
                ``MAX_KV_VALUE_SIZE`` bytes), written with the job's ack; off by default, as
                a kept result costs a KV entry and a job that deletes it later.
            result_retention: how long the result is kept (default: the registry's).

        Raises:
            InvalidArgument: a duplicate name or a bad option (nothing is registered).
        """
        queue = self.default_queue if queue is None else check_queue_name(queue)
        if max_attempts is not None:
            check_max_attempts(max_attempts, "max_attempts", InvalidArgument)
        if priority is not None:
            check_priority(priority, "priority", InvalidArgument)
        retention = (
            self.result_retention
            if result_retention is ...
            else _retention(result_retention, InvalidArgument)
        )

        def register(f: Callable[P, R]) -> Task[P, R]:
            if not callable(f):
                raise InvalidArgument(f"a task must be a function, got {f!r}")
            task_name = _default_name(f) if name is None else name
            if not isinstance(task_name, str) or not task_name:
                raise InvalidArgument(f"a task name must be a non-empty str, got {task_name!r}")
            made = Task(
                self,
                f,
                name=task_name,
                queue=queue,
                max_attempts=max_attempts,
                priority=priority,
                store_result=bool(store_result),
                result_retention=retention,
            )
            with self._lock:
                if task_name in self._registry:
                    raise InvalidArgument(
                        f"a task named {task_name!r} is already registered "
                        f"({_describe(self._registry[task_name].func)}); give one of them "
                        "another name with @tasks.task(name=...)"
                    )
                self._registry[task_name] = made
            return made

        return register if func is None else register(func)

    def periodic(
        self,
        cron: str,
        *,
        name: str | None = None,
        queue: str | None = None,
        timezone: str = "UTC",
        max_attempts: int | None = None,
        priority: int | None = None,
        store_result: bool = False,
        result_retention: float | Any = ...,
    ) -> Callable[[Callable[[], R]], Task[[], R]]:
        """Register a function of no arguments as a task that runs on a cron schedule.

        ``@tasks.periodic("*/5 * * * *")`` registers the task as :meth:`task` does, and
        :meth:`run_worker` keeps a schedule of the queue for it (named
        ``SCHEDULE_PREFIX + name``): every occurrence makes one job, exactly once across
        restarts and takeovers, and occurrences missed while no worker ran make one
        catch-up job. The schedule is added or updated when the worker starts, and removed
        by a worker in which the task is no longer registered.

        Args:
            cron: a standard 5-field cron expression, or ``@hourly``, ``@daily``, ...
            timezone: the IANA time zone the expression is read in (daylight saving
                handled), default ``"UTC"``.
            name, queue, max_attempts, priority, store_result, result_retention: as for
                :meth:`task`; results are not kept unless asked for.

        Raises:
            InvalidArgument: a bad cron expression or time zone, a duplicate name, or a bad
                option (nothing is registered).
        """
        CronSpec(cron, timezone)  # InvalidArgument for a bad expression or time zone
        spec = Periodic(cron, timezone)
        make = self.task(
            name=name,
            queue=queue,
            max_attempts=max_attempts,
            priority=priority,
            store_result=store_result,
            result_retention=result_retention,
        )

        def register(f: Callable[[], R]) -> Task[[], R]:
            try:
                inspect.signature(f).bind()
            except TypeError:
                raise InvalidArgument(
                    f"a periodic task is called with no arguments; {_describe(f)} needs some"
                ) from None
            except ValueError:  # no signature to check (a builtin): let it be
                pass
            made = make(f)
            with self._lock:
                self._periodic[made.name] = spec
            return made

        return register

    @property
    def registered(self) -> Mapping[str, Task[Any, Any]]:
        """The registered tasks by name (a copy)."""
        with self._lock:
            return dict(self._registry)

    @property
    def queue(self) -> Queue | None:
        """The ``Queue`` this registry owns in this process (given to ``Tasks``, or opened
        by :meth:`own` or :meth:`run_worker` while they run), else None."""
        return self._queue

    @property
    def queues(self) -> list[str]:
        """The queues the registered tasks use, sorted."""
        with self._lock:
            return sorted({t.queue for t in self._registry.values()})

    def result(self, job_id: str, task: str = "") -> TaskResult[Any]:
        """A :class:`TaskResult` for a job made elsewhere (its id handed over by a request)."""
        return TaskResult(job_id, task, source=self._result_source)

    # -- submitting ------------------------------------------------------------------------

    def _submit(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions | None,
    ) -> TaskResult[Any]:
        payload = encode_call(task.name, args, kwargs)
        if self.immediate:
            return self._run_inline(task, payload, options)
        if options is None:
            options = EnqueueOptions(priority=task.priority, max_attempts=task.max_attempts)
        owner = self._queue
        if owner is not None:
            job_id = owner.enqueue_with(task.queue, payload, options)
        else:
            job_id = self._get_producer().enqueue_with(task.queue, payload, options)
        return TaskResult(
            job_id, task.name, store_result=task.store_result, source=self._result_source
        )

    def _follow_up(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TaskResult[Any]:
        pending = follow_ups.get()
        if pending is None:
            raise InvalidArgument(
                f"{task.name}.follow_up() is for use inside a running task "
                "(its job is made when that task succeeds); use delay()"
            )
        payload = encode_call(task.name, args, kwargs)
        job_id = self._new_id()
        result: TaskResult[Any] = TaskResult(
            job_id,
            task.name,
            store_result=task.store_result,
            source=None if self.immediate else self._result_source,
        )
        pending.append(FollowUp(task, payload, job_id, result))
        return result

    def _run_inline(
        self,
        task: Task[Any, Any],
        payload: bytes,
        options: EnqueueOptions | None,
        job_id: str | None = None,
    ) -> TaskResult[Any]:
        if job_id is None:
            job_id = options.job_id if options is not None and options.job_id else self._new_id()
        value, error, follow_ups = self._call_inline(task, payload, job_id)
        for f in follow_ups:  # as a worker would: made only once the task has succeeded
            done = self._run_inline(f.task, f.payload, None, f.job_id)
            f.result._settle(done._value, done._error)
        return TaskResult._inline(job_id, task.name, value, error)

    def _call_inline(
        self, task: Task[Any, Any], payload: bytes, job_id: str
    ) -> tuple[Any, TaskFailed | None, list[FollowUp]]:
        call = decode_call(payload)
        pending: list[FollowUp] = []
        token = follow_ups.set(pending)
        try:
            value = task.func(*call.args, **call.kwargs)
        except Exception as exc:
            error = TaskFailed(job_id, exception_text(exc))
            error.__cause__ = exc
            return None, error, []
        finally:
            follow_ups.reset(token)
        if not task.store_result:
            return None, None, pending
        try:
            return decode_result(encode_result(task.name, value)), None, pending
        except InvalidArgument as exc:  # as a worker would: the job goes dead with this error
            return None, TaskFailed(job_id, str(exc)), []

    def _new_id(self) -> str:
        """A fresh job id, as the queue makes them (time-ordered)."""
        with self._lock:  # the generator is not thread-safe
            return self._ids.new(time.time())

    def _get_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer.open(
                    self.location, self.path, storage_options=self.storage_options
                )
            return self._producer

    def _result_source(self) -> _Source:
        owner = self._queue
        if owner is not None:
            return _Source(owner=owner)
        with self._lock:
            reader = self._readers.get(os.getpid())
            if reader is None:
                reader = QueueReader.open(
                    self.location, self.path, storage_options=self.storage_options
                )
                self._readers[os.getpid()] = reader
        return _Source(reader=reader)

    # -- running ---------------------------------------------------------------------------

    def dispatch(self, claim: Claim) -> SettlementEffects | None:
        """The worker handler for task jobs: run the task the job names and return the
        effects to ack it with (for ``taquba.worker`` loops on a queue this process owns).

        The ack carries, in one atomic record: the task's result (a KV write, when the task
        stores results), a job on :data:`RESULTS_QUEUE` that deletes that result once its
        retention has passed, and the jobs the task asked for with ``follow_up``. A job
        whose payload is not a task call, or names a task not registered here, is
        dead-lettered with an error that says so; a task that raises is retried as any
        handler's job; a result JSON cannot carry, or too large to keep, dead-letters the
        job with an error naming the task. Jobs of :data:`RESULTS_QUEUE` delete the result
        they name.
        """
        if claim.queue == RESULTS_QUEUE:
            return _expire(claim)
        try:
            name, args, kwargs = decode_call(claim.payload)
        except BadTaskPayload as exc:
            raise PermanentFailure(str(exc)) from None
        task = self._registry.get(name)
        if task is None:
            raise PermanentFailure(dispatch_error(name, claim.queue, sorted(self._registry)))
        pending: list[FollowUp] = []
        token = follow_ups.set(pending)
        try:
            value = task.func(*args, **kwargs)
        finally:
            follow_ups.reset(token)
        if not pending and not task.store_result:  # the common case: a plain ack
            return None
        enqueue = [
            EnqueueRequest(
                f.task.queue,
                f.payload,
                EnqueueOptions(
                    job_id=f.job_id, priority=f.task.priority, max_attempts=f.task.max_attempts
                ),
            )
            for f in pending
        ]
        kv_writes = None
        if task.store_result:
            try:
                kv_writes = {result_key(claim.id): encode_result(task.name, value)}
            except InvalidArgument as exc:
                raise PermanentFailure(str(exc)) from None
            if task.expiry_options is not None:
                enqueue.append(
                    EnqueueRequest(RESULTS_QUEUE, claim.id.encode("ascii"), task.expiry_options)
                )
        return SettlementEffects(enqueue=tuple(enqueue), kv_writes=kv_writes)

    def run_worker(
        self,
        *,
        shutdown: threading.Event,
        concurrency: int = 1,
        queues: Sequence[str] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        """Own the queue and run task jobs until ``shutdown`` is set.

        Owns the queue as :meth:`own` does, runs ``concurrency`` jobs at a time on each of ``queues`` (default:
        every queue a registered task uses; and :data:`RESULTS_QUEUE`, whose jobs delete
        expired results), and on shutdown lets the jobs in flight finish
        before it closes the queue it opened. While it runs, ``delay`` in this process
        enqueues on the owned queue.

        Raises:
            InvalidArgument: no queue to run, or a bad argument.
            FencedError, QueueBroken, QueueClosed: the queue can no longer be used (the
                other queues' jobs in flight finish first).
        """
        if self.immediate:
            raise InvalidArgument("Tasks(immediate=True) runs tasks inline; it has no worker")
        names = self.queues if queues is None else [check_queue_name(q) for q in queues]
        if not names:
            raise InvalidArgument("no task is registered, so there is no queue to run")
        if RESULTS_QUEUE not in names and any(
            t.store_result and t.result_retention is not None for t in self.registered.values()
        ):
            names.append(RESULTS_QUEUE)
        with self.own() as q:
            keep_schedules(q, self._periodic_jobs())
            run_queues(
                q,
                names,
                self.dispatch,
                shutdown=shutdown,
                concurrency=concurrency,
                poll_interval=poll_interval,
            )

    def _periodic_jobs(self) -> list[PeriodicJob]:
        with self._lock:
            pairs = [(self._registry[n], spec) for n, spec in self._periodic.items()]
        return [
            PeriodicJob(
                SCHEDULE_PREFIX + task.name,
                spec.cron,
                spec.timezone,
                task.queue,
                encode_call(task.name, (), {}),
                task.priority,
                task.max_attempts,
            )
            for task, spec in pairs
        ]

    @contextmanager
    def own(self) -> Iterator[Queue]:
        """Own the queue for the duration of a ``with`` block, and yield the ``Queue``.

        Opens the queue (taking it over as its single writer) unless this registry already
        holds one (a ``Queue`` given to ``Tasks``, or an enclosing ``own``), which it then
        yields as it is. Inside the block, ``delay`` enqueues on it and :meth:`run_worker`
        runs on it; at the end, a queue opened here is closed. For a process that both
        submits and runs tasks (a script, a single-process web app with worker threads).

        Raises:
            InvalidArgument: the registry is immediate (it has no queue).
        """
        if self.immediate:
            raise InvalidArgument("Tasks(immediate=True) runs tasks inline; it has no queue")
        with self._lock:
            opened = self._queue is None
            if opened:
                self._queue = Queue.open(
                    self.location, self.path, self.options, storage_options=self.storage_options
                )
            q = self._queue
        assert q is not None
        try:
            yield q
        finally:
            if opened:
                with self._lock:
                    self._queue = None
                _close_quietly(q)

    def close(self) -> None:
        """Close the producer and readers this registry opened (not a ``Queue`` given)."""
        with self._lock:
            producer, self._producer = self._producer, None
            readers, self._readers = self._readers, {}
        if producer is not None:
            producer.close()
        for pid, reader in readers.items():
            if pid == os.getpid():
                reader.close()

    def __repr__(self) -> str:
        where = "immediate" if self.immediate else repr(self.location)
        return f"Tasks({where}, {len(self._registry)} tasks)"
