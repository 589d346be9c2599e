"""The pure core: ``State.apply`` for each event type, and every event class's encoding.

No storage and no threads: events are made by hand, applied, encoded and decoded.
"""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clock import T0

from taquba import views
from taquba.core import events as ev
from taquba.core import ids
from taquba.core.state import JOB_BYTES, State
from taquba.errors import CorruptionError
from taquba.records import JobStatus

PENDING = JobStatus.PENDING
G = ids.IdGenerator()
A, B, C, D = G.new_many(T0, 4)


def enqueue(
    s: State, queue: str, *job_ids: str, priority: int = 1000, at: float = T0, **spec: object
) -> None:
    specs = [ev.JobSpec(priority, 3, **spec)] * len(job_ids) if spec else None  # type: ignore[arg-type]
    s.apply(
        ev.Enqueued(
            queue, at, list(job_ids), [b"p-" + i.encode() for i in job_ids], priority, 3, specs
        )
    )


def status(s: State, job_id: str) -> JobStatus | None:
    job = s.jobs.get(job_id)
    return None if job is None else job.status


# -- State.apply, one event type at a time --------------------------------------------------


def test_enqueued_jobs_are_pending_in_order_and_counted() -> None:
    s = State()
    enqueue(s, "q", A, B)
    assert [status(s, i) for i in (A, B)] == [JobStatus.PENDING] * 2
    assert s.queues["q"].counts[JobStatus.PENDING] == 2
    assert [s.seq_of(s.jobs[i]) for i in (A, B)] == [1, 2] and s.next_seq == 3
    assert s.peek_pending("q") is s.jobs[A]
    assert s.live_bytes == 2 * JOB_BYTES + len(b"p-" + A.encode()) * 2


def test_enqueued_with_specs_schedules_dedups_and_keeps_headers() -> None:
    s = State()
    s.apply(
        ev.Enqueued(
            "q",
            T0,
            [A, B],
            [b"a", b"b"],
            specs=[ev.JobSpec(5, 9, run_at=T0 + 10, dedup_key="k", headers={"h": "v"}), None],
            kv=[(b"key", b"value")],
        )
    )
    a, b = s.jobs[A], s.jobs[B]
    assert (a.status, a.priority, a.max_attempts, a.run_at) == (JobStatus.SCHEDULED, 5, 9, T0 + 10)
    assert dict(a.headers) == {"h": "v"} and a.dedup_key == "k"
    assert s.queues["q"].dedup == {"k": A}
    assert b.status is JobStatus.PENDING and b.detail is None and dict(b.headers) == {}
    assert s.kv == {b"key": b"value"}
    assert s.due_scheduled(T0 + 9) == [] and s.due_scheduled(T0 + 10) == [a]


def test_priority_orders_claims_then_enqueue_order() -> None:
    s = State()
    enqueue(s, "q", A, priority=10)
    enqueue(s, "q", B, priority=1)
    enqueue(s, "q", C, priority=10)
    assert s.peek_pending("q") is s.jobs[B]
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    assert s.peek_pending("q") is s.jobs[A]


def test_claimed_renewed_and_expired() -> None:
    s = State()
    enqueue(s, "q", A, dedup_key="k")
    s.apply(ev.Claimed(A, 1, T0, 30.0))
    job = s.jobs[A]
    assert (job.status, job.attempts, job.claimed_at, job.lease_expires_at) == (
        JobStatus.CLAIMED,
        1,
        T0,
        T0 + 30.0,
    )
    assert s.queues["q"].dedup == {}  # released at the first claim
    assert s.peek_pending("q") is None
    s.apply(ev.Renewed(A, T0 + 100))
    assert s.expired_leases(T0 + 99) == []
    assert s.expired_leases(T0 + 100) == [job]


