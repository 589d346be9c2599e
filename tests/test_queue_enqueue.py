"""Enqueue and what it makes: the round trip through claim and ack, dedup keys, order,
scheduling, ``enqueue_batch`` and concurrent single enqueues on local disk.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import fsspec
import pytest
from support.clock import T0, ManualClock
from support.faulty import FaultyFileSystem
from support.queues import Opener, Q, causes, claim, record, stats

from taquba import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    CancelOutcome,
    EnqueueOptions,
    InvalidArgument,
    JobStatus,
    OpenOptions,
    Queue,
    QueueBroken,
    QueueConfig,
    StorageError,
)

# --------------------------------------------------------------------------- enqueue / claim / ack


def test_enqueue_claim_ack_round_trip(q: Queue, clock: ManualClock) -> None:
    assert q.stats(Q) == stats(q)
    job_id = q.enqueue(Q, b"hello", headers={"trace": "t1"})
    assert isinstance(job_id, str) and job_id
    r = record(q, job_id)
    assert (r.id, r.queue, r.payload, dict(r.headers)) == (job_id, Q, b"hello", {"trace": "t1"})
    assert (r.status, r.attempts, r.max_attempts, r.priority) == (
        JobStatus.PENDING,
        0,
        3,
        PRIORITY_NORMAL,
    )
    assert r.enqueued_at == T0
    assert (
        r.run_at,
        r.claimed_at,
        r.lease_expires_at,
        r.completed_at,
        r.failed_at,
        r.last_error,
        r.dedup_key,
        r.cancel_requested,
    ) == (None, None, None, None, None, None, None, False)
    assert q.stats(Q) == stats(q, pending=1)

    clock.advance(5)
    c = claim(q, lease=12)
    assert (c.id, c.queue, c.payload, dict(c.headers), c.attempts, c.priority) == (
        job_id,
        Q,
        b"hello",
        {"trace": "t1"},
        1,
        PRIORITY_NORMAL,
    )
    assert c.lease_expires_at == T0 + 5 + 12
    assert c.record.status is JobStatus.CLAIMED
    assert not c.cancel_requested.is_set()
    r = record(q, job_id)
    assert (r.status, r.attempts, r.claimed_at, r.lease_expires_at) == (
        JobStatus.CLAIMED,
        1,
        T0 + 5,
        T0 + 17,
    )
    assert q.stats(Q) == stats(q, claimed=1)
    assert q.claim(Q) is None

    q.ack(c)
    assert q.get_job(job_id) is None  # keep_done=None drops the record
    assert q.stats(Q) == stats(q, done=1)


def test_a_claims_record_is_the_job_as_claimed_whenever_it_is_read(
    q: Queue, clock: ManualClock
) -> None:
    """The record is made on first use: reading it after the job moved on changes nothing."""
    job_id = q.enqueue(Q, b"hello", headers={"trace": "t1"}, max_attempts=5)
    first = claim(q, lease=10)
    clock.advance(1)
    q.nack(first, "boom")  # back to pending after a backoff; first's record is unread
    clock.advance(3600)
    q.promote_scheduled_now()
    second = claim(q, lease=12)
    q.ack(second)  # the job is gone: second's record is still unread
    r = second.record
    assert (r.id, r.queue, r.payload, dict(r.headers)) == (job_id, Q, b"hello", {"trace": "t1"})
    assert (r.status, r.attempts, r.max_attempts, r.last_error, r.completed_at) == (
        JobStatus.CLAIMED,
        2,
        5,
        "boom",
        None,
    )
    assert r.lease_expires_at == second.lease_expires_at == r.claimed_at + 12
    assert second.record is r  # made once
    r1 = first.record
    assert (r1.status, r1.attempts, r1.last_error, r1.failed_at) == (
        JobStatus.CLAIMED,
        1,
        None,
        None,
    )
    assert (first.id, first.attempts, second.attempts, second.priority) == (
        job_id,
        1,
        2,
        PRIORITY_NORMAL,
    )
    r.headers["trace"] = "changed"  # type: ignore[index]  # a copy: the claim keeps its own
    assert dict(second.headers) == {"trace": "changed"}
    assert dict(first.headers) == {"trace": "t1"}


def test_payload_bytes_like_and_enqueue_with(q: Queue) -> None:
    a = q.enqueue(Q, bytearray(b"ba"))  # type: ignore[arg-type]
    b = q.enqueue(Q, memoryview(b"mv"))  # type: ignore[arg-type]
    c = q.enqueue_with(Q, b"opts", EnqueueOptions(priority=7, max_attempts=9, headers={"k": "v"}))
    assert record(q, a).payload == b"ba" and type(record(q, a).payload) is bytes
    assert record(q, b).payload == b"mv"
    rc = record(q, c)
    assert (rc.priority, rc.max_attempts, dict(rc.headers)) == (7, 9, {"k": "v"})
    assert claim(q).id == c  # priority 7 beats the default
    assert q.stats(Q) == stats(q, pending=2, claimed=1)


def test_custom_job_id(q: Queue) -> None:
    assert q.enqueue(Q, b"x", job_id="order-42_A") == "order-42_A"
    assert record(q, "order-42_A").payload == b"x"
    assert claim(q).id == "order-42_A"


def test_default_lease_and_per_queue_config(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(
        QueueConfig(lease=40, max_attempts=5, default_priority=PRIORITY_LOW),
        queue_configs={"slow": QueueConfig(lease=500, default_priority=5)},
    )
    a = q.enqueue(Q, b"a")
    b = q.enqueue("slow", b"b")
    assert (record(q, a).max_attempts, record(q, a).priority) == (5, PRIORITY_LOW)
    assert (record(q, b).max_attempts, record(q, b).priority) == (3, 5)
    assert claim(q).lease_expires_at == T0 + 40
    assert claim(q, "slow").lease_expires_at == T0 + 500
    assert record(q, b).lease_expires_at == T0 + 500
    q.enqueue("slow", b"c")
    assert claim(q, "slow", lease=timedelta(minutes=1)).lease_expires_at == T0 + 60


def test_claim_on_empty_or_other_queue(q: Queue) -> None:
    assert q.claim(Q) is None
    q.enqueue("other", b"x")
    assert q.claim(Q) is None
    assert q.claim_batch(Q, 5) == []
    assert q.stats("other") == stats(q, "other", pending=1)
    assert q.stats(Q) == stats(q)


# --------------------------------------------------------------------------- dedup


def test_dedup_hit_creates_nothing(q: Queue) -> None:
    first = q.enqueue(Q, b"one", dedup_key="k")
    before = q.stats(Q)
    assert q.enqueue(Q, b"two", dedup_key="k", priority=1) == first
    assert q.enqueue_with(Q, b"three", EnqueueOptions(dedup_key="k")) == first
    assert q.stats(Q) == before == stats(q, pending=1)
    r = record(q, first)
    assert (r.payload, r.priority, r.dedup_key) == (b"one", PRIORITY_NORMAL, "k")
    # keys are per queue
    other = q.enqueue("other", b"x", dedup_key="k")
    assert other != first
    c = claim(q)
    assert (c.id, c.payload) == (first, b"one")
    assert q.claim(Q) is None


def test_dedup_key_released_at_first_claim(q: Queue) -> None:
    first = q.enqueue(Q, b"one", dedup_key="k")
    c = claim(q)
    second = q.enqueue(Q, b"two", dedup_key="k")
    assert second != first
    assert q.stats(Q) == stats(q, pending=1, claimed=1)
    # the retried first job does not take the key back
    q.nack(c, "boom")
    assert q.enqueue(Q, b"three", dedup_key="k") == second
    assert q.stats(Q) == stats(q, scheduled=1, pending=1)


def test_dedup_matches_scheduled_job_and_is_released_by_cancel(q: Queue) -> None:
    first = q.enqueue(Q, b"one", dedup_key="k", delay=60)
    assert q.enqueue(Q, b"two", dedup_key="k") == first
    assert q.stats(Q) == stats(q, scheduled=1)
    assert q.cancel(first) is CancelOutcome.REMOVED
    again = q.enqueue(Q, b"three", dedup_key="k")
    assert again != first
    assert q.stats(Q) == stats(q, pending=1)


# --------------------------------------------------------------------------- ordering


def test_priorities_then_fifo_within_a_priority(q: Queue, clock: ManualClock) -> None:
    expected = []
    low = [q.enqueue(Q, b"low%d" % i, priority=PRIORITY_LOW) for i in range(3)]
    normal = [q.enqueue(Q, b"n%d" % i) for i in range(3)]
    clock.advance(1)
    high = [q.enqueue(Q, b"h%d" % i, priority=PRIORITY_HIGH) for i in range(3)]
    zero = q.enqueue(Q, b"zero", priority=0)
    top = q.enqueue(Q, b"max", priority=2**32 - 1)
    normal.append(q.enqueue(Q, b"n3"))
    expected = [zero, *high, *normal, *low, top]
    got = [claim(q).id for _ in expected]
    assert got == expected
    assert q.claim(Q) is None


def test_retry_without_backoff_keeps_enqueue_order(open_queue: Opener) -> None:
    q = open_queue(QueueConfig(retry_backoff_base=0))
    a = q.enqueue(Q, b"a")
    b = q.enqueue(Q, b"b")
    ca = claim(q)
    q.nack(ca, "again")
    assert record(q, a).status is JobStatus.PENDING
    assert q.stats(Q) == stats(q, pending=2)
    assert [claim(q).id, claim(q).id] == [a, b]


# --------------------------------------------------------------------------- scheduling


def test_delay_schedules_then_promotes(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"later", delay=30)
    r = record(q, job_id)
    assert (r.status, r.run_at) == (JobStatus.SCHEDULED, T0 + 30)
    assert q.stats(Q) == stats(q, scheduled=1)
    assert q.promote_scheduled_now() == 0
    clock.advance(29.5)
    assert q.promote_scheduled_now() == 0
    assert q.stats(Q) == stats(q, scheduled=1)
    clock.advance(0.5)
    assert q.promote_scheduled_now() == 1
    assert q.promote_scheduled_now() == 0
    r = record(q, job_id)
    assert (r.status, r.run_at) == (JobStatus.PENDING, None)
    assert q.stats(Q) == stats(q, pending=1)
    assert claim(q).id == job_id


def test_run_at_forms(q: Queue, clock: ManualClock) -> None:
    aware = datetime.fromtimestamp(T0 + 100, tz=timezone(timedelta(hours=5)))
    a = q.enqueue(Q, b"dt", run_at=aware)
    b = q.enqueue(Q, b"epoch", run_at=T0 + 50)
    c = q.enqueue(Q, b"td", delay=timedelta(seconds=75))
    assert record(q, a).run_at == pytest.approx(T0 + 100)
    assert record(q, b).run_at == T0 + 50
    assert record(q, c).run_at == T0 + 75
    assert q.stats(Q) == stats(q, scheduled=3)
    clock.advance(80)
    assert q.promote_scheduled_now() == 2
    assert [claim(q).id, claim(q).id] == [b, c]
    clock.advance(20)
    assert q.promote_scheduled_now() == 1
    assert claim(q).id == a


def test_run_at_in_the_past_or_zero_delay_is_pending(q: Queue) -> None:
    past = q.enqueue(Q, b"past", run_at=T0 - 3600)
    now = q.enqueue(Q, b"now", run_at=T0)
    dt = q.enqueue(Q, b"dt", run_at=datetime.fromtimestamp(T0 - 1, tz=timezone.utc))
    zero = q.enqueue(Q, b"zero", delay=0)
    for job_id in (past, now, dt, zero):
        r = record(q, job_id)
        assert (r.status, r.run_at) == (JobStatus.PENDING, None)
    assert q.stats(Q) == stats(q, pending=4)


def test_claim_promotes_due_jobs_inline(q: Queue, clock: ManualClock) -> None:
    later = q.enqueue(Q, b"later", delay=10, priority=PRIORITY_HIGH)
    now = q.enqueue(Q, b"now")
    clock.advance(10)
    assert claim(q).id == later  # promoted inside claim, and its priority wins
    assert claim(q).id == now


# --------------------------------------------------------------------------- enqueue_batch


def test_enqueue_batch_ordered(q: Queue, clock: ManualClock) -> None:
    ids = q.enqueue_batch(Q, [b"a", bytearray(b"b"), memoryview(b"c")])  # type: ignore[list-item]
    assert len(set(ids)) == 3
    assert [record(q, i).payload for i in ids] == [b"a", b"b", b"c"]
    assert q.stats(Q) == stats(q, pending=3)
    more = q.enqueue_batch(Q, (bytes([i]) for i in range(4)))
    assert [claim(q).id for _ in range(7)] == ids + more
    assert q.enqueue_batch(Q, []) == []
    assert q.stats(Q) == stats(q, claimed=7)


def test_enqueue_batch_is_all_or_nothing(q: Queue) -> None:
    q.enqueue(Q, b"existing")
    before = q.stats(Q)
    with pytest.raises(InvalidArgument, match=r"payloads\[2\]"):
        q.enqueue_batch(Q, [b"ok", b"ok", "not bytes", b"ok"])  # type: ignore[list-item]
    assert q.stats(Q) == before
    assert q.list_queues() == [Q]


def test_enqueue_batch_is_one_record_and_fails_whole(
    fast_backend_root: Any, clock: ManualClock
) -> None:
    inner, path = fast_backend_root.filesystem()
    if fast_backend_root.name == "local":
        inner = fsspec.filesystem("file", auto_mkdir=True)
    fs = FaultyFileSystem(inner)
    opts = OpenOptions(clock=clock, background_threads=False, storage_retries=0)
    q = Queue.open(fs, path=path, options=opts)
    try:
        q.enqueue(Q, b"before")
        puts = fs.count("put")
        ids = q.enqueue_batch(Q, [b"%d" % i for i in range(50)])
        assert fs.count("put") - puts == 1  # the whole batch went out in one segment
        fs.fail("put", ConnectionResetError, times=None)
        with pytest.raises(StorageError) as info:
            q.enqueue_batch(Q, [b"lost-%d" % i for i in range(50)])
        assert ConnectionResetError in causes(info.value)  # the backend's error is kept
        with pytest.raises(QueueBroken):
            q.enqueue(Q, b"after")
    finally:
        q.close()
    fs.clear_faults()
    with Queue.open(fs, path=path, options=opts) as q2:
        assert q2.stats(Q) == stats(q2, pending=51)
        assert [claim(q2).payload for _ in range(51)] == [b"before"] + [
            b"%d" % i for i in range(50)
        ]
        assert [record(q2, i).status for i in ids] == [JobStatus.CLAIMED] * 50


# -- concurrent single enqueues on local disk (combined by one caller) ------------------------


def _run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait()
        try:
            target(i)
        except BaseException as exc:  # collected for the test to look at
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_concurrent_enqueues_are_each_durable_and_in_each_threads_order(tmp_path) -> None:
    threads, per_thread = 16, 150
    got: dict[int, list[str]] = {}
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:

        def produce(i: int) -> None:
            got[i] = [q.enqueue("jobs", b"%d-%d" % (i, n)) for n in range(per_thread)]

        assert _run_threads(threads, produce) == []
        stats = q.committer.stats
        assert q.stats("jobs").pending == threads * per_thread
        assert stats.records_committed <= threads * per_thread  # plain ones share records
        assert stats.segments_written < threads * per_thread  # callers shared writes
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        order = []
        while (c := q.claim("jobs")) is not None:
            order.append(c.payload)
            q.ack(c)
    assert sorted(order) == sorted(
        b"%d-%d" % (i, n) for i in range(threads) for n in range(per_thread)
    )
    for i in range(threads):  # FIFO: each thread's jobs come out in the order it made them
        mine = [p for p in order if p.startswith(b"%d-" % i)]
        assert mine == [b"%d-%d" % (i, n) for n in range(per_thread)]
    assert all(len(ids) == per_thread for ids in got.values())


def test_a_bad_enqueue_among_concurrent_ones_fails_alone(tmp_path) -> None:
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:

        def produce(i: int) -> None:  # every thread tries the same caller-chosen id once
            q.enqueue_with("jobs", b"x%d" % i, EnqueueOptions(job_id="the-one"))
            q.enqueue("jobs", b"after %d" % i)

        errors = _run_threads(8, produce)
        assert len(errors) == 7 and all(isinstance(e, InvalidArgument) for e in errors)
        assert all("already in use" in str(e) for e in errors)
        assert q.stats("jobs").pending == 2  # the one winner and its follow-up
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        assert q.stats("jobs").pending == 2


def test_a_failed_write_fails_every_concurrent_enqueue_it_carried(tmp_path, monkeypatch) -> None:
    from taquba.storage.local import LocalAppender

    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        q.enqueue("jobs", b"durable")  # the segment exists: the next commits append

        def broken(self, data, fence_key):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(LocalAppender, "append", broken)
        errors = _run_threads(8, lambda i: q.enqueue("jobs", b"lost %d" % i))
        assert len(errors) == 8
        assert all(isinstance(e, (StorageError, QueueBroken)) for e in errors)
        with pytest.raises(QueueBroken):
            q.enqueue("jobs", b"later")
    monkeypatch.undo()
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        c = q.claim("jobs")
        assert c is not None and c.payload == b"durable"
        assert q.claim("jobs") is None


def test_concurrent_mixed_enqueues_keep_each_ones_meaning(tmp_path) -> None:
    """Enqueues with and without options, from many threads at once, in one group commit."""
    calls: list[tuple[str, bytes, dict[str, Any]]] = [
        ("a", b"1", {}),
        ("a", b"2", {}),
        ("a", b"p", {"priority": 5}),
        ("a", b"3", {}),
        ("a", b"d", {"dedup_key": "k"}),
        ("a", b"id", {"job_id": "mine"}),
        ("a", b"id again", {"job_id": "mine"}),
        ("b", b"x", {}),
        ("b", b"y", {}),
        ("a", b"d again", {"dedup_key": "k"}),
        ("a", b"4", {}),
        ("a", b"h", {"headers": {"h": "1"}}),
        ("a", b"5", {}),
    ]
    results: dict[int, Any] = {}
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        start = threading.Barrier(len(calls))
        threads = []
        for i, (queue, payload, opts) in enumerate(calls):

            def call(
                i: int = i,
                queue: str = queue,
                payload: bytes = payload,
                opts: dict[str, Any] = opts,
            ) -> None:
                start.wait()
                try:
                    results[i] = q.enqueue(queue, payload, **opts)
                except InvalidArgument as exc:
                    results[i] = exc

            threads.append(threading.Thread(target=call))
            threads[-1].start()
        for t in threads:
            t.join(30)
        mine = [results[5], results[6]]
        assert sorted(map(type, mine), key=str) == sorted([str, InvalidArgument], key=str)
        assert "already in use" in str(next(r for r in mine if isinstance(r, Exception)))
        assert results[9] == results[4]  # the second dedup_key "k" hit the first
        ids = [results[i] for i in (0, 1, 2, 3, 4, 7, 8, 10, 11, 12)]
        assert len(set(ids)) == len(ids) and all(isinstance(x, str) for x in ids)
        winner = calls[5][1] if results[5] == "mine" else calls[6][1]
        dedup_winner = b"d" if q.get_job(results[4]).payload == b"d" else b"d again"

    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:

        def drain(queue: str) -> list[tuple[bytes, int, dict[str, str]]]:
            out = []
            while (c := q.claim(queue)) is not None:
                out.append((c.payload, c.priority, dict(c.headers)))
                q.ack(c)
            return out

        a = drain("a")
        assert [(p, prio) for p, prio, _ in a if prio == 5] == [(b"p", 5)]
        default = sorted(p for p, prio, _ in a if prio != 5)
        assert default == sorted([b"1", b"2", b"3", dedup_winner, winner, b"4", b"h", b"5"])
        assert {p: h for p, _, h in a if h} == {b"h": {"h": "1"}}
        assert sorted(p for p, _, _ in drain("b")) == [b"x", b"y"]
