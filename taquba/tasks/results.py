"""``TaskResult``: the handle on one task job, and waiting for its outcome.

Rules this module keeps:

- A result is read where it is durable: from the owning ``Queue`` when this process owns
  it (``wait_for_completion``, then the KV entry), otherwise from a ``QueueReader``
  refreshed with a backoff between reads. A reader writes nothing, so waiting for a result
  in a web process never fences the worker that owns the queue.
- ``get`` returns the stored value, raises :class:`TaskFailed` once the job is dead (with
  its last error), and ``TimeoutError`` when neither is known within the timeout. A job
  that is done with no result stored (the result's retention has passed) gives ``None``
  when the queue still reports the job as done.
- Waiting uses ``time.monotonic()``; nothing here holds a lock while it waits.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..config import check_job_id, to_seconds
from ..effects import SettlementEffects
from ..errors import ConfigError, InvalidArgument, TaqubaError
from ..handling import PermanentFailure
from ..records import Claim, JobStatus, WaitStatus
from .codec import decode_result, result_key

if TYPE_CHECKING:
    from ..queue import Queue
    from ..reader import QueueReader

__all__ = ["TaskFailed", "TaskResult"]

R = TypeVar("R")

_FIRST_POLL = 0.01  # seconds between reader refreshes: first, then doubling up to _LAST_POLL
_LAST_POLL = 0.5
_OWNER_SLICE = 1.0  # an owner's wait re-checks for jobs it did not know yet this often


class TaskFailed(TaqubaError):
    """The task's job is dead: it raised on its last attempt, was dead-lettered, or its
    payload could not be run. ``error`` is the job's last error; ``job_id`` its id."""

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(f"task job {job_id} failed: {error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error


class _Source:
    """Where a result is read: ``owner`` (a Queue) or ``reader`` (a QueueReader)."""

    def __init__(self, owner: Queue | None = None, reader: QueueReader | None = None) -> None:
        self.owner = owner
        self.reader = reader


class TaskResult(Generic[R]):
    """The outcome of one task job: ``id`` is the job id, :meth:`get` waits for the value.

    Returned by ``Task.delay`` and ``Task.schedule``, and by ``Tasks.result(job_id)`` for a
    job submitted elsewhere (a web process handing the id to a later request).
    """

    __slots__ = ("_error", "_ready", "_source", "_store_result", "_task", "_value", "id")

    def __init__(
        self, job_id: str, task: str, *, store_result: bool = True, source: Any = None
    ) -> None:
        self.id = job_id
        self._task = task
        self._store_result = store_result
        self._source = source  # a callable returning a _Source, or None (inline result)
        self._ready = False
        self._value: Any = None
        self._error: TaskFailed | None = None

    @classmethod
    def _inline(
        cls, job_id: str, task: str, value: Any, error: TaskFailed | None
    ) -> TaskResult[Any]:
        """A result already known: the task ran inline (``Tasks(immediate=True)``)."""
        result: TaskResult[Any] = cls(job_id, task)
        result._ready = True
        result._value = value
        result._error = error
        return result

    def _settle(self, value: Any, error: TaskFailed | None) -> None:
        """Fill in an inline result known only later (a follow-up run after its task)."""
        self._value, self._error, self._ready = value, error, True

    @property
    def task(self) -> str:
        """The registered name of the task this job runs."""
        return self._task

    def get(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return the task's return value.

        Args:
            timeout: seconds (or a ``timedelta``) to wait at most; ``None`` waits as long
                as it takes.

        Raises:
            TaskFailed: the job is dead; ``.error`` is its last error.
            TimeoutError: the job did not finish within ``timeout`` (it may still run).
            InvalidArgument: the task was declared with ``store_result=False``, or a bad
                ``timeout``.
        """
        if self._ready:
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[no-any-return]
        if self._source is None:  # an inline follow-up of a task that failed: never made
            raise self._timed_out()
        if not self._store_result:
            raise InvalidArgument(
                f"task {self._task!r} keeps no result (it was declared with store_result=False)"
            )
        seconds = math.inf if timeout is None else to_seconds(timeout, "timeout")
        deadline = time.monotonic() + seconds
        source = self._open_source(deadline)
        if source.owner is not None:
            return self._get_owner(source.owner, deadline)  # type: ignore[no-any-return]
        assert source.reader is not None
        return self._get_reader(source.reader, deadline)  # type: ignore[no-any-return]

    def _open_source(self, deadline: float) -> _Source:
        """The owner, or a reader once the queue exists (a job may be submitted before any
        worker has created the queue: until then, there is nothing to read)."""
        from ..reader import QueueNotFound

        pause = _FIRST_POLL
        while True:
            try:
                return self._source()  # type: ignore[no-any-return]
            except QueueNotFound:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out() from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LAST_POLL)

    def _get_owner(self, q: Queue, deadline: float) -> Any:
        key = result_key(self.id)
        while True:
            value = q.kv_get(key)
            if value is not None:
                return decode_result(value)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out()
            outcome = q.wait_for_completion(self.id, min(left, _OWNER_SLICE))
            if outcome.status is WaitStatus.COMPLETED:
                record = outcome.record
                if record is not None and record.status is JobStatus.DEAD:
                    raise TaskFailed(self.id, record.last_error)
                value = q.kv_get(key)
                if value is not None:
                    return decode_result(value)
                if record is not None:
                    return None  # done, its result no longer kept
            elif outcome.status is WaitStatus.NOT_FOUND:
                # Not taken in yet (submitted by a producer), or finished and dropped: its
                # result, if any, is read at the top of the loop.
                time.sleep(min(_LAST_POLL, max(deadline - time.monotonic(), 0.0)))

    def _get_reader(self, reader: QueueReader, deadline: float) -> Any:
        key = result_key(self.id)
        pause = _FIRST_POLL
        while True:
            reader.refresh()
            value = reader.kv_get(key)
            if value is not None:
                return decode_result(value)
            record = reader.get_job(self.id)
            if record is not None and record.status is JobStatus.DEAD:
                raise TaskFailed(self.id, record.last_error)
            if record is not None and record.status is JobStatus.DONE:
                return None  # done, its result no longer kept
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timed_out()
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LAST_POLL)

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"task job {self.id} ({self._task}) has no result yet")

    def __repr__(self) -> str:
        return f"TaskResult(id={self.id!r}, task={self._task!r})"


def _expire(claim: Claim) -> SettlementEffects:
    """Ack a :data:`RESULTS_QUEUE` job with the deletion of the result it names."""
    job_id = bytes(claim.payload).decode("ascii", "replace")
    try:
        check_job_id(job_id)
    except InvalidArgument as exc:
        raise PermanentFailure(f"not a result to expire: {exc}") from None
    return SettlementEffects(kv_deletes=(result_key(job_id),))


def _retention(value: object, error: type[Exception] = ConfigError) -> float | None:
    if value is None:
        return None
    return to_seconds(value, "result_retention", allow_zero=False, error=error)
