"""The binary encoding of records and snapshots: exact round trips, strict decoding, the
sizes the format promises, and a state rebuilt from its records equal to the live one."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import fsspec
import pytest
from support.clock import T0, ManualClock

from taquba import EnqueueOptions, OpenOptions, Queue, QueueConfig
from taquba.core import events as ev
from taquba.core import ids
from taquba.core import snapshot as snap
from taquba.core.attempts import ENTRY_BYTES
from taquba.core.codec import RECORD_FORMAT_VERSION
from taquba.core.state import JOB_BYTES, State
from taquba.errors import CorruptionError
from taquba.records import JobStatus

G = ids.IdGenerator()
A, B, C = G.new_many(T0, 3)
TEXT_IDS = ["user-job_1", "x", "A" * 128]
# A caller-chosen id that happens to be canonical is stored as a value and reads back equal.
CANONICAL_USER_ID = "01ARZ3NDEKTSV4RRFFQ69G5FA0"
ODD_TIME = 1_700_000_000.123_456_7


# One enqueued job as these tests write it: (id, payload, priority, max_attempts, run_at,
# dedup_key, headers).
NewJob = tuple[str, bytes, int, int, float | None, str | None, dict[str, str] | None]


def job(
    job_id: str,
    payload: bytes = b"p",
    priority: int = ev.DEFAULT_PRIORITY,
    max_attempts: int = ev.DEFAULT_MAX_ATTEMPTS,
    run_at: float | None = None,
    dedup_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> NewJob:
    return (job_id, payload, priority, max_attempts, run_at, dedup_key, headers)


def enqueued(
    queue: str, at: float, jobs: list[NewJob], kv: list[tuple[bytes, bytes]] | tuple[()] = ()
) -> ev.Enqueued:
    """An Enqueued event with a spec for every job (the general form)."""
    return ev.Enqueued(
        queue,
        at,
        [j[0] for j in jobs],
        [j[1] for j in jobs],
        specs=[ev.JobSpec(*j[2:]) for j in jobs],
        kv=list(kv),
    )


def plain(
    queue: str,
    at: float,
    job_ids: list[str],
    payloads: list[bytes],
    priority: int,
    max_attempts: int,
) -> ev.Enqueued:
    """An Enqueued event of jobs that share everything but id and payload (the fast form)."""
    return ev.Enqueued(queue, at, job_ids, payloads, priority, max_attempts)


def jobs_of(e: ev.Enqueued) -> list[NewJob]:
    out: list[NewJob] = []
    for i, (job_id, payload) in enumerate(zip(e.ids, e.payloads)):
        spec = None if e.specs is None else e.specs[i]
        if spec is None:
            out.append(job(job_id, payload, e.priority, e.max_attempts))
        else:
            out.append(
                job(
                    job_id,
                    payload,
                    spec.priority,
                    spec.max_attempts,
                    spec.run_at,
                    spec.dedup_key,
                    dict(spec.headers) if spec.headers else None,
                )
            )
    return out


def view(e: ev.Event) -> tuple[Any, ...]:
    """What an event means, whatever form it takes (specs or common values)."""
    if isinstance(e, ev.Enqueued):
        return ("enqueue", e.queue, e.at, jobs_of(e), [tuple(kv) for kv in e.kv])
    return (
        type(e).__name__,
        *(
            list(v) if isinstance(v, (list, tuple)) else v
            for name, v in zip(e._fields, e)
            if name != "key"
        ),
    )


def carry_ids() -> list[str]:
    """Consecutive canonical ids across a carry out of the last two digits."""
    start = (int(T0 * 1000) << 80) | 0xFD
    return [ids.encode(start + k) for k in range(6)]


ENQUEUES: list[tuple[str, str, float, list[NewJob], list[tuple[bytes, bytes]]]] = [
    ("plain", "jobs", T0, [job(A)], []),
    ("empty-payload", "jobs", ODD_TIME, [job(A, b"")], []),
    (
        "all-options",
        "é-queue",
        ODD_TIME,
        [
            job(
                "user-job_1",
                b"\x00" * 300,
                priority=0,
                max_attempts=2**31,
                run_at=T0 + 0.1,
                dedup_key="dédup",
                headers={"trace": "abc", "ünï": "cödé", "": ""},
            )
        ],
        [(b"k", b"v"), (b"\xff" * 1024, b"\x00" * 70_000)],
    ),
    ("max-priority", "q", T0, [job(B, priority=2**32 - 1, max_attempts=1)], []),
    (
        "batch-mixed",
        "jobs",
        T0,
        [
            job(A),
            job(B),
            job(C),
            job("x"),
            job(C),
            job(CANONICAL_USER_ID),
            job(A),
            *[job(i, bytes([k]) * k) for k, i in enumerate(carry_ids())],
            job("A" * 128, priority=5),
        ],
        [(b"key", b"")],
    ),
    ("large-payload", "jobs", T0, [job(A, b"y" * 100_000)], []),
]


def sample_events() -> list[tuple[str, ev.Event]]:
    """(name, event) of every event kind in its variants."""
    out: list[tuple[str, ev.Event]] = []
    for name, queue, at, jobs, kv in ENQUEUES:
        out.append((f"enqueue-{name}", enqueued(queue, at, jobs, kv)))
    out.append(
        (
            "enqueue-plain-batch",
            plain("jobs", T0, G.new_many(T0, 300), [b"z" * k for k in range(300)], 7, 2),
        )
    )
    for i, job_id in enumerate([A, *TEXT_IDS, CANONICAL_USER_ID]):
        for attempts, lease in [
            (1, 30.0),
            (200, 0.25),
            (3, 1e300),
            (1, 2.0**53),
            (7, 63.0),
            (1, 64.0),
        ]:
            out.append(
                (f"claim-{i}-{attempts}-{lease}", ev.Claimed(job_id, attempts, ODD_TIME, lease))
            )
        out.append((f"renew-{i}", ev.Renewed(job_id, ODD_TIME)))
        out.append((f"ack-drop-{i}", ev.Acked(job_id, False)))
        out.append((f"ack-keep-{i}", ev.Acked(job_id, True, ODD_TIME)))
        out.append((f"fail-dead-{i}", ev.Failed(job_id, ev.TO_DEAD, ODD_TIME, None, "bóom")))
        out.append(
            (
                f"fail-scheduled-{i}",
                ev.Failed(job_id, ev.TO_SCHEDULED, None, ODD_TIME, "x" * 20_000),
            )
        )
        out.append((f"fail-pending-{i}", ev.Failed(job_id, ev.TO_PENDING)))
        out.append((f"cancel-{i}", ev.Cancelled(job_id)))
        out.append((f"requeue-{i}", ev.DeadRequeued(job_id)))
    mixed = [A, "x", B, "A" * 128, CANONICAL_USER_ID]
    for cls in (ev.Promoted, ev.Purged, ev.Released):
        out.append((f"{ev.KIND_NAMES[ev.KIND_OF[cls]]}-mixed", cls(mixed)))
        out.append((f"{ev.KIND_NAMES[ev.KIND_OF[cls]]}-empty", cls([])))
    out.append(("kv-delete", ev.KvDeleted([b"a", b"\x00" * 300, b""])))
    out.append(("kv-put", ev.KvWritten([(b"a", b"b"), (b"\x00" * 300, b"\xff" * 70_000)])))
    out.append(
        (
            "settled-ack",
            ev.Settled(
                ev.Acked(A, True, ODD_TIME),
                [
                    enqueued("next", T0, [job(B, b"n", run_at=T0 + 5, dedup_key="d")], []),
                    ev.KvWritten([(b"k", b"v")]),
                    ev.KvDeleted([b"x"]),
                ],
            ),
        )
    )
    out.append(
        (
            "settled-dead",
            ev.Settled(ev.Failed("x", ev.TO_DEAD, ODD_TIME, None, "e"), [ev.KvDeleted([b"x"])]),
        )
    )
    out.append(("settled-nothing", ev.Settled(ev.Acked(A, False), [])))
    out.append(
        (
            "schedule-set",
            ev.ScheduleSet("nightly", "30 2 * * *", "Europe/Paris", "q", b"\x00p", ODD_TIME),
        )
    )
    out.append(
        (
            "schedule-set-all",
            ev.ScheduleSet(
                "é", "@hourly", "America/New_York", "q", b"", T0, ODD_TIME, 0, 2**32 - 1, {"a": "b"}
            ),
        )
    )
    out.append(("schedule-removed", ev.ScheduleRemoved("é")))
    out.append(("schedule-fired", ev.ScheduleFired("n", T0, ODD_TIME)))
    out.append(
        (
            "schedule-fired-job",
            ev.ScheduleFired(
                "n",
                T0,
                ODD_TIME,
                enqueued(
                    "q", T0, [job(A, b"p", dedup_key="taquba-schedule:n:1", headers={"h": "v"})], []
                ),
            ),
        )
    )
    return out


def sample_records() -> list[tuple[str, bytes, int, ev.Event]]:
    """(name, record, kind, event) of every record kind in its variants."""
    return [(name, e.encode(), ev.KIND_OF[type(e)], e) for name, e in sample_events()]


SAMPLES = sample_records()


@pytest.mark.parametrize(
    ("record", "kind", "args"), [s[1:] for s in SAMPLES], ids=[s[0] for s in SAMPLES]
)
def test_every_record_round_trips_exactly(record: bytes, kind: int, args: ev.Event) -> None:
    assert record[0] == RECORD_FORMAT_VERSION << 4 | kind
    got = ev.decode(record)
    assert type(got) is type(args)
    assert view(got) == view(args)
    assert got.encode() == record
    for a, b in zip(_floats(view(got)), _floats(view(args))):  # bit-exact, not just ==
        assert struct.pack(">d", a) == struct.pack(">d", b)


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, (tuple, list)):
        return [f for v in value for f in _floats(v)]
    return []


def test_claim_expiry_is_the_float_the_queue_computed() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        at = T0 + rng.random() * 1e6
        lease = rng.choice([30.0, 0.1, rng.random() * 100, float(rng.randrange(1, 10**6))])
        got = ev.decode(ev.Claimed(A, 1, at, lease).encode())
        assert isinstance(got, ev.Claimed)
        assert got.at + got.lease == at + lease


@pytest.mark.parametrize("priority", [ev.DEFAULT_PRIORITY, 0, 100, 2**32 - 1])
@pytest.mark.parametrize("max_attempts", [ev.DEFAULT_MAX_ATTEMPTS, 1, 200])
def test_plain_enqueue_encoding_is_the_general_one(priority: int, max_attempts: int) -> None:
    rng = random.Random(priority ^ max_attempts)
    # Decoys end like the id after the previous one but differ in front: not "previous + 1".
    va = ids.decode(A)
    assert va is not None
    carry_last = ids.decode(carry_ids()[2])  # ends in ...FF: its successor ends in "00"
    assert carry_last is not None and carry_last & 0xFF == 0xFF
    decoys = [
        A,
        ids.encode((va + 1) ^ (1 << 100)),
        carry_ids()[2],
        ids.encode((carry_last + 1) ^ (1 << 90)),
        carry_ids()[2],
        carry_ids()[3],
    ]
    batches = [
        G.new_many(T0, 1000),
        carry_ids(),
        decoys,
        [A, B, C, "x", C, B, CANONICAL_USER_ID, A, *carry_ids(), "y" * 128],
        ["a", "b"],
    ]
    for job_ids in batches:
        payloads = [rng.randbytes(rng.choice([0, 5, 127, 128, 300, 16_384])) for _ in job_ids]
        general = enqueued(
            "jobs", T0, [job(i, p, priority, max_attempts) for i, p in zip(job_ids, payloads)]
        ).encode()
        record = plain("jobs", T0, job_ids, payloads, priority, max_attempts).encode()
        assert record == general
        got = ev.decode(record)
        assert isinstance(got, ev.Enqueued) and got.specs is None  # read back in plain form
        assert list(got.ids) == job_ids and list(got.payloads) == payloads


def test_consecutive_ids_of_a_batch_cost_no_id_bytes() -> None:
    job_ids = G.new_many(T0, 1000)
    record = plain("jobs", T0, job_ids, [b"x" * 64] * 1000, 1000, 3).encode()
    # head (tag, name, time, count) + first id + per job: flags, length, payload
    assert len(record) <= 1 + 5 + 8 + 2 + 16 + 1000 * (1 + 1 + 64)


def test_encoders_refuse_what_no_decoder_would_accept() -> None:
    with pytest.raises(ValueError):
        enqueued("jobs", T0, []).encode()
    with pytest.raises(ValueError):
        enqueued("jobs", math.nan, [job(A)]).encode()
    with pytest.raises(ValueError):
        ev.Enqueued("jobs", T0, [A, B], [b"one payload"]).encode()
    with pytest.raises(ValueError):
        ev.Claimed(A, 1, math.inf, 30.0).encode()
    with pytest.raises(ValueError):
        ev.Claimed(A, 1, T0, math.nan).encode()
    with pytest.raises(ValueError):
        ev.Failed(A, ev.TO_SCHEDULED).encode()
    with pytest.raises(ValueError):
        ev.Failed(A, ev.TO_DEAD).encode()  # a dead job needs its failure time
    with pytest.raises(ValueError):
        ev.Failed(A, ev.TO_PENDING, T0, cause=7).encode()
    with pytest.raises(ValueError):
        ev.Failed(A, 3).encode()
    with pytest.raises(ValueError):
        ev.Acked(A, True).encode()  # kept without a completion time
    with pytest.raises(ValueError):
        ev.Cancelled("x" * 129).encode()


# --------------------------------------------------------------------------- strict decoding


@pytest.mark.parametrize("record", [s[1] for s in SAMPLES], ids=[s[0] for s in SAMPLES])
def test_every_truncation_and_any_trailing_byte_is_corruption(record: bytes) -> None:
    cuts = (
        range(len(record))
        if len(record) < 400
        else sorted(
            {
                *range(60),
                *range(len(record) - 60, len(record)),
                *random.Random(len(record)).sample(range(len(record)), 200),
            }
        )
    )
    for cut in cuts:
        with pytest.raises(CorruptionError):
            ev.decode(record[:cut])
    with pytest.raises(CorruptionError, match="trailing"):
        ev.decode(record + b"\x00")


def test_other_format_versions_and_unknown_kinds_are_rejected_by_name() -> None:
    claim = ev.Claimed(A, 1, T0, 30.0).encode()
    for version in (0, 1, 3, 15):
        with pytest.raises(CorruptionError, match=f"format version {version}"):
            ev.decode(bytes([version << 4 | ev.CLAIM]) + claim[1:])
    for kind in (0, ev.SNAPSHOT):
        with pytest.raises(CorruptionError, match=f"unknown queue record kind {kind}"):
            ev.decode(bytes([RECORD_FORMAT_VERSION << 4 | kind]) + claim[1:])
    # Kind 14 is followed by a sub-kind: an unknown one is named as such.
    for sub in (0, 99):
        with pytest.raises(CorruptionError, match=f"unknown extended queue record kind {sub}"):
            ev.decode(bytes([RECORD_FORMAT_VERSION << 4 | ev.EXTENDED, sub]) + claim[1:])
    # The orjson records and snapshots of 0.1.0.dev0 began with the kind byte itself.
    with pytest.raises(CorruptionError, match=r"format version 0.*0\.1\.0\.dev0"):
        ev.decode(b"\x02\x00\x00\x00\x02{}")
    with pytest.raises(CorruptionError, match=r"0\.1\.0\.dev0"):
        State.restore(b"\x64\x00\x00\x00\x02{}")


@pytest.mark.parametrize(
    ("name", "record", "pattern"),
    [
        (
            "claim-unknown-flag",
            ev.Claimed(A, 1, T0, 30.0).encode()[:1]
            + b"\x80"
            + ev.Claimed(A, 1, T0, 30.0).encode()[2:],
            "unknown flags",
        ),
        (
            "claim-zero-attempts",
            ev.Claimed(A, 1, T0, 30.0).encode()[:18]
            + b"\x00"
            + ev.Claimed(A, 1, T0, 30.0).encode()[19:],
            "attempts 0",
        ),
        (
            "claim-nan-time",
            ev.Claimed(A, 1, T0, 30.0).encode()[:19]
            + struct.pack(">d", math.nan)
            + ev.Claimed(A, 1, T0, 30.0).encode()[27:],
            "non-finite",
        ),
        ("claim-bad-duration", ev.Claimed(A, 1, T0, 30.0).encode()[:-1] + b"\x03", "duration"),
        (
            "fail-destination-3",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.FAIL, 0x06]) + bytes(16),
            "destination 3",
        ),
        (
            "ack-text-id-too-long",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ACK, 0x01, 129]) + b"a" * 129,
            "id length",
        ),
        (
            "ack-text-id-bad-char",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ACK, 0x01, 3]) + b"a b",
            "invalid job id",
        ),
        ("ack-text-id-empty", bytes([RECORD_FORMAT_VERSION << 4 | ev.ACK, 0x01, 0]), "id length"),
        (
            "promote-huge-count",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.PROMOTE, 0xFF, 0xFF, 0x03]),
            "exceeds",
        ),
        (
            "overlong-varint",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.KV_DELETE]) + b"\x80" * 11 + b"\x00",
            "overlong",
        ),
        (
            "enqueue-next-without-previous",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ENQUEUE, 1])
            + b"q"
            + struct.pack(">d", T0)
            + b"\x02\x01\x00",
            "previous",
        ),
        (
            "enqueue-zero-jobs",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ENQUEUE, 1])
            + b"q"
            + struct.pack(">d", T0)
            + b"\x00",
            "job count",
        ),
        (
            "enqueue-bad-utf8-queue",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ENQUEUE, 1])
            + b"\xff"
            + struct.pack(">d", T0)
            + b"\x02\x00"
            + bytes(16)
            + b"\x00",
            "UTF-8",
        ),
        (
            "enqueue-reserved-flag",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ENQUEUE, 1])
            + b"q"
            + struct.pack(">d", T0)
            + b"\x02\x80"
            + bytes(16)
            + b"\x00",
            "unknown flags",
        ),
        (
            "enqueue-id-form-3",
            bytes([RECORD_FORMAT_VERSION << 4 | ev.ENQUEUE, 1])
            + b"q"
            + struct.pack(">d", T0)
            + b"\x02\x03\x00",
            "id form",
        ),
    ],
)
def test_malformed_fields_are_named(name: str, record: bytes, pattern: str) -> None:
    with pytest.raises(CorruptionError, match=pattern) as info:
        ev.decode(record)
    assert ev.KIND_NAMES[record[0] & 0x0F] in str(info.value)


def test_random_damage_raises_corruption_or_decodes_never_anything_else() -> None:
    rng = random.Random(42)
    small = [s[1] for s in SAMPLES if len(s[1]) < 2_000]
    for record in small:
        for _ in range(150):
            data = bytearray(record)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data[0] = RECORD_FORMAT_VERSION << 4 | rng.randrange(16)
            state = State()
            try:
                state.apply_record(bytes(data))
            except CorruptionError:
                pass
    for _ in range(3_000):
        data = bytes([RECORD_FORMAT_VERSION << 4 | rng.randrange(1, 12)]) + rng.randbytes(
            rng.randrange(0, 60)
        )
        try:
            State().apply_record(data)
        except CorruptionError:
            pass


# --------------------------------------------------------------------------- snapshots


def busy_state() -> State:
    """A state with jobs in every status, text and canonical ids, every optional field."""
    s = State()
    g = ids.IdGenerator()
    jobs = [job(i, bytes([k % 256]) * k) for k, i in enumerate(g.new_many(T0, 40))]
    jobs += [
        job("user-1", b"u", priority=5, max_attempts=9, headers={"h": "v", "é": "ü"}),
        job("user-2", b"", dedup_key="dk-1"),
        job(g.new(T0), b"s", run_at=T0 + 50, dedup_key="dk-2"),
        job(CANONICAL_USER_ID, b"c"),
    ]
    s.apply(enqueued("jobs", T0, jobs, [(b"k1", b"v1"), (b"k2", b"\x00" * 500)]))
    s.apply(plain("other", ODD_TIME, g.new_many(T0 + 1, 5), [b"o"] * 5, 7, 2))
    ids_ = [j[0] for j in jobs]
    s.apply(ev.Claimed(ids_[0], 1, T0, 30.0))
    s.apply(ev.Claimed(ids_[1], 1, T0, 30.0))
    s.apply(ev.Acked(ids_[1], True, T0 + 1))
    s.apply(ev.Claimed(ids_[2], 1, T0, 30.0))
    s.apply(ev.Acked(ids_[2], False))
    s.apply(ev.Claimed(ids_[3], 1, T0, 30.0))
    s.apply(ev.Failed(ids_[3], ev.TO_DEAD, ODD_TIME, None, "boom"))
    s.apply(ev.Claimed(ids_[4], 1, T0, 30.0))
    s.apply(ev.Failed(ids_[4], ev.TO_SCHEDULED, None, T0 + 9, "retry"))
    s.apply(ev.Claimed(ids_[5], 2, T0, 0.5))
    s.apply(ev.Renewed(ids_[5], T0 + 77))
    s.apply(ev.Cancelled(ids_[5]))
    s.apply(ev.Claimed("user-1", 1, T0, 30.0))
    s.apply(ev.Failed("user-1", ev.TO_PENDING))
    s.apply(ev.Cancelled(ids_[6]))
    s.apply(ev.Claimed("user-2", 1, T0, 30.0))  # releases the dedup key
    s.apply(ev.KvDeleted([b"k1"]))
    s.apply(ev.Purged([]))
    return s


def index_view(s: State) -> Any:
    """The valid entries of every index (heaps keep stale and repeated entries until they
    surface)."""
    jobs = s.jobs

    def live(entries: list[Any], check: Any) -> list[Any]:
        return sorted({e for e in entries if check(e)})

    queues = {}
    for name, q in s.queues.items():
        queues[name] = (
            sorted(
                {
                    (p, s.seq_of(j), j.id)
                    for p, lane in q.lanes.items()
                    for j in [
                        *(job for _, job in lane.fresh_items()),
                        *(jobs.get(i) for _, i in lane.returned),
                    ]
                    if j is not None and jobs.get(j.id) is j and j.status is JobStatus.PENDING
                }
            ),
            dict(q.dedup),
            dict(q.counts),
            q.done_total,
            live(
                q.done_heap,
                lambda e: (
                    (j := jobs.get(e[1])) is not None
                    and j.status is JobStatus.DONE
                    and j.completed_at == e[0]
                ),
            ),
            live(
                q.dead_heap,
                lambda e: (
                    (j := jobs.get(e[1])) is not None
                    and j.status is JobStatus.DEAD
                    and j.failed_at == e[0]
                ),
            ),
            list(q.dead),
        )
    return (
        queues,
        live(
            s.scheduled,
            lambda e: (
                (j := jobs.get(e[2])) is not None
                and j.status is JobStatus.SCHEDULED
                and j.run_at == e[0]
            ),
        ),
        live(
            s.leases,
            lambda e: (
                (j := jobs.get(e[1])) is not None
                and j.status is JobStatus.CLAIMED
                and j.lease_expires_at == e[0]
                and j.attempts == e[2]
            ),
        ),
        s.next_seq,
        dict(s.kv),
        s.live_bytes,
    )


def job_view(s: State) -> dict[str, Any]:
    return {i: (j.record(), s.seq_of(j)) for i, j in s.jobs.items()}


def test_snapshot_restores_the_same_state_and_indexes() -> None:
    s = busy_state()
    data = s.snapshot()
    restored = State.restore(data)
    assert job_view(restored) == job_view(s)
    assert index_view(restored) == index_view(s)
    assert restored.snapshot() == data
    statuses = {j.status for j in s.jobs.values()}
    assert statuses == set(JobStatus)
    assert any(j.cancel_requested for j in s.jobs.values())


def test_empty_state_snapshot() -> None:
    data = State().snapshot()
    restored = State.restore(data)
    assert restored.jobs == {} and restored.kv == {} and restored.next_seq == 1
    assert restored.live_bytes == 0


def test_damaged_snapshots_raise_corruption() -> None:
    data = busy_state().snapshot()
    for cut in range(len(data)):
        with pytest.raises(CorruptionError):
            State.restore(data[:cut])
    with pytest.raises(CorruptionError, match="trailing"):
        State.restore(data + b"\x00")
    with pytest.raises(CorruptionError, match="expected a snapshot"):
        State.restore(ev.Cancelled(A).encode())
    rng = random.Random(5)
    for _ in range(2_000):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 3)):
            damaged[rng.randrange(1, len(damaged))] = rng.randrange(256)
        try:
            State.restore(bytes(damaged))
        except CorruptionError:
            pass


def test_snapshot_listing_a_job_twice_is_corruption() -> None:
    s = State()
    s.apply(enqueued("jobs", T0, [job(A)]))
    data = s.snapshot()
    _, queues, _, _, kv, _, _, _ = snap.decode(data)
    pair = (1, s.jobs[A])
    twice = snap.encode(3, [(n, d, dd) for n, d, dd in queues], 2, [pair, pair], kv)
    with pytest.raises(CorruptionError, match="twice"):
        State.restore(twice)


def test_replaying_an_enqueue_of_a_known_id_is_corruption() -> None:
    s = State()
    record = enqueued("jobs", T0, [job(A)]).encode()
    s.apply_record(record)
    with pytest.raises(CorruptionError, match="repeats"):
        s.apply_record(record)


# --------------------------------------------------------------------------- live_bytes


def test_live_bytes_follows_what_a_snapshot_holds() -> None:
    s = State()
    assert s.live_bytes == 0
    s.apply(enqueued("jobs", T0, [job(A, b"x" * 100)]))
    assert s.live_bytes == JOB_BYTES + 100
    s.apply(plain("jobs", T0, [B, C], [b"y" * 10, b"z" * 20], 1000, 3))
    assert s.live_bytes == 3 * JOB_BYTES + 130
    before_kv = s.live_bytes
    s.apply(enqueued("jobs", T0, [job("k", b"")], [(b"key", b"v" * 50)]))
    with_kv = s.live_bytes
    assert with_kv > before_kv + 50
    s.apply(enqueued("jobs", T0, [job("k2", b"")], [(b"key", b"v" * 10)]))  # overwrite, shorter
    assert s.live_bytes == with_kv - 40 + JOB_BYTES
    s.apply(ev.KvDeleted([b"key", b"missing"]))
    assert s.live_bytes == before_kv + 2 * JOB_BYTES
    s.apply(ev.Cancelled("k"))
    s.apply(ev.Cancelled("k2"))
    assert s.live_bytes == before_kv
    s.apply(ev.Claimed(A, 1, T0, 30.0))
    s.apply(ev.Failed(A, ev.TO_DEAD, T0, None, "e" * 1000))
    assert s.live_bytes > before_kv + 1000
    s.apply(ev.Purged([A]))
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    s.apply(ev.Acked(B, False))
    s.apply(ev.Claimed(C, 1, T0, 30.0))
    s.apply(ev.Acked(C, True, T0))
    # the kept record of C, with its one delivery in its history
    assert s.live_bytes == JOB_BYTES + 20 + ENTRY_BYTES
    s.apply(ev.Purged([C]))
    assert s.live_bytes == 0


def test_live_bytes_is_close_to_the_snapshot_size_and_survives_restore() -> None:
    s = busy_state()
    g = ids.IdGenerator()
    s.apply(plain("jobs", T0, g.new_many(T0 + 5, 2000), [b"p" * 64] * 2000, 1000, 3))
    size = len(s.snapshot())
    assert 0.85 * size <= s.live_bytes <= 1.15 * size, (s.live_bytes, size)
    assert State.restore(s.snapshot()).live_bytes == s.live_bytes


# --------------------------------------------------------------------------- through the queue


class Recording:
    """A queue whose records are captured as they are handed to the committer."""

    def __init__(self, config: QueueConfig | None = None) -> None:
        self.clock = ManualClock()
        self.root = f"memory://events-{random.getrandbits(64):x}"
        options = OpenOptions(
            clock=self.clock, background_threads=False, default_queue_config=config or QueueConfig()
        )
        self.q = Queue.open(self.root, options=options)
        self.records: list[bytes] = []
        submit = self.q.committer.submit_locked

        def spy(record: bytes) -> Any:
            self.records.append(record)
            return submit(record)

        self.q.committer.submit_locked = spy  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.close()
        fsspec.filesystem("memory").rm(self.root.removeprefix("memory://"), recursive=True)


def test_a_state_replayed_from_the_records_equals_the_live_one() -> None:
    rec = Recording(
        QueueConfig(
            keep_done=3600, dead_retention=100, retry_backoff_base=2.0, max_attempts=2, lease=10
        )
    )
    q, clock = rec.q, rec.clock
    try:
        batch = q.enqueue_batch("jobs", [b"b" * k for k in range(300)])
        q.enqueue(
            "jobs",
            b"opts",
            priority=5,
            max_attempts=4,
            headers={"a": "b"},
            dedup_key="d1",
            job_id="custom-1",
        )
        q.enqueue("jobs", b"later", delay=30, dedup_key="d2")
        q.enqueue("other", b"at", run_at=T0 + 5)
        q.enqueue_with_kv("jobs", b"kv", {b"k": b"v", b"k2": b"v2"}, EnqueueOptions(priority=0))
        q.enqueue("jobs", b"again", dedup_key="d1")  # a dedup hit: no record
        claims = q.claim_batch("jobs", 8, lease=0.75)
        q.ack(claims[0])
        q.nack(claims[1], "retry me")
        q.nack(claims[2], ValueError("bad \ud800 value"))
        q.dead_letter(claims[3], "poison")
        q.renew_lease(claims[4], 123.5)
        assert q.cancel(claims[5].id).value == "requested"
        assert q.cancel(batch[-1]).value == "removed"
        q.kv_delete(b"k2")
        clock.advance(40)
        assert q.promote_scheduled_now() >= 1
        q.reap_now()
        q.requeue_dead_job(claims[3].id)
        for c in q.claim_batch("jobs", 50):
            q.ack(c)
        c = q.claim("other")
        assert c is not None
        q.nack(c, "once")
        clock.advance(1000)
        q.reap_now()  # purges
        with q._lock:
            live = q._state
            replayed = State()
            for record in rec.records:
                replayed.apply_record(record)
            assert job_view(replayed) == job_view(live)
            assert index_view(replayed) == index_view(live)
            assert replayed.snapshot() == live.snapshot()
    finally:
        rec.close()


def _sizes(payload_size: int) -> tuple[int, int, int]:
    rec = Recording()
    try:
        rec.q.enqueue("jobs", b"x" * payload_size)
        c = rec.q.claim("jobs")
        assert c is not None
        rec.q.ack(c)
        enqueue, claim, ack = (len(r) for r in rec.records)
        return enqueue, claim, ack
    finally:
        rec.close()


@pytest.mark.parametrize("payload_size", [64, 1024])
def test_a_job_costs_little_more_than_its_payload_in_the_log(payload_size: int) -> None:
    enqueue, claim, ack = _sizes(payload_size)
    frames = 3 * 8  # the log's length + CRC32 per record
    overhead = enqueue + claim + ack + frames - payload_size
    assert overhead <= 110, (enqueue, claim, ack)
    assert claim <= 30 and ack <= 20


def test_a_batch_costs_a_few_bytes_per_job_beyond_its_payloads() -> None:
    rec = Recording()
    try:
        rec.q.enqueue_batch("jobs", [b"x" * 1024] * 1000)
        (record,) = rec.records
        assert len(record) - 1024 * 1000 <= 1000 * 3 + 40
    finally:
        rec.close()