def test_acked_keeps_or_drops() -> None:
    s = State()
    enqueue(s, "q", A, B)
    for i in (A, B):
        s.apply(ev.Claimed(i, 1, T0, 30.0))
    s.apply(ev.Acked(A, True, T0 + 1))
    s.apply(ev.Acked(B, False))
    assert status(s, A) is JobStatus.DONE and s.jobs[A].completed_at == T0 + 1
    assert status(s, B) is None
    assert s.queues["q"].done_total == 2
    assert s.sweepable("q", T0 + 1, None) == [A]


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev.Failed(A, ev.TO_PENDING, error="e"), JobStatus.PENDING),
        (ev.Failed(A, ev.TO_SCHEDULED, None, T0 + 5, "e"), JobStatus.SCHEDULED),
        (ev.Failed(A, ev.TO_DEAD, T0 + 1, None, "e"), JobStatus.DEAD),
    ],
)
def test_failed_goes_where_it_says(event: ev.Failed, expected: JobStatus) -> None:
    s = State()
    enqueue(s, "q", A, B)
    s.apply(ev.Claimed(A, 1, T0, 30.0))
    s.apply(event)
    job = s.jobs[A]
    assert job.status is expected and job.last_error == "e" and job.lease_expires_at is None
    if expected is JobStatus.PENDING:
        assert s.peek_pending("q") is job  # back before B: its place in enqueue order
    elif expected is JobStatus.SCHEDULED:
        assert job.run_at == T0 + 5
    else:
        assert job.failed_at == T0 + 1 and s.dead_page("q", None, 10) == [job]


def test_cancelled_removes_waiting_jobs_and_flags_claimed_ones() -> None:
    s = State()
    enqueue(s, "q", A, B)
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    s.apply(ev.Cancelled(A))
    s.apply(ev.Cancelled(B))
    assert status(s, A) is None and s.peek_pending("q") is None
    assert s.jobs[B].cancel_requested and status(s, B) is JobStatus.CLAIMED


def test_dead_requeued_resets_the_job() -> None:
    s = State()
    enqueue(s, "q", A)
    s.apply(ev.Claimed(A, 1, T0, 30.0))
    s.apply(ev.Failed(A, ev.TO_DEAD, T0, None, "e"))
    s.apply(ev.DeadRequeued(A))
    job = s.jobs[A]
    assert (job.status, job.attempts, job.failed_at) == (JobStatus.PENDING, 0, None)
    assert s.dead_page("q", None, 10) == [] and s.peek_pending("q") is job


def test_promoted_purged_released_and_kv_deleted() -> None:
    s = State()
    enqueue(s, "q", A, run_at=T0 + 5)
    enqueue(s, "q", B, C)
    s.apply(ev.Promoted([A]))
    assert status(s, A) is JobStatus.PENDING and s.peek_pending("q") is s.jobs[A]
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    s.apply(ev.Claimed(C, 1, T0, 30.0))
    s.apply(ev.Released([B]))
    assert status(s, B) is JobStatus.PENDING and s.jobs[B].claimed_at is None
    s.apply(ev.Failed(C, ev.TO_DEAD, T0, None, None))
    s.apply(ev.Purged([C, A]))  # A is pending: a purge only drops done and dead jobs
    assert status(s, C) is None and status(s, A) is JobStatus.PENDING
    s.apply(ev.Enqueued("q", T0, [D], [b""], kv=[(b"k", b"v")], specs=[None]))
    s.apply(ev.KvDeleted([b"k", b"missing"]))
    assert s.kv == {}


def test_events_for_unknown_jobs_change_nothing() -> None:
    s = State()
    enqueue(s, "q", A)
    before = s.snapshot()
    for e in (
        ev.Claimed(B, 1, T0, 1.0),
        ev.Renewed(B, T0),
        ev.Acked(B, False),
        ev.Failed(B, ev.TO_PENDING),
        ev.Cancelled(B),
        ev.DeadRequeued(B),
        ev.Promoted([B]),
        ev.Purged([B]),
        ev.Released([B]),
        ev.KvDeleted([b"x"]),
    ):
        s.apply(e)
    assert s.snapshot() == before


