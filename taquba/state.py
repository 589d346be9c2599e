"""The queue's in-memory state: a pure, deterministic state machine.

Events in (the same events the log stores), indexes updated; snapshots out and in. No
clock, no lock, no I/O: every time value arrives inside an event, so replaying the log
rebuilds exactly the state the writer had.

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
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any

from . import events as ev
from .errors import CorruptionError
from .records import JobRecord, JobStatus

PENDING = JobStatus.PENDING
SCHEDULED = JobStatus.SCHEDULED
CLAIMED = JobStatus.CLAIMED
DONE = JobStatus.DONE
DEAD = JobStatus.DEAD

_SNAPSHOT_VERSION = 1


class Job:
    """One job's mutable state (internal; callers get frozen :class:`JobRecord` copies)."""

    __slots__ = ("attempts", "cancel_requested", "claimed_at", "completed_at", "dedup_key",
                 "enqueued_at", "failed_at", "headers", "id", "last_error", "lease_expires_at",
                 "max_attempts", "payload", "priority", "queue", "run_at", "seq", "status")

    def __init__(self, *, id: str, queue: str, payload: bytes, headers: dict[str, str],
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

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id, queue=self.queue, payload=self.payload, headers=dict(self.headers),
            status=self.status, attempts=self.attempts, max_attempts=self.max_attempts,
            priority=self.priority, enqueued_at=self.enqueued_at, run_at=self.run_at,
            claimed_at=self.claimed_at, lease_expires_at=self.lease_expires_at,
            completed_at=self.completed_at, failed_at=self.failed_at,
            last_error=self.last_error, dedup_key=self.dedup_key,
            cancel_requested=self.cancel_requested,
        )

    _FIELDS = ("id", "queue", "status", "attempts", "max_attempts", "priority", "seq",
               "enqueued_at", "run_at", "claimed_at", "lease_expires_at", "completed_at",
               "failed_at", "last_error", "dedup_key", "cancel_requested", "headers")

    def to_row(self) -> list[Any]:
        row = [getattr(self, f) for f in self._FIELDS]
        row[2] = self.status.value
        return row

    @classmethod
    def from_row(cls, row: list[Any], payload: bytes) -> Job:
        kw = dict(zip(cls._FIELDS, row))
        kw["status"] = JobStatus(kw["status"])
        return cls(payload=payload, **kw)


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
        self.live_bytes = 0  # rough size of what a snapshot holds

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
        self.queue(job.queue).counts[job.status] -= 1
        if job.status is DEAD:
            self._unindex_dead(job)
        self._release_dedup(job)
        self.live_bytes -= len(job.payload) + 200
        del self.jobs[job.id]

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

    def apply(self, kind: int, meta: dict[str, Any], blobs: list[bytes]) -> None:
        """Apply one event. The queue validated it; replay trusts the log's order."""
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise CorruptionError(f"unknown queue record kind {kind}")
        handler(self, meta, blobs)

    def apply_bytes(self, data: bytes) -> None:
        self.apply(*ev.decode(data))

    def _on_enqueue(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        jobs_meta = meta["jobs"]
        for i, m in enumerate(jobs_meta):
            payload = blobs[i]
            run_at = m.get("run")
            job = Job(id=m["id"], queue=m["q"], payload=payload, headers=m.get("h") or {},
                      status=PENDING, attempts=0, max_attempts=m["ma"], priority=m["p"],
                      seq=m["seq"], enqueued_at=m["at"], dedup_key=m.get("dk"))
            index = self.queue(job.queue)
            index.counts[PENDING] += 1
            self.jobs[job.id] = job
            self.live_bytes += len(payload) + 200
            self.next_seq = max(self.next_seq, job.seq + 1)
            if job.dedup_key is not None:
                index.dedup[job.dedup_key] = job.id
            if run_at is not None:
                self._make_scheduled(job, run_at)
            else:
                heapq.heappush(index.pending, (job.priority, job.seq, job.id))
        pos = len(jobs_meta)
        for i in range(pos, len(blobs) - 1, 2):
            key, value = blobs[i], blobs[i + 1]
            old = self.kv.get(key)
            self.live_bytes += len(key) + len(value) - (0 if old is None else len(key) + len(old))
            self.kv[key] = value

    def _job(self, meta: dict[str, Any]) -> Job | None:
        return self.jobs.get(meta["id"])

    def _on_claim(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None:
            return
        self._release_dedup(job)
        self._set_status(job, CLAIMED)
        job.attempts = meta["att"]
        job.claimed_at = meta["at"]
        job.lease_expires_at = meta["exp"]
        job.run_at = None
        heapq.heappush(self.leases, (job.lease_expires_at, job.id, job.attempts))

    def _on_renew(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None or job.status is not CLAIMED:
            return
        job.lease_expires_at = meta["exp"]
        heapq.heappush(self.leases, (job.lease_expires_at, job.id, job.attempts))

    def _on_ack(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None:
            return
        index = self.queue(job.queue)
        index.done_total += 1
        job.completed_at = meta["at"]
        job.lease_expires_at = None
        if meta.get("keep"):
            self._set_status(job, DONE)
            heapq.heappush(index.done_heap, (job.completed_at, job.id))
        else:
            self._forget(job)

    def _on_fail(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None:
            return
        job.last_error = meta.get("err")
        job.lease_expires_at = None
        to = meta["to"]
        if to == "dead":
            job.failed_at = meta["at"]
            self._set_status(job, DEAD)
            self._index_dead(job)
        elif to == "scheduled":
            self._make_scheduled(job, meta["run"])
        else:
            self._make_pending(job)

    def _on_cancel(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None:
            return
        if job.status in (PENDING, SCHEDULED):
            self._forget(job)
        elif job.status is CLAIMED:
            job.cancel_requested = True

    def _on_requeue_dead(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        job = self._job(meta)
        if job is None or job.status is not DEAD:
            return
        job.attempts = 0
        job.failed_at = None
        job.claimed_at = None
        job.cancel_requested = False
        self._make_pending(job)

    def _on_promote(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        for job_id in meta["ids"]:
            job = self.jobs.get(job_id)
            if job is not None and job.status is SCHEDULED:
                self._make_pending(job)

    def _on_purge(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        for job_id in meta["ids"]:
            job = self.jobs.get(job_id)
            if job is not None and job.status in (DONE, DEAD):
                self._forget(job)

    def _on_kv_delete(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        for key in blobs:
            old = self.kv.pop(key, None)
            if old is not None:
                self.live_bytes -= len(key) + len(old)

    def _on_release(self, meta: dict[str, Any], blobs: list[bytes]) -> None:
        for job_id in meta["ids"]:
            job = self.jobs.get(job_id)
            if job is not None and job.status is CLAIMED:
                job.lease_expires_at = None
                job.claimed_at = None
                self._make_pending(job)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as one blob (see :func:`State.restore`)."""
        rows = []
        blobs: list[bytes] = []
        for job in self.jobs.values():
            rows.append(job.to_row())
            blobs.append(job.payload)
        for key, value in self.kv.items():
            blobs.append(key)
            blobs.append(value)
        meta = {"v": _SNAPSHOT_VERSION, "next_seq": self.next_seq, "jobs": rows,
                "done": {name: q.done_total for name, q in self.queues.items()},
                # The dedup index is stored as is: a key is released at a job's first claim,
                # so it cannot be derived from the jobs (a retried job keeps its dedup_key).
                "dedup": {name: q.dedup for name, q in self.queues.items() if q.dedup}}
        return ev.encode(ev.SNAPSHOT, meta, blobs)

    @classmethod
    def restore(cls, data: bytes) -> State:
        kind, meta, blobs = ev.decode(data)
        if kind != ev.SNAPSHOT or meta.get("v") != _SNAPSHOT_VERSION:
            raise CorruptionError(f"snapshot kind {kind} / version {meta.get('v')} not supported")
        state = cls()
        state.next_seq = meta["next_seq"]
        for name, total in meta["done"].items():
            state.queue(name).done_total = total
        rows = meta["jobs"]
        for row, payload in zip(rows, blobs):
            job = Job.from_row(row, payload)
            state.jobs[job.id] = job
            state.live_bytes += len(payload) + 200
            index = state.queue(job.queue)
            index.counts[job.status] += 1
            if job.status is PENDING:
                index.pending.append((job.priority, job.seq, job.id))
            elif job.status is SCHEDULED:
                assert job.run_at is not None
                state.scheduled.append((job.run_at, job.seq, job.id))
            elif job.status is CLAIMED:
                assert job.lease_expires_at is not None
                state.leases.append((job.lease_expires_at, job.id, job.attempts))
            elif job.status is DONE:
                assert job.completed_at is not None
                index.done_heap.append((job.completed_at, job.id))
            else:
                assert job.failed_at is not None
                index.dead.append((job.seq, job.id))
                index.dead_heap.append((job.failed_at, job.id))
            if "dedup" not in meta and job.dedup_key is not None \
                    and job.status in (PENDING, SCHEDULED):
                index.dedup[job.dedup_key] = job.id  # snapshots written before "dedup" existed
        for name, dedup in meta.get("dedup", {}).items():
            state.queue(name).dedup.update(dedup)
        heapq.heapify(state.scheduled)
        heapq.heapify(state.leases)
        for index in state.queues.values():
            heapq.heapify(index.pending)
            heapq.heapify(index.done_heap)
            heapq.heapify(index.dead_heap)
            index.dead.sort()
        kv_blobs = blobs[len(rows):]
        for i in range(0, len(kv_blobs) - 1, 2):
            state.kv[kv_blobs[i]] = kv_blobs[i + 1]
            state.live_bytes += len(kv_blobs[i]) + len(kv_blobs[i + 1])
        return state


_HANDLERS = {
    ev.ENQUEUE: State._on_enqueue,
    ev.CLAIM: State._on_claim,
    ev.RENEW: State._on_renew,
    ev.ACK: State._on_ack,
    ev.FAIL: State._on_fail,
    ev.CANCEL: State._on_cancel,
    ev.REQUEUE_DEAD: State._on_requeue_dead,
    ev.PROMOTE: State._on_promote,
    ev.PURGE: State._on_purge,
    ev.KV_DELETE: State._on_kv_delete,
    ev.RELEASE: State._on_release,
}
