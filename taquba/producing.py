"""The producing side of :class:`~taquba.queue.Queue`: enqueues.

Functions of the queue handle ``q`` (the methods of ``Queue`` call them after checking
what they can without the lock); the ones named ``*_locked`` expect ``q._lock`` held.
Every enqueue is one ``Enqueued`` event through ``q._commit``, and returns once it is
durable.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from . import arguments
from .batch import Batch
from .config import EnqueueOptions, check_queue_name
from .core import events as ev
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .handle import Handle
    from .queue import Queue


def enqueue_batch(q: Queue, queue: str, data: list[bytes]) -> list[str]:
    """Enqueue ``data`` (checked payloads, at least one) as one record; their new ids."""
    n = len(data)
    cfg = q._config(queue)
    q._lock.acquire()
    try:
        q._check_open_locked()
        now = q._now()
        job_ids = q._ids.new_many(now, n)
        if not q._state.jobs.keys().isdisjoint(job_ids):
            job_ids = fresh_ids_locked(q, job_ids, now)
        batch = q._commit(
            ev.Enqueued(queue, now, job_ids, data, cfg.default_priority, cfg.max_attempts)
        )
        q._wake_claimers_locked(queue, n)
    except BaseException:
        q._lock.release()
        raise
    q._wait(batch)
    return job_ids


def fresh_ids_locked(q: Queue, job_ids: list[str], now: float) -> list[str]:
    """``job_ids`` with those already in use (a caller's chosen ids) replaced."""
    jobs = q._state.jobs
    out = []
    for job_id in job_ids:
        while job_id in jobs:
            job_id = q._ids.new(now)
        out.append(job_id)
    return out


class PlainEnqueue:
    """An enqueue without options, handed to whichever caller combines (see
    ``Committer.combine``): its result or error is set when it is applied."""

    __slots__ = ("error", "job_id", "max_attempts", "payload", "priority", "queue")

    def __init__(self, queue: str, payload: bytes, priority: int, max_attempts: int) -> None:
        self.queue = queue
        self.payload = payload
        self.priority = priority
        self.max_attempts = max_attempts
        self.job_id = ""
        self.error: BaseException | None = None


def apply_plain_locked(q: Queue, items: list[PlainEnqueue]) -> Batch | None:
    """Apply combined enqueues in order; those of one queue in a row share one record."""
    last = None
    start = 0
    while start < len(items):
        first = items[start]
        end = start + 1
        while end < len(items) and (
            items[end].queue,
            items[end].priority,
            items[end].max_attempts,
        ) == (first.queue, first.priority, first.max_attempts):
            end += 1
        group = items[start:end]
        start = end
        try:
            q._check_open_locked()
            now = q._now()
            job_ids = q._ids.new_many(now, len(group))
            if not q._state.jobs.keys().isdisjoint(job_ids):
                job_ids = fresh_ids_locked(q, job_ids, now)
            last = q._commit(
                ev.Enqueued(
                    first.queue,
                    now,
                    job_ids,
                    [item.payload for item in group],
                    first.priority,
                    first.max_attempts,
                )
            )
        except Exception as exc:
            for item in group:
                item.error = exc
            continue
        for item, job_id in zip(group, job_ids):
            item.job_id = job_id
        q._wake_claimers_locked(first.queue, len(group))
    return last


def enqueue_one(
    q: Queue, queue: str, payload: object, opts: EnqueueOptions, kv: list[tuple[bytes, bytes]]
) -> tuple[str, bool]:
    """Enqueue one job (and ``kv``); return its id and whether it is new (no dedup hit).

    While other enqueues are under way, an enqueue without options is combined with them
    (``Committer.combine``): one caller applies all that are waiting in one lock hold and
    one record, and waits for their durability once.
    """
    check_queue_name(queue)
    data = arguments.payload_bytes(payload, "payload")
    dedup_key = opts.dedup_key
    if dedup_key is not None:
        try:
            dedup_key.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"EnqueueOptions.dedup_key is not valid UTF-8: {dedup_key[:40]!r}"
            ) from None
    cfg = q._config(queue)
    priority = cfg.default_priority if opts.priority is None else opts.priority
    max_attempts = cfg.max_attempts if opts.max_attempts is None else opts.max_attempts
    if kv or not opts.is_plain() or not q.committer.inline:
        return _enqueue_alone(q, queue, data, opts, priority, max_attempts, kv)
    active = q._enqueuers
    active.append(None)  # deque appends and pops are atomic: len() counts the callers
    try:
        if len(active) == 1:
            return _enqueue_alone(q, queue, data, opts, priority, max_attempts, kv)
        item = PlainEnqueue(queue, data, priority, max_attempts)
        q.committer.combine(item, lambda items: apply_plain_locked(q, items))
        if item.error is not None:
            raise item.error
        return item.job_id, True
    finally:
        active.pop()


