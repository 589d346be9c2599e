"""The queue's events: one frozen class per state change, each encoded as one log record.

An event is what the state machine applies (``State.apply``) and what the log stores: the
queue makes one, encodes it and applies it (``Queue._commit``), and replay decodes the
record back into an equal event and applies that. ``decode`` dispatches on the record's tag.

Records are binary and as small as exact allows.

The log frames each record with its own length and CRC32 and knows nothing of what is
inside. The layout of every record is in RECORDS.md, beside this module.

What is left out, and why replay still rebuilds the same state: a job's sequence number
(the state numbers enqueued jobs in log order); a claim's expiry (the state computes
``claimed_at + lease``, the same float the queue computed); an ack's completion time when
the record is dropped, the time of a requeue (none of them is ever visible). A failure's
time is kept for the attempt history (core/attempts.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

from ..errors import CorruptionError
from .attempts import CAUSE_HANDLER, CAUSES
from .codec import (
    EXTENDED,
    F_TEXT_ID,
    Corrupt,
    Reader,
    check_tag,
    extended_head,
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
from .schedule import X_SCHEDULE_FIRED as X_SCHEDULE_FIRED
from .schedule import X_SCHEDULE_REMOVED as X_SCHEDULE_REMOVED
from .schedule import X_SCHEDULE_SET as X_SCHEDULE_SET
from .schedule import ScheduleFired as ScheduleFired
from .schedule import ScheduleRemoved as ScheduleRemoved
from .schedule import ScheduleSet as ScheduleSet

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

# Sub-kinds of EXTENDED records.
X_KV_PUT = 1
X_SETTLED = 2

KIND_NAMES = {  # for messages
    ENQUEUE: "enqueue",
    CLAIM: "claim",
    RENEW: "renew",
    ACK: "ack",
    FAIL: "fail",
    CANCEL: "cancel",
    REQUEUE_DEAD: "requeue_dead",
    PROMOTE: "promote",
    PURGE: "purge",
    KV_DELETE: "kv_delete",
    RELEASE: "release",
    INTAKE: "intake",
    INBOX_FORGET: "inbox_forget",
    EXTENDED: "extended",
    SNAPSHOT: "snapshot",
}
X_NAMES = {  # for messages
    X_KV_PUT: "kv_put",
    X_SETTLED: "settled",
    X_SCHEDULE_SET: "schedule_set",
    X_SCHEDULE_REMOVED: "schedule_removed",
    X_SCHEDULE_FIRED: "schedule_fired",
}

# Where a failed attempt sends the job (FAIL records).
TO_PENDING = 0
TO_SCHEDULED = 1
TO_DEAD = 2

# single-job record flags (F_TEXT_ID, bit 0, is in codec.py)
F_KEEP = 0x02  # ACK
_FAIL_TO = 0x06  # FAIL: destination << 1
F_ERROR = 0x08  # FAIL
_FAIL_CAUSE = 0x30  # FAIL: cause << 4 (attempts.CAUSES)
F_AT = 0x40  # FAIL: the time of a failure that does not kill the job follows


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
        if (
            key is not None
            and 0 < attempts < 0x80
            and 0 <= lease < 64
            and lease.is_integer()
            and at - at == 0.0
        ):
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
    """An attempt failed with ``error`` at ``at``: the job goes to ``to``.

    ``to`` is TO_PENDING, TO_SCHEDULED (``run_at`` given) or TO_DEAD (``at``, the failure
    time, required: the job keeps it as ``failed_at``). ``cause`` is one of
    ``attempts.CAUSES``: why the attempt ended, for its history. Records written before
    causes and times of retried failures existed read back with cause 0 and ``at`` None.
    """

    job_id: str
    to: int
    at: float | None = None
    run_at: float | None = None
    error: str | None = None
    cause: int = CAUSE_HANDLER

    def encode(self) -> bytes:
        to = self.to
        if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
            raise ValueError(f"bad destination {to!r} for a failed job")
        if (to == TO_SCHEDULED) != (self.run_at is not None):
            raise ValueError("run_at is given exactly when a failed job is scheduled")
        if to == TO_DEAD and self.at is None:
            raise ValueError("a failed job that dies needs the failure time")
        if self.cause not in CAUSES:
            raise ValueError(f"bad cause {self.cause!r} for a failed job")
        flags = to << 1 | self.cause << 4 | (0 if self.error is None else F_ERROR)
        if self.at is not None and to != TO_DEAD:
            flags |= F_AT
        buf = single_head(FAIL, flags, self.job_id)
        if self.at is not None:
            put_time(buf, self.at)
        if self.run_at is not None:
            put_time(buf, self.run_at)
        if self.error is not None:
            put_str(buf, self.error)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Failed:
        flags = r.flags(F_TEXT_ID | _FAIL_TO | F_ERROR | _FAIL_CAUSE | F_AT)
        to = (flags & _FAIL_TO) >> 1
        if to not in (TO_PENDING, TO_SCHEDULED, TO_DEAD):
            raise Corrupt(f"unknown destination {to}")
        if to == TO_DEAD and flags & F_AT:
            raise Corrupt("a dead job's failure time is flagged as optional")
        job_id = single_id(r, flags)
        at = r.time() if to == TO_DEAD or flags & F_AT else None
        run_at = r.time() if to == TO_SCHEDULED else None
        error = r.text() if flags & F_ERROR else None
        return cls(job_id, to, at, run_at, error, (flags & _FAIL_CAUSE) >> 4)


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


class KvWritten(NamedTuple):
    """Keys get values in the KV namespace (``pairs`` of key and value, in order)."""

    pairs: Sequence[tuple[bytes, bytes]]

    def encode(self) -> bytes:
        buf = extended_head(X_KV_PUT)
        put_uvarint(buf, len(self.pairs))
        for key, value in self.pairs:
            put_blob(buf, key)
            put_blob(buf, value)
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> KvWritten:
        pairs = []
        for _ in range(r.count(2)):
            key = r.blob()
            pairs.append((key, r.blob()))
        return cls(pairs)


# What a settlement can do besides settling (inside a Settled).
Effect = Union[Enqueued, KvWritten, KvDeleted]  # noqa: UP007
_EFFECT_TYPES = (Enqueued, KvWritten, KvDeleted)


class Settled(NamedTuple):
    """A claim settled with effects: ``settlement`` (an ``Acked`` or ``Failed``), then each
    of ``effects`` in order, in one record so that they commit together or not at all."""

    settlement: Acked | Failed
    effects: Sequence[Effect]

    def encode(self) -> bytes:
        if not isinstance(self.settlement, (Acked, Failed)):
            raise ValueError("a settlement is an ack or a failure")
        buf = extended_head(X_SETTLED)
        put_blob(buf, self.settlement.encode())
        put_uvarint(buf, len(self.effects))
        for effect in self.effects:
            if not isinstance(effect, _EFFECT_TYPES):
                raise ValueError(f"a settlement cannot have a {type(effect).__name__} effect")
            put_blob(buf, effect.encode())
        return bytes(buf)

    @classmethod
    def read(cls, r: Reader) -> Settled:
        settlement = _inner(r.blob())
        if not isinstance(settlement, (Acked, Failed)):
            raise Corrupt(f"a settled record settles with a {type(settlement).__name__}")
        effects: list[Effect] = []
        for _ in range(r.count(1)):
            effect = _inner(r.blob())
            if not isinstance(effect, _EFFECT_TYPES):
                raise Corrupt(f"a settled record holds a {type(effect).__name__} effect")
            effects.append(effect)
        return cls(settlement, effects)


def _inner(data: bytes) -> Event:
    """The event of a record nested in a SETTLED one (``Corrupt`` if it does not decode,
    or is itself an EXTENDED record: the kinds that may be nested are all older)."""
    if data[:1] == bytes((tag(EXTENDED),)) and data[1:2] != bytes((X_KV_PUT,)):
        raise Corrupt("a settled record nests an extended record other than kv_put")
    try:
        return decode(data)
    except CorruptionError as exc:
        raise Corrupt(f"nested record: {exc}") from None


def decode_schedule(data: bytes) -> ScheduleSet:
    """A schedule as a snapshot stores it (``Corrupt`` unless a SCHEDULE_SET record)."""
    try:
        event = decode(data)
    except CorruptionError as exc:
        raise Corrupt(f"schedule: {exc}") from None
    if not isinstance(event, ScheduleSet):
        raise Corrupt(f"a schedule is stored as a {type(event).__name__} record")
    return event


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
Event = Union[  # noqa: UP007
    Enqueued,
    Claimed,
    Renewed,
    Acked,
    Failed,
    Cancelled,
    DeadRequeued,
    Promoted,
    Purged,
    KvDeleted,
    Released,
    Intake,
    InboxForgot,
    KvWritten,
    Settled,
    ScheduleSet,
    ScheduleRemoved,
    ScheduleFired,
]
# The record kind of each event type.
KIND_OF: dict[type[Event], int] = {
    Enqueued: ENQUEUE,
    Claimed: CLAIM,
    Renewed: RENEW,
    Acked: ACK,
    Failed: FAIL,
    Cancelled: CANCEL,
    DeadRequeued: REQUEUE_DEAD,
    Promoted: PROMOTE,
    Purged: PURGE,
    KvDeleted: KV_DELETE,
    Released: RELEASE,
    Intake: INTAKE,
    InboxForgot: INBOX_FORGET,
    KvWritten: EXTENDED,
    Settled: EXTENDED,
    ScheduleSet: EXTENDED,
    ScheduleRemoved: EXTENDED,
    ScheduleFired: EXTENDED,
}
# The sub-kind of each EXTENDED event type.
SUB_KIND_OF: dict[type[Event], int] = {
    KvWritten: X_KV_PUT,
    Settled: X_SETTLED,
    ScheduleSet: X_SCHEDULE_SET,
    ScheduleRemoved: X_SCHEDULE_REMOVED,
    ScheduleFired: X_SCHEDULE_FIRED,
}
EVENT_TYPES: tuple[type[Event], ...] = tuple(KIND_OF)
_READERS: dict[int, Callable[[Reader], Event]] = {
    tag(kind): cls.read for cls, kind in KIND_OF.items() if kind != EXTENDED
}
_X_READERS: dict[int, Callable[[Reader], Event]] = {
    sub: cls.read for cls, sub in SUB_KIND_OF.items()
}


_CLAIM_SHORT_SIZE = _CLAIM_SHORT.size
_ACK_DROP_SIZE = len(_ACK_DROP) + 16


def decode(data: bytes) -> Event:
    """The event of one record (raises ``CorruptionError`` naming what is wrong)."""
    # The two records a log holds most of, in the forms their encoders give them (a claim
    # in one pack, an ack that drops the job), read without a Reader: what the general
    # decoder would read from them, checked as strictly.
    size = len(data)
    if (
        size == _CLAIM_SHORT_SIZE
        and data[0] == _T_CLAIM
        and not data[1]
        and 0 < data[18] < 0x80
        and not data[27] & 0x81
    ):
        _, _, key, attempts, at, lease = _CLAIM_SHORT.unpack(data)
        if at - at == 0.0:  # finite
            return Claimed(id_text(key), attempts, at, float(lease >> 1))
    elif size == _ACK_DROP_SIZE and data[0] == _T_ACK and not data[1]:
        return Acked(id_text(data[2:]), False)
    t = check_tag(data)
    r = Reader(data, 1)
    name = KIND_NAMES.get(t & 0x0F)
    try:
        if t & 0x0F == EXTENDED:
            sub = r.uvarint()
            reader = _X_READERS.get(sub)
            if reader is None:
                raise CorruptionError(
                    f"unknown extended queue record kind {sub} (written by a newer build?)"
                )
            name = X_NAMES[sub]
        else:
            reader = _READERS.get(t)
            if reader is None:
                raise CorruptionError(f"unknown queue record kind {t & 0x0F}")
        event = reader(r)
        r.finish()
    except Corrupt as exc:
        raise CorruptionError(f"malformed {name} record ({len(data)} bytes): {exc}") from None
    return event
