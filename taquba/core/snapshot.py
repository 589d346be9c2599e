"""Binary encoding of a snapshot: the whole queue state, written as a checkpoint.

Field types are those of codec.py; ``[x]`` is present only when its flag is set::

    tag (kind SNAPSHOT) | uvarint next_seq
    | uvarint n | n x queue | uvarint n | n x job | uvarint n | n x (bytes key | bytes value)
    | [uvarint n | n x (str producer | uvarint seq | f64 at)]
    | [uvarint n | n x bytes schedule]
    queue  str name | uvarint done_total | uvarint d | d x (str dedup_key | id)
    job    uvarint flags | id | uvarint queue index | uvarint attempts | uvarint max_attempts
           | uvarint priority | uvarint seq | f64 enqueued_at | [f64 run_at]
           | [f64 claimed_at] | [f64 lease_expires_at] | [f64 completed_at]
           | [f64 failed_at] | [str last_error] | [str dedup_key] | [headers] | [history]
           | bytes payload
    flags  bits 0-2 the status (index in STATUS_CODES), then the S_* bits below
    history  the job's attempt history (attempts.py), present for jobs delivered at least once

The inbox marks are present only when there are marks or schedules (their count is then
non-zero, or zero followed by schedules); the schedules only when there are schedules, each
as its SCHEDULE_SET record (core/schedule.py). Snapshots written before either existed end
after the KV entries.

The dedup index is stored as is: a key is released at a job's first claim, so it cannot be
derived from the jobs (a retried job keeps its dedup_key). A job of a status that needs a
time (scheduled: run_at, claimed: lease_expires_at, done: completed_at, dead: failed_at)
without it is corruption, as is anything codec.Reader rejects.

A job costs about ``JOB_BYTES`` plus its payload, headers, dedup key and last error: that
is the estimate ``State.live_bytes`` keeps.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence

from ..errors import CorruptionError
from ..records import JobStatus
from . import ids
from .attempts import AttemptEntry, read_entries, write_entries
from .codec import (
    F64,
    Corrupt,
    Reader,
    check_tag,
    pack_f64,
    put_blob,
    put_headers,
    put_listed_id,
    put_str,
    put_time,
    put_uvarint,
    tag,
    text_id,
)
from .events import SNAPSHOT, ScheduleSet, decode_schedule
from .jobs import Job, JobDetail, JobKind, JobKinds

STATUS_CODES = (
    JobStatus.PENDING,
    JobStatus.SCHEDULED,
    JobStatus.CLAIMED,
    JobStatus.DONE,
    JobStatus.DEAD,
)
_STATUS_CODE = {s: i for i, s in enumerate(STATUS_CODES)}
# The time a job of each status must have (by index in STATUS_CODES; pending needs none).
_NEEDED = (None, "run_at", "lease_expires_at", "completed_at", "failed_at")

S_TEXT_ID = 1 << 3
S_RUN_AT = 1 << 4
S_CLAIMED_AT = 1 << 5
S_LEASE = 1 << 6
S_COMPLETED_AT = 1 << 7
S_FAILED_AT = 1 << 8
S_LAST_ERROR = 1 << 9
S_DEDUP = 1 << 10
S_HEADERS = 1 << 11
S_CANCEL = 1 << 12
S_HISTORY = 1 << 13
_S_KNOWN = (1 << 14) - 1
_S_TIMES = S_RUN_AT | S_CLAIMED_AT | S_LEASE | S_COMPLETED_AT | S_FAILED_AT
_S_STRINGS = S_LAST_ERROR | S_DEDUP | S_HEADERS | S_HISTORY

# A job's bytes in a snapshot besides its payload, headers and strings: flags 1-2, id 16,
# queue index 1, attempts + max_attempts 2, priority 1-5, seq 1-5, enqueued_at 8, payload
# length 1-4 (about 34 for a pending job), and one or two more times (8 each) for the other
# statuses.
JOB_BYTES = 40

_T_SNAPSHOT = tag(SNAPSHOT)
_unpack_f64 = F64.unpack_from


# (name, done_total, dedup index)
QueueRow = tuple[str, int, dict[str, str]]


def encode(
    next_seq: int,
    queues: Sequence[tuple[str, int, Mapping[str, str]]],
    n_jobs: int,
    jobs: Iterable[tuple[int, Job]],
    kv: Mapping[bytes, bytes],
    marks: Mapping[str, tuple[int, float]] | None = None,
    schedules: Sequence[ScheduleSet] = (),
    history: Mapping[str, list[AttemptEntry]] | None = None,
) -> bytes:
    """The whole state. ``jobs`` yields ``n_jobs`` pairs of a job's seq and the job (a
    fresh pending job keeps its seq in its lane, not in the job); every job's queue must be
    among ``queues``; ``history`` holds the attempt history of jobs that have had a
    delivery (those have a ``detail``).

    Everything is written into one buffer, so the peak memory is about twice the snapshot.
    """
    buf = bytearray((_T_SNAPSHOT,))
    put_uvarint(buf, next_seq)
    put_uvarint(buf, len(queues))
    position: dict[str, int] = {}
    for i, (name, done_total, dedup) in enumerate(queues):
        position[name] = i
        put_str(buf, name)
        put_uvarint(buf, done_total)
        put_uvarint(buf, len(dedup))
        for key, job_id in dedup.items():
            put_str(buf, key)
            put_listed_id(buf, job_id)
    put_uvarint(buf, n_jobs)
    written = 0
    decode_id = ids.decode
    codes = _STATUS_CODE
    pack = pack_f64
    append = buf.append
    histories = history or {}
    for seq, job in jobs:
        written += 1
        value = decode_id(job.id)
        d = job.detail
        flags = 0 if d is None else codes[d.status]
        if value is None:
            flags |= S_TEXT_ID
        if d is None:
            run_at = claimed_at = lease = completed_at = failed_at = None
            last_error = dedup_key = None
            headers = None
            cancel = False
            entries = None
        else:
            run_at = d.run_at
            claimed_at = d.claimed_at
            lease = d.lease_expires_at
            completed_at = d.completed_at
            failed_at = d.failed_at
            last_error = d.last_error
            dedup_key = d.dedup_key
            headers = d.headers
            cancel = d.cancel_requested
            entries = histories.get(job.id) if histories else None
        if run_at is not None:
            flags |= S_RUN_AT
        if claimed_at is not None:
            flags |= S_CLAIMED_AT
        if lease is not None:
            flags |= S_LEASE
        if completed_at is not None:
            flags |= S_COMPLETED_AT
        if failed_at is not None:
            flags |= S_FAILED_AT
        if last_error is not None:
            flags |= S_LAST_ERROR
        if dedup_key is not None:
            flags |= S_DEDUP
        if headers:
            flags |= S_HEADERS
        if cancel:
            flags |= S_CANCEL
        if entries:
            flags |= S_HISTORY
        if flags < 0x80:
            append(flags)
        else:
            put_uvarint(buf, flags)
        if value is None:
            buf += text_id(job.id)
        else:
            buf += value.to_bytes(16, "big")
        # Small varints inline (one byte each below 0x80): this loop runs under the lock.
        qi = position[job.queue]
        attempts = job.attempts
        max_attempts = job.max_attempts
        if qi < 0x80 and attempts < 0x80 and max_attempts < 0x80:
            append(qi)
            append(attempts)
            append(max_attempts)
        else:
            put_uvarint(buf, qi)
            put_uvarint(buf, attempts)
            put_uvarint(buf, max_attempts)
        for v in (job.priority, seq):
            if v < 0x80:
                append(v)
            elif v < 0x4000:
                append(v & 0x7F | 0x80)
                append(v >> 7)
            elif v < 0x200000:
                append(v & 0x7F | 0x80)
                append(v >> 7 & 0x7F | 0x80)
                append(v >> 14)
            else:
                put_uvarint(buf, v)
        buf += pack(job.enqueued_at)
        if flags & _S_TIMES:
            if run_at is not None:
                buf += pack(run_at)
            if claimed_at is not None:
                buf += pack(claimed_at)
            if lease is not None:
                buf += pack(lease)
            if completed_at is not None:
                buf += pack(completed_at)
            if failed_at is not None:
                buf += pack(failed_at)
        if flags & _S_STRINGS:
            if last_error is not None:
                put_str(buf, last_error)
            if dedup_key is not None:
                put_str(buf, dedup_key)
            if headers:
                put_headers(buf, headers)
            if entries:
                write_entries(buf, entries)
        payload = job.payload
        n = len(payload)
        if n < 0x80:
            append(n)
        else:
            put_uvarint(buf, n)
        buf += payload
    if written != n_jobs:
        raise AssertionError(f"snapshot: {written} jobs written, {n_jobs} announced")
    put_uvarint(buf, len(kv))
    for kv_key, kv_value in kv.items():
        put_blob(buf, kv_key)
        put_blob(buf, kv_value)
    if marks or schedules:  # absent in snapshots written before the inbox existed
        marks = marks or {}
        put_uvarint(buf, len(marks))
        for producer, (seq, at) in marks.items():
            put_str(buf, producer)
            put_uvarint(buf, seq)
            put_time(buf, at)
    if schedules:  # absent in snapshots written before schedules existed
        put_uvarint(buf, len(schedules))
        for schedule in schedules:
            put_blob(buf, schedule.encode())
    return bytes(buf)


def decode(
    data: bytes, kinds: JobKinds | None = None
) -> tuple[
    int,
    list[QueueRow],
    list[Job],
    array[int],
    dict[bytes, bytes],
    dict[str, tuple[int, float]],
    list[ScheduleSet],
    dict[str, list[AttemptEntry]],
]:
    """``(next_seq, queues, jobs, seqs, kv, inbox marks, schedules, attempt history)`` of
    a snapshot made by :func:`encode`, ``seqs[i]`` being the seq of ``jobs[i]`` (a pending
    job without a detail keeps it nowhere else); the jobs' kinds come from ``kinds`` (a new
    table without one)."""
    t = check_tag(data)
    if t != _T_SNAPSHOT:
        raise CorruptionError(f"expected a snapshot, found a record of kind {t & 0x0F}")
    r = Reader(data, 1)
    try:
        next_seq = r.uvarint()
        queues: list[QueueRow] = []
        names: list[str] = []
        for _ in range(r.count(3)):
            name = r.text()
            if not name:
                raise Corrupt("empty queue name")
            done_total = r.uvarint()
            dedup = {}
            for _ in range(r.count(3)):
                dedup_key = r.text()
                dedup[dedup_key] = r.listed_id()
            queues.append((name, done_total, dedup))
            names.append(name)
        if len(set(names)) != len(names):
            raise Corrupt("a queue is listed twice")
        history: dict[str, list[AttemptEntry]] = {}
        seqs: array[int] = array("q")
        rows = _decode_jobs(r, next_seq, names, history, kinds or JobKinds(), seqs)
        kv: dict[bytes, bytes] = {}
        for _ in range(r.count(2)):
            key = r.blob()
            kv[key] = r.blob()
        marks: dict[str, tuple[int, float]] = {}
        schedules: list[ScheduleSet] = []
        if r.pos < r.end:
            n = r.count(10)
            if not n and r.pos == r.end:
                raise Corrupt(f"trailing bytes after the KV entries at byte {r.pos - 1}")
            for _ in range(n):
                producer = r.text()
                seq = r.uvarint()
                marks[producer] = (seq, r.time())
        if r.pos < r.end:
            n = r.count(18)
            if not n:
                raise Corrupt(f"trailing bytes after the inbox marks at byte {r.pos - 1}")
            for _ in range(n):
                schedules.append(decode_schedule(r.blob()))
            if len({s.name for s in schedules}) != n:
                raise Corrupt("a schedule is listed twice")
        r.finish()
    except Corrupt as exc:
        raise CorruptionError(f"malformed snapshot ({len(data)} bytes): {exc}") from None
    except (IndexError, struct.error):  # a read past the end in _decode_jobs' fast paths
        raise CorruptionError(f"malformed snapshot ({len(data)} bytes): truncated") from None
    return next_seq, queues, rows, seqs, kv, marks, schedules, history


def _decode_jobs(
    r: Reader,
    next_seq: int,
    names: list[str],
    history: dict[str, list[AttemptEntry]],
    kinds: JobKinds,
    seqs: array[int],
) -> list[Job]:
    """The jobs, read with the position in a local and one-byte varints inline (this is
    most of a reopen); anything unusual goes through the Reader's checked methods. The
    attempt histories go to ``history``, each job's seq to ``seqs``."""
    rows: list[Job] = []
    append = rows.append
    append_seq = seqs.append
    n_queues = len(names)
    n_codes = len(STATUS_CODES)
    data = r.data
    end = r.end
    encode_id = ids.encode
    from_bytes = int.from_bytes
    unpack = _unpack_f64
    isfinite = math.isfinite
    last_at = math.nan  # the previous job's enqueued_at, shared by the next equal one
    kind: JobKind | None = None  # the previous job's, for the next one alike
    for _ in range(r.count(17)):
        pos = r.pos
        flags = data[pos]
        if flags < 0x80:
            pos += 1
        else:
            flags = r.uvarint()
            pos = r.pos
            if flags & ~_S_KNOWN:
                raise Corrupt(f"unknown job flags {flags:#x}")
        code = flags & 0x07
        if code >= n_codes:
            raise Corrupt(f"unknown job status {code}")
        if flags & S_TEXT_ID:
            r.pos = pos
            job_id = r.text_id()
            pos = r.pos
        else:
            if pos + 16 > end:
                raise Corrupt(f"truncated job id at byte {pos}")
            job_id = encode_id(from_bytes(data[pos : pos + 16], "big"))
            pos += 16
        qi = data[pos]
        attempts = data[pos + 1]
        max_attempts = data[pos + 2]
        if qi < 0x80 and attempts < 0x80 and 0 < max_attempts < 0x80:
            pos += 3
        else:
            r.pos = pos
            qi = r.uvarint()
            attempts = r.u32("attempts")
            max_attempts = r.positive("max_attempts")
            pos = r.pos
        if qi >= n_queues:
            raise Corrupt(f"queue index {qi} out of range")
        # priority and seq: varints of up to two and three bytes inline
        b = data[pos] if pos < end else 0x80
        if b < 0x80:
            priority = b
            pos += 1
        elif pos + 1 < end and data[pos + 1] < 0x80:
            priority = b & 0x7F | data[pos + 1] << 7
            pos += 2
        else:
            r.pos = pos
            priority = r.u32("priority")
            pos = r.pos
        b = data[pos] if pos < end else 0x80
        if b < 0x80:
            seq = b
            pos += 1
        elif pos + 1 < end and data[pos + 1] < 0x80:
            seq = b & 0x7F | data[pos + 1] << 7
            pos += 2
        elif pos + 2 < end and data[pos + 2] < 0x80:
            seq = b & 0x7F | (data[pos + 1] & 0x7F) << 7 | data[pos + 2] << 14
            pos += 3
        else:
            r.pos = pos
            seq = r.uvarint()
            pos = r.pos
        r.pos = pos
        if seq >= next_seq:
            raise Corrupt(f"job seq {seq} is not below next_seq {next_seq}")
        pos = r.pos
        enqueued_at = unpack(data, pos)[0]
        if not isfinite(enqueued_at):
            raise Corrupt(f"non-finite time {enqueued_at!r} at byte {pos}")
        # The jobs of one enqueue are adjacent and share one time: one float object for
        # them all, as the writer had (0.0 is left alone: it would also match -0.0).
        if enqueued_at == last_at and enqueued_at:
            enqueued_at = last_at
        else:
            last_at = enqueued_at
        r.pos = pos + 8
        run_at = claimed_at = lease = completed_at = failed_at = None
        last_error = job_dedup = None
        headers: dict[str, str] | None = None
        if flags & _S_TIMES:
            run_at = r.time() if flags & S_RUN_AT else None
            claimed_at = r.time() if flags & S_CLAIMED_AT else None
            lease = r.time() if flags & S_LEASE else None
            completed_at = r.time() if flags & S_COMPLETED_AT else None
            failed_at = r.time() if flags & S_FAILED_AT else None
        if flags & _S_STRINGS:
            last_error = r.text() if flags & S_LAST_ERROR else None
            job_dedup = r.text() if flags & S_DEDUP else None
            if flags & S_HEADERS:
                headers = r.headers()
            if flags & S_HISTORY:
                history[job_id] = read_entries(r)
        if code and (None, run_at, lease, completed_at, failed_at)[code] is None:
            raise Corrupt(f"{STATUS_CODES[code].value} job {job_id} has no {_NEEDED[code]}")
        detail = None
        if code or attempts or flags & (_S_TIMES | _S_STRINGS | S_CANCEL):
            detail = JobDetail(seq, STATUS_CODES[code])
            detail.attempts = attempts
            detail.run_at = run_at
            detail.claimed_at = claimed_at
            detail.lease_expires_at = lease
            detail.completed_at = completed_at
            detail.failed_at = failed_at
            detail.last_error = last_error
            detail.dedup_key = job_dedup
            detail.headers = headers or None
            detail.cancel_requested = bool(flags & S_CANCEL)
        pos = r.pos
        n = data[pos] if pos < end else 0x80
        if n < 0x80 and pos + 1 + n <= end:
            payload = data[pos + 1 : pos + 1 + n]
            r.pos = pos + 1 + n
        else:
            payload = r.blob()
        queue = names[qi]
        if (
            kind is None
            or kind.queue is not queue
            or kind.priority != priority
            or kind.max_attempts != max_attempts
        ):
            kind = kinds.get(queue, priority, max_attempts)
        append(Job(job_id, kind, payload, enqueued_at, detail))
        append_seq(seq)
    return rows
