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
    INTAKE     tag | str producer | uvarint seq | f64 at | uvarint n | n x bytes record
               (ordinary records, applied in order, then the producer's mark is set)
    INBOX_FORGET  tag | uvarint n | n x str producer

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
from typing import NamedTuple, Union

from ..errors import CorruptionError
from .codec import (
    F_TEXT_ID,
    Corrupt,
    Reader,
    check_tag,
    id_key,
    id_list_record,
    id_text,
    put_blob,
    put_dur,
    put_str,
    put_time,
    put_uvarint,
    single_head,
    single_id,
    tag,
)

# The ENQUEUE event and its format constants live in enqueue.py; they are part of this API.
from .enqueue import DEFAULT_MAX_ATTEMPTS as DEFAULT_MAX_ATTEMPTS
from .enqueue import DEFAULT_PRIORITY as DEFAULT_PRIORITY
from .enqueue import ENQUEUE as ENQUEUE
from .enqueue import J_DEDUP as J_DEDUP
from .enqueue import J_HEADERS as J_HEADERS
from .enqueue import J_MAX_ATTEMPTS as J_MAX_ATTEMPTS
from .enqueue import J_PRIORITY as J_PRIORITY
from .enqueue import J_RUN_AT as J_RUN_AT
from .enqueue import Enqueued as Enqueued
from .enqueue import JobSpec as JobSpec

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

KIND_NAMES = {  # for messages
    ENQUEUE: "enqueue", CLAIM: "claim", RENEW: "renew", ACK: "ack", FAIL: "fail",
    CANCEL: "cancel", REQUEUE_DEAD: "requeue_dead", PROMOTE: "promote", PURGE: "purge",
    KV_DELETE: "kv_delete", RELEASE: "release", INTAKE: "intake",
    INBOX_FORGET: "inbox_forget", SNAPSHOT: "snapshot",
}

# Where a failed attempt sends the job (FAIL records).
TO_PENDING = 0
TO_SCHEDULED = 1
TO_DEAD = 2

# single-job record flags (F_TEXT_ID, bit 0, is in codec.py)
F_KEEP = 0x02  # ACK
_FAIL_TO = 0x06  # FAIL: destination << 1
F_ERROR = 0x08  # FAIL


_T_ENQUEUE = tag(ENQUEUE)
_T_CLAIM = tag(CLAIM)
_T_ACK = tag(ACK)
_T_INTAKE = tag(INTAKE)
_T_INBOX_FORGET = tag(INBOX_FORGET)
_CLAIM_SHORT = struct.Struct(">BB16sBdB")  # tag, flags, id, attempts, claimed_at, dur
_ACK_DROP = bytes((_T_ACK, 0))


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


# An event an inbox submission can hold (inside an Intake).
Submitted = Union[Enqueued, Cancelled, DeadRequeued]  # noqa: UP007


class Intake(NamedTuple):
    """One inbox object taken in: its ``events`` in order, then ``producer``'s mark
    becomes ``(seq, at)``; in one record so that they commit together."""

    producer: str
    seq: int
    at: float
    events: Sequence[Event]

    def encode(self) -> bytes:
        buf = bytearray((tag(INTAKE),))
        put_str(buf, self.producer)
        put_uvarint(buf, self.seq)
        put_time(buf, self.at)
        put_uvarint(buf, len(self.events))
        for event in self.events:
            if isinstance(event, (Intake, InboxForgot)):
                raise ValueError("an intake cannot hold an intake or inbox-forget event")
            put_blob(buf, event.encode())
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Intake:
        producer = r.text()
        if not producer:
            raise Corrupt("empty producer id")
        seq = r.uvarint()
        at = r.time()
        records = [r.blob() for _ in range(r.count(1))]
        inner: list[Event] = []
        for record in records:
            if not record or record[0] in (_T_INTAKE, _T_INBOX_FORGET):
                raise Corrupt("an intake holds an empty or nested intake record")
            inner.append(decode(record))
        return cls(producer, seq, at, inner)


class InboxForgot(NamedTuple):
    """The marks of producers gone quiet are dropped."""

    producers: Sequence[str]

    def encode(self) -> bytes:
        buf = bytearray((tag(INBOX_FORGET),))
        put_uvarint(buf, len(self.producers))
        for producer in self.producers:
            put_str(buf, producer)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> InboxForgot:
        return cls([r.text() for _ in range(r.count(1))])


# Any event: what State.apply takes and decode returns.
Event = Union[Enqueued, Claimed, Renewed, Acked, Failed, Cancelled, DeadRequeued,  # noqa: UP007
              Promoted, Purged, KvDeleted, Released, Intake, InboxForgot]
# The record kind of each event type.
KIND_OF: dict[type[Event], int] = {
    Enqueued: ENQUEUE, Claimed: CLAIM, Renewed: RENEW, Acked: ACK, Failed: FAIL,
    Cancelled: CANCEL, DeadRequeued: REQUEUE_DEAD, Promoted: PROMOTE, Purged: PURGE,
    KvDeleted: KV_DELETE, Released: RELEASE, Intake: INTAKE, InboxForgot: INBOX_FORGET}
EVENT_TYPES: tuple[type[Event], ...] = tuple(KIND_OF)
_READERS: dict[int, Callable[[Reader], Event]] = {
    tag(kind): cls.read for cls, kind in KIND_OF.items()}


_CLAIM_SHORT_SIZE = _CLAIM_SHORT.size
_ACK_DROP_SIZE = len(_ACK_DROP) + 16


def decode(data: bytes) -> Event:
    """The event of one record (raises ``CorruptionError`` naming what is wrong)."""
    # The two records a log holds most of, in the forms their encoders give them (a claim
    # in one pack, an ack that drops the job), read without a Reader: what the general
    # decoder would read from them, checked as strictly.
    size = len(data)
    if size == _CLAIM_SHORT_SIZE and data[0] == _T_CLAIM and not data[1] \
            and 0 < data[18] < 0x80 and not data[27] & 0x81:
        _, _, key, attempts, at, lease = _CLAIM_SHORT.unpack(data)
        if at - at == 0.0:  # finite
            return Claimed(id_text(key), attempts, at, float(lease >> 1))
    elif size == _ACK_DROP_SIZE and data[0] == _T_ACK and not data[1]:
        return Acked(id_text(data[2:]), False)
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
