"""The queue's events: one frozen class per state change, each encoded as one log record.

An event is what the state machine applies (``State.apply``) and what the log stores: the
queue makes one, encodes it and applies it (``Queue._commit``), and replay decodes the
record back into an equal event and applies that. ``decode`` dispatches on the record's tag.

Records are binary and as small as exact allows.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Union

from ..errors import CorruptionError
from . import ids
from .codec import (
    F_TEXT_ID,
    Corrupt,
    Reader,
    check_tag,
    id_key,
    id_list_record,
    put_blob,
    put_dur,
    put_headers,
    put_str,
    put_time,
    put_uvarint,
    single_head,
    single_id,
    tag,
    text_id,
)

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
SNAPSHOT = 15  # see snapshot.py

KIND_NAMES = {  # for messages
    ENQUEUE: "enqueue", CLAIM: "claim", RENEW: "renew", ACK: "ack", FAIL: "fail",
    CANCEL: "cancel", REQUEUE_DEAD: "requeue_dead", PROMOTE: "promote", PURGE: "purge",
    KV_DELETE: "kv_delete", RELEASE: "release", SNAPSHOT: "snapshot",
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

# single-job record flags (F_TEXT_ID, bit 0, is in codec.py)
F_KEEP = 0x02  # ACK
_FAIL_TO = 0x06  # FAIL: destination << 1
F_ERROR = 0x08  # FAIL

_MAX_ID_VALUE = (1 << 128) - 1

_T_ENQUEUE = tag(ENQUEUE)
_T_CLAIM = tag(CLAIM)
_T_ACK = tag(ACK)
_CLAIM_SHORT = struct.Struct(">BB16sBdB")  # tag, flags, id, attempts, claimed_at, dur
_ACK_DROP = bytes((_T_ACK, 0))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The options of one enqueued job that the event's common values do not cover."""

    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: float | None = None  # scheduled: not claimable before
    dedup_key: str | None = None
    headers: Mapping[str, str] | None = None  # None or non-empty