def test_an_enqueue_repeating_a_known_id_is_corruption() -> None:
    s = State()
    enqueue(s, "q", A)
    with pytest.raises(CorruptionError, match="repeats"):
        enqueue(s, "q", A)


def test_a_job_with_two_lane_entries_is_claimed_once() -> None:
    """Claimed and failed back to pending before its first entry surfaced: two entries,
    one job."""
    s = State()
    enqueue(s, "q", A, B)
    s.apply(ev.Claimed(A, 1, T0, 30.0))
    s.apply(ev.Failed(A, ev.TO_PENDING))
    assert s.peek_pending("q") is s.jobs[A]
    s.apply(ev.Claimed(A, 2, T0, 30.0))
    assert s.peek_pending("q") is s.jobs[B]
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    assert s.peek_pending("q") is None


def test_jobs_alike_share_their_kind_and_restored_jobs_of_one_enqueue_share_their_time() -> None:
    """What keeps a pending job small: one kind object per (queue, priority, attempt
    limit), made once whether by enqueues or by a snapshot, and one enqueue-time float per
    enqueue, also after a restore; a job never delivered has no detail."""
    s = State()
    enqueue(s, "q", A, B)
    enqueue(s, "q", C, at=T0 + 1)
    enqueue(s, "q", D, priority=5)
    a, b, c, d = (s.jobs[i] for i in (A, B, C, D))
    assert a.kind is b.kind is c.kind and d.kind is not a.kind
    assert (d.queue, d.priority, d.max_attempts, d.attempts) == ("q", 5, 3, 0)
    assert a.detail is None
    r = State.restore(s.snapshot())
    ra, rb, rc, rd = (r.jobs[i] for i in (A, B, C, D))
    assert ra.enqueued_at is rb.enqueued_at and ra.enqueued_at == T0
    assert rc.enqueued_at == T0 + 1 and rd.enqueued_at == T0
    assert ra.kind is rb.kind is rc.kind and rd.kind is not ra.kind
    assert (rd.priority, ra.attempts, ra.detail) == (5, 0, None)
    enqueue(r, "q", "late")
    assert r.jobs["late"].kind is ra.kind


# -- sequence numbers: kept by the lanes for fresh jobs, by the detail for the others -------


def drain(s: State, queue: str) -> list[str]:
    """Claim every pending job of ``queue`` through ``peek_pending``, in claim order."""
    out = []
    while (job := s.peek_pending(queue)) is not None:
        out.append(job.id)
        s.apply(ev.Claimed(job.id, job.attempts + 1, T0, 30.0))
    return out


