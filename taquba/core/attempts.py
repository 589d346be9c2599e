"""Attempt history: one entry per delivery of a job, kept in the state and in checkpoints.

What holds:

- An entry is made when a job is claimed (``Claimed``) and ended by the event that ends
  that delivery: ``Acked`` (kept jobs only: a dropped job takes its history with it),
  ``Failed`` (its ``cause`` says whether the handler failed, the lease expired, the job was
  cancelled or its owner died) or ``Released`` (the owner died: "abandoned").
- Only jobs that have had a delivery have a history: ``State.history`` maps their ids to
  their entries, so a job that was never claimed costs nothing here. A job's history goes
  when the job goes (``State._forget``).
- At most ``MAX_HISTORY`` entries per job: the oldest is dropped when a new one comes.
- An event that ends a delivery without an open entry (a state restored from a snapshot
  written before histories existed) ends one made from the job's ``claimed_at``, when it
  has one.

In a snapshot, a job's history is part of its entry (snapshot.py, flag ``S_HISTORY``);
field types as in codec.py::

    uvarint k | k x entry
    entry  u8 flags | uvarint attempt | f64 claimed_at | [f64 finished_at] | [str error]
    flags  bits 0-2 the outcome (0 running, else 1 + index in OUTCOMES),
           H_FINISHED: finished_at follows, H_ERROR: error follows
"""

from __future__ import annotations

from .codec import Corrupt, Reader, put_str, put_time, put_uvarint

MAX_HISTORY = 10

ACKED = "acked"
NACKED = "nacked"
DEAD = "dead"
LEASE_EXPIRED = "lease_expired"
CANCELLED = "cancelled"
ABANDONED = "abandoned"
OUTCOMES = (ACKED, NACKED, DEAD, LEASE_EXPIRED, CANCELLED, ABANDONED)
_CODE = {name: i + 1 for i, name in enumerate(OUTCOMES)}

# Why an attempt failed (the ``cause`` of a ``Failed`` event).
CAUSE_HANDLER = 0  # nack, dead_letter or release: "nacked", or "dead" if the job died
CAUSE_LEASE = 1  # the reaper: the lease expired
CAUSE_CANCEL = 2  # the attempt ended after a cancel request: the job died for it
CAUSE_ABANDONED = 3  # the process that held the claim died (seen at the next open)
CAUSES = (CAUSE_HANDLER, CAUSE_LEASE, CAUSE_CANCEL, CAUSE_ABANDONED)

H_FINISHED = 0x08
H_ERROR = 0x10
_H_KNOWN = 0x07 | H_FINISHED | H_ERROR

# An entry's share of ``State.live_bytes`` besides its error: flags, attempt, two times.
ENTRY_BYTES = 20


class AttemptEntry:
    """One delivery of a job: ``outcome`` None while it runs."""

    __slots__ = ("attempt", "claimed_at", "error", "finished_at", "outcome")

    def __init__(
        self,
        attempt: int,
        claimed_at: float,
        finished_at: float | None = None,
        outcome: str | None = None,
        error: str | None = None,
    ) -> None:
        self.attempt = attempt
        self.claimed_at = claimed_at
        self.finished_at = finished_at
        self.outcome = outcome
        self.error = error

    def size(self) -> int:
        """This entry's share of ``State.live_bytes``."""
        return ENTRY_BYTES + (0 if self.error is None else len(self.error) + 2)

    def __repr__(self) -> str:
        return (
            f"AttemptEntry({self.attempt}, {self.claimed_at!r}, {self.finished_at!r}, "
            f"{self.outcome!r}, {self.error!r})"
        )


def failure_outcome(cause: int, dead: bool) -> str:
    """The outcome of a delivery that ended in a ``Failed`` event."""
    if cause == CAUSE_LEASE:
        return LEASE_EXPIRED
    if cause == CAUSE_CANCEL:
        return CANCELLED
    if cause == CAUSE_ABANDONED:
        return ABANDONED
    return DEAD if dead else NACKED


def started(history: dict[str, list[AttemptEntry]], job_id: str, attempt: int, at: float) -> int:
    """Open an entry for delivery ``attempt`` of ``job_id``; returns the change in size."""
    entries = history.get(job_id)
    if entries is None:
        history[job_id] = [AttemptEntry(attempt, at)]
        return ENTRY_BYTES
    entry = AttemptEntry(attempt, at)
    entries.append(entry)
    delta = ENTRY_BYTES
    if len(entries) > MAX_HISTORY:
        delta -= entries.pop(0).size()
    return delta


def ended(
    history: dict[str, list[AttemptEntry]],
    job_id: str,
    attempt: int,
    claimed_at: float | None,
    at: float | None,
    outcome: str,
    error: str | None = None,
) -> int:
    """End the open entry of delivery ``attempt`` of ``job_id`` with ``outcome``.

    Without an open entry for that attempt, one is made from ``claimed_at`` (None: nothing
    is recorded). Returns the change in size.
    """
    entries = history.get(job_id)
    if entries and entries[-1].outcome is None and entries[-1].attempt == attempt:
        entry = entries[-1]
        entry.finished_at = at
        entry.outcome = outcome
        entry.error = error
        return 0 if error is None else len(error) + 2
    if claimed_at is None:
        return 0
    delta = started(history, job_id, attempt, claimed_at)
    return delta + ended(history, job_id, attempt, claimed_at, at, outcome, error)


def dropped(history: dict[str, list[AttemptEntry]], job_id: str) -> int:
    """Forget the history of ``job_id``; returns the change in size (zero or negative)."""
    entries = history.pop(job_id, None)
    if entries is None:
        return 0
    if len(entries) == 1:  # the common case: a job acked at its first delivery
        return -entries[0].size()
    return -sum(e.size() for e in entries)


def write_entries(buf: bytearray, entries: list[AttemptEntry]) -> None:
    """Append one job's history (for its snapshot entry) to ``buf``."""
    put_uvarint(buf, len(entries))
    for e in entries:
        flags = 0 if e.outcome is None else _CODE[e.outcome]
        if e.finished_at is not None:
            flags |= H_FINISHED
        if e.error is not None:
            flags |= H_ERROR
        buf.append(flags)
        put_uvarint(buf, e.attempt)
        put_time(buf, e.claimed_at)
        if e.finished_at is not None:
            put_time(buf, e.finished_at)
        if e.error is not None:
            put_str(buf, e.error)


def read_entries(r: Reader) -> list[AttemptEntry]:
    """Read one job's history written by :func:`write_entries` (raises ``Corrupt``)."""
    n = r.count(10)
    if not 1 <= n <= MAX_HISTORY:
        raise Corrupt(f"a job's attempt history has {n} entries (1..{MAX_HISTORY} allowed)")
    entries = []
    for _ in range(n):
        flags = r.flags(_H_KNOWN)
        code = flags & 0x07
        if code > len(OUTCOMES):
            raise Corrupt(f"unknown attempt outcome {code}")
        attempt = r.positive("attempt")
        claimed_at = r.time()
        finished_at = r.time() if flags & H_FINISHED else None
        error = r.text() if flags & H_ERROR else None
        entries.append(
            AttemptEntry(
                attempt, claimed_at, finished_at, OUTCOMES[code - 1] if code else None, error
            )
        )
    return entries