class Enqueued(NamedTuple):
    """New jobs of ``queue`` at ``at``, numbered in order by the state; then KV writes.

    Job ``i`` is ``ids[i]`` with ``payloads[i]``. With ``specs`` None every job has the
    event's ``priority`` and ``max_attempts`` and nothing else (``enqueue_batch``, and
    plain enqueues made together): the common case, encoded and applied on a fast path.
    Otherwise ``specs[i]`` gives job ``i``'s own options, or None for the common ones.
    """

    queue: str
    at: float
    ids: Sequence[str]
    payloads: Sequence[bytes]
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    specs: Sequence[JobSpec | None] | None = None
    kv: Sequence[tuple[bytes, bytes]] = ()

    def encode(self) -> bytes:
        n = len(self.ids)
        if n < 1:
            raise ValueError("an enqueue record holds at least one job")
        if len(self.payloads) != n or (self.specs is not None and len(self.specs) != n):
            raise ValueError(f"{n} ids for {len(self.payloads)} payloads")
        buf = bytearray((tag(ENQUEUE),))
        put_str(buf, self.queue)
        put_time(buf, self.at)
        put_uvarint(buf, n << 1 | bool(self.kv))
        parts: list[bytes | bytearray] = [buf]
        append = parts.append
        common = 0  # the flags and fields of a job without a spec
        extra = bytearray()
        if self.priority != DEFAULT_PRIORITY:
            common |= J_PRIORITY
            put_uvarint(extra, self.priority)
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS:
            common |= J_MAX_ATTEMPTS
            put_uvarint(extra, self.max_attempts)
        specs = self.specs
        if n == 1 and specs is None and not self.kv:
            # One plain job (a lone enqueue): no run of ids to look for.
            job_id = self.ids[0]
            payload = self.payloads[0]
            value = ids.decode(job_id)
            buf.append(common | (_ID_TEXT if value is None else _ID_VALUE))
            buf += text_id(job_id) if value is None else value.to_bytes(16, "big")
            buf += extra
            put_uvarint(buf, len(payload))
            return bytes(buf) + payload
        decode_id = ids.decode
        tails = ids.TAILS
        # Before a plain job's payload: bytes that depend only on the payload's length when
        # its id is the one after the previous job's (a generated batch), made once a length.
        next_heads: dict[int, bytes] = {}
        head = ""  # the first 24 digits of the previous id, if it is canonical
        prev = -2  # the value of the previous id, if it is canonical
        for i, (job_id, payload) in enumerate(zip(self.ids, self.payloads)):
            spec = None if specs is None else specs[i]
            low = (prev + 1) & 0xFF
            if spec is None and low and head and job_id[24:] == tails[low] \
                    and job_id[:24] == head and len(job_id) == 26:
                # The next value, recognised from the text without decoding it (ids.py).
                prev += 1
                size = len(payload)
                h = next_heads.get(size)
                if h is None:
                    b = bytearray((common | _ID_NEXT,))
                    b += extra
                    put_uvarint(b, size)
                    h = next_heads[size] = bytes(b)
                append(h)
                append(payload)  # copied once, by the join
                continue
            value = decode_id(job_id)
            if value is None:
                flags = _ID_TEXT
            elif value == prev + 1:
                flags = _ID_NEXT
            else:
                flags = _ID_VALUE
            b = bytearray()
            if spec is None:
                b.append(flags | common)
                fields = extra
            else:
                fields = bytearray()
                if spec.priority != DEFAULT_PRIORITY:
                    flags |= J_PRIORITY
                    put_uvarint(fields, spec.priority)
                if spec.max_attempts != DEFAULT_MAX_ATTEMPTS:
                    flags |= J_MAX_ATTEMPTS
                    put_uvarint(fields, spec.max_attempts)
                if spec.run_at is not None:
                    flags |= J_RUN_AT
                    put_time(fields, spec.run_at)
                if spec.dedup_key is not None:
                    flags |= J_DEDUP
                    put_str(fields, spec.dedup_key)
                if spec.headers:
                    flags |= J_HEADERS
                    put_headers(fields, spec.headers)
                b.append(flags)
            if value is None:
                b += text_id(job_id)
                prev = -2
                head = ""
            else:
                if flags & _ID_FORM == _ID_VALUE:
                    b += value.to_bytes(16, "big")
                prev = value
                head = job_id[:24]
            b += fields
            put_uvarint(b, len(payload))
            append(b)
            append(payload)
        if self.kv:
            b = bytearray()
            put_uvarint(b, len(self.kv))
            for key, val in self.kv:
                put_blob(b, key)
                put_blob(b, val)
            append(b)
        return b"".join(parts)

    @classmethod
    def read(cls, r: Reader) -> Enqueued:
        queue = r.text()
        if not queue:
            raise Corrupt("empty queue name")
        at = r.time()
        head = r.uvarint()
        count = head >> 1
        if count < 1 or count * 2 > r.end - r.pos:
            raise Corrupt(f"bad job count {count}")
        job_ids: list[str] = []
        payloads: list[bytes] = []
        specs: list[JobSpec | None] | None = None
        common: tuple[int, int] | None = None
        prev = -2
        text = ""
        successor = ids.successor
        for i in range(count):
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
            spec = None
            if flags & (J_RUN_AT | J_DEDUP | J_HEADERS):
                run_at = r.time() if flags & J_RUN_AT else None
                dedup_key = r.text() if flags & J_DEDUP else None
                if dedup_key == "":
                    raise Corrupt("empty dedup key")
                headers = r.headers() if flags & J_HEADERS else None
                if headers is not None and not headers:
                    raise Corrupt("empty headers present")
                spec = JobSpec(priority, max_attempts, run_at, dedup_key, headers)
            elif common is None:
                common = (priority, max_attempts)
            elif common != (priority, max_attempts):
                spec = JobSpec(priority, max_attempts)
            if spec is not None and specs is None:
                specs = [None] * i
            if specs is not None:
                specs.append(spec)
            job_ids.append(job_id)
            payloads.append(r.blob())
        kv: list[tuple[bytes, bytes]] = []
        if head & 1:
            n = r.count(2)
            if n < 1:
                raise Corrupt("empty KV writes present")
            for _ in range(n):
                key = r.blob()
                kv.append((key, r.blob()))
        priority, max_attempts = common or (DEFAULT_PRIORITY, DEFAULT_MAX_ATTEMPTS)
        return cls(queue, at, job_ids, payloads, priority, max_attempts, specs, kv)