def test_claims_follow_enqueue_order_across_fresh_and_returned_jobs_restores_and_replay() -> None:
    """Single enqueues into two queues in turn (the seqs of one queue have gaps), batches
    (consecutive seqs), claims far into a batch, and jobs made pending again: every job
    keeps its seq, and a claim takes the pending job of lowest seq, in the state itself,
    in a state restored from its snapshot and in one rebuilt by replaying its events."""
    rng = random.Random(15)
    s = State()
    events: list[ev.Event] = []
    model: dict[str, int] = {}  # job id -> its seq: its place among all enqueued jobs
    claimed: list[str] = []
    names = ("q", "r")
    checked_returned = 0

    def apply(e: ev.Event) -> None:
        s.apply(e)
        events.append(e)

    def expected(queue: str) -> list[str]:
        pending = [j for j in s.jobs.values() if j.queue == queue and j.status is PENDING]
        return [j.id for j in sorted(pending, key=lambda j: model[j.id])]

    for step in range(1, 1201):
        roll = rng.random()
        queue = rng.choice(names)
        if roll < 0.45 or step < 50:
            k = 1 if roll < 0.4 else rng.randrange(30, 150)
            new = [f"j{len(model) + i}" for i in range(k)]
            for i, job_id in enumerate(new):
                model[job_id] = s.next_seq + i
            apply(ev.Enqueued(queue, T0, new, [b"x"] * k, 1000, 3))
        elif roll < 0.8:
            order = expected(queue)
            for want in order[: rng.randrange(1, 60)]:
                job = s.peek_pending(queue)
                assert job is not None and job.id == want
                apply(ev.Claimed(job.id, job.attempts + 1, T0, 30.0))
                claimed.append(job.id)
        elif claimed:
            job_id = claimed.pop(rng.randrange(len(claimed)))
            if roll < 0.88:
                apply(ev.Released([job_id]))
            elif roll < 0.94:
                apply(ev.Failed(job_id, ev.TO_PENDING, error="again"))
            else:
                apply(ev.Acked(job_id, False))
        if step % 400 == 0:
            assert {i: s.seq_of(j) for i, j in s.jobs.items()} == {i: model[i] for i in s.jobs}
            replayed = State()
            for e in events:
                replayed.apply(e)
            restored = State.restore(s.snapshot())
            assert {i: restored.seq_of(j) for i, j in restored.jobs.items()} == {
                i: model[i] for i in s.jobs
            }
            checked_returned += any(
                j.detail is not None and j.status is PENDING for j in s.jobs.values()
            )
            for name in names:
                order = expected(name)
                assert order, "the walk should leave jobs pending"
                assert drain(restored, name) == order
                assert drain(replayed, name) == order
    assert checked_returned, "no check saw a job made pending again"


@pytest.mark.parametrize("interleaved", [False, True])
def test_a_lane_lets_go_of_the_jobs_it_has_handed_out(interleaved: bool) -> None:
    """Claiming through a long run cuts the taken entries off it: the lane holds about as
    many references as it has pending jobs, not one per job ever enqueued. One batch makes
    one run of consecutive seqs; single enqueues into two queues in turn make runs with an
    array of seqs (every other seq)."""
    s = State()
    job_ids = [f"j{i}" for i in range(4000)]
    if interleaved:
        for job_id in job_ids:
            enqueue(s, "q", job_id)
            enqueue(s, "other", "o" + job_id)
        seqs = list(range(1, 8000, 2))
    else:
        s.apply(ev.Enqueued("q", T0, job_ids, [b"x"] * 4000, 1000, 3))
        seqs = list(range(1, 4001))
    for job_id in job_ids[:3000]:
        assert s.peek_pending("q") is s.jobs[job_id]
        s.apply(ev.Claimed(job_id, 1, T0, 30.0))
        s.apply(ev.Acked(job_id, False))
    lane = s.queues["q"].lanes[1000]
    held = sum(len(run.jobs) for run in lane.runs)
    assert 1000 <= held <= 2000
    assert [s.seq_of(s.jobs[i]) for i in job_ids[3000:]] == seqs[3000:]
    restored = State.restore(s.snapshot())
    assert drain(s, "q") == job_ids[3000:] == drain(restored, "q")


def test_a_replayed_claim_takes_its_entry_past_stale_ones() -> None:
    """A replay makes no ``peek_pending``, so stale entries (a cancelled job, a job with
    headers claimed) stand before the next claimed job: the claim drops them and takes
    its own entry, and the lane does not keep the entries of claimed jobs."""
    job_ids = [f"j{i}" for i in range(1000)]
    events: list[ev.Event] = [
        ev.Enqueued("q", T0, ["c"], [b"x"], 1000, 3),
        ev.Enqueued("q", T0, ["h"], [b"x"], specs=[ev.JobSpec(1000, 3, headers={"k": "v"})]),
        ev.Enqueued("q", T0, job_ids, [b"x"] * 1000, 1000, 3),
        ev.Cancelled("c"),
        ev.Claimed("h", 1, T0, 30.0),
        *(ev.Claimed(job_id, 1, T0, 30.0) for job_id in job_ids[:900]),
    ]
    s = State()
    for e in events:
        s.apply(e)
    lane = s.queues["q"].lanes[1000]
    assert sum(job is not None for run in lane.runs for job in run.jobs) == 100
    assert [s.seq_of(s.jobs[i]) for i in ("h", job_ids[0], job_ids[899])] == [2, 3, 902]
    assert drain(s, "q") == job_ids[900:]