def _enqueue_alone(
    q: Queue,
    queue: str,
    data: bytes,
    opts: EnqueueOptions,
    priority: int,
    max_attempts: int,
    kv: list[tuple[bytes, bytes]],
) -> tuple[str, bool]:
    lock = q._lock
    lock.acquire()
    try:
        job_id, new, batch = enqueue_one_locked(q, queue, data, opts, priority, max_attempts, kv)
    except BaseException:
        lock.release()
        raise
    q._wait(batch)
    return job_id, new


def enqueue_one_locked(
    q: Queue,
    queue: str,
    data: bytes,
    opts: EnqueueOptions,
    priority: int,
    max_attempts: int,
    kv: list[tuple[bytes, bytes]],
) -> tuple[str, bool, Batch]:
    """The locked part of an enqueue: (id, is new, batch to wait for)."""
    q._check_open_locked()
    state = q._state
    now = q._now()
    dedup_key = opts.dedup_key
    if dedup_key is not None:
        index = state.queues.get(queue)
        existing = None if index is None else index.dedup.get(dedup_key)
        if existing is not None:
            # A dedup hit: what we point at must be durable.
            return existing, False, q.committer.latest_locked()
    job_id, event, pending = job_event_locked(q, queue, data, opts, priority, max_attempts, now, kv)
    batch = q._commit(event)
    if pending:
        q._wake_claimers_locked(queue)
    return job_id, True, batch


def job_event_locked(
    q: Handle,
    queue: str,
    data: bytes,
    opts: EnqueueOptions,
    priority: int,
    max_attempts: int,
    now: float,
    kv: list[tuple[bytes, bytes]],
    taken: Collection[str] = (),
) -> tuple[str, ev.Enqueued, bool]:
    """The id and the event of one new job, and whether it is pending (else scheduled).
    Dedup keys are the caller's business.

    ``opts.job_id`` must not be a known job's id nor in ``taken`` (``InvalidArgument``); a
    generated id avoids both. A ``run_at`` (or ``delay``) not after ``now`` is no schedule.
    """
    jobs = q._state.jobs
    job_id = opts.job_id
    if job_id is not None:
        if job_id in jobs or job_id in taken:
            raise InvalidArgument(f"job_id {job_id!r} is already in use")
    else:
        job_id = q._ids.new(now)
        while job_id in jobs or job_id in taken:
            job_id = q._ids.new(now)
    run_at: float | None = None
    if opts.run_at is not None:
        run_at = float(opts.run_at)  # type: ignore[arg-type]
    elif opts.delay:
        run_at = now + float(opts.delay)  # type: ignore[arg-type]
    if run_at is not None and run_at <= now:
        run_at = None
    specs = None
    if run_at is not None or opts.dedup_key is not None or opts.headers:
        specs = [
            ev.JobSpec(
                priority,
                max_attempts,
                run_at,
                opts.dedup_key,
                dict(opts.headers) if opts.headers else None,
            )
        ]
    event = ev.Enqueued(queue, now, [job_id], [data], priority, max_attempts, specs, kv)
    return job_id, event, run_at is None