class Claimed(NamedTuple):
    """Attempt ``attempts`` of a job starts at ``at`` under a lease of ``lease`` seconds.

    The state computes the expiry as ``at + lease``, the same float the queue computes.
    ``key`` may carry ``id_key(job_id)`` when the caller has it already (not compared).
    """

    job_id: str
    attempts: int
    at: float
    lease: float
    key: bytes | None = None

    def encode(self) -> bytes:
        key = self.key
        if key is None:
            key = id_key(self.job_id)
        at, lease, attempts = self.at, self.lease, self.attempts
        if key is not None and 0 < attempts < 0x80 and 0 <= lease < 64 and lease.is_integer() \
                and at - at == 0.0:
            # The common case in one pack: canonical id, small attempts, whole-second lease.
            return _CLAIM_SHORT.pack(_T_CLAIM, 0, key, attempts, at, int(lease) << 1)
        buf = single_head(CLAIM, 0, self.job_id, key)
        put_uvarint(buf, attempts)
        put_time(buf, at)
        put_dur(buf, lease)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Claimed:
        job_id = single_id(r, r.flags(F_TEXT_ID))
        attempts = r.positive("attempts")
        at = r.time()
        return cls(job_id, attempts, at, r.dur())


class Renewed(NamedTuple):
    """The lease of a claimed job now ends at ``expires``."""

    job_id: str
    expires: float

    def encode(self) -> bytes:
        buf = single_head(RENEW, 0, self.job_id)
        put_time(buf, self.expires)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Renewed:
        return cls(single_id(r, r.flags(F_TEXT_ID)), r.time())


class Acked(NamedTuple):
    """A claimed job is done: retained as done at ``at`` if ``keep``, else dropped.

    ``at`` is given exactly when ``keep`` (a dropped job's completion is never seen).
    """

    job_id: str
    keep: bool
    at: float | None = None
    key: bytes | None = None

    def encode(self) -> bytes:
        if self.keep != (self.at is not None):
            raise ValueError("an ack has a completion time exactly when the job is kept")
        if self.at is not None:
            buf = single_head(ACK, F_KEEP, self.job_id)
            put_time(buf, self.at)
            return bytes(buf)
        key = self.key
        if key is None:
            key = id_key(self.job_id)
        if key is not None:
            return _ACK_DROP + key
        return bytes(single_head(ACK, 0, self.job_id))

    @classmethod
    def read(cls, r: Reader) -> Acked:
        flags = r.flags(F_TEXT_ID | F_KEEP)
        job_id = single_id(r, flags)
        keep = bool(flags & F_KEEP)
        return cls(job_id, keep, r.time() if keep else None)


class Failed(NamedTuple):
    """An attempt failed with ``error``: the job goes to ``to``.

    ``to`` is TO_PENDING, TO_SCHEDULED (``run_at`` given) or TO_DEAD (``at``, the failure
    time, given); the other time is None.
    """

    job_id: str
    to: int
    at: float | None = None
    run_at: float | None = None
    error: str | None = None

    def encode(self) -> bytes:
        to = self.to
        if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
            raise ValueError(f"bad destination {to!r} for a failed job")
        if (to == TO_SCHEDULED) != (self.run_at is not None):
            raise ValueError("run_at is given exactly when a failed job is scheduled")
        if (to == TO_DEAD) != (self.at is not None):
            raise ValueError("the failure time is given exactly when a failed job dies")
        buf = single_head(FAIL, to << 1 | (0 if self.error is None else F_ERROR), self.job_id)
        if self.at is not None:
            put_time(buf, self.at)
        elif self.run_at is not None:
            put_time(buf, self.run_at)
        if self.error is not None:
            put_str(buf, self.error)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Failed:
        flags = r.flags(F_TEXT_ID | _FAIL_TO | F_ERROR)
        to = (flags & _FAIL_TO) >> 1
        if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
            raise Corrupt(f"unknown destination {to}")
        job_id = single_id(r, flags)
        at = r.time() if to == TO_DEAD else None
        run_at = r.time() if to == TO_SCHEDULED else None
        error = r.text() if flags & F_ERROR else None
        return cls(job_id, to, at, run_at, error)


