"""The indexes of the state (state.py): the pending lanes, the counters and heaps of one
queue, what one job adds to ``State.live_bytes``, and the tallies the metrics read.

Indexes, all independent of history:

- per queue and priority, a :class:`~taquba.core.lane.Lane` of pending jobs in enqueue
  order: runs of the jobs as they were enqueued, with their sequence numbers (which only
  grow, so appending keeps them ordered), and a small heap of jobs made pending again
  (retried, released, promoted, requeued). Claim looks at the heads of the lanes in
  priority order: O(priorities + log n), FIFO within a priority, and about one reference
  per pending job;
- one heap of scheduled jobs by ``run_at`` and one of leases by expiry;
- per queue, heaps of retained done and dead jobs by completion / failure time (for the
  retention sweeps) and an ordered index of dead jobs for paging;
- per queue, the dedup keys of pending and scheduled jobs;
- per job that has had a delivery, its attempt history (attempts.py), bounded per job;
- per queue, tallies of what happened since they were last reset (``TALLIES``): the
  queue resets them after replay, so they count what this process saw.

Indexes are lazy: an entry is valid only while the job still matches it, and stale entries
are dropped when they surface (lane.py says how for the lanes).
"""

from __future__ import annotations

import bisect

from ..records import JobStatus
from . import snapshot as snap
from .jobs import Job
from .lane import Lane

PENDING = JobStatus.PENDING
SCHEDULED = JobStatus.SCHEDULED
CLAIMED = JobStatus.CLAIMED
DONE = JobStatus.DONE
DEAD = JobStatus.DEAD

JOB_BYTES = snap.JOB_BYTES
KV_ENTRY_BYTES = 4  # the two lengths of a KV entry in a snapshot
MARK_BYTES = 12  # an inbox mark's seq and time besides its producer id

# What ``QueueIndex.tally`` counts, by position: jobs enqueued, deliveries, acks, failed
# attempts sent back for a retry (not lease expiries), jobs that went dead (any way), and
# leases that expired (the reaper).
TALLIES = ("enqueued", "claimed", "completed", "nacked", "dead_lettered", "reaped")
T_ENQUEUED, T_CLAIMED, T_COMPLETED, T_NACKED, T_DEAD, T_REAPED = range(len(TALLIES))


def job_size(job: Job) -> int:
    """One job's share of ``State.live_bytes``."""
    n = JOB_BYTES + len(job.payload)
    d = job.detail
    if d is not None:
        if d.headers:
            n += sum(len(k) + len(v) + 2 for k, v in d.headers.items())
        if d.dedup_key is not None:
            n += len(d.dedup_key) + 1
        if d.last_error is not None:
            n += len(d.last_error) + 2
    return n


class QueueIndex:
    """Indexes and counters of one named queue."""

    __slots__ = (
        "counts",
        "dead",
        "dead_heap",
        "dedup",
        "done_heap",
        "done_total",
        "lanes",
        "name",
        "priorities",
        "tally",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.lanes: dict[int, Lane] = {}
        self.priorities: list[int] = []  # the keys of ``lanes``, sorted
        self.dedup: dict[str, str] = {}
        self.counts = {PENDING: 0, SCHEDULED: 0, CLAIMED: 0, DONE: 0, DEAD: 0}
        self.done_total = 0
        self.done_heap: list[tuple[float, str]] = []  # retained done jobs by completed_at
        self.dead_heap: list[tuple[float, str]] = []  # dead jobs by failed_at
        self.dead: list[tuple[int, str]] = []  # dead jobs by enqueue seq, for paging
        self.tally = [0] * len(TALLIES)  # see TALLIES; not in snapshots

    def lane(self, priority: int) -> Lane:
        lane = self.lanes.get(priority)
        if lane is None:
            lane = self.lanes[priority] = Lane()
            bisect.insort(self.priorities, priority)
        return lane