def test_a_claim_of_a_job_that_never_was_in_a_lane_keeps_its_seq() -> None:
    """The queue claims only pending jobs, but applying a valid event never fails: a
    scheduled job of a priority that has no lane yet can be claimed too."""
    s = State()
    enqueue(s, "q", A)
    enqueue(s, "q", B, priority=7, run_at=T0 + 60)
    s.apply(ev.Claimed(B, 1, T0, 30.0))
    assert (status(s, B), s.seq_of(s.jobs[B])) == (JobStatus.CLAIMED, 2)
    assert s.queues["q"].counts[JobStatus.SCHEDULED] == 0


def test_dead_jobs_page_after_any_job_also_a_fresh_pending_one() -> None:
    s = State()
    enqueue(s, "q", A, B, C, D)
    for job_id in (B, D):
        s.apply(ev.Claimed(job_id, 1, T0, 30.0))
        s.apply(ev.Failed(job_id, ev.TO_DEAD, T0 + 1, None, "boom"))
    assert s.jobs[A].detail is None and s.jobs[C].detail is None  # fresh, no seq of their own
    page = views.dead_page
    assert [r.id for r in page(s, "q", None, 10)] == [B, D]
    assert [r.id for r in page(s, "q", A, 10)] == [B, D]
    assert [r.id for r in page(s, "q", C, 10)] == [D]  # C is not the head of its lane
    assert [r.id for r in page(s, "q", D, 10)] == []
    r = State.restore(s.snapshot())
    assert [x.id for x in page(r, "q", C, 10)] == [D]


def test_seqs_survive_a_snapshot_for_fresh_and_detailed_jobs() -> None:
    """Fresh jobs of two queues enqueued in turn (gaps in each queue's seqs), a job with
    headers, a scheduled, a claimed, a dead, a returned and a cancelled job: each kept
    keeps its seq through
    snapshot -> restore, fresh ones without a detail, and the restored state's snapshot is
    the same bytes."""
    s = State()
    for i in range(40):
        enqueue(s, "q" if i % 3 else "r", f"f{i}")
    enqueue(s, "q", A, headers={"h": "v"})
    enqueue(s, "q", B, run_at=T0 + 60)
    enqueue(s, "q", C, D)
    s.apply(ev.Claimed("f1", 1, T0, 30.0))
    s.apply(ev.Claimed("f2", 1, T0, 30.0))
    s.apply(ev.Failed("f2", ev.TO_DEAD, T0 + 1, None, "boom"))
    s.apply(ev.Claimed("f4", 1, T0, 30.0))
    s.apply(ev.Released(["f4"]))
    s.apply(ev.Cancelled("f5"))  # a fresh job dropped: its lane entry stands, stale
    seqs = {i: s.seq_of(j) for i, j in s.jobs.items()}
    assert "f5" not in seqs
    assert seqs["f0"] == 1 and seqs[A] == 41 and seqs[D] == 44
    data = s.snapshot()
    r = State.restore(data)
    assert {i: r.seq_of(j) for i, j in r.jobs.items()} == seqs
    assert {i: j.status for i, j in r.jobs.items()} == {i: j.status for i, j in s.jobs.items()}
    assert r.jobs["f0"].detail is None and r.jobs[C].detail is None
    assert r.snapshot() == data
    assert drain(r, "q") == drain(s, "q")


# -- encode / decode round trips -------------------------------------------------------------