class Cancelled(NamedTuple):
    """A pending or scheduled job is removed; a claimed one is asked to stop."""

    job_id: str

    def encode(self) -> bytes:
        return bytes(single_head(CANCEL, 0, self.job_id))

    @classmethod
    def read(cls, r: Reader) -> Cancelled:
        return cls(single_id(r, r.flags(F_TEXT_ID)))


class DeadRequeued(NamedTuple):
    """A dead job goes back to pending with its attempts reset."""

    job_id: str

    def encode(self) -> bytes:
        return bytes(single_head(REQUEUE_DEAD, 0, self.job_id))

    @classmethod
    def read(cls, r: Reader) -> DeadRequeued:
        return cls(single_id(r, r.flags(F_TEXT_ID)))


class Promoted(NamedTuple):
    """Scheduled jobs whose time has come become pending."""

    job_ids: Sequence[str]

    def encode(self) -> bytes:
        return id_list_record(PROMOTE, self.job_ids)

    @classmethod
    def read(cls, r: Reader) -> Promoted:
        return cls(r.id_list())


class Purged(NamedTuple):
    """Retained done and dead jobs past their retention are dropped."""

    job_ids: Sequence[str]

    def encode(self) -> bytes:
        return id_list_record(PURGE, self.job_ids)

    @classmethod
    def read(cls, r: Reader) -> Purged:
        return cls(r.id_list())


class Released(NamedTuple):
    """Claimed jobs go back to pending without a failure (their holder is gone)."""

    job_ids: Sequence[str]

    def encode(self) -> bytes:
        return id_list_record(RELEASE, self.job_ids)

    @classmethod
    def read(cls, r: Reader) -> Released:
        return cls(r.id_list())


class KvDeleted(NamedTuple):
    """Keys leave the KV namespace (absent keys are fine)."""

    keys: Sequence[bytes]

    def encode(self) -> bytes:
        buf = bytearray((tag(KV_DELETE),))
        put_uvarint(buf, len(self.keys))
        for key in self.keys:
            put_blob(buf, key)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> KvDeleted:
        return cls([r.blob() for _ in range(r.count(1))])


# Any event: what State.apply takes and decode returns.
Event = Union[Enqueued, Claimed, Renewed, Acked, Failed, Cancelled, DeadRequeued,  # noqa: UP007
              Promoted, Purged, KvDeleted, Released]
# The record kind of each event type.
KIND_OF: dict[type[Event], int] = {
    Enqueued: ENQUEUE, Claimed: CLAIM, Renewed: RENEW, Acked: ACK, Failed: FAIL,
    Cancelled: CANCEL, DeadRequeued: REQUEUE_DEAD, Promoted: PROMOTE, Purged: PURGE,
    KvDeleted: KV_DELETE, Released: RELEASE}
EVENT_TYPES: tuple[type[Event], ...] = tuple(KIND_OF)
_READERS: dict[int, Callable[[Reader], Event]] = {
    tag(kind): cls.read for cls, kind in KIND_OF.items()}


def decode(data: bytes) -> Event:
    """The event of one record (raises ``CorruptionError`` naming what is wrong)."""
    t = check_tag(data)
    reader = _READERS.get(t)
    if reader is None:
        raise CorruptionError(f"unknown queue record kind {t & 0x0F}")
    r = Reader(data, 1)
    try:
        event = reader(r)
        r.finish()
    except Corrupt as exc:
        raise CorruptionError(f"malformed {KIND_NAMES[t & 0x0F]} record ({len(data)} bytes): "
                              f"{exc}") from None
    return event
