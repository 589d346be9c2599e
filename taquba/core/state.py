"""The queue's in-memory state: a pure, deterministic state machine.

Events in (events.py: the same objects the log stores), indexes updated; snapshots out and
in. No clock, no lock, no I/O: every time value arrives inside an event, so replaying the
log rebuilds exactly the state the writer had. :meth:`State.apply` dispatches on the
event's type; applying a valid event never fails. Validation of caller input happens in
the queue before an event is made.

The indexes and how they are kept are described in index.py.

``live_bytes`` estimates the size of a snapshot of the state: per job ``JOB_BYTES`` plus its
payload, header names and values, dedup key and last error (string lengths in characters),
and per KV entry its key and value, per schedule ``ScheduleSet.size()``, and per attempt
history entry ``attempts.ENTRY_BYTES`` plus its error. It grows with enqueues and KV writes
and shrinks when jobs are dropped (acked without retention, cancelled, purged) and KV keys
deleted.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

from ..errors import CorruptionError
from ..records import JobStatus
from . import attempts
from . import events as ev
from . import snapshot as snap
from .index import (
    CLAIMED,
    DEAD,
    DONE,
    JOB_BYTES,
    KV_ENTRY_BYTES,
    MARK_BYTES,
    PENDING,
    SCHEDULED,
    T_CLAIMED,
    T_COMPLETED,
    T_DEAD,
    T_ENQUEUED,
    T_NACKED,
    T_REAPED,
    TALLIES,
    QueueIndex,
    job_size,
)
from .jobs import Job, JobDetail, JobKinds
from .restore import detail_seq, restore_into


class State:
    """Everything the queue knows, rebuilt from snapshot + events."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.kinds = JobKinds()  # what jobs share: queue, priority, attempt limit
        self.queues: dict[str, QueueIndex] = {}
        self.scheduled: list[tuple[float, int, str]] = []  # (run_at, seq, id)
        self.leases: list[tuple[float, str, int]] = []  # (expires_at, id, attempts)
        self.kv: dict[bytes, bytes] = {}
        self.next_seq = 1
        self.live_bytes = 0  # estimated size of a snapshot (see the module docstring)
        # producer id -> (last inbox seq taken in, when): see taquba.inbox
        self.inbox_marks: dict[str, tuple[int, float]] = {}
        # schedule name -> the schedule, as its latest SCHEDULE_SET (see core/schedule.py)
        self.schedules: dict[str, ev.ScheduleSet] = {}
        # job id -> its deliveries, for jobs that have had one (see attempts.py)
        self.history: dict[str, list[attempts.AttemptEntry]] = {}

    # -- queries -------------------------------------------------------------------------

    def queue(self, name: str) -> QueueIndex:
        index = self.queues.get(name)
        if index is None:
            index = self.queues[name] = QueueIndex(name)
        return index

    def peek_pending(self, queue: str) -> Job | None:
        """The job a claim on ``queue`` would take, dropping stale entries on the way."""
        index = self.queues.get(queue)
        if index is None:
            return None
        jobs = self.jobs
        lanes = index.lanes
        for priority in index.priorities:
            job = lanes[priority].peek(jobs)
            if job is not None:
                return job
        return None

    def reset_tallies(self) -> None:
        """Zero every queue's tallies (the queue does this once it has replayed the log)."""
        for index in self.queues.values():
            index.tally = [0] * len(TALLIES)

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
        """The claimed jobs whose lease ended at or before ``now`` (taken from the heap)."""
        out = []
        taken: set[str] = set()
        heap = self.leases
        while heap and heap[0][0] <= now:
            expires, job_id, attempts = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            # Two entries can be identical (a renewal to the same expiry, or a claim after
            # requeue_dead_job at the same clock reading): each job is taken once.
            if (
                job is not None
                and job.status is CLAIMED
                and job.attempts == attempts
                and job.lease_expires_at == expires
                and job_id not in taken
            ):
                taken.add(job_id)
                out.append(job)
        return out

    def sweepable(
        self, queue: str, done_before: float | None, dead_before: float | None
    ) -> list[str]:
        """Ids of retained done jobs completed, and dead jobs failed, before the cut-offs."""
        index = self.queues.get(queue)
        if index is None:
            return []
        out = []
        for heap, cutoff, status in (
            (index.done_heap, done_before, DONE),
            (index.dead_heap, dead_before, DEAD),
        ):
            if cutoff is None:
                continue
            while heap and heap[0][0] <= cutoff:
                at, job_id = heapq.heappop(heap)
                job = self.jobs.get(job_id)
                if (
                    job is not None
                    and job.status is status
                    and (job.completed_at if status is DONE else job.failed_at) == at
                ):
                    out.append(job_id)
        return out

    def dead_page(self, queue: str, after_seq: int | None, limit: int) -> list[Job]:
        """Up to ``limit`` dead jobs of ``queue`` in enqueue order, after ``after_seq``."""
        index = self.queues.get(queue)
        if index is None:
            return []
        start = (
            0 if after_seq is None else bisect.bisect_right(index.dead, (after_seq, "\U0010ffff"))
        )
        return [self.jobs[job_id] for _, job_id in index.dead[start : start + limit]]

    def seq_of(self, job: Job) -> int:
        """``job``'s sequence number: its place in enqueue order (see jobs.py)."""
        d = job.detail
        if d is not None:
            return d.seq
        lane = self.queues[job.queue].lanes.get(job.priority)
        seq = None if lane is None else lane.seq_of(job)
        if seq is None:
            raise AssertionError(f"pending job {job.id!r} has no detail and no lane entry")
        return seq

    def _detail(self, job: Job) -> JobDetail:
        """``job``'s detail, made on first use (with the seq its lane kept)."""
        d = job.detail
        if d is None:
            d = job.detail = JobDetail(self.seq_of(job))
        return d

    def claimed_jobs(self) -> list[Job]:
        """The claimed jobs in enqueue order, found through the lease heap, not by a scan
        over every job: every claimed job has an entry there until :meth:`expired_leases`
        hands it out (so all of them do in a state just rebuilt by a replay)."""
        jobs = self.jobs
        found = {}
        for _, job_id, _ in self.leases:
            job = jobs.get(job_id)
            if job is not None and job.status is CLAIMED:
                found[job_id] = job
        return sorted(found.values(), key=detail_seq)

    # -- applying events -------------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Apply one event (see events.py for what each one means), dispatching on its type.

        Args:
            event: any ``events.Event``; one about a job the state does not hold (or holds
                in another status than the event expects) changes nothing.

        Raises:
            CorruptionError: an ``Enqueued`` event repeats the id of a known job (only a
                damaged log can say that; the queue never makes one). The state is then
                unusable: replay stops there, and the open that replays fails.
        """
        _APPLY[type(event)](self, event)

    def apply_record(self, data: bytes) -> None:
        """Decode one record read back from the log and apply its event.

        Raises ``CorruptionError`` naming the record kind and the problem for a record
        that does not decode (see ``events.decode``), as :meth:`apply` does.
        """
        event = ev.decode(data)
        _APPLY[type(event)](self, event)

    def _enqueued(self, e: ev.Enqueued) -> None:
        index = self.queue(e.queue)
        jobs = self.jobs
        seq = self.next_seq
        at = e.at
        queue = e.queue
        specs = e.specs
        if specs is None:
            # The common case: every job pending, with the event's priority and attempts.
            # In bulk: a replay makes a million jobs this way.
            priority = e.priority
            kind = self.kinds.get(queue, priority, e.max_attempts)
            job_ids = e.ids
            new = [Job(job_id, kind, payload, at) for job_id, payload in zip(job_ids, e.payloads)]
            n = len(new)
            known = len(jobs)
            jobs.update(zip(job_ids, new))
            if len(jobs) != known + n:  # an id repeated (checked after: a look-up less a job)
                for job_id, job in zip(job_ids, new):
                    if jobs.get(job_id) is job:
                        del jobs[job_id]
                raise CorruptionError(
                    "enqueue record repeats the id of a known job, or lists one twice"
                )
            index.lane(priority).extend(new, seq)
            seq += n
            index.counts[PENDING] += n
            index.tally[T_ENQUEUED] += n
            self.live_bytes += sum(map(len, e.payloads)) + n * JOB_BYTES
        else:
            for job_id, payload, spec in zip(e.ids, e.payloads, specs):
                if job_id in jobs:
                    raise CorruptionError(
                        f"enqueue record repeats the id {job_id!r} of a known job"
                    )
                if spec is None:
                    kind = self.kinds.get(queue, e.priority, e.max_attempts)
                else:
                    kind = self.kinds.get(queue, spec.priority, spec.max_attempts)
                job = Job(job_id, kind, payload, at)
                if spec is not None and (spec.headers or spec.dedup_key is not None):
                    d = job.detail = JobDetail(seq)
                    d.headers = dict(spec.headers) if spec.headers else None
                    d.dedup_key = spec.dedup_key
                    if spec.dedup_key is not None:
                        index.dedup[spec.dedup_key] = job_id
                jobs[job_id] = job
                self.live_bytes += job_size(job)
                if spec is not None and spec.run_at is not None:
                    d = job.detail or JobDetail(seq)
                    job.detail = d
                    d.status = SCHEDULED
                    d.run_at = spec.run_at
                    heapq.heappush(self.scheduled, (spec.run_at, seq, job_id))
                    index.counts[SCHEDULED] += 1
                else:
                    index.lane(job.priority).append(job, seq)
                    index.counts[PENDING] += 1
                seq += 1
            index.tally[T_ENQUEUED] += len(e.ids)
        self.next_seq = seq
        for key, value in e.kv:
            self._kv_put(key, value)

    def _claimed(self, e: ev.Claimed) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        # A claim takes the job's fresh entry when it is the head of its lane (always so for
        # a job without a detail); the seq goes into the detail.
        kind = job.kind
        lane = self.queues[kind.queue].lanes.get(kind.priority)
        seq = None if lane is None else lane.take(job, self.jobs)
        d = job.detail
        if d is None:
            d = job.detail = JobDetail(self.seq_of(job) if seq is None else seq)
        self._release_dedup(job)
        self._set_status(job, CLAIMED)
        d.attempts = e.attempts
        d.claimed_at = e.at
        d.lease_expires_at = expires = e.at + e.lease
        d.run_at = None
        heapq.heappush(self.leases, (expires, job.id, e.attempts))
        self.queues[job.queue].tally[T_CLAIMED] += 1
        self.live_bytes += attempts.started(self.history, job.id, e.attempts, e.at)

    def _renewed(self, e: ev.Renewed) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.status is not CLAIMED:
            return
        self._detail(job).lease_expires_at = e.expires
        heapq.heappush(self.leases, (e.expires, job.id, job.attempts))

    def _acked(self, e: ev.Acked) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        index = self.queue(job.queue)
        index.done_total += 1
        index.tally[T_COMPLETED] += 1
        if e.at is not None:
            d = self._detail(job)
            d.lease_expires_at = None
            d.completed_at = e.at
            self._set_status(job, DONE)
            heapq.heappush(index.done_heap, (e.at, job.id))
            self.live_bytes += attempts.ended(
                self.history, job.id, job.attempts, d.claimed_at, e.at, attempts.ACKED
            )
        else:
            self._forget(job)

    def _failed(self, e: ev.Failed) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        d = self._detail(job)
        old = d.last_error
        if old is not None:
            self.live_bytes -= len(old) + 2
        if e.error is not None:
            self.live_bytes += len(e.error) + 2
        d.last_error = e.error
        d.lease_expires_at = None
        dead = e.to == ev.TO_DEAD
        if job.status is CLAIMED:
            self.live_bytes += attempts.ended(
                self.history,
                job.id,
                job.attempts,
                d.claimed_at,
                e.at,
                attempts.failure_outcome(e.cause, dead),
                e.error,
            )
        tally = self.queue(job.queue).tally
        if e.cause == attempts.CAUSE_LEASE:
            tally[T_REAPED] += 1
        if dead:
            tally[T_DEAD] += 1
        elif e.cause != attempts.CAUSE_LEASE:
            tally[T_NACKED] += 1
        if dead:
            d.failed_at = e.at
            self._set_status(job, DEAD)
            index = self.queue(job.queue)
            bisect.insort(index.dead, (d.seq, job.id))
            assert e.at is not None
            heapq.heappush(index.dead_heap, (e.at, job.id))
        elif e.to == ev.TO_SCHEDULED:
            assert e.run_at is not None
            self._set_status(job, SCHEDULED)
            d.run_at = e.run_at
            heapq.heappush(self.scheduled, (e.run_at, d.seq, job.id))
        else:
            self._make_pending(job)

    def _cancelled(self, e: ev.Cancelled) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        if job.status is PENDING or job.status is SCHEDULED:
            self._forget(job)
        elif job.status is CLAIMED:
            self._detail(job).cancel_requested = True

    def _dead_requeued(self, e: ev.DeadRequeued) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.status is not DEAD:
            return
        d = self._detail(job)
        d.attempts = 0
        d.failed_at = None
        d.claimed_at = None
        d.cancel_requested = False
        self._make_pending(job)

    def _promoted(self, e: ev.Promoted) -> None:
        for job_id in e.job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status is SCHEDULED:
                self._make_pending(job)

    def _purged(self, e: ev.Purged) -> None:
        for job_id in e.job_ids:
            job = self.jobs.get(job_id)
            if job is not None and (job.status is DONE or job.status is DEAD):
                self._forget(job)

    def _released(self, e: ev.Released) -> None:
        for job_id in e.job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.status is CLAIMED:
                d = self._detail(job)
                self.live_bytes += attempts.ended(
                    self.history, job_id, job.attempts, d.claimed_at, None, attempts.ABANDONED
                )
                d.lease_expires_at = None
                d.claimed_at = None
                self._make_pending(job)

    def _kv_deleted(self, e: ev.KvDeleted) -> None:
        for key in e.keys:
            old = self.kv.pop(key, None)
            if old is not None:
                self.live_bytes -= len(key) + len(old) + KV_ENTRY_BYTES

    def _kv_written(self, e: ev.KvWritten) -> None:
        for key, value in e.pairs:
            self._kv_put(key, value)

    def _settled(self, e: ev.Settled) -> None:
        """A settlement and its effects, in order (all in one record)."""
        _APPLY[type(e.settlement)](self, e.settlement)
        for effect in e.effects:
            _APPLY[type(effect)](self, effect)

    def _schedule_set(self, e: ev.ScheduleSet) -> None:
        self._put_schedule(e)

    def _schedule_removed(self, e: ev.ScheduleRemoved) -> None:
        old = self.schedules.pop(e.name, None)
        if old is not None:
            self.live_bytes -= old.size()

    def _schedule_fired(self, e: ev.ScheduleFired) -> None:
        """The occurrence's job (if any), and the schedule moves past the occurrence."""
        if e.job is not None:
            self._enqueued(e.job)
        old = self.schedules.get(e.name)
        if old is not None:
            self._put_schedule(old._replace(last_run_at=e.occurrence, next_run_at=e.next_run_at))

    def _put_schedule(self, schedule: ev.ScheduleSet) -> None:
        old = self.schedules.get(schedule.name)
        if old is not None:
            self.live_bytes -= old.size()
        self.schedules[schedule.name] = schedule
        self.live_bytes += schedule.size()

    def _intake(self, e: ev.Intake) -> None:
        """An inbox object taken in: its events in order, then the producer's mark."""
        for event in e.events:
            _APPLY[type(event)](self, event)
        if e.producer not in self.inbox_marks:
            self.live_bytes += MARK_BYTES + len(e.producer)
        self.inbox_marks[e.producer] = (e.seq, e.at)

    def _inbox_forgot(self, e: ev.InboxForgot) -> None:
        for producer in e.producers:
            if self.inbox_marks.pop(producer, None) is not None:
                self.live_bytes -= MARK_BYTES + len(producer)

    # -- helpers of the transitions --------------------------------------------------------

    def _set_status(self, job: Job, status: JobStatus) -> None:
        d = self._detail(job)
        index = self.queue(job.queue)
        counts = index.counts
        old = d.status
        counts[old] -= 1
        counts[status] += 1
        d.status = status
        if old is DEAD and status is not DEAD:
            self._unindex_dead(index, job)

    def _make_pending(self, job: Job) -> None:
        self._set_status(job, PENDING)
        d = self._detail(job)
        d.run_at = None
        self.queue(job.queue).lane(job.priority).push_returned(job.id, d.seq)

    def _release_dedup(self, job: Job) -> None:
        key = job.dedup_key
        if key is not None:
            dedup = self.queue(job.queue).dedup
            if dedup.get(key) == job.id:
                del dedup[key]

    def _forget(self, job: Job) -> None:
        """Drop a job entirely."""
        index = self.queue(job.queue)
        index.counts[job.status] -= 1
        if job.status is DEAD:
            self._unindex_dead(index, job)
        self._release_dedup(job)
        if job.detail is None:  # a fresh pending job: its lane entry turns stale
            index.lanes[job.priority].gone += 1
        self.live_bytes -= job_size(job)
        del self.jobs[job.id]
        if self.history:
            self.live_bytes += attempts.dropped(self.history, job.id)

    def _unindex_dead(self, index: QueueIndex, job: Job) -> None:
        entry = (self.seq_of(job), job.id)
        dead = index.dead
        i = bisect.bisect_left(dead, entry)
        if i < len(dead) and dead[i] == entry:
            del dead[i]

    def _kv_put(self, key: bytes, value: bytes) -> None:
        kv = self.kv
        old = kv.get(key)
        if old is None:
            self.live_bytes += len(key) + len(value) + KV_ENTRY_BYTES
        else:
            self.live_bytes += len(value) - len(old)
        kv[key] = value

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as one blob (see :meth:`State.restore` and snapshot.py)."""
        queues = [(name, q.done_total, q.dedup) for name, q in self.queues.items()]
        return snap.encode(
            self.next_seq,
            queues,
            len(self.jobs),
            self._numbered_jobs(),
            self.kv,
            self.inbox_marks,
            list(self.schedules.values()),
            self.history,
        )

    def _numbered_jobs(self) -> Iterator[tuple[int, Job]]:
        """``(seq, job)`` of every job: those with a detail in ``jobs`` order, then the
        others (pending, their seq kept by the lanes only) lane by lane, in enqueue order."""
        jobs = self.jobs
        return chain(
            ((d.seq, job) for job in jobs.values() if (d := job.detail) is not None),
            *(
                index.lanes[priority].bare_items(jobs)
                for index in self.queues.values()
                for priority in index.priorities
            ),
        )

    @classmethod
    def restore(cls, data: bytes) -> State:
        """The state a snapshot (made by :meth:`snapshot`) describes, indexes rebuilt.

        Raises ``CorruptionError`` for a malformed snapshot or one that lists a job twice.
        """
        return restore_into(cls(), data)


_APPLY: dict[type[Any], Callable[[State, Any], None]] = {
    ev.Enqueued: State._enqueued,
    ev.Claimed: State._claimed,
    ev.Renewed: State._renewed,
    ev.Acked: State._acked,
    ev.Failed: State._failed,
    ev.Cancelled: State._cancelled,
    ev.DeadRequeued: State._dead_requeued,
    ev.Promoted: State._promoted,
    ev.Purged: State._purged,
    ev.Released: State._released,
    ev.KvDeleted: State._kv_deleted,
    ev.Intake: State._intake,
    ev.InboxForgot: State._inbox_forgot,
    ev.KvWritten: State._kv_written,
    ev.Settled: State._settled,
    ev.ScheduleSet: State._schedule_set,
    ev.ScheduleRemoved: State._schedule_removed,
    ev.ScheduleFired: State._schedule_fired,
}
