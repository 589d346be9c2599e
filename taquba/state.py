"""The queue's in-memory state: a pure, deterministic state machine.

Events in (the same events the log stores), indexes updated; snapshots out and in. No
clock, no lock, no I/O: every time value arrives inside an event, so replaying the log
rebuilds exactly the state the writer had.

Each event kind has one ``on_*`` method. The queue calls it with the same arguments it
encoded into the record (events.py), and replay calls it with the arguments decoded from
the record (:meth:`State.apply_bytes`); the encoding is exact, so both build the same state.

Indexes, all independent of history:

- per queue, a heap of pending jobs ordered by (priority, enqueue sequence): claim is
  O(log n) and FIFO within a priority;
- one heap of scheduled jobs by ``run_at`` and one of leases by expiry;
- per queue, heaps of retained done and dead jobs by completion / failure time (for the
  retention sweeps) and an ordered index of dead jobs for paging;
- per queue, the dedup keys of pending and scheduled jobs.

Heaps are lazy: an entry is valid only while the job still matches it, and stale entries are
dropped when they surface. Validation of caller input happens in ``queue.py`` before an
event is made; applying an event never fails for a valid event.

``live_bytes`` estimates the size of a snapshot of the state: per job ``JOB_BYTES`` plus its
payload, header names and values, dedup key and last error (string lengths in characters),
and per KV entry its key and value. It grows with enqueues and KV writes and shrinks when
jobs are dropped (acked without retention, cancelled, purged) and KV keys deleted.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Sequence
from typing import Any

from . import events as ev
from . import snapshot as snap
from .errors import CorruptionError
from .records import JobRecord, JobStatus, record_of

PENDING = JobStatus.PENDING
SCHEDULED = JobStatus.SCHEDULED
CLAIMED = JobStatus.CLAIMED
DONE = JobStatus.DONE
DEAD = JobStatus.DEAD

JOB_BYTES = snap.JOB_BYTES
KV_ENTRY_BYTES = 4  # the two lengths of a KV entry in a snapshot
MARK_BYTES = 12  # an inbox mark's seq and time besides its producer id


class Job:
    """One job's mutable state (internal; callers get frozen :class:`JobRecord` copies).

    The arguments are positional, in the order of a decoded snapshot row (snapshot.Row).
    """

    __slots__ = ("attempts", "cancel_requested", "claimed_at", "completed_at", "dedup_key",
                 "enqueued_at", "failed_at", "headers", "id", "last_error", "lease_expires_at",
                 "max_attempts", "payload", "priority", "queue", "run_at", "seq", "status")

    def __init__(self, id: str, queue: str, payload: bytes, headers: dict[str, str],
                 status: JobStatus, attempts: int, max_attempts: int, priority: int, seq: int,
                 enqueued_at: float, run_at: float | None = None,
                 claimed_at: float | None = None, lease_expires_at: float | None = None,
                 completed_at: float | None = None, failed_at: float | None = None,
                 last_error: str | None = None, dedup_key: str | None = None,
                 cancel_requested: bool = False) -> None:
        self.id = id
        self.queue = queue
        self.payload = payload
        self.headers = headers
        self.status = status
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.priority = priority
        self.seq = seq
        self.enqueued_at = enqueued_at
        self.run_at = run_at
        self.claimed_at = claimed_at
        self.lease_expires_at = lease_expires_at
        self.completed_at = completed_at
        self.failed_at = failed_at
        self.last_error = last_error
        self.dedup_key = dedup_key
        self.cancel_requested = cancel_requested

    def values(self) -> tuple[Any, ...]:
        """The fields of this job's :class:`JobRecord`, in order (see ``record_of``)."""
        return (self.id, self.queue, self.payload, self.headers, self.status, self.attempts,
                self.max_attempts, self.priority, self.enqueued_at, self.run_at,
                self.claimed_at, self.lease_expires_at, self.completed_at, self.failed_at,
                self.last_error, self.dedup_key, self.cancel_requested)

    def record(self) -> JobRecord:
        return record_of(self.values())

    def size(self) -> int:
        """This job's share of ``State.live_bytes``."""
        n = JOB_BYTES + len(self.payload)
        if self.headers:
            n += sum(len(k) + len(v) + 2 for k, v in self.headers.items())
        if self.dedup_key is not None:
            n += len(self.dedup_key) + 1
        if self.last_error is not None:
            n += len(self.last_error) + 2
        return n


class QueueIndex:
    """Indexes and counters of one named queue."""

    __slots__ = ("counts", "dead", "dead_heap", "dedup", "done_heap", "done_total", "name",
                 "pending")

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[tuple[int, int, str]] = []  # (priority, seq, id)
        self.dedup: dict[str, str] = {}
        self.counts = {PENDING: 0, SCHEDULED: 0, CLAIMED: 0, DONE: 0, DEAD: 0}
        self.done_total = 0
        self.done_heap: list[tuple[float, str]] = []  # retained done jobs by completed_at
        self.dead_heap: list[tuple[float, str]] = []  # dead jobs by failed_at
        self.dead: list[tuple[int, str]] = []  # dead jobs by enqueue seq, for paging