EXAMPLES: list[ev.Event] = [
    ev.Enqueued("q", T0, [A, B], [b"a", b"b"]),
    ev.Enqueued(
        "é",
        T0,
        [A, "user-1"],
        [b"", b"x"],
        5,
        7,
        [ev.JobSpec(1, 2, T0 + 1, "dk", {"h": "v"}), None],
        [(b"k", b"v")],
    ),
    ev.Claimed(A, 2, T0, 30.0),
    ev.Renewed("user-1", T0 + 9),
    ev.Acked(A, True, T0),
    ev.Acked(A, False),
    ev.Failed(A, ev.TO_DEAD, T0, None, "e"),
    ev.Failed(A, ev.TO_SCHEDULED, None, T0, None),
    ev.Failed(A, ev.TO_PENDING),
    ev.Cancelled(A),
    ev.DeadRequeued("x"),
    ev.Promoted([A, "x"]),
    ev.Purged([]),
    ev.Released([B]),
    ev.KvDeleted([b"a", b""]),
    ev.Intake(
        "0123456789abcdef",
        7,
        T0,
        [ev.Enqueued("q", T0, [A], [b"a"]), ev.Cancelled(A), ev.DeadRequeued("x")],
    ),
    ev.Intake("p", 0, T0, []),
    ev.InboxForgot(["p", "0123456789abcdef"]),
    ev.KvWritten([(b"k", b"v"), (b"\x00" * 300, b"")]),
    ev.Settled(
        ev.Acked(A, False),
        [ev.Enqueued("q", T0, ["f1"], [b"f"]), ev.KvWritten([(b"k", b"v")]), ev.KvDeleted([b"d"])],
    ),
    ev.Settled(ev.Failed(A, ev.TO_DEAD, T0, None, "e"), []),
    ev.ScheduleSet("s", "*/5 * * * *", "UTC", "q", b"p", T0 + 300),
    ev.ScheduleSet("s2", "@daily", "Europe/Paris", "q", b"", T0, T0 - 86400, 5, 2, {"h": "v"}),
    ev.ScheduleRemoved("s"),
    ev.ScheduleFired("s", T0, T0 + 300),
    ev.ScheduleFired(
        "s",
        T0,
        T0 + 300,
        ev.Enqueued(
            "q",
            T0,
            ["sj"],
            [b"p"],
            specs=[ev.JobSpec(dedup_key="taquba-schedule:s:1", headers={"taquba-schedule": "s"})],
        ),
    ),
]


def test_schedules_are_set_fired_removed_and_kept_by_snapshots() -> None:
    s = State()
    s.apply(ev.ScheduleSet("s", "*/5 * * * *", "UTC", "q", b"p", T0 + 300))
    s.apply(
        ev.ScheduleSet(
            "t", "@daily", "Europe/Paris", "q2", b"x" * 50, T0 + 9, None, 5, None, {"h": "v"}
        )
    )
    s.apply(ev.ScheduleFired("s", T0 + 300, T0 + 600, ev.Enqueued("q", T0 + 301, [A], [b"p"])))
    assert s.schedules["s"].last_run_at == T0 + 300 and s.schedules["s"].next_run_at == T0 + 600
    assert set(s.jobs) == {A}
    before = s.live_bytes
    r = State.restore(s.snapshot())
    assert r.schedules == s.schedules and r.live_bytes == before
    s.apply(ev.ScheduleRemoved("t"))
    s.apply(ev.ScheduleRemoved("unknown"))
    assert list(s.schedules) == ["s"] and s.live_bytes < before
    s.apply(ev.ScheduleRemoved("s"))
    assert State.restore(s.snapshot()).schedules == {}
    assert s.live_bytes == State.restore(s.snapshot()).live_bytes


