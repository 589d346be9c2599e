"""The pending jobs of one queue and one priority, in claim order, with their sequence numbers.

A lane holds each pending job's place in enqueue order (its ``seq``) in one of two ways:

- **fresh** jobs (as enqueued or restored) in :class:`Run` s, oldest first: a list of jobs
  and their sequence numbers, kept as the first number when they are consecutive (what
  one enqueue makes, and what single enqueues into one queue make) and as an
  ``array('q')`` beside the jobs when they are not. A fresh job without a ``JobDetail``
  has its seq here and nowhere else: there is no int object per pending job.
- **returned** jobs (retried, released, promoted, requeued) in a heap of ``(seq, id)``;
  each has a ``JobDetail`` that holds its seq too.

A claim takes the older of the two heads. Entries are lazy: one is valid only while its
job is still pending and still the queue's job of that id; :meth:`Lane.peek` drops stale
entries as they surface. A job may have two valid entries (taken fresh, then returned
before its fresh entry surfaced): both stand at its seq, and either takes it.

The head of the fresh runs is an index into the first run; a taken entry is set to None
(so the job can be freed at once) and the run is cut down once more than half of it is
taken, so a lane holds at most about twice the references it has live entries.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Iterable, Iterator

from ..records import JobStatus
from .jobs import Job

PENDING = JobStatus.PENDING

# A run of consecutive seqs shorter than this becomes gapped (an array of seqs) when the
# next job does not follow on; a longer one stays as it is and a new run starts.
GAPPED_BELOW = 32
# A gapped run takes at most this many jobs, so a lane whose jobs become consecutive
# again soon goes back to runs without an array.
GAPPED_MAX = 1024
# The head of a run is cut off once it is this long and more than half of the run.
CUT_AT = 256


class Run:
    """Fresh jobs in enqueue order: ``jobs[i]`` has seq ``first + i``, or ``seqs[i]``."""

    __slots__ = ("first", "jobs", "seqs")

    def __init__(self, first: int, jobs: list[Job | None]) -> None:
        self.first = first
        self.jobs = jobs  # None where an entry was taken
        self.seqs: array[int] | None = None

    def seq(self, i: int) -> int:
        seqs = self.seqs
        return self.first + i if seqs is None else seqs[i]


def _cut(run: Run, i: int) -> int:
    """Drop the first ``i`` (taken) entries of ``run``; the new head index (0)."""
    del run.jobs[:i]
    if run.seqs is None:
        run.first += i
    else:
        del run.seqs[:i]
    return 0


def _live(job: Job, jobs: dict[str, Job]) -> bool:
    d = job.detail
    return (d is None or d.status is PENDING) and jobs.get(job.id) is job


class Lane:
    """The pending jobs of one queue and one priority (see the module docstring)."""

    __slots__ = ("gone", "head", "returned", "runs")

    def __init__(self) -> None:
        self.runs: deque[Run] = deque()
        self.head = 0  # index of the first entry not taken in ``runs[0]``
        # Jobs without a detail dropped from the state (cancelled while pending) since the
        # runs were last empty: their entries may still stand.
        self.gone = 0
        self.returned: list[tuple[int, str]] = []  # heap of (seq, id): pending again

    # -- adding --------------------------------------------------------------------------

    def append(self, job: Job, seq: int) -> None:
        """Add a fresh job; ``seq`` is above every seq already in the runs."""
        runs = self.runs
        if runs:
            last = runs[-1]
            entries = last.jobs
            n = len(entries)
            seqs = last.seqs
            if seqs is None:
                if last.first + n == seq:
                    entries.append(job)
                    return
                if n < GAPPED_BELOW:
                    last.seqs = seqs = array("q", range(last.first, last.first + n))
                    seqs.append(seq)
                    entries.append(job)
                    return
            elif n < GAPPED_MAX:
                seqs.append(seq)
                entries.append(job)
                return
        runs.append(Run(seq, [job]))

    def extend(self, new: list[Job], first: int) -> None:
        """Add fresh jobs with the consecutive seqs ``first``, ``first + 1``, ..."""
        if len(new) < GAPPED_BELOW:
            for i, job in enumerate(new, first):
                self.append(job, i)
            return
        runs = self.runs
        if runs:
            last = runs[-1]
            if last.seqs is None and last.first + len(last.jobs) == first:
                last.jobs.extend(new)
                return
        runs.append(Run(first, list(new)))

    def fill(self, items: list[tuple[int, Job]]) -> None:
        """Add fresh jobs given as ``(seq, job)`` in seq order (a restore): each stretch of
        consecutive seqs of at least ``GAPPED_BELOW`` jobs in bulk, shorter ones by
        :meth:`append`."""
        n = len(items)
        i = 0
        while i < n:
            first = items[i][0]
            j = i + 1
            while j < n and items[j][0] == first + j - i:
                j += 1
            if j - i >= GAPPED_BELOW:
                self.extend([job for _, job in items[i:j]], first)
            else:
                for seq, job in items[i:j]:
                    self.append(job, seq)
            i = j

    def push_returned(self, job_id: str, seq: int) -> None:
        """Add a job made pending again (it has a ``JobDetail`` holding ``seq``)."""
        heapq.heappush(self.returned, (seq, job_id))

    # -- looking and taking ----------------------------------------------------------------

    def fresh_head(self, jobs: dict[str, Job]) -> Job | None:
        """The oldest valid fresh job (None if none), dropping stale entries on the way."""
        runs = self.runs
        while runs:
            run = runs[0]
            entries = run.jobs
            i = self.head
            n = len(entries)
            while i < n:
                job = entries[i]
                if job is not None and _live(job, jobs):
                    self.head = _cut(run, i) if i >= CUT_AT and 2 * i > n else i
                    return job
                entries[i] = None
                i += 1
            runs.popleft()
            self.head = 0
        self.gone = 0
        return None

    def returned_head(self, jobs: dict[str, Job]) -> Job | None:
        """The oldest valid returned job (None if none), dropping stale entries."""
        returned = self.returned
        while returned:
            seq, job_id = returned[0]
            job = jobs.get(job_id)
            if job is not None:
                d = job.detail
                if d is not None and d.status is PENDING and d.seq == seq:
                    return job
            heapq.heappop(returned)
        return None

    def peek(self, jobs: dict[str, Job]) -> Job | None:
        """The job a claim on this lane would take: the older of the two heads."""
        runs = self.runs
        if runs and not self.returned:  # the common case, on a short path
            entries = runs[0].jobs
            i = self.head
            if i < len(entries):
                job = entries[i]
                if job is not None and job.detail is None and jobs.get(job.id) is job:
                    return job
        fresh = self.fresh_head(jobs)
        other = self.returned_head(jobs)
        if other is None:
            return fresh
        if fresh is None:
            return other
        assert other.detail is not None  # a returned job has one
        return other if other.detail.seq < self.runs[0].seq(self.head) else fresh

    def take(self, job: Job, jobs: dict[str, Job]) -> int | None:
        """Take ``job``'s fresh entry if it is the oldest valid one (what a claim takes),
        dropping stale entries before it, and return its seq; None, taking nothing, when
        another entry is older. O(1) but for the stale entries dropped, also in a replay,
        which makes no :meth:`peek`."""
        runs = self.runs
        at_head = runs and self.head < len(runs[0].jobs) and runs[0].jobs[self.head] is job
        # Not at the head as it stands (a replay makes no peek): drop stale entries.
        if not at_head and self.fresh_head(jobs) is not job:
            return None
        run = runs[0]
        entries = run.jobs
        i = self.head
        entries[i] = None
        seq = run.seq(i)
        i += 1
        n = len(entries)
        if i == n:
            runs.popleft()
            i = 0
        elif i >= CUT_AT and 2 * i > n:
            i = _cut(run, i)
        self.head = i
        return seq

    def seq_of(self, job: Job) -> int | None:
        """The seq of ``job``'s fresh entry, searched for (None if it has none)."""
        for run in self.runs:
            try:
                i = run.jobs.index(job)
            except ValueError:
                continue
            return run.seq(i)
        return None

    def bare_items(self, jobs: dict[str, Job]) -> Iterator[tuple[int, Job]]:
        """``(seq, job)`` of every valid fresh job without a detail (whose seq only the
        lane keeps), oldest first. While no such job has been dropped (``gone``), each one
        in the runs is valid, and none is looked up in ``jobs`` (a look-up per job is most of
        the time a snapshot takes here)."""
        get = jobs.get
        trusted = not self.gone
        for seq, job in self.fresh_items():
            if job.detail is None and (trusted or get(job.id) is job):
                yield seq, job

    def fresh_items(self) -> Iterator[tuple[int, Job]]:
        """``(seq, job)`` of every fresh entry not yet taken, oldest first (stale ones
        too: the caller checks)."""
        head = self.head
        for run in self.runs:
            entries = run.jobs
            seqs = run.seqs
            if seqs is None:
                items: Iterable[tuple[int, Job | None]] = zip(
                    range(run.first + head, run.first + len(entries)), entries[head:]
                )
            else:
                items = zip(seqs[head:], entries[head:])
            for seq, job in items:
                if job is not None:
                    yield seq, job
            head = 0
