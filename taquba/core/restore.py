"""Rebuilding a :class:`~taquba.core.state.State` from a snapshot (``State.restore``):
the decoded jobs go back into every index, and ``live_bytes`` is summed up again."""

from __future__ import annotations

import heapq
from operator import itemgetter
from typing import TYPE_CHECKING

from ..errors import CorruptionError
from . import snapshot as snap
from .index import CLAIMED, DONE, KV_ENTRY_BYTES, MARK_BYTES, PENDING, SCHEDULED, job_size
from .jobs import Job, JobKind
from .lane import Lane

if TYPE_CHECKING:
    from .state import State


def detail_seq(job: Job) -> int:
    """The key that sorts jobs with a detail (all but fresh pending ones) in enqueue order."""
    d = job.detail
    assert d is not None
    return d.seq


def restore_into(state: State, data: bytes) -> State:
    """Fill the empty ``state`` with what the snapshot ``data`` describes; return it.

    Raises ``CorruptionError`` for a malformed snapshot or one that lists a job twice.
    """
    next_seq, queues, decoded, seqs, kv, marks, schedules, history = snap.decode(data, state.kinds)
    state.inbox_marks = marks
    state.schedules = {s.name: s for s in schedules}
    state.next_seq = next_seq
    for name, done_total, dedup in queues:
        index = state.queue(name)
        index.done_total = done_total
        index.dedup = dedup
    jobs = state.jobs
    size = 0
    pending: list[tuple[int, Job]] = []
    for job, seq in zip(decoded, seqs):
        if job.id in jobs:
            raise CorruptionError(f"snapshot lists job {job.id!r} twice")
        jobs[job.id] = job
        size += job_size(job)
        index = state.queues[job.queue]
        status = job.status
        index.counts[status] += 1
        if status is PENDING:
            pending.append((seq, job))
        elif status is SCHEDULED:
            state.scheduled.append((job.run_at, seq, job.id))  # type: ignore[arg-type]
        elif status is CLAIMED:
            state.leases.append((job.lease_expires_at, job.id, job.attempts))  # type: ignore[arg-type]
        elif status is DONE:
            index.done_heap.append((job.completed_at, job.id))  # type: ignore[arg-type]
        else:
            index.dead.append((seq, job.id))
            index.dead_heap.append((job.failed_at, job.id))  # type: ignore[arg-type]
    # Every pending job goes back as a fresh entry at its seq (a returned one has it in its
    # detail too).
    pending.sort(key=itemgetter(0))
    lanes: dict[JobKind, Lane] = {}
    groups: dict[Lane, list[tuple[int, Job]]] = {}
    for item in pending:
        kind = item[1].kind
        lane = lanes.get(kind)
        if lane is None:
            lane = lanes[kind] = state.queues[kind.queue].lane(kind.priority)
            groups.setdefault(lane, [])
        groups[lane].append(item)
    for lane, items in groups.items():
        lane.fill(items)
    heapq.heapify(state.scheduled)
    heapq.heapify(state.leases)
    for index in state.queues.values():
        heapq.heapify(index.done_heap)
        heapq.heapify(index.dead_heap)
        index.dead.sort()
    state.kv = kv
    for key, value in kv.items():
        size += len(key) + len(value) + KV_ENTRY_BYTES
    size += sum(MARK_BYTES + len(p) for p in marks)
    size += sum(s.size() for s in schedules)
    for entries in history.values():
        size += sum(e.size() for e in entries)
    state.history = history
    state.live_bytes = size
    return state