def test_a_damaged_schedule_section_of_a_snapshot_is_corruption() -> None:
    """(The log's framing checks a checkpoint's length and CRC first; this is the decoder.)"""
    s = State()
    s.apply(ev.ScheduleSet("s", "@daily", "UTC", "q", b"p", T0))
    data = s.snapshot()
    old_format = len(State().snapshot())  # ends after the KV entries: as written before
    assert data.startswith(State().snapshot())
    for end in range(1, len(data)):
        if end != old_format:
            with pytest.raises(CorruptionError):
                State.restore(data[:end])
    stored = ev.ScheduleSet("s", "@daily", "UTC", "q", b"p", T0).encode()
    other = ev.KvWritten([(b"k" * 20, b"v")]).encode()
    assert data.endswith(bytes([len(stored)]) + stored)
    with pytest.raises(CorruptionError, match="schedule is stored as a KvWritten"):
        State.restore(data[: -len(stored) - 1] + bytes([len(other)]) + other)
    twice = State()
    twice.schedules = {"a": s.schedules["s"], "b": s.schedules["s"]}
    with pytest.raises(CorruptionError, match="listed twice"):
        State.restore(twice.snapshot())


def test_intake_records_keep_the_layout_of_the_first_inbox_release() -> None:
    """tag | str producer | uvarint seq | f64 at | uvarint n | n x bytes record, and
    tag | uvarint n | n x str producer: roots written before the typed events stay readable."""
    inner = ev.Cancelled(A).encode()
    got = ev.Intake("pp", 300, T0, [ev.Cancelled(A)]).encode()
    assert (
        got
        == bytes([got[0]])
        + b"\x02pp"
        + b"\xac\x02"
        + struct.pack(">d", T0)
        + b"\x01"
        + bytes([len(inner)])
        + inner
    )
    assert got[0] & 0x0F == ev.INTAKE == 12
    forgot = ev.InboxForgot(["a", "bc"]).encode()
    assert forgot == bytes([forgot[0]]) + b"\x02\x01a\x02bc"
    assert forgot[0] & 0x0F == ev.INBOX_FORGET == 13


def test_an_intake_nested_in_an_intake_is_corruption() -> None:
    nested = ev.InboxForgot(["p"]).encode()
    data = bytearray(ev.Intake("p", 1, T0, []).encode())
    data[-1] = 1
    data += bytes([len(nested)]) + nested
    with pytest.raises(CorruptionError, match="nested intake"):
        ev.decode(bytes(data))


def test_an_intake_applies_its_events_then_sets_the_mark_and_snapshots_keep_marks() -> None:
    s = State()
    s.apply(ev.Intake("p1", 4, T0, [ev.Enqueued("q", T0, [A, B], [b"a", b"b"]), ev.Cancelled(A)]))
    assert set(s.jobs) == {B} and s.inbox_marks == {"p1": (4, T0)}
    s.apply(ev.Intake("p2", 0, T0 + 1, []))
    before = s.live_bytes
    r = State.restore(s.snapshot())
    assert r.inbox_marks == {"p1": (4, T0), "p2": (0, T0 + 1)} and r.live_bytes == before
    s.apply(ev.InboxForgot(["p1", "unknown"]))
    assert s.inbox_marks == {"p2": (0, T0 + 1)}
    assert State.restore(s.snapshot()).inbox_marks == {"p2": (0, T0 + 1)}


def test_every_event_class_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_each_event_class_round_trips(event: ev.Event) -> None:
    record = event.encode()
    got = ev.decode(record)
    assert type(got) is type(event)
    assert got.encode() == record
    if not isinstance(event, (ev.Enqueued, ev.Intake, ev.Settled, ev.ScheduleFired)):
        # sequences may come back as lists
        assert got == event


def test_events_are_immutable_and_slotted() -> None:
    for e in EXAMPLES:
        assert not hasattr(e, "__dict__")
        with pytest.raises(AttributeError):
            setattr(e, e._fields[0], "other")


def test_events_of_different_types_are_told_apart() -> None:
    """State.apply and decode dispatch on the type, never on the values."""
    assert type(ev.decode(ev.Cancelled(A).encode())) is ev.Cancelled
    assert type(ev.decode(ev.DeadRequeued(A).encode())) is ev.DeadRequeued
    s = State()
    enqueue(s, "q", A)
    s.apply(ev.DeadRequeued(A))  # A is pending, not dead: nothing happens
    assert status(s, A) is JobStatus.PENDING
    s.apply(ev.Cancelled(A))
    assert status(s, A) is None


