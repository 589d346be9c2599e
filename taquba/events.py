"""The queue's log records (events): one per state change, binary, as small as exact allows.

The log frames each record with its own length and CRC32 and knows nothing of what is
inside. A record holds only what the state needs to replay the change; the field types
(tag, uvarint, f64, str, bytes, headers, id, dur) are described in codec.py. ``[x]`` is
present only when its flag is set::

    ENQUEUE    tag | str queue | f64 enqueued_at | uvarint (count << 1 | has_kv)
               | count x job | [uvarint n | n x (bytes key | bytes value)]
      job      u8 flags | id | [uvarint priority] | [uvarint max_attempts] | [f64 run_at]
               | [str dedup_key] | [headers] | bytes payload
      flags    bits 0-1 id form: 0 the 16-byte value, 1 the previous job's value + 1 (no
               bytes: a batch's generated ids), 2 text; J_PRIORITY (else DEFAULT_PRIORITY),
               J_MAX_ATTEMPTS (else DEFAULT_MAX_ATTEMPTS), J_RUN_AT, J_DEDUP, J_HEADERS
    CLAIM      tag | u8 flags | id | uvarint attempts | f64 claimed_at | dur lease
    RENEW      tag | u8 flags | id | f64 lease_expires_at
    ACK        tag | u8 flags | id | [f64 completed_at]    F_KEEP: the record is retained
    FAIL       tag | u8 flags | id | [f64 failed_at] | [f64 run_at] | [str error]
               flags bits 1-2: TO_PENDING, TO_SCHEDULED (run_at), TO_DEAD (failed_at);
               F_ERROR: an error text follows
    CANCEL, REQUEUE_DEAD     tag | u8 flags | id
    PROMOTE, PURGE, RELEASE  tag | uvarint n | n x id (each with its leading form byte)
    KV_DELETE  tag | uvarint n | n x bytes key

In the single-job records, flag F_TEXT_ID says the id is stored as text. Unknown flag
bits are corruption.

What is left out, and why replay still rebuilds the same state: a job's sequence number
(the state numbers enqueued jobs in log order); a claim's expiry (the state computes
``claimed_at + lease``, the same float the queue computed); an ack's completion time when
the record is dropped, a failure's time unless the job dies, the time of a requeue (none
of them is ever visible).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from . import ids
from .codec import (
    Corrupt,
    Reader,
    check_tag,
    put_blob,
    put_dur,
    put_headers,
    put_listed_id,
    put_str,
    put_time,
    put_uvarint,
    tag,
    text_id,
)
from .errors import CorruptionError

ENQUEUE = 1
CLAIM = 2
RENEW = 3
ACK = 4
FAIL = 5
CANCEL = 6
REQUEUE_DEAD = 7
PROMOTE = 8
PURGE = 9
KV_DELETE = 10
RELEASE = 11
INTAKE = 12
INBOX_FORGET = 13
SNAPSHOT = 15  # see snapshot.py

KIND_NAMES = {
    ENQUEUE: "enqueue", CLAIM: "claim", RENEW: "renew", ACK: "ack", FAIL: "fail",
    CANCEL: "cancel", REQUEUE_DEAD: "requeue_dead", PROMOTE: "promote", PURGE: "purge",
    KV_DELETE: "kv_delete", RELEASE: "release", INTAKE: "intake",
    INBOX_FORGET: "inbox_forget", SNAPSHOT: "snapshot",
}

# Where a failed attempt sends the job (FAIL records).
TO_PENDING = 0
TO_SCHEDULED = 1
TO_DEAD = 2

# What an enqueued job gets when its record leaves the field out. These belong to the
# format, not to any configuration: changing a QueueConfig never changes a replay.
DEFAULT_PRIORITY = 1000
DEFAULT_MAX_ATTEMPTS = 3

# ENQUEUE job flags
_ID_VALUE = 0
_ID_NEXT = 1
_ID_TEXT = 2
_ID_FORM = 0x03
J_PRIORITY = 0x04
J_MAX_ATTEMPTS = 0x08
J_RUN_AT = 0x10
J_DEDUP = 0x20
J_HEADERS = 0x40
_J_KNOWN = 0x7F

# single-job record flags
F_TEXT_ID = 0x01
F_KEEP = 0x02  # ACK
_FAIL_TO = 0x06  # FAIL: destination << 1
F_ERROR = 0x08  # FAIL

_MAX_ID_VALUE = (1 << 128) - 1

# One enqueued job, as the queue hands it over and as ENQUEUE decodes:
# (id, payload, priority, max_attempts, run_at, dedup_key, headers)
NewJob = tuple[str, bytes, int, int, float | None, str | None, dict[str, str] | None]

_T_ENQUEUE = tag(ENQUEUE)
_T_CLAIM = tag(CLAIM)
_T_RENEW = tag(RENEW)
_T_ACK = tag(ACK)
_T_FAIL = tag(FAIL)
_T_CANCEL = tag(CANCEL)
_T_REQUEUE_DEAD = tag(REQUEUE_DEAD)
_T_PROMOTE = tag(PROMOTE)
_T_PURGE = tag(PURGE)
_T_KV_DELETE = tag(KV_DELETE)
_T_RELEASE = tag(RELEASE)
_T_INTAKE = tag(INTAKE)
_T_INBOX_FORGET = tag(INBOX_FORGET)
_CLAIM_SHORT = struct.Struct(">BB16sBdB")  # tag, flags, id, attempts, claimed_at, dur
_ACK_DROP = bytes((_T_ACK, 0))


# -- encoding --------------------------------------------------------------------------------


def _one(t: int, flags: int, job_id: str) -> bytearray:
    """The head of a single-job record: tag, flags (with F_TEXT_ID as needed) and the id."""
    value = ids.decode(job_id)
    if value is None:
        buf = bytearray((t, flags | F_TEXT_ID))
        buf += text_id(job_id)
    else:
        buf = bytearray((t, flags))
        buf += value.to_bytes(16, "big")
    return buf


def _id_list(t: int, job_ids: Sequence[str]) -> bytes:
    buf = bytearray((t,))
    put_uvarint(buf, len(job_ids))
    for job_id in job_ids:
        put_listed_id(buf, job_id)
    return bytes(buf)


def _queue_head(queue: str, at: float, count: int, has_kv: bool) -> bytearray:
    if count < 1:
        raise ValueError("an enqueue record holds at least one job")
    buf = bytearray((_T_ENQUEUE,))
    put_str(buf, queue)
    put_time(buf, at)
    put_uvarint(buf, count << 1 | has_kv)
    return buf


def encode_enqueue(queue: str, at: float, jobs: Sequence[NewJob],
                   kv: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """One ENQUEUE record: ``jobs`` of ``queue`` enqueued at ``at``, then KV writes."""
    buf = _queue_head(queue, at, len(jobs), bool(kv))
    parts: list[bytes | bytearray] = [buf]
    append = buf.append
    prev = -2  # the value of the previous job's id if it is canonical
    for job_id, payload, priority, max_attempts, run_at, dedup_key, headers in jobs:
        value = ids.decode(job_id)
        if value is None:
            flags = _ID_TEXT
        elif value == prev + 1:
            flags = _ID_NEXT
        else:
            flags = _ID_VALUE
        if priority != DEFAULT_PRIORITY:
            flags |= J_PRIORITY
        if max_attempts != DEFAULT_MAX_ATTEMPTS:
            flags |= J_MAX_ATTEMPTS
        if run_at is not None:
            flags |= J_RUN_AT
        if dedup_key is not None:
            flags |= J_DEDUP
        if headers:
            flags |= J_HEADERS
        append(flags)
        if value is None:
            buf += text_id(job_id)
            prev = -2
        else:
            if flags & _ID_FORM == _ID_VALUE:
                buf += value.to_bytes(16, "big")
            prev = value
        if flags & J_PRIORITY:
            put_uvarint(buf, priority)
        if flags & J_MAX_ATTEMPTS:
            put_uvarint(buf, max_attempts)
        if run_at is not None:
            put_time(buf, run_at)
        if dedup_key is not None:
            put_str(buf, dedup_key)
        if headers:
            put_headers(buf, headers)
        put_uvarint(buf, len(payload))
        parts.append(payload)  # copied once, by the join
        buf = bytearray()
        parts.append(buf)
        append = buf.append
    if kv:
        put_uvarint(buf, len(kv))
        for key, val in kv:
            put_blob(buf, key)
            put_blob(buf, val)
    return b"".join(parts)


def encode_enqueue_plain(queue: str, at: float, job_ids: Sequence[str],
                         payloads: Sequence[bytes], priority: int, max_attempts: int) -> bytes:
    """The ENQUEUE record of jobs that differ only by id and payload (``enqueue_batch``).

    The same bytes as :func:`encode_enqueue`, made faster: an id of the value after the
    previous one is recognised from the previous text when only the last two digits changed
    (see ids.py), without decoding it; the bytes before such a job's payload depend only on
    the payload's length and are made once per length; payloads are copied once, by the
    final join.
    """
    if len(job_ids) != len(payloads):
        raise ValueError(f"{len(job_ids)} ids for {len(payloads)} payloads")
    common = 0
    extra = bytearray()
    if priority != DEFAULT_PRIORITY:
        common |= J_PRIORITY
        put_uvarint(extra, priority)
    if max_attempts != DEFAULT_MAX_ATTEMPTS:
        common |= J_MAX_ATTEMPTS
        put_uvarint(extra, max_attempts)
    parts: list[bytes | bytearray] = [_queue_head(queue, at, len(job_ids), False)]
    append = parts.append
    decode_id = ids.decode
    tails = ids.TAILS
    next_heads: dict[int, bytes] = {}  # payload length -> the bytes of a NEXT job before it
    head = ""  # the first 24 digits of the previous id, if it is canonical
    prev = -2
    for job_id, payload in zip(job_ids, payloads):
        low = (prev + 1) & 0xFF
        if low and head and job_id[24:] == tails[low] and job_id[:24] == head \
                and len(job_id) == 26:
            prev += 1
            n = len(payload)
            h = next_heads.get(n)
            if h is None:
                b = bytearray((common | _ID_NEXT,))
                b += extra
                put_uvarint(b, n)
                h = next_heads[n] = bytes(b)
            append(h)
        else:
            value = decode_id(job_id)
            if value is None:
                b = bytearray((common | _ID_TEXT,))
                b += text_id(job_id)
                prev = -2
                head = ""
            else:
                if value == prev + 1:
                    b = bytearray((common | _ID_NEXT,))
                else:
                    b = bytearray((common,))
                    b += value.to_bytes(16, "big")
                prev = value
                head = job_id[:24]
            b += extra
            put_uvarint(b, len(payload))
            append(b)
        append(payload)
    return b"".join(parts)


def id_key(job_id: str) -> bytes | None:
    """The 16 bytes a canonical id is stored as, or None for an id stored as text."""
    value = ids.decode(job_id)
    return None if value is None else value.to_bytes(16, "big")


def encode_claim(job_id: str, attempts: int, at: float, lease: float,
                 key: bytes | None = None) -> bytes:
    """``key`` may pass ``id_key(job_id)`` when the caller has it already."""
    if key is None:
        key = id_key(job_id)
    if key is not None and 0 < attempts < 0x80 and 0 <= lease < 64 and lease.is_integer() \
            and at - at == 0.0:
        # The common case in one pack: canonical id, small attempts, whole-second lease.
        return _CLAIM_SHORT.pack(_T_CLAIM, 0, key, attempts, at, int(lease) << 1)
    buf = _one(_T_CLAIM, 0, job_id)
    put_uvarint(buf, attempts)
    put_time(buf, at)
    put_dur(buf, lease)
    return bytes(buf)


def encode_renew(job_id: str, expires: float) -> bytes:
    buf = _one(_T_RENEW, 0, job_id)
    put_time(buf, expires)
    return bytes(buf)


def encode_ack(job_id: str, keep: bool, at: float, key: bytes | None = None) -> bytes:
    """``at`` (completed_at) is stored only when the record is kept: it is never seen else.

    ``key`` may pass ``id_key(job_id)`` when the caller has it already.
    """
    if keep:
        buf = _one(_T_ACK, F_KEEP, job_id)
        put_time(buf, at)
        return bytes(buf)
    if key is None:
        key = id_key(job_id)
    if key is not None:
        return _ACK_DROP + key
    return bytes(_one(_T_ACK, 0, job_id))


def encode_fail(job_id: str, to: int, at: float, run_at: float | None,
                error: str | None) -> bytes:
    """``at`` (failed_at) is stored only for TO_DEAD, ``run_at`` exactly for TO_SCHEDULED."""
    if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
        raise ValueError(f"bad destination {to!r} for a failed job")
    if (to == TO_SCHEDULED) != (run_at is not None):
        raise ValueError("run_at is given exactly when a failed job is scheduled")
    buf = _one(_T_FAIL, to << 1 | (0 if error is None else F_ERROR), job_id)
    if to == TO_DEAD:
        put_time(buf, at)
    elif run_at is not None:
        put_time(buf, run_at)
    if error is not None:
        put_str(buf, error)
    return bytes(buf)


def encode_cancel(job_id: str) -> bytes:
    return bytes(_one(_T_CANCEL, 0, job_id))


def encode_requeue_dead(job_id: str) -> bytes:
    return bytes(_one(_T_REQUEUE_DEAD, 0, job_id))


def encode_promote(job_ids: Sequence[str]) -> bytes:
    return _id_list(_T_PROMOTE, job_ids)


def encode_purge(job_ids: Sequence[str]) -> bytes:
    return _id_list(_T_PURGE, job_ids)


def encode_release(job_ids: Sequence[str]) -> bytes:
    return _id_list(_T_RELEASE, job_ids)


def encode_kv_delete(keys: Sequence[bytes]) -> bytes:
    buf = bytearray((_T_KV_DELETE,))
    put_uvarint(buf, len(keys))
    for key in keys:
        put_blob(buf, key)
    return bytes(buf)


def encode_intake(producer: str, seq: int, at: float, records: Sequence[bytes]) -> bytes:
    """INTAKE: one inbox object taken in: its events (ordinary records, applied in order)
    and the producer's new high-water mark, in one record so they commit together::

        tag | str producer | uvarint seq | f64 at | uvarint n | n x bytes record
    """
    buf = bytearray((_T_INTAKE,))
    put_str(buf, producer)
    put_uvarint(buf, seq)
    put_time(buf, at)
    put_uvarint(buf, len(records))
    for record in records:
        put_blob(buf, record)
    return bytes(buf)


def encode_inbox_forget(producers: Sequence[str]) -> bytes:
    """INBOX_FORGET: drop the marks of quiet producers: tag | uvarint n | n x str producer"""
    buf = bytearray((_T_INBOX_FORGET,))
    put_uvarint(buf, len(producers))
    for producer in producers:
        put_str(buf, producer)
    return bytes(buf)


# -- decoding --------------------------------------------------------------------------------


def _one_id(r: Reader, flags: int) -> str:
    return r.text_id() if flags & F_TEXT_ID else r.value_id()


def _d_enqueue(r: Reader) -> tuple[Any, ...]:
    queue = r.text()
    if not queue:
        raise Corrupt("empty queue name")
    at = r.time()
    head = r.uvarint()
    count = head >> 1
    if count < 1 or count * 2 > r.end - r.pos:
        raise Corrupt(f"bad job count {count}")
    jobs: list[NewJob] = []
    prev = -2
    text = ""
    successor = ids.successor
    for _ in range(count):
        flags = r.flags(_J_KNOWN)
        form = flags & _ID_FORM
        if form == _ID_NEXT:
            if prev < 0:
                raise Corrupt("an id given as 'previous + 1' follows no canonical id")
            prev += 1
            if prev > _MAX_ID_VALUE:
                raise Corrupt("job id value out of range")
            job_id = text = successor(text, prev)
        elif form == _ID_VALUE:
            prev = r.id_value()
            job_id = text = ids.encode(prev)
        elif form == _ID_TEXT:
            job_id = r.text_id()
            prev = -2
        else:
            raise Corrupt(f"unknown job id form {form}")
        priority = r.u32("priority") if flags & J_PRIORITY else DEFAULT_PRIORITY
        max_attempts = r.positive("max_attempts") if flags & J_MAX_ATTEMPTS \
            else DEFAULT_MAX_ATTEMPTS
        run_at = r.time() if flags & J_RUN_AT else None
        dedup_key = r.text() if flags & J_DEDUP else None
        if dedup_key == "":
            raise Corrupt("empty dedup key")
        headers = r.headers() if flags & J_HEADERS else None
        if headers is not None and not headers:
            raise Corrupt("empty headers present")
        jobs.append((job_id, r.blob(), priority, max_attempts, run_at, dedup_key, headers))
    kv: list[tuple[bytes, bytes]] = []
    if head & 1:
        n = r.count(2)
        if n < 1:
            raise Corrupt("empty KV writes present")
        for _ in range(n):
            key = r.blob()
            kv.append((key, r.blob()))
    return queue, at, jobs, kv


def _d_claim(r: Reader) -> tuple[Any, ...]:
    job_id = _one_id(r, r.flags(F_TEXT_ID))
    attempts = r.positive("attempts")
    at = r.time()
    return job_id, attempts, at, r.dur()


def _d_renew(r: Reader) -> tuple[Any, ...]:
    return _one_id(r, r.flags(F_TEXT_ID)), r.time()


def _d_ack(r: Reader) -> tuple[Any, ...]:
    flags = r.flags(F_TEXT_ID | F_KEEP)
    job_id = _one_id(r, flags)
    keep = bool(flags & F_KEEP)
    return job_id, keep, r.time() if keep else None


def _d_fail(r: Reader) -> tuple[Any, ...]:
    flags = r.flags(F_TEXT_ID | _FAIL_TO | F_ERROR)
    to = (flags & _FAIL_TO) >> 1
    if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
        raise Corrupt(f"unknown destination {to}")
    job_id = _one_id(r, flags)
    at = r.time() if to == TO_DEAD else None
    run_at = r.time() if to == TO_SCHEDULED else None
    error = r.text() if flags & F_ERROR else None
    return job_id, to, at, run_at, error


def _d_one(r: Reader) -> tuple[Any, ...]:
    return (_one_id(r, r.flags(F_TEXT_ID)),)


def _d_ids(r: Reader) -> tuple[Any, ...]:
    return (r.id_list(),)


def _d_kv_delete(r: Reader) -> tuple[Any, ...]:
    return ([r.blob() for _ in range(r.count(1))],)


def _d_intake(r: Reader) -> tuple[Any, ...]:
    producer = r.text()
    if not producer:
        raise Corrupt("empty producer id")
    seq = r.uvarint()
    at = r.time()
    records = [r.blob() for _ in range(r.count(1))]
    for record in records:
        if not record or record[0] in (_T_INTAKE, _T_INBOX_FORGET):
            raise Corrupt("an intake holds an empty or nested intake record")
    return producer, seq, at, records


def _d_inbox_forget(r: Reader) -> tuple[Any, ...]:
    return ([r.text() for _ in range(r.count(1))],)


_DECODERS: dict[int, Callable[[Reader], tuple[Any, ...]]] = {
    _T_ENQUEUE: _d_enqueue, _T_CLAIM: _d_claim, _T_RENEW: _d_renew, _T_ACK: _d_ack,
    _T_FAIL: _d_fail, _T_CANCEL: _d_one, _T_REQUEUE_DEAD: _d_one, _T_PROMOTE: _d_ids,
    _T_PURGE: _d_ids, _T_RELEASE: _d_ids, _T_KV_DELETE: _d_kv_delete,
    _T_INTAKE: _d_intake, _T_INBOX_FORGET: _d_inbox_forget,
}


def decode(data: bytes) -> tuple[int, tuple[Any, ...]]:
    """``(kind, args)`` of one record; ``args`` are the matching ``State.on_*`` arguments.

    ENQUEUE: (queue, at, [NewJob], [(key, value)]); CLAIM: (id, attempts, at, lease);
    RENEW: (id, expires); ACK: (id, keep, at or None); FAIL: (id, to, at or None,
    run_at or None, error or None); CANCEL, REQUEUE_DEAD: (id,); PROMOTE, PURGE, RELEASE:
    ([id],); KV_DELETE: ([key],).
    """
    t = check_tag(data)
    kind = t & 0x0F
    decoder = _DECODERS.get(t)
    if decoder is None:
        raise CorruptionError(f"unknown queue record kind {kind}")
    r = Reader(data, 1)
    try:
        args = decoder(r)
        r.finish()
    except Corrupt as exc:
        raise CorruptionError(f"malformed {KIND_NAMES[kind]} record ({len(data)} bytes): "
                              f"{exc}") from None
    return kind, args