class State:
    """Everything the queue knows, rebuilt from snapshot + events."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.queues: dict[str, QueueIndex] = {}
        self.scheduled: list[tuple[float, int, str]] = []  # (run_at, seq, id)
        self.leases: list[tuple[float, str, int]] = []  # (expires_at, id, attempts)
        self.kv: dict[bytes, bytes] = {}
        self.next_seq = 1
        self.live_bytes = 0  # estimated size of a snapshot (see the module docstring)
        # producer id -> (last inbox seq taken in, when): see taquba.inbox
        self.inbox_marks: dict[str, tuple[int, float]] = {}

    # -- queries -------------------------------------------------------------------------

    def queue(self, name: str) -> QueueIndex:
        index = self.queues.get(name)
        if index is None:
            index = self.queues[name] = QueueIndex(name)
        return index

    def peek_pending(self, queue: str) -> Job | None:
        """The job a claim on ``queue`` would take, dropping stale heap entries."""
        index = self.queues.get(queue)
        if index is None:
            return None
        heap = index.pending
        jobs = self.jobs
        while heap:
            priority, seq, job_id = heap[0]
            job = jobs.get(job_id)
            if job is not None and job.status is PENDING and job.seq == seq \
                    and job.priority == priority:
                return job
            heapq.heappop(heap)
        return None

    def due_scheduled(self, now: float) -> list[Job]:
        """Take the scheduled jobs whose ``run_at`` has passed, oldest first."""
        out = []
        heap = self.scheduled
        while heap and heap[0][0] <= now:
            run_at, _, job_id = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is not None and job.status is SCHEDULED and job.run_at == run_at:
                out.append(job)
        return out

    def next_due(self) -> float | None:
        """The earliest ``run_at`` among scheduled jobs (may be a stale entry: a hint)."""
        return self.scheduled[0][0] if self.scheduled else None

    def expired_leases(self, now: float) -> list[Job]:
        out = []
        taken: set[str] = set()
        heap = self.leases
        while heap and heap[0][0] <= now:
            expires, job_id, attempts = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            # Two entries can be identical (a renewal to the same expiry, or a claim after
            # requeue_dead_job at the same clock reading): each job is taken once.
            if job is not None and job.status is CLAIMED and job.attempts == attempts \
                    and job.lease_expires_at == expires and job_id not in taken:
                taken.add(job_id)
                out.append(job)
        return out

    def sweepable(self, queue: str, done_before: float | None,
                  dead_before: float | None) -> list[str]:
        """Ids of retained done jobs completed, and dead jobs failed, before the cut-offs."""
        index = self.queues.get(queue)
        if index is None:
            return []
        out = []
        for heap, cutoff, status, attr in ((index.done_heap, done_before, DONE, "completed_at"),
                                           (index.dead_heap, dead_before, DEAD, "failed_at")):
            if cutoff is None:
                continue
            while heap and heap[0][0] <= cutoff:
                at, job_id = heapq.heappop(heap)
                job = self.jobs.get(job_id)
                if job is not None and job.status is status and getattr(job, attr) == at:
                    out.append(job_id)
        return out

    def dead_page(self, queue: str, after_seq: int | None, limit: int) -> list[Job]:
        index = self.queues.get(queue)
        if index is None:
            return []
        start = 0 if after_seq is None else bisect.bisect_right(index.dead, (after_seq, "\U0010ffff"))
        return [self.jobs[job_id] for _, job_id in index.dead[start:start + limit]]

    def claimed_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status is CLAIMED]

    # -- transitions ---------------------------------------------------------------------

    def _set_status(self, job: Job, status: JobStatus) -> None:
        counts = self.queue(job.queue).counts
        counts[job.status] -= 1
        counts[status] += 1
        old = job.status
        job.status = status
        if old is DEAD and status is not DEAD:
            self._unindex_dead(job)

    def _make_pending(self, job: Job) -> None:
        self._set_status(job, PENDING)
        job.run_at = None
        heapq.heappush(self.queue(job.queue).pending, (job.priority, job.seq, job.id))

    def _make_scheduled(self, job: Job, run_at: float) -> None:
        self._set_status(job, SCHEDULED)
        job.run_at = run_at
        heapq.heappush(self.scheduled, (run_at, job.seq, job.id))

    def _release_dedup(self, job: Job) -> None:
        if job.dedup_key is not None:
            dedup = self.queue(job.queue).dedup
            if dedup.get(job.dedup_key) == job.id:
                del dedup[job.dedup_key]

    def _forget(self, job: Job) -> None:
        """Drop a job entirely."""
        index = self.queue(job.queue)
        index.counts[job.status] -= 1
        if job.status is DEAD:
            self._unindex_dead(job)
        if job.dedup_key is not None:
            self._release_dedup(job)
        self.live_bytes -= job.size()
        del self.jobs[job.id]

    def _set_error(self, job: Job, error: str | None) -> None:
        old = job.last_error
        if old is not None:
            self.live_bytes -= len(old) + 2
        if error is not None:
            self.live_bytes += len(error) + 2
        job.last_error = error

    def _unindex_dead(self, job: Job) -> None:
        dead = self.queue(job.queue).dead
        i = bisect.bisect_left(dead, (job.seq, job.id))
        if i < len(dead) and dead[i] == (job.seq, job.id):
            del dead[i]

    def _index_dead(self, job: Job) -> None:
        index = self.queue(job.queue)
        bisect.insort(index.dead, (job.seq, job.id))
        assert job.failed_at is not None
        heapq.heappush(index.dead_heap, (job.failed_at, job.id))

    def apply_bytes(self, data: bytes) -> None:
        """Apply one record read back from the log (raises ``CorruptionError`` if bad)."""
        kind, args = ev.decode(data)
        _HANDLERS[kind](self, *args)

    def _kv_put(self, key: bytes, value: bytes) -> None:
        kv = self.kv
        old = kv.get(key)
        if old is None:
            self.live_bytes += len(key) + len(value) + KV_ENTRY_BYTES
        else:
            self.live_bytes += len(value) - len(old)
        kv[key] = value

    def on_enqueue(self, queue: str, at: float, jobs: Sequence[ev.NewJob],
                   kv: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """New jobs of ``queue``, numbered from ``next_seq`` in order, then KV writes."""
        index = self.queue(queue)
        all_jobs = self.jobs
        pending = index.pending
        push = heapq.heappush
        seq = self.next_seq
        size = 0
        ready = 0
        for job_id, payload, priority, max_attempts, run_at, dedup_key, headers in jobs:
            if job_id in all_jobs:
                raise CorruptionError(f"enqueue record repeats the id {job_id!r} of a known job")
            job = Job(job_id, queue, payload, headers or {}, PENDING, 0, max_attempts, priority,
                      seq, at, None, None, None, None, None, None, dedup_key)
            all_jobs[job_id] = job
            if headers or dedup_key is not None:
                size += job.size()
                if dedup_key is not None:
                    index.dedup[dedup_key] = job_id
            else:
                size += JOB_BYTES + len(payload)
            if run_at is not None:
                job.status = SCHEDULED
                job.run_at = run_at
                push(self.scheduled, (run_at, seq, job_id))
                index.counts[SCHEDULED] += 1
            else:
                push(pending, (priority, seq, job_id))
                ready += 1
            seq += 1
        index.counts[PENDING] += ready
        self.next_seq = seq
        self.live_bytes += size
        for key, value in kv:
            self._kv_put(key, value)

    def on_enqueue_plain(self, queue: str, at: float, job_ids: Sequence[str],
                         payloads: Sequence[bytes], priority: int, max_attempts: int) -> None:
        """:meth:`on_enqueue` of jobs that differ only by id and payload (the record of
        ``events.encode_enqueue_plain``): the same state, built faster."""
        index = self.queue(queue)
        all_jobs = self.jobs
        pending = index.pending
        push = heapq.heappush
        seq = self.next_seq
        size = 0
        for job_id, payload in zip(job_ids, payloads):
            if job_id in all_jobs:
                raise CorruptionError(f"enqueue record repeats the id {job_id!r} of a known job")
            all_jobs[job_id] = Job(job_id, queue, payload, {}, PENDING, 0, max_attempts, priority,
                                   seq, at)
            push(pending, (priority, seq, job_id))
            size += len(payload)
            seq += 1
        n = seq - self.next_seq
        index.counts[PENDING] += n
        self.next_seq = seq
        self.live_bytes += size + n * JOB_BYTES

    def on_claim(self, job_id: str, attempts: int, at: float, lease: float) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        self._release_dedup(job)
        self._set_status(job, CLAIMED)
        job.attempts = attempts
        job.claimed_at = at
        job.lease_expires_at = expires = at + lease
        job.run_at = None
        heapq.heappush(self.leases, (expires, job_id, attempts))

    def on_renew(self, job_id: str, expires: float) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.status is not CLAIMED:
            return
        job.lease_expires_at = expires
        heapq.heappush(self.leases, (expires, job_id, job.attempts))

    def on_ack(self, job_id: str, keep: bool, at: float | None) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        index = self.queue(job.queue)
        index.done_total += 1
        job.lease_expires_at = None
        if keep:
            assert at is not None
            job.completed_at = at
            self._set_status(job, DONE)
            heapq.heappush(index.done_heap, (at, job_id))
        else:
            self._forget(job)

    def on_fail(self, job_id: str, to: int, at: float | None, run_at: float | None,
                error: str | None) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        self._set_error(job, error)
        job.lease_expires_at = None
        if to == ev.TO_DEAD:
            job.failed_at = at
            self._set_status(job, DEAD)
            self._index_dead(job)
        elif to == ev.TO_SCHEDULED:
            assert run_at is not None
            self._make_scheduled(job, run_at)
        else:
            self._make_pending(job)

    def on_cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if job.status in (PENDING, SCHEDULED):
            self._forget(job)
        elif job.status is CLAIMED:
            job.cancel_requested = True

    def on_requeue_dead(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.status is not DEAD:
            return
        job.attempts = 0
        job.failed_at = None
        job.claimed_at = None
        job.cancel_requested = False
        self._make_pending(job)

    def on_promote(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status is SCHEDULED:
                self._make_pending(job)

    def on_purge(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status in (DONE, DEAD):
                self._forget(job)

    def on_kv_delete(self, keys: Sequence[bytes]) -> None:
        for key in keys:
            old = self.kv.pop(key, None)
            if old is not None:
                self.live_bytes -= len(key) + len(old) + KV_ENTRY_BYTES

    def on_release(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status is CLAIMED:
                job.lease_expires_at = None
                job.claimed_at = None
                self._make_pending(job)

    def on_intake(self, producer: str, seq: int, at: float, records: Sequence[bytes]) -> None:
        """An inbox object taken in: its events in order, then the producer's mark."""
        for record in records:
            self.apply_bytes(record)
        if producer not in self.inbox_marks:
            self.live_bytes += MARK_BYTES + len(producer)
        self.inbox_marks[producer] = (seq, at)

    def on_inbox_forget(self, producers: Sequence[str]) -> None:
        for producer in producers:
            if self.inbox_marks.pop(producer, None) is not None:
                self.live_bytes -= MARK_BYTES + len(producer)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as one blob (see :meth:`State.restore` and snapshot.py)."""
        queues = [(name, q.done_total, q.dedup) for name, q in self.queues.items()]
        return snap.encode(self.next_seq, queues, self.jobs.values(), self.kv,
                           self.inbox_marks)

    @classmethod
    def restore(cls, data: bytes) -> State:
        next_seq, queues, rows, kv, marks = snap.decode(data)
        state = cls()
        state.inbox_marks = marks
        state.next_seq = next_seq
        for name, done_total, dedup in queues:
            index = state.queue(name)
            index.done_total = done_total
            index.dedup = dedup
        jobs = state.jobs
        size = 0
        for row in rows:
            job = Job(*row)
            if job.id in jobs:
                raise CorruptionError(f"snapshot lists job {job.id!r} twice")
            jobs[job.id] = job
            size += job.size()
            index = state.queues[job.queue]
            index.counts[job.status] += 1
            status = job.status
            if status is PENDING:
                index.pending.append((job.priority, job.seq, job.id))
            elif status is SCHEDULED:
                state.scheduled.append((job.run_at, job.seq, job.id))  # type: ignore[arg-type]
            elif status is CLAIMED:
                state.leases.append((job.lease_expires_at, job.id, job.attempts))  # type: ignore[arg-type]
            elif status is DONE:
                index.done_heap.append((job.completed_at, job.id))  # type: ignore[arg-type]
            else:
                index.dead.append((job.seq, job.id))
                index.dead_heap.append((job.failed_at, job.id))  # type: ignore[arg-type]
        heapq.heapify(state.scheduled)
        heapq.heapify(state.leases)
        for index in state.queues.values():
            heapq.heapify(index.pending)
            heapq.heapify(index.done_heap)
            heapq.heapify(index.dead_heap)
            index.dead.sort()
        state.kv = kv
        for key, value in kv.items():
            size += len(key) + len(value) + KV_ENTRY_BYTES
        size += sum(MARK_BYTES + len(p) for p in marks)
        state.live_bytes = size
        return state


_HANDLERS: dict[int, Callable[..., None]] = {
    ev.ENQUEUE: State.on_enqueue,
    ev.CLAIM: State.on_claim,
    ev.RENEW: State.on_renew,
    ev.ACK: State.on_ack,
    ev.FAIL: State.on_fail,
    ev.CANCEL: State.on_cancel,
    ev.REQUEUE_DEAD: State.on_requeue_dead,
    ev.PROMOTE: State.on_promote,
    ev.PURGE: State.on_purge,
    ev.KV_DELETE: State.on_kv_delete,
    ev.RELEASE: State.on_release,
    ev.INTAKE: State.on_intake,
    ev.INBOX_FORGET: State.on_inbox_forget,
}