# Hypothesis: any valid event survives encode -> decode with the same meaning.

text_ids = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)
job_ids = st.one_of(text_ids, st.builds(ids.encode, st.integers(0, 2**128 - 1)))
times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
small = st.integers(1, 2**31)
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
specs = st.builds(
    ev.JobSpec,
    st.integers(0, 2**32 - 1),
    small,
    st.none() | times,
    st.none() | names,
    st.none() | st.dictionaries(names, names, min_size=1, max_size=3),
)


@st.composite
def enqueued(draw: st.DrawFn) -> ev.Enqueued:
    n = draw(st.integers(1, 6))
    ids_ = draw(st.lists(job_ids, min_size=n, max_size=n))
    payloads = draw(st.lists(st.binary(max_size=40), min_size=n, max_size=n))
    per_job = draw(st.none() | st.lists(st.none() | specs, min_size=n, max_size=n))
    kv = draw(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=3))
    return ev.Enqueued(
        draw(names),
        draw(times),
        ids_,
        payloads,
        draw(st.integers(0, 2**32 - 1)),
        draw(small),
        per_job,
        kv,
    )


events = st.one_of(
    enqueued(),
    st.builds(
        lambda i, n, t, lease: ev.Claimed(i, n, t, lease),
        job_ids,
        small,
        times,
        st.floats(min_value=0, max_value=1e300, allow_nan=False),
    ),
    st.builds(ev.Renewed, job_ids, times),
    st.builds(lambda i, t: ev.Acked(i, True, t), job_ids, times),
    st.builds(lambda i: ev.Acked(i, False), job_ids),
    st.builds(
        lambda i, t, e: ev.Failed(i, ev.TO_DEAD, t, None, e), job_ids, times, st.none() | names
    ),
    st.builds(
        lambda i, t, e: ev.Failed(i, ev.TO_SCHEDULED, None, t, e), job_ids, times, st.none() | names
    ),
    st.builds(lambda i, e: ev.Failed(i, ev.TO_PENDING, None, None, e), job_ids, st.none() | names),
    st.builds(ev.Cancelled, job_ids),
    st.builds(ev.DeadRequeued, job_ids),
    st.builds(ev.Promoted, st.lists(job_ids, max_size=4)),
    st.builds(ev.Purged, st.lists(job_ids, max_size=4)),
    st.builds(ev.Released, st.lists(job_ids, max_size=4)),
    st.builds(ev.KvDeleted, st.lists(st.binary(max_size=10), max_size=4)),
)


def meaning(e: ev.Event) -> object:
    """What an event says, whichever of its equal forms it takes."""
    if not isinstance(e, ev.Enqueued):
        return e
    jobs = []
    for i, (job_id, payload) in enumerate(zip(e.ids, e.payloads)):
        spec = None if e.specs is None else e.specs[i]
        if spec is None:
            spec = ev.JobSpec(e.priority, e.max_attempts)
        jobs.append(
            (
                job_id,
                payload,
                spec.priority,
                spec.max_attempts,
                spec.run_at,
                spec.dedup_key,
                dict(spec.headers) if spec.headers else None,
            )
        )
    return (e.queue, e.at, jobs, [tuple(kv) for kv in e.kv])


@settings(max_examples=400, deadline=None)
@given(events)
def test_any_event_round_trips_with_its_meaning(event: ev.Event) -> None:
    record = event.encode()
    got = ev.decode(record)
    assert type(got) is type(event)
    assert meaning(got) == meaning(event)
    assert got.encode() == record
    if isinstance(event, ev.Claimed):
        assert got.at + got.lease == event.at + event.lease or math.isinf(event.at + event.lease)
