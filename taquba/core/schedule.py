"""The schedule events: a cron schedule set, removed, or fired.

A schedule lives in the state as its ``ScheduleSet`` event, updated by each
``ScheduleFired``. Every time value arrives inside an event: the queue computes occurrences
with the cron library (taquba/cron.py), the state only records them, so replay needs no
clock and no time-zone database. Layouts (EXTENDED records, see events.py; ``[x]`` present
only when its flag is set)::

    SCHEDULE_SET      tag | uvarint X_SCHEDULE_SET | u8 flags | str name | str cron
                      | str timezone | str queue | bytes payload | f64 next_run_at
                      | [f64 last_run_at] | [uvarint priority] | [uvarint max_attempts]
                      | [headers]
    SCHEDULE_REMOVED  tag | uvarint X_SCHEDULE_REMOVED | str name
    SCHEDULE_FIRED    tag | uvarint X_SCHEDULE_FIRED | u8 flags | str name | f64 occurrence
                      | f64 next_run_at | [bytes ENQUEUE record]

A fired record holds the occurrence's job (absent when its dedup key was held) and the
schedule's new times in one record: the job is enqueued exactly when the schedule moves
past the occurrence, through crashes and takeovers. A snapshot stores each schedule as its
SCHEDULE_SET record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from .codec import (
    Corrupt,
    Reader,
    extended_head,
    put_blob,
    put_headers,
    put_str,
    put_time,
    put_uvarint,
    tag,
)
from .enqueue import ENQUEUE, Enqueued

# Sub-kinds of EXTENDED records (events.py keeps the registry of kinds).
X_SCHEDULE_SET = 3
X_SCHEDULE_REMOVED = 4
X_SCHEDULE_FIRED = 5

# SCHEDULE_SET flags
_S_LAST_RUN = 0x01
_S_PRIORITY = 0x02
_S_MAX_ATTEMPTS = 0x04
_S_HEADERS = 0x08
_S_KNOWN = 0x0F
# SCHEDULE_FIRED flags
_F_JOB = 0x01

# A schedule's bytes in a snapshot besides its strings and payload (State.live_bytes).
SCHEDULE_BYTES = 40


class ScheduleSet(NamedTuple):
    """Schedule ``name`` enqueues ``payload`` into ``queue`` at the occurrences of ``cron``
    in ``timezone``; next at ``next_run_at``. Replaces a schedule of the same name.

    ``priority``, ``max_attempts`` and ``headers`` are the jobs' options (None: the
    queue's defaults when fired). ``last_run_at`` is the last occurrence fired, if any.
    """

    name: str
    cron: str
    timezone: str
    queue: str
    payload: bytes
    next_run_at: float
    last_run_at: float | None = None
    priority: int | None = None
    max_attempts: int | None = None
    headers: Mapping[str, str] | None = None  # None or non-empty

    def encode(self) -> bytes:
        flags = (
            (_S_LAST_RUN if self.last_run_at is not None else 0)
            | (_S_PRIORITY if self.priority is not None else 0)
            | (_S_MAX_ATTEMPTS if self.max_attempts is not None else 0)
            | (_S_HEADERS if self.headers else 0)
        )
        buf = extended_head(X_SCHEDULE_SET)
        buf.append(flags)
        for text in (self.name, self.cron, self.timezone, self.queue):
            put_str(buf, text)
        put_blob(buf, self.payload)
        put_time(buf, self.next_run_at)
        if self.last_run_at is not None:
            put_time(buf, self.last_run_at)
        if self.priority is not None:
            put_uvarint(buf, self.priority)
        if self.max_attempts is not None:
            put_uvarint(buf, self.max_attempts)
        if self.headers:
            put_headers(buf, self.headers)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> ScheduleSet:
        flags = r.flags(_S_KNOWN)
        name, cron, timezone, queue = r.text(), r.text(), r.text(), r.text()
        if not name or not queue:
            raise Corrupt("a schedule without a name or a queue")
        payload = r.blob()
        next_run_at = r.time()
        last_run_at = r.time() if flags & _S_LAST_RUN else None
        priority = r.u32("priority") if flags & _S_PRIORITY else None
        max_attempts = r.positive("max_attempts") if flags & _S_MAX_ATTEMPTS else None
        headers = r.headers() if flags & _S_HEADERS else None
        if headers is not None and not headers:
            raise Corrupt("empty headers present")
        return cls(
            name,
            cron,
            timezone,
            queue,
            payload,
            next_run_at,
            last_run_at,
            priority,
            max_attempts,
            headers,
        )

    def size(self) -> int:
        """This schedule's share of ``State.live_bytes``."""
        n = (
            SCHEDULE_BYTES
            + len(self.payload)
            + len(self.name)
            + len(self.cron)
            + len(self.timezone)
            + len(self.queue)
        )
        if self.headers:
            n += sum(len(k) + len(v) + 2 for k, v in self.headers.items())
        return n


class ScheduleRemoved(NamedTuple):
    """Schedule ``name`` is gone (an unknown name changes nothing)."""

    name: str

    def encode(self) -> bytes:
        buf = extended_head(X_SCHEDULE_REMOVED)
        put_str(buf, self.name)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> ScheduleRemoved:
        return cls(r.text())


class ScheduleFired(NamedTuple):
    """Schedule ``name`` fired for ``occurrence``: ``job`` (None when its dedup key was
    held) is enqueued, the schedule's ``last_run_at`` becomes ``occurrence`` and its
    ``next_run_at`` becomes ``next_run_at``."""

    name: str
    occurrence: float
    next_run_at: float
    job: Enqueued | None = None

    def encode(self) -> bytes:
        buf = extended_head(X_SCHEDULE_FIRED)
        buf.append(0 if self.job is None else _F_JOB)
        put_str(buf, self.name)
        put_time(buf, self.occurrence)
        put_time(buf, self.next_run_at)
        if self.job is not None:
            put_blob(buf, self.job.encode())
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> ScheduleFired:
        flags = r.flags(_F_JOB)
        name = r.text()
        occurrence = r.time()
        next_run_at = r.time()
        job = None
        if flags & _F_JOB:
            data = r.blob()
            if not data or data[0] != tag(ENQUEUE):
                raise Corrupt("a fired schedule holds a record that is not an enqueue")
            inner = Reader(data, 1)
            job = Enqueued.read(inner)
            inner.finish()
        return cls(name, occurrence, next_run_at, job)
