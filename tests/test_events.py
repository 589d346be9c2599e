"""The binary encoding of records and snapshots: exact round trips, strict decoding, the
sizes the format promises, and a state rebuilt from its records equal to the live one."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import fsspec
import pytest
from clock import T0, ManualClock

from taquba import EnqueueOptions, OpenOptions, Queue, QueueConfig, ids
from taquba import events as ev
from taquba import snapshot as snap
from taquba.codec import FORMAT_VERSION
from taquba.errors import CorruptionError
from taquba.records import JobStatus
from taquba.state import JOB_BYTES, State

G = ids.IdGenerator()
A, B, C = G.new_many(T0, 3)
TEXT_IDS = ["user-job_1", "x", "A" * 128]
# A caller-chosen id that happens to be canonical is stored as a value and reads back equal.
CANONICAL_USER_ID = "01ARZ3NDEKTSV4RRFFQ69G5FA0"
ODD_TIME = 1_700_000_000.123_456_7


def job(job_id: str, payload: bytes = b"p", priority: int = ev.DEFAULT_PRIORITY,
        max_attempts: int = ev.DEFAULT_MAX_ATTEMPTS, run_at: float | None = None,
        dedup_key: str | None = None, headers: dict[str, str] | None = None) -> ev.NewJob:
    return (job_id, payload, priority, max_attempts, run_at, dedup_key, headers)


def carry_ids() -> list[str]:
    """Consecutive canonical ids across a carry out of the last two digits."""
    start = (int(T0 * 1000) << 80) | 0xFD
    return [ids.encode(start + k) for k in range(6)]


ENQUEUES: list[tuple[str, str, float, list[ev.NewJob], list[tuple[bytes, bytes]]]] = [
    ("plain", "jobs", T0, [job(A)], []),
    ("empty-payload", "jobs", ODD_TIME, [job(A, b"")], []),
    ("all-options", "é-queue", ODD_TIME, [job(
        "user-job_1", b"\x00" * 300, priority=0, max_attempts=2**31, run_at=T0 + 0.1,
        dedup_key="dédup", headers={"trace": "abc", "ünï": "cödé", "": ""})],
     [(b"k", b"v"), (b"\xff" * 1024, b"\x00" * 70_000)]),
    ("max-priority", "q", T0, [job(B, priority=2**32 - 1, max_attempts=1)], []),
    ("batch-mixed", "jobs", T0, [
        job(A), job(B), job(C), job("x"), job(C), job(CANONICAL_USER_ID), job(A),
        *[job(i, bytes([k]) * k) for k, i in enumerate(carry_ids())],
        job("A" * 128, priority=5)], [(b"key", b"")]),
    ("large-payload", "jobs", T0, [job(A, b"y" * 100_000)], []),
]


def sample_records() -> list[tuple[str, bytes, int, tuple[Any, ...]]]:
    """(name, record, kind, decoded args) of every record kind in its variants."""
    out = []
    for name, queue, at, jobs, kv in ENQUEUES:
        out.append((f"enqueue-{name}", ev.encode_enqueue(queue, at, jobs, kv), ev.ENQUEUE,
                    (queue, at, jobs, kv)))
    for i, job_id in enumerate([A, *TEXT_IDS, CANONICAL_USER_ID]):
        for attempts, lease in [(1, 30.0), (200, 0.25), (3, 1e300), (1, 2.0**53), (7, 63.0),
                                (1, 64.0)]:
            out.append((f"claim-{i}-{attempts}-{lease}",
                        ev.encode_claim(job_id, attempts, ODD_TIME, lease), ev.CLAIM,
                        (job_id, attempts, ODD_TIME, lease)))
        out.append((f"renew-{i}", ev.encode_renew(job_id, ODD_TIME), ev.RENEW,
                    (job_id, ODD_TIME)))
        out.append((f"ack-drop-{i}", ev.encode_ack(job_id, False, ODD_TIME), ev.ACK,
                    (job_id, False, None)))
        out.append((f"ack-keep-{i}", ev.encode_ack(job_id, True, ODD_TIME), ev.ACK,
                    (job_id, True, ODD_TIME)))
        out.append((f"fail-dead-{i}", ev.encode_fail(job_id, ev.TO_DEAD, ODD_TIME, None, "bóom"),
                    ev.FAIL, (job_id, ev.TO_DEAD, ODD_TIME, None, "bóom")))
        out.append((f"fail-scheduled-{i}",
                    ev.encode_fail(job_id, ev.TO_SCHEDULED, T0, ODD_TIME, "x" * 20_000),
                    ev.FAIL, (job_id, ev.TO_SCHEDULED, None, ODD_TIME, "x" * 20_000)))
        out.append((f"fail-pending-{i}", ev.encode_fail(job_id, ev.TO_PENDING, T0, None, None),
                    ev.FAIL, (job_id, ev.TO_PENDING, None, None, None)))
        out.append((f"cancel-{i}", ev.encode_cancel(job_id), ev.CANCEL, (job_id,)))
        out.append((f"requeue-{i}", ev.encode_requeue_dead(job_id), ev.REQUEUE_DEAD, (job_id,)))
    mixed = [A, "x", B, "A" * 128, CANONICAL_USER_ID]
    for kind, encode in [(ev.PROMOTE, ev.encode_promote), (ev.PURGE, ev.encode_purge),
                         (ev.RELEASE, ev.encode_release)]:
        out.append((f"{ev.KIND_NAMES[kind]}-mixed", encode(mixed), kind, (mixed,)))
        out.append((f"{ev.KIND_NAMES[kind]}-empty", encode([]), kind, ([],)))
    out.append(("kv-delete", ev.encode_kv_delete([b"a", b"\x00" * 300, b""]), ev.KV_DELETE,
                ([b"a", b"\x00" * 300, b""],)))
    return out


SAMPLES = sample_records()


@pytest.mark.parametrize(("record", "kind", "args"), [s[1:] for s in SAMPLES],
                         ids=[s[0] for s in SAMPLES])
def test_every_record_round_trips_exactly(record: bytes, kind: int, args: tuple[Any, ...]
                                          ) -> None:
    assert record[0] == FORMAT_VERSION << 4 | kind
    got_kind, got = ev.decode(record)
    assert got_kind == kind
    assert got == args
    for a, b in zip(_floats(got), _floats(args)):  # bit-exact, not just ==
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
        _, (_, _, got_at, got_lease) = ev.decode(ev.encode_claim(A, 1, at, lease))
        assert got_at + got_lease == at + lease


@pytest.mark.parametrize("priority", [ev.DEFAULT_PRIORITY, 0, 100, 2**32 - 1])
@pytest.mark.parametrize("max_attempts", [ev.DEFAULT_MAX_ATTEMPTS, 1, 200])
def test_plain_enqueue_encoding_is_the_general_one(priority: int, max_attempts: int) -> None:
    rng = random.Random(priority ^ max_attempts)
    # Decoys end like the id after the previous one but differ in front: not "previous + 1".
    va = ids.decode(A)
    assert va is not None
    carry_last = ids.decode(carry_ids()[2])  # ends in ...FF: its successor ends in "00"
    assert carry_last is not None and carry_last & 0xFF == 0xFF
    decoys = [A, ids.encode((va + 1) ^ (1 << 100)), carry_ids()[2],
              ids.encode((carry_last + 1) ^ (1 << 90)), carry_ids()[2], carry_ids()[3]]
    batches = [
        G.new_many(T0, 1000),
        carry_ids(),
        decoys,
        [A, B, C, "x", C, B, CANONICAL_USER_ID, A, *carry_ids(), "y" * 128],
        ["a", "b"],
    ]
    for job_ids in batches:
        payloads = [rng.randbytes(rng.choice([0, 5, 127, 128, 300, 16_384])) for _ in job_ids]
        general = ev.encode_enqueue("jobs", T0, [
            job(i, p, priority, max_attempts) for i, p in zip(job_ids, payloads)])
        plain = ev.encode_enqueue_plain("jobs", T0, job_ids, payloads, priority, max_attempts)
        assert plain == general
        _, (_, _, jobs, _) = ev.decode(plain)
        assert [j[0] for j in jobs] == job_ids and [j[1] for j in jobs] == payloads


def test_consecutive_ids_of_a_batch_cost_no_id_bytes() -> None:
    job_ids = G.new_many(T0, 1000)
    record = ev.encode_enqueue_plain("jobs", T0, job_ids, [b"x" * 64] * 1000, 1000, 3)
    # head (tag, name, time, count) + first id + per job: flags, length, payload
    assert len(record) <= 1 + 5 + 8 + 2 + 16 + 1000 * (1 + 1 + 64)


def test_encoders_refuse_what_no_decoder_would_accept() -> None:
    with pytest.raises(ValueError):
        ev.encode_enqueue("jobs", T0, [])
    with pytest.raises(ValueError):
        ev.encode_enqueue("jobs", math.nan, [job(A)])
    with pytest.raises(ValueError):
        ev.encode_claim(A, 1, math.inf, 30.0)
    with pytest.raises(ValueError):
        ev.encode_claim(A, 1, T0, math.nan)
    with pytest.raises(ValueError):
        ev.encode_fail(A, ev.TO_SCHEDULED, T0, None, None)
    with pytest.raises(ValueError):
        ev.encode_fail(A, 3, T0, None, None)
    with pytest.raises(ValueError):
        ev.encode_cancel("x" * 129)


# --------------------------------------------------------------------------- strict decoding


@pytest.mark.parametrize("record", [s[1] for s in SAMPLES], ids=[s[0] for s in SAMPLES])
def test_every_truncation_and_any_trailing_byte_is_corruption(record: bytes) -> None:
    cuts = range(len(record)) if len(record) < 400 else \
        sorted({*range(60), *range(len(record) - 60, len(record)),
                *random.Random(len(record)).sample(range(len(record)), 200)})
    for cut in cuts:
        with pytest.raises(CorruptionError):
            ev.decode(record[:cut])
    with pytest.raises(CorruptionError, match="trailing"):
        ev.decode(record + b"\x00")


def test_other_format_versions_and_unknown_kinds_are_rejected_by_name() -> None:
    claim = ev.encode_claim(A, 1, T0, 30.0)
    for version in (0, 1, 3, 15):
        with pytest.raises(CorruptionError, match=f"format version {version}"):
            ev.decode(bytes([version << 4 | ev.CLAIM]) + claim[1:])
    for kind in (0, 14, ev.SNAPSHOT):
        with pytest.raises(CorruptionError, match=f"unknown queue record kind {kind}"):
            ev.decode(bytes([FORMAT_VERSION << 4 | kind]) + claim[1:])
    # The orjson records and snapshots of 0.1.0.dev0 began with the kind byte itself.
    with pytest.raises(CorruptionError, match=r"format version 0.*0\.1\.0\.dev0"):
        ev.decode(b"\x02\x00\x00\x00\x02{}")
    with pytest.raises(CorruptionError, match=r"0\.1\.0\.dev0"):
        State.restore(b"\x64\x00\x00\x00\x02{}")


@pytest.mark.parametrize(("name", "record", "pattern"), [
    ("claim-unknown-flag", ev.encode_claim(A, 1, T0, 30.0)[:1] + b"\x80"
     + ev.encode_claim(A, 1, T0, 30.0)[2:], "unknown flags"),
    ("claim-zero-attempts", ev.encode_claim(A, 1, T0, 30.0)[:18] + b"\x00"
     + ev.encode_claim(A, 1, T0, 30.0)[19:], "attempts 0"),
    ("claim-nan-time", ev.encode_claim(A, 1, T0, 30.0)[:19] + struct.pack(">d", math.nan)
     + ev.encode_claim(A, 1, T0, 30.0)[27:], "non-finite"),
    ("claim-bad-duration", ev.encode_claim(A, 1, T0, 30.0)[:-1] + b"\x03", "duration"),
    ("fail-destination-3", bytes([FORMAT_VERSION << 4 | ev.FAIL, 0x06]) + bytes(16),
     "destination 3"),
    ("ack-text-id-too-long", bytes([FORMAT_VERSION << 4 | ev.ACK, 0x01, 129]) + b"a" * 129,
     "id length"),
    ("ack-text-id-bad-char", bytes([FORMAT_VERSION << 4 | ev.ACK, 0x01, 3]) + b"a b",
     "invalid job id"),
    ("ack-text-id-empty", bytes([FORMAT_VERSION << 4 | ev.ACK, 0x01, 0]), "id length"),
    ("promote-huge-count", bytes([FORMAT_VERSION << 4 | ev.PROMOTE, 0xFF, 0xFF, 0x03]),
     "exceeds"),
    ("overlong-varint", bytes([FORMAT_VERSION << 4 | ev.KV_DELETE]) + b"\x80" * 11 + b"\x00",
     "overlong"),
    ("enqueue-next-without-previous", bytes([FORMAT_VERSION << 4 | ev.ENQUEUE, 1]) + b"q"
     + struct.pack(">d", T0) + b"\x02\x01\x00", "previous"),
    ("enqueue-zero-jobs", bytes([FORMAT_VERSION << 4 | ev.ENQUEUE, 1]) + b"q"
     + struct.pack(">d", T0) + b"\x00", "job count"),
    ("enqueue-bad-utf8-queue", bytes([FORMAT_VERSION << 4 | ev.ENQUEUE, 1]) + b"\xff"
     + struct.pack(">d", T0) + b"\x02\x00" + bytes(16) + b"\x00", "UTF-8"),
    ("enqueue-reserved-flag", bytes([FORMAT_VERSION << 4 | ev.ENQUEUE, 1]) + b"q"
     + struct.pack(">d", T0) + b"\x02\x80" + bytes(16) + b"\x00", "unknown flags"),
    ("enqueue-id-form-3", bytes([FORMAT_VERSION << 4 | ev.ENQUEUE, 1]) + b"q"
     + struct.pack(">d", T0) + b"\x02\x03\x00", "id form"),
])
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
                data[0] = FORMAT_VERSION << 4 | rng.randrange(16)
            state = State()
            try:
                state.apply_bytes(bytes(data))
            except CorruptionError:
                pass
    for _ in range(3_000):
        data = bytes([FORMAT_VERSION << 4 | rng.randrange(1, 12)]) + rng.randbytes(
            rng.randrange(0, 60))
        try:
            State().apply_bytes(data)
        except CorruptionError:
            pass


# --------------------------------------------------------------------------- snapshots


def busy_state() -> State:
    """A state with jobs in every status, text and canonical ids, every optional field."""
    s = State()
    g = ids.IdGenerator()
    jobs = [job(i, bytes([k % 256]) * k) for k, i in enumerate(g.new_many(T0, 40))]
    jobs += [job("user-1", b"u", priority=5, max_attempts=9, headers={"h": "v", "é": "ü"}),
             job("user-2", b"", dedup_key="dk-1"),
             job(g.new(T0), b"s", run_at=T0 + 50, dedup_key="dk-2"),
             job(CANONICAL_USER_ID, b"c")]
    s.on_enqueue("jobs", T0, jobs, [(b"k1", b"v1"), (b"k2", b"\x00" * 500)])
    s.on_enqueue_plain("other", ODD_TIME, g.new_many(T0 + 1, 5), [b"o"] * 5, 7, 2)
    ids_ = [j[0] for j in jobs]
    s.on_claim(ids_[0], 1, T0, 30.0)
    s.on_claim(ids_[1], 1, T0, 30.0)
    s.on_ack(ids_[1], True, T0 + 1)
    s.on_claim(ids_[2], 1, T0, 30.0)
    s.on_ack(ids_[2], False, T0 + 1)
    s.on_claim(ids_[3], 1, T0, 30.0)
    s.on_fail(ids_[3], ev.TO_DEAD, ODD_TIME, None, "boom")
    s.on_claim(ids_[4], 1, T0, 30.0)
    s.on_fail(ids_[4], ev.TO_SCHEDULED, T0, T0 + 9, "retry")
    s.on_claim(ids_[5], 2, T0, 0.5)
    s.on_renew(ids_[5], T0 + 77)
    s.on_cancel(ids_[5])
    s.on_claim("user-1", 1, T0, 30.0)
    s.on_fail("user-1", ev.TO_PENDING, T0, None, None)
    s.on_cancel(ids_[6])
    s.on_claim("user-2", 1, T0, 30.0)  # releases the dedup key
    s.on_kv_delete([b"k1"])
    s.on_purge([])
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
            live(q.pending, lambda e: (j := jobs.get(e[2])) is not None
                 and j.status is JobStatus.PENDING and (j.priority, j.seq) == e[:2]),
            dict(q.dedup), dict(q.counts), q.done_total,
            live(q.done_heap, lambda e: (j := jobs.get(e[1])) is not None
                 and j.status is JobStatus.DONE and j.completed_at == e[0]),
            live(q.dead_heap, lambda e: (j := jobs.get(e[1])) is not None
                 and j.status is JobStatus.DEAD and j.failed_at == e[0]),
            list(q.dead))
    return (queues,
            live(s.scheduled, lambda e: (j := jobs.get(e[2])) is not None
                 and j.status is JobStatus.SCHEDULED and j.run_at == e[0]),
            live(s.leases, lambda e: (j := jobs.get(e[1])) is not None
                 and j.status is JobStatus.CLAIMED and j.lease_expires_at == e[0]
                 and j.attempts == e[2]),
            s.next_seq, dict(s.kv), s.live_bytes)


def job_view(s: State) -> dict[str, Any]:
    return {i: (j.record(), j.seq) for i, j in s.jobs.items()}


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
        State.restore(ev.encode_cancel(A))
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
    s.on_enqueue("jobs", T0, [job(A)])
    data = s.snapshot()
    _, queues, _, kv, _ = snap.decode(data)
    twice = snap.encode(3, [(n, d, dd) for n, d, dd in queues],
                        [s.jobs[A], s.jobs[A]], kv)
    with pytest.raises(CorruptionError, match="twice"):
        State.restore(twice)


def test_replaying_an_enqueue_of_a_known_id_is_corruption() -> None:
    s = State()
    record = ev.encode_enqueue("jobs", T0, [job(A)])
    s.apply_bytes(record)
    with pytest.raises(CorruptionError, match="repeats"):
        s.apply_bytes(record)


# --------------------------------------------------------------------------- live_bytes


def test_live_bytes_follows_what_a_snapshot_holds() -> None:
    s = State()
    assert s.live_bytes == 0
    s.on_enqueue("jobs", T0, [job(A, b"x" * 100)])
    assert s.live_bytes == JOB_BYTES + 100
    s.on_enqueue_plain("jobs", T0, [B, C], [b"y" * 10, b"z" * 20], 1000, 3)
    assert s.live_bytes == 3 * JOB_BYTES + 130
    before_kv = s.live_bytes
    s.on_enqueue("jobs", T0, [job("k", b"")], [(b"key", b"v" * 50)])
    with_kv = s.live_bytes
    assert with_kv > before_kv + 50
    s.on_enqueue("jobs", T0, [job("k2", b"")], [(b"key", b"v" * 10)])  # overwrite, shorter
    assert s.live_bytes == with_kv - 40 + JOB_BYTES
    s.on_kv_delete([b"key", b"missing"])
    assert s.live_bytes == before_kv + 2 * JOB_BYTES
    s.on_cancel("k")
    s.on_cancel("k2")
    assert s.live_bytes == before_kv
    s.on_claim(A, 1, T0, 30.0)
    s.on_fail(A, ev.TO_DEAD, T0, None, "e" * 1000)
    assert s.live_bytes > before_kv + 1000
    s.on_purge([A])
    s.on_claim(B, 1, T0, 30.0)
    s.on_ack(B, False, T0)
    s.on_claim(C, 1, T0, 30.0)
    s.on_ack(C, True, T0)
    assert s.live_bytes == JOB_BYTES + 20  # the kept record of C
    s.on_purge([C])
    assert s.live_bytes == 0


def test_live_bytes_is_close_to_the_snapshot_size_and_survives_restore() -> None:
    s = busy_state()
    g = ids.IdGenerator()
    s.on_enqueue_plain("jobs", T0, g.new_many(T0 + 5, 2000), [b"p" * 64] * 2000, 1000, 3)
    size = len(s.snapshot())
    assert 0.85 * size <= s.live_bytes <= 1.15 * size, (s.live_bytes, size)
    assert State.restore(s.snapshot()).live_bytes == s.live_bytes


# --------------------------------------------------------------------------- through the queue


class Recording:
    """A queue whose records are captured as they are handed to the committer."""

    def __init__(self, config: QueueConfig | None = None) -> None:
        self.clock = ManualClock()
        self.root = f"memory://events-{random.getrandbits(64):x}"
        options = OpenOptions(clock=self.clock, background_threads=False,
                              default_queue_config=config or QueueConfig())
        self.q = Queue.open(self.root, options=options)
        self.records: list[bytes] = []
        submit = self.q.committer.submit_locked

        def spy(record: bytes) -> int:
            self.records.append(record)
            return submit(record)

        self.q.committer.submit_locked = spy  # type: ignore[method-assign]

    def close(self) -> None:
        self.q.close()
        fsspec.filesystem("memory").rm(self.root.removeprefix("memory://"), recursive=True)


def test_a_state_replayed_from_the_records_equals_the_live_one() -> None:
    rec = Recording(QueueConfig(keep_done=3600, dead_retention=100, retry_backoff_base=2.0,
                                max_attempts=2, lease=10))
    q, clock = rec.q, rec.clock
    try:
        batch = q.enqueue_batch("jobs", [b"b" * k for k in range(300)])
        q.enqueue("jobs", b"opts", priority=5, max_attempts=4, headers={"a": "b"},
                  dedup_key="d1", job_id="custom-1")
        q.enqueue("jobs", b"later", delay=30, dedup_key="d2")
        q.enqueue("other", b"at", run_at=T0 + 5)
        q.enqueue_with_kv("jobs", b"kv", {b"k": b"v", b"k2": b"v2"},
                          EnqueueOptions(priority=0))
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
                replayed.apply_bytes(record)
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
