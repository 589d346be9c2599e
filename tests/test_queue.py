"""The public ``Queue`` API, method by method, on the fast backends with a manual clock.

Every test opens its queue with ``background_threads=False`` and an injected clock, and drives
the reaper and scheduler itself through ``reap_now()`` / ``promote_scheduled_now()``: nothing
here sleeps to let time pass. The few tests that block (``claim(wait=...)``,
``wait_for_completion``) do so from a second thread and only assert what happened, with
generous bounds, never how fast.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import fsspec
import pytest
from clock import T0, ManualClock
from faulty import FaultyFileSystem

from taquba import (
    MAX_KV_VALUE_SIZE,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    CancelOutcome,
    Claim,
    ClaimLost,
    ConfigError,
    EnqueueOptions,
    EnqueueResult,
    InvalidArgument,
    JobNotFound,
    JobRecord,
    JobStatus,
    OpenOptions,
    Queue,
    QueueBroken,
    QueueClosed,
    QueueConfig,
    QueueStats,
    StorageError,
    WaitOutcome,
    WaitStatus,
)

Q = "jobs"
WAIT = 20.0  # upper bound for something that must happen; never a speed assertion


Opener = Callable[..., Queue]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_queue(fast_backend_root: Any, clock: ManualClock) -> Iterator[Opener]:
    """Open (or reopen) the test's root; every handle is closed at teardown."""
    handles: list[Queue] = []

    def opener(config: QueueConfig | None = None, **options: Any) -> Queue:
        opts = OpenOptions(clock=clock, background_threads=False,
                           default_queue_config=config or QueueConfig(), **options)
        q = Queue.open(fast_backend_root.location,
                       storage_options=fast_backend_root.storage_options, options=opts)
        handles.append(q)
        return q

    yield opener
    for q in handles:
        q.close()


@pytest.fixture
def q(open_queue: Opener) -> Queue:
    return open_queue()


def stats(q: Queue, queue: str = Q, **counts: int) -> QueueStats:
    return QueueStats(queue=queue, **counts)


def claim(q: Queue, queue: str = Q, lease: Any = None) -> Claim:
    c = q.claim(queue, lease)
    assert c is not None, f"expected a job to claim on {queue!r}"
    return c


def record(q: Queue, job_id: str) -> JobRecord:
    r = q.get_job(job_id)
    assert r is not None, f"job {job_id} is gone"
    return r


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a daemon thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def joined(thread: threading.Thread, out: list[Any]) -> Any:
    thread.join(WAIT)
    assert not thread.is_alive(), "the blocked call never returned"
    assert len(out) == 1
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def causes(exc: BaseException | None) -> list[type[BaseException]]:
    """The types along an exception's ``__cause__`` chain."""
    out: list[type[BaseException]] = []
    while exc is not None and len(out) < 20:
        out.append(type(exc))
        exc = exc.__cause__
    return out


def until_waiting(q: Queue, job_id: str) -> None:
    """Block until a ``wait_for_completion(job_id)`` caller is registered (white-box hook)."""
    deadline = time.monotonic() + WAIT
    while job_id not in q._waiters:
        assert time.monotonic() < deadline, "the waiter never started waiting"
        time.sleep(0.001)


# --------------------------------------------------------------------------- enqueue / claim / ack


def test_enqueue_claim_ack_round_trip(q: Queue, clock: ManualClock) -> None:
    assert q.stats(Q) == stats(q)
    job_id = q.enqueue(Q, b"hello", headers={"trace": "t1"})
    assert isinstance(job_id, str) and job_id
    r = record(q, job_id)
    assert (r.id, r.queue, r.payload, dict(r.headers)) == (job_id, Q, b"hello", {"trace": "t1"})
    assert (r.status, r.attempts, r.max_attempts, r.priority) == (
        JobStatus.PENDING, 0, 3, PRIORITY_NORMAL)
    assert r.enqueued_at == T0
    assert (r.run_at, r.claimed_at, r.lease_expires_at, r.completed_at, r.failed_at,
            r.last_error, r.dedup_key, r.cancel_requested) == (
        None, None, None, None, None, None, None, False)
    assert q.stats(Q) == stats(q, pending=1)

    clock.advance(5)
    c = claim(q, lease=12)
    assert (c.id, c.queue, c.payload, dict(c.headers), c.attempts, c.priority) == (
        job_id, Q, b"hello", {"trace": "t1"}, 1, PRIORITY_NORMAL)
    assert c.lease_expires_at == T0 + 5 + 12
    assert c.record.status is JobStatus.CLAIMED
    assert not c.cancel_requested.is_set()
    r = record(q, job_id)
    assert (r.status, r.attempts, r.claimed_at, r.lease_expires_at) == (
        JobStatus.CLAIMED, 1, T0 + 5, T0 + 17)
    assert q.stats(Q) == stats(q, claimed=1)
    assert q.claim(Q) is None

    q.ack(c)
    assert q.get_job(job_id) is None  # keep_done=None drops the record
    assert q.stats(Q) == stats(q, done=1)


def test_a_claims_record_is_the_job_as_claimed_whenever_it_is_read(
        q: Queue, clock: ManualClock) -> None:
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
        JobStatus.CLAIMED, 2, 5, "boom", None)
    assert r.lease_expires_at == second.lease_expires_at == r.claimed_at + 12
    assert second.record is r  # made once
    r1 = first.record
    assert (r1.status, r1.attempts, r1.last_error, r1.failed_at) == (
        JobStatus.CLAIMED, 1, None, None)
    assert (first.id, first.attempts, second.attempts, second.priority) == (
        job_id, 1, 2, PRIORITY_NORMAL)
    r.headers["trace"] = "changed"  # type: ignore[index]  # a copy: the claim keeps its own
    assert dict(second.headers) == {"trace": "changed"}
    assert dict(first.headers) == {"trace": "t1"}


def test_payload_bytes_like_and_enqueue_with(q: Queue) -> None:
    a = q.enqueue(Q, bytearray(b"ba"))  # type: ignore[arg-type]
    b = q.enqueue(Q, memoryview(b"mv"))  # type: ignore[arg-type]
    c = q.enqueue_with(Q, b"opts", EnqueueOptions(priority=7, max_attempts=9,
                                                    headers={"k": "v"}))
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
    q = open_queue(QueueConfig(lease=40, max_attempts=5, default_priority=PRIORITY_LOW),
                   queue_configs={"slow": QueueConfig(lease=500, default_priority=5)})
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


# --------------------------------------------------------------------------- nack / backoff / dead


def test_backoff_is_exponential_and_capped(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(max_attempts=7, retry_backoff_base=1.5, retry_backoff_max=10))
    job_id = q.enqueue(Q, b"flaky")
    for n, delay in enumerate([1.5, 3.0, 6.0, 10.0, 10.0, 10.0], start=1):
        c = claim(q)
        assert c.attempts == n
        clock.advance(0.25)
        q.nack(c, f"failure {n}")
        r = record(q, job_id)
        assert (r.status, r.attempts, r.last_error) == (JobStatus.SCHEDULED, n, f"failure {n}")
        assert r.run_at == clock.now + delay == min(1.5 * 2 ** (n - 1), 10) + clock.now
        assert q.stats(Q) == stats(q, scheduled=1)
        clock.advance(delay - 0.01)
        assert q.claim(Q) is None
        clock.advance(0.01)
    c = claim(q)
    assert c.attempts == 7
    q.nack(c, ValueError("last"))
    r = record(q, job_id)
    assert (r.status, r.attempts, r.last_error, r.failed_at) == (
        JobStatus.DEAD, 7, "ValueError: last", clock.now)
    assert q.stats(Q) == stats(q, dead=1)


def test_backoff_base_zero_retries_at_once(open_queue: Opener) -> None:
    q = open_queue(QueueConfig(retry_backoff_base=0, max_attempts=2))
    job_id = q.enqueue(Q, b"x")
    q.nack(claim(q), "no delay")
    r = record(q, job_id)
    assert (r.status, r.run_at, r.last_error) == (JobStatus.PENDING, None, "no delay")
    assert q.stats(Q) == stats(q, pending=1)
    c = claim(q)
    assert c.attempts == 2
    q.nack(c, RuntimeError())
    assert record(q, job_id).last_error == "RuntimeError"
    assert q.stats(Q) == stats(q, dead=1)


def test_error_text_with_lone_surrogates_is_stored_escaped(open_queue: Opener) -> None:
    q = open_queue(QueueConfig(retry_backoff_base=0, max_attempts=2))
    job_id = q.enqueue(Q, b"x")
    q.nack(claim(q), "bad \ud800 byte")
    assert record(q, job_id).last_error == "bad \\ud800 byte"
    q.dead_letter(claim(q), "\udcff")
    assert record(q, job_id).last_error == "\\udcff"
    q.close()
    assert record(open_queue(), job_id).last_error == "\\udcff"


def test_a_clock_that_returns_nan_is_a_config_error(open_queue: Opener,
                                                     clock: ManualClock) -> None:
    q = open_queue()
    job_id = q.enqueue(Q, b"x")
    clock.now = math.nan
    with pytest.raises(ConfigError, match="clock"):
        q.enqueue(Q, b"y")
    with pytest.raises(ConfigError, match="clock"):
        q.claim(Q)
    clock.now = T0
    assert q.stats(Q) == stats(q, pending=1)
    assert claim(q).id == job_id


def test_dead_after_per_job_max_attempts(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=1)
    q.nack(claim(q), "only chance")
    r = record(q, job_id)
    assert (r.status, r.attempts, r.max_attempts, r.last_error) == (
        JobStatus.DEAD, 1, 1, "only chance")
    assert q.stats(Q) == stats(q, dead=1)
    assert [d.id for d in q.dead_jobs(Q)] == [job_id]


def test_dead_letter(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"poison", max_attempts=10)
    clock.advance(3)
    q.dead_letter(claim(q), "unparseable")
    r = record(q, job_id)
    assert (r.status, r.attempts, r.last_error, r.failed_at, r.lease_expires_at) == (
        JobStatus.DEAD, 1, "unparseable", T0 + 3, None)
    assert q.stats(Q) == stats(q, dead=1)
    assert q.claim(Q) is None


def test_requeue_dead_job(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=2)
    q.nack(claim(q), "one")
    with pytest.raises(JobNotFound):
        q.requeue_dead_job(job_id)  # scheduled, not dead
    clock.advance(1)
    q.dead_letter(claim(q), "two")
    assert record(q, job_id).attempts == 2
    assert q.stats(Q) == stats(q, dead=1)
    q.requeue_dead_job(job_id)
    r = record(q, job_id)
    assert (r.status, r.attempts, r.failed_at) == (JobStatus.PENDING, 0, None)
    assert q.stats(Q) == stats(q, pending=1)
    assert q.dead_jobs(Q) == []
    c = claim(q)
    assert c.attempts == 1
    with pytest.raises(JobNotFound):
        q.requeue_dead_job(job_id)  # claimed
    q.ack(c)
    with pytest.raises(JobNotFound):
        q.requeue_dead_job(job_id)  # gone
    with pytest.raises(JobNotFound):
        q.requeue_dead_job("never-existed")
    assert q.stats(Q) == stats(q, done=1)


def test_dead_jobs_pages_in_enqueue_order(q: Queue) -> None:
    ids = [q.enqueue(Q, b"%d" % i) for i in range(7)]
    q.enqueue("other", b"x")
    claims = {c.id: c for c in q.claim_batch(Q, 7)}
    for job_id in reversed(ids):  # die in reverse order: paging still follows enqueue order
        q.dead_letter(claims[job_id], "x")
    q.dead_letter(claim(q, "other"), "y")
    assert q.stats(Q) == stats(q, dead=7)
    pages = []
    after = None
    while True:
        page = q.dead_jobs(Q, after=after, limit=3)
        if not page:
            break
        assert len(page) <= 3
        assert all(r.status is JobStatus.DEAD and r.queue == Q for r in page)
        pages.append([r.id for r in page])
        after = page[-1].id
    assert pages == [ids[0:3], ids[3:6], ids[6:7]]
    assert [r.id for r in q.dead_jobs(Q)] == ids
    assert [r.id for r in q.dead_jobs(Q, limit=1)] == ids[:1]
    assert [r.id for r in q.dead_jobs(Q, after=ids[6])] == []
    assert q.dead_jobs("nothing-here") == []
    q.requeue_dead_job(ids[3])
    assert [r.id for r in q.dead_jobs(Q, after=ids[1], limit=2)] == [ids[2], ids[4]]
    # the page cursor may be a job that is no longer dead
    assert [r.id for r in q.dead_jobs(Q, after=ids[3], limit=2)] == ids[4:6]


# --------------------------------------------------------------------------- cancel


def test_cancel_pending_and_scheduled(q: Queue) -> None:
    a = q.enqueue(Q, b"a")
    b = q.enqueue(Q, b"b", delay=60)
    assert q.stats(Q) == stats(q, pending=1, scheduled=1)
    assert q.cancel(a) is CancelOutcome.REMOVED
    assert q.get_job(a) is None
    assert q.stats(Q) == stats(q, scheduled=1)
    assert q.cancel(b) is CancelOutcome.REMOVED
    assert q.get_job(b) is None
    assert q.stats(Q) == stats(q)
    assert q.cancel(a) is CancelOutcome.NOT_FOUND
    assert q.cancel("unknown") is CancelOutcome.NOT_FOUND
    assert q.promote_scheduled_now() == 0
    assert q.claim(Q) is None


def test_cancel_claimed_sets_flag_and_ack_still_succeeds(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    c = claim(q)
    assert q.cancel(job_id) is CancelOutcome.REQUESTED
    assert c.cancel_requested.is_set()
    assert record(q, job_id).cancel_requested is True
    assert record(q, job_id).status is JobStatus.CLAIMED
    assert q.cancel(job_id) is CancelOutcome.REQUESTED  # idempotent
    assert q.stats(Q) == stats(q, claimed=1)
    q.ack(c)  # the worker finished anyway: cancel of a running job is only a request
    assert q.stats(Q) == stats(q, done=1)
    assert q.cancel(job_id) is CancelOutcome.NOT_FOUND


def test_cancel_requested_then_nack_dead_letters(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=5)
    c = claim(q)
    q.cancel(job_id)
    q.nack(c, "stopped")
    r = record(q, job_id)
    assert (r.status, r.last_error) == (JobStatus.DEAD, "cancelled: stopped")
    assert q.stats(Q) == stats(q, dead=1)
    assert q.cancel(job_id) is CancelOutcome.NOT_FOUND  # dead jobs are not cancellable


def test_cancel_requested_then_lease_expiry_dead_letters(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=5)
    c = claim(q, lease=10)
    q.cancel(job_id)
    clock.advance(10)
    assert q.reap_now() == 1
    r = record(q, job_id)
    assert (r.status, r.last_error) == (JobStatus.DEAD, "cancelled: lease expired")
    with pytest.raises(ClaimLost):
        q.ack(c)
    assert q.stats(Q) == stats(q, dead=1)


def test_cancel_done_job_is_not_found(open_queue: Opener) -> None:
    q = open_queue(QueueConfig(keep_done=60))
    job_id = q.enqueue(Q, b"x")
    q.ack(claim(q))
    assert record(q, job_id).status is JobStatus.DONE
    assert q.cancel(job_id) is CancelOutcome.NOT_FOUND
    assert record(q, job_id).status is JobStatus.DONE


def test_cancel_request_persists_across_reopen(open_queue: Opener) -> None:
    q = open_queue()
    job_id = q.enqueue(Q, b"x", max_attempts=5)
    claim(q)
    assert q.cancel(job_id) is CancelOutcome.REQUESTED
    assert record(q, job_id).cancel_requested
    q.close()
    q = open_queue()
    r = record(q, job_id)
    # the claim belonged to the old process and cancellation was asked for: it is not run
    # again but dead-lettered, attempts and flag kept
    assert (r.status, r.attempts, r.cancel_requested) == (JobStatus.DEAD, 1, True)
    assert r.last_error == "cancelled: claim abandoned by a previous process"
    assert q.claim(Q) is None
    assert q.stats(Q) == stats(q, dead=1)


def test_spent_claim_is_dead_lettered_at_reopen(open_queue: Opener) -> None:
    q = open_queue()
    spent = q.enqueue(Q, b"spent", max_attempts=1)
    retry = q.enqueue(Q, b"retry", max_attempts=2)
    claim(q)
    claim(q)
    q.close()
    q = open_queue()
    # a job whose process died mid-attempt counts that attempt, like a reaped lease
    assert (record(q, spent).status, record(q, spent).attempts) == (JobStatus.DEAD, 1)
    assert record(q, spent).last_error == "claim abandoned by a previous process"
    assert (record(q, retry).status, record(q, retry).attempts) == (JobStatus.PENDING, 1)
    assert q.stats(Q) == stats(q, pending=1, dead=1)
    c = claim(q)
    assert (c.id, c.attempts) == (retry, 2)


# --------------------------------------------------------------------------- wait_for_completion


def test_wait_for_completion_ack_without_keep_done(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    c = claim(q)
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    q.ack(c)
    assert joined(thread, out) == WaitOutcome(WaitStatus.COMPLETED, None)
    # already finished and dropped: nothing to report any more
    assert q.wait_for_completion(job_id, 5) == WaitOutcome(WaitStatus.NOT_FOUND)


def test_wait_for_completion_ack_with_keep_done(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(keep_done=3600))
    job_id = q.enqueue(Q, b"x")
    c = claim(q)
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, timedelta(seconds=WAIT)))
    until_waiting(q, job_id)
    clock.advance(2)
    q.ack(c)
    outcome = joined(thread, out)
    assert outcome.status is WaitStatus.COMPLETED
    assert outcome.record is not None
    assert (outcome.record.id, outcome.record.status, outcome.record.completed_at) == (
        job_id, JobStatus.DONE, T0 + 2)
    assert outcome.record == q.get_job(job_id)
    again = q.wait_for_completion(job_id, 0)  # already finished: returns at once
    assert again == WaitOutcome(WaitStatus.COMPLETED, outcome.record)


def test_wait_for_completion_dead(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=1)
    c = claim(q)
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    q.nack(c, "fatal")
    outcome = joined(thread, out)
    assert outcome.status is WaitStatus.COMPLETED
    assert outcome.record is not None
    assert (outcome.record.status, outcome.record.last_error) == (JobStatus.DEAD, "fatal")
    assert q.wait_for_completion(job_id, 0) == WaitOutcome(WaitStatus.COMPLETED, record(q, job_id))


def test_wait_for_completion_reaped_to_dead(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=1)
    claim(q, lease=5)
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    clock.advance(5)
    assert q.reap_now() == 1
    outcome = joined(thread, out)
    assert outcome.status is WaitStatus.COMPLETED
    assert outcome.record is not None and outcome.record.last_error == "lease expired"


def test_wait_for_completion_cancel(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x", delay=600)
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    assert q.cancel(job_id) is CancelOutcome.REMOVED
    assert joined(thread, out) == WaitOutcome(WaitStatus.NOT_FOUND)


def test_wait_for_completion_timeout_and_unknown(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    assert q.wait_for_completion(job_id, 0) == WaitOutcome(WaitStatus.TIMED_OUT)
    start = time.monotonic()
    assert q.wait_for_completion(job_id, 0.2) == WaitOutcome(WaitStatus.TIMED_OUT)
    assert time.monotonic() - start >= 0.15  # it did wait (a lower bound, not a speed test)
    c = claim(q)
    assert q.wait_for_completion(job_id, 0.05) == WaitOutcome(WaitStatus.TIMED_OUT)
    assert q.wait_for_completion("no-such-job", 5) == WaitOutcome(WaitStatus.NOT_FOUND)
    q.ack(c)
    assert q.stats(Q) == stats(q, done=1)


def test_wait_for_completion_survives_a_retry(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    q.nack(claim(q), "first")  # not final: the waiter keeps waiting
    assert thread.is_alive()
    assert q.cancel(job_id) is CancelOutcome.REMOVED
    assert joined(thread, out) == WaitOutcome(WaitStatus.NOT_FOUND)


def test_close_wakes_completion_waiter(open_queue: Opener) -> None:
    q = open_queue()
    job_id = q.enqueue(Q, b"x")
    thread, out = in_thread(lambda: q.wait_for_completion(job_id, WAIT))
    until_waiting(q, job_id)
    q.close()
    with pytest.raises(QueueClosed):
        joined(thread, out)


# --------------------------------------------------------------------------- reaper and retention


def test_reap_requeues_expired_claims(q: Queue, clock: ManualClock) -> None:
    a = q.enqueue(Q, b"a")
    b = q.enqueue(Q, b"b")
    claim(q, lease=10)
    claim(q, lease=20)
    clock.advance(9.9)
    assert q.reap_now() == 0
    clock.advance(0.1)
    assert q.reap_now() == 1
    assert q.reap_now() == 0
    r = record(q, a)
    assert (r.status, r.attempts, r.last_error, r.lease_expires_at) == (
        JobStatus.PENDING, 1, "lease expired", None)
    assert q.stats(Q) == stats(q, pending=1, claimed=1)
    clock.advance(10)
    assert q.reap_now() == 1
    assert record(q, b).status is JobStatus.PENDING
    assert q.stats(Q) == stats(q, pending=2)
    c = claim(q)
    assert (c.id, c.attempts) == (a, 2)


def test_reap_dead_letters_when_attempts_are_spent(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=1)
    claim(q, lease=1)
    clock.advance(1)
    assert q.reap_now() == 1
    r = record(q, job_id)
    assert (r.status, r.last_error, r.failed_at) == (JobStatus.DEAD, "lease expired", T0 + 1)
    assert q.stats(Q) == stats(q, dead=1)


def test_keep_done_retention(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(keep_done=60))
    job_id = q.enqueue(Q, b"x")
    q.ack(claim(q))
    r = record(q, job_id)
    assert (r.status, r.completed_at) == (JobStatus.DONE, T0)
    assert q.stats(Q) == stats(q, done=1)
    clock.advance(59)
    assert q.reap_now() == 0
    assert q.get_job(job_id) is not None
    clock.advance(2)
    assert q.reap_now() == 0  # purges are not counted
    assert q.get_job(job_id) is None
    assert q.stats(Q) == stats(q, done=1)  # done is cumulative


def test_dead_retention(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(dead_retention=100),
                   queue_configs={"forever": QueueConfig(dead_retention=None)})
    a = q.enqueue(Q, b"a")
    b = q.enqueue("forever", b"b")
    q.dead_letter(claim(q), "x")
    q.dead_letter(claim(q, "forever"), "y")
    clock.advance(99)
    q.reap_now()
    assert record(q, a).status is JobStatus.DEAD
    clock.advance(2)
    assert q.reap_now() == 0
    assert q.get_job(a) is None
    assert q.stats(Q) == stats(q)
    assert q.dead_jobs(Q) == []
    clock.advance(10 * 365 * 86400)
    q.reap_now()
    assert record(q, b).status is JobStatus.DEAD
    assert q.stats("forever") == stats(q, "forever", dead=1)


@pytest.mark.parametrize("checkpoints", [False, True])
def test_retention_continues_after_reopen(open_queue: Opener, clock: ManualClock,
                                          checkpoints: bool) -> None:
    tuning = {"checkpoint_min_bytes": 1, "checkpoint_ratio": 0.01} if checkpoints else {}
    config = QueueConfig(keep_done=60, dead_retention=120)
    q = open_queue(config, **tuning)
    done, dead, young = q.enqueue_batch(Q, [b"done", b"dead", b"young"])
    q.ack(claim(q))
    q.dead_letter(claim(q), "x")
    clock.advance(100)
    q.ack(claim(q))
    q.close()
    q = open_queue(config, **tuning)
    assert q.stats(Q) == stats(q, done=2, dead=1)
    assert q.reap_now() == 0
    assert q.get_job(done) is None
    assert record(q, dead).status is JobStatus.DEAD
    assert record(q, young).status is JobStatus.DONE
    clock.advance(60)
    q.reap_now()
    assert (q.get_job(dead), q.get_job(young)) == (None, None)
    assert q.stats(Q) == stats(q, done=2)


def test_default_dead_retention_is_seven_days(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x")
    q.dead_letter(claim(q), "x")
    clock.advance(7 * 86400 - 1)
    q.reap_now()
    assert q.get_job(job_id) is not None
    clock.advance(2)
    q.reap_now()
    assert q.get_job(job_id) is None


def test_requeued_dead_job_is_not_swept(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(dead_retention=10))
    job_id = q.enqueue(Q, b"x")
    q.dead_letter(claim(q), "x")
    q.requeue_dead_job(job_id)
    clock.advance(100)
    q.reap_now()
    assert record(q, job_id).status is JobStatus.PENDING


# --------------------------------------------------------------------------- renew_lease


def test_renew_lease_moves_expiry_and_prevents_reap(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"x")
    c = claim(q, lease=10)
    clock.advance(8)
    q.renew_lease(c, 30)
    assert c.lease_expires_at == T0 + 38
    assert record(q, job_id).lease_expires_at == T0 + 38
    clock.advance(10)  # past the original expiry
    assert q.reap_now() == 0
    assert record(q, job_id).status is JobStatus.CLAIMED
    q.renew_lease(c, timedelta(seconds=5))  # may also shorten
    assert c.lease_expires_at == T0 + 23
    clock.advance(5)
    assert q.reap_now() == 1
    with pytest.raises(ClaimLost):
        q.ack(c)


def test_renewed_lease_survives_reopen(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue()
    job_id = q.enqueue(Q, b"x")
    c = claim(q, lease=10)
    q.renew_lease(c, 100)
    q.ack(c)  # flushes the renew record before it
    assert q.stats(Q) == stats(q, done=1)
    q.close()
    q = open_queue()
    assert q.get_job(job_id) is None
    assert q.stats(Q) == stats(q, done=1)


# --------------------------------------------------------------------------- ClaimLost


SETTLE: dict[str, Callable[[Queue, Claim], None]] = {
    "ack": lambda q, c: q.ack(c),
    "nack": lambda q, c: q.nack(c, "late"),
    "dead_letter": lambda q, c: q.dead_letter(c, "late"),
    "renew_lease": lambda q, c: q.renew_lease(c, 60),
}


def _lose_by_reap(q: Queue, c: Claim, clock: ManualClock) -> None:
    clock.advance(31)
    assert q.reap_now() == 1


def _lose_by_reclaim(q: Queue, c: Claim, clock: ManualClock) -> None:
    clock.advance(31)
    assert q.reap_now() == 1
    assert claim(q).id == c.id


def _lose_by_cancel(q: Queue, c: Claim, clock: ManualClock) -> None:
    assert q.cancel(c.id) is CancelOutcome.REQUESTED
    q.nack(c, "stopped")  # a cancelled job is settled dead by its nack


def _lose_by_reap_then_cancel(q: Queue, c: Claim, clock: ManualClock) -> None:
    clock.advance(31)
    assert q.reap_now() == 1
    assert q.cancel(c.id) is CancelOutcome.REMOVED


def _lose_by_ack(q: Queue, c: Claim, clock: ManualClock) -> None:
    q.ack(c)


def _lose_by_nack(q: Queue, c: Claim, clock: ManualClock) -> None:
    q.nack(c, "first")


def _lose_by_dead_letter(q: Queue, c: Claim, clock: ManualClock) -> None:
    q.dead_letter(c, "first")


LOSE = {
    "reaped": _lose_by_reap,
    "reclaimed": _lose_by_reclaim,
    "cancelled": _lose_by_cancel,
    "reaped-then-cancelled": _lose_by_reap_then_cancel,
    "acked": _lose_by_ack,
    "nacked": _lose_by_nack,
    "dead-lettered": _lose_by_dead_letter,
}


@pytest.mark.parametrize("how", list(LOSE))
@pytest.mark.parametrize("op", list(SETTLE))
def test_claim_lost_changes_nothing(open_queue: Opener, clock: ManualClock, op: str,
                                    how: str) -> None:
    q = open_queue(QueueConfig(keep_done=3600, max_attempts=5, retry_backoff_base=0))
    job_id = q.enqueue(Q, b"x")
    bystander = q.enqueue(Q, b"y", priority=PRIORITY_LOW)
    c = claim(q)
    LOSE[how](q, c, clock)
    before = (q.stats(Q), q.get_job(job_id), q.get_job(bystander), q.dead_jobs(Q))
    lease_before = c.lease_expires_at
    with pytest.raises(ClaimLost, match=job_id):
        SETTLE[op](q, c)
    assert (q.stats(Q), q.get_job(job_id), q.get_job(bystander), q.dead_jobs(Q)) == before
    assert c.lease_expires_at == lease_before


def test_claim_from_another_handle_is_lost(open_queue: Opener) -> None:
    q1 = open_queue()
    q1.enqueue(Q, b"x")
    old = claim(q1)
    q1.close()
    q2 = open_queue()
    c = claim(q2)  # the same job, same attempt number as `old` had + 1
    with pytest.raises(ClaimLost):
        q2.ack(old)
    q2.ack(c)
    assert q2.stats(Q) == stats(q2, done=1)


# --------------------------------------------------------------------------- claim(wait=) and claim_batch


def test_claim_wait_is_woken_by_enqueue(q: Queue, clock: ManualClock) -> None:
    thread, out = in_thread(lambda: q.claim(Q, wait=math.inf))
    time.sleep(0.2)  # give the claimer time to block (the test holds either way)
    assert thread.is_alive()
    calls = clock.calls
    time.sleep(0.3)
    # blocked on a condition, not polling: the clock was not read while waiting
    assert clock.calls - calls <= 2
    job_id = q.enqueue(Q, b"wake up")
    c = joined(thread, out)
    assert isinstance(c, Claim) and c.id == job_id


def test_claim_wait_returns_well_before_the_deadline(q: Queue) -> None:
    thread, out = in_thread(lambda: q.claim(Q, wait=60))
    start = time.monotonic()
    time.sleep(0.1)
    job_id = q.enqueue(Q, b"x")
    c = joined(thread, out)
    assert c is not None and c.id == job_id
    assert time.monotonic() - start < 30  # woken by the enqueue, not by the 60 s timeout


def test_claim_wait_woken_by_retry_and_requeue(open_queue: Opener) -> None:
    q = open_queue(QueueConfig(retry_backoff_base=0))
    a = q.enqueue(Q, b"a")
    c = claim(q)
    thread, out = in_thread(lambda: q.claim(Q, wait=WAIT * 2))
    time.sleep(0.05)
    q.nack(c, "retry")
    c2 = joined(thread, out)
    assert c2 is not None and (c2.id, c2.attempts) == (a, 2)
    q.dead_letter(c2, "dead")
    thread, out = in_thread(lambda: q.claim(Q, wait=WAIT * 2))
    time.sleep(0.05)
    q.requeue_dead_job(a)
    c3 = joined(thread, out)
    assert c3 is not None and (c3.id, c3.attempts) == (a, 1)


def test_claim_wait_woken_by_promotion(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"later", delay=1000)  # far beyond WAIT in real seconds too
    thread, out = in_thread(lambda: q.claim(Q, wait=WAIT * 2))
    time.sleep(0.05)
    clock.advance(1000)
    q.promote_scheduled_now()  # the tick wakes the claimer (or it promoted inline itself)
    c = joined(thread, out)
    assert c is not None and c.id == job_id


def test_batch_enqueue_wakes_as_many_claimers(q: Queue) -> None:
    threads = [in_thread(lambda: q.claim(Q, wait=WAIT * 2)) for _ in range(3)]
    time.sleep(0.1)
    ids = q.enqueue_batch(Q, [b"1", b"2", b"3"])
    got = {joined(t, out).id for t, out in threads}
    assert got == set(ids)
    assert q.stats(Q) == stats(q, claimed=3)


def test_claim_wait_times_out(q: Queue) -> None:
    start = time.monotonic()
    assert q.claim(Q, wait=0.2) is None
    assert time.monotonic() - start >= 0.15  # it did wait
    assert q.claim_batch(Q, 3, wait=timedelta(milliseconds=50)) == []
    q.enqueue("other", b"x")
    assert q.claim(Q, wait=0.05) is None  # a job on another queue does not satisfy it
    assert q.stats("other") == stats(q, "other", pending=1)


def test_close_wakes_blocked_claimer(open_queue: Opener) -> None:
    q = open_queue()
    thread, out = in_thread(lambda: q.claim(Q, wait=WAIT * 2))
    time.sleep(0.05)
    q.close()
    with pytest.raises(QueueClosed):
        joined(thread, out)


def test_claim_batch(q: Queue, clock: ManualClock) -> None:
    ids = [q.enqueue(Q, b"%d" % i) for i in range(5)]
    first = q.claim_batch(Q, 3, lease=7)
    assert [c.id for c in first] == ids[:3]
    assert all(c.attempts == 1 and c.lease_expires_at == T0 + 7 for c in first)
    assert q.stats(Q) == stats(q, pending=2, claimed=3)
    rest = q.claim_batch(Q, 10)
    assert [c.id for c in rest] == ids[3:]
    assert q.claim_batch(Q, 10) == []
    for c in first + rest:
        q.ack(c)
    assert q.stats(Q) == stats(q, done=5)


def test_claim_batch_wait_is_woken(q: Queue) -> None:
    thread, out = in_thread(lambda: q.claim_batch(Q, 10, wait=WAIT * 2))
    time.sleep(0.05)
    ids = q.enqueue_batch(Q, [b"a", b"b", b"c"])
    got = joined(thread, out)
    assert [c.id for c in got] == ids


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


def test_enqueue_batch_is_one_record_and_fails_whole(fast_backend_root: Any,
                                                     clock: ManualClock) -> None:
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
        assert [claim(q2).payload for _ in range(51)] == [b"before"] + [b"%d" % i for i in
                                                                       range(50)]
        assert [record(q2, i).status for i in ids] == [JobStatus.CLAIMED] * 50


# --------------------------------------------------------------------------- KV


def test_enqueue_with_kv_and_kv_ops(q: Queue) -> None:
    assert q.kv_get(b"k1") is None
    res = q.enqueue_with_kv(Q, b"job", {b"k1": b"v1",
                                        memoryview(b"k2"): bytearray(b"v2")})  # type: ignore[dict-item]
    assert isinstance(res, EnqueueResult) and res.is_new
    assert record(q, res.id).payload == b"job"
    assert q.kv_get(b"k1") == b"v1"
    assert q.kv_get(bytearray(b"k2")) == b"v2"  # type: ignore[arg-type]
    big = b"z" * MAX_KV_VALUE_SIZE  # exactly the limit is fine
    res2 = q.enqueue_with_kv(Q, b"job2", {b"k1": b"v1b", b"big": big},
                             EnqueueOptions(priority=1, dedup_key="d"))
    assert res2.is_new and record(q, res2.id).priority == 1
    assert q.kv_get(b"k1") == b"v1b" and q.kv_get(b"big") == big
    res3 = q.enqueue_with_kv(Q, b"nope", {})
    assert res3.is_new
    q.kv_delete(b"k1")
    assert q.kv_get(b"k1") is None
    q.kv_delete(b"k1")  # missing keys are fine
    q.kv_delete(b"never")
    assert q.kv_get(b"k2") == b"v2"
    assert q.stats(Q) == stats(q, pending=3)


def test_enqueue_with_kv_dedup_hit_writes_nothing(q: Queue) -> None:
    first = q.enqueue_with_kv(Q, b"a", {b"k": b"old"}, EnqueueOptions(dedup_key="d"))
    before = q.stats(Q)
    hit = q.enqueue_with_kv(Q, b"b", {b"k": b"new", b"other": b"x"},
                            EnqueueOptions(dedup_key="d"))
    assert hit == EnqueueResult(first.id, False)
    assert q.kv_get(b"k") == b"old"
    assert q.kv_get(b"other") is None
    assert q.stats(Q) == before


def test_kv_keys_do_not_collide_with_library_state(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    for key in (job_id.encode(), Q.encode(), b"manifest/00000000000000000001", b"\x00"):
        assert q.kv_get(key) is None
        q.enqueue_with_kv("kvq", b"p", {key: b"user"})
        assert q.kv_get(key) == b"user"
        q.kv_delete(key)
    assert record(q, job_id).payload == b"x"


# --------------------------------------------------------------------------- inspecting


def test_list_queues_and_stats_of_unknown_queue(q: Queue) -> None:
    assert q.list_queues() == []
    assert q.stats("nope") == QueueStats(queue="nope")
    q.enqueue("b", b"x")
    q.enqueue("a", b"x", delay=5)
    q.enqueue_with_kv("c", b"x", {b"k": b"v"})
    q.enqueue_batch("é-unicode", [b"x"])
    assert q.list_queues() == sorted(["a", "b", "c", "é-unicode"])
    assert q.stats("nope") == QueueStats(queue="nope")
    assert q.list_queues() == sorted(["a", "b", "c", "é-unicode"])


def test_get_job_returns_frozen_copies(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x", headers={"a": "b"})
    r = record(q, job_id)
    with pytest.raises(AttributeError):
        r.status = JobStatus.DEAD  # type: ignore[misc]
    assert JobStatus("pending") is JobStatus.PENDING and str(JobStatus.DEAD) == "dead"
    assert isinstance(JobStatus.DONE, str) and JobStatus.DONE.value == "done"
    assert record(q, job_id).status is JobStatus.PENDING


# --------------------------------------------------------------------------- reopen


def test_state_survives_close_and_reopen(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(QueueConfig(keep_done=3600))
    pending = q.enqueue(Q, b"pending", priority=5, headers={"h": "1"})
    scheduled = q.enqueue(Q, b"scheduled", delay=300, dedup_key="sched")
    done = q.enqueue(Q, b"done")
    dead = q.enqueue(Q, b"dead")
    q.enqueue_with_kv("other", b"o", {b"key": b"value"})
    for _ in range(3):
        c = claim(q)
        if c.id == done:
            q.ack(c)
        elif c.id == dead:
            q.dead_letter(c, "gone")
        else:
            assert c.id == pending
            held = c
    assert held.id == pending
    claimed_before = record(q, pending)
    snapshot = {i: record(q, i) for i in (scheduled, done, dead)}
    before = {name: q.stats(name) for name in q.list_queues()}
    assert before[Q] == stats(q, scheduled=1, claimed=1, done=1, dead=1)
    q.close()
    assert q.closed

    q = open_queue(QueueConfig(keep_done=3600))
    assert q.list_queues() == [Q, "other"]
    # the claim belonged to the closed handle: back to pending, attempts kept
    assert q.stats(Q) == stats(q, pending=1, scheduled=1, done=1, dead=1)
    assert q.stats("other") == before["other"]
    assert {i: record(q, i) for i in snapshot} == snapshot
    r = record(q, pending)
    assert (r.status, r.attempts, r.lease_expires_at, r.claimed_at) == (
        JobStatus.PENDING, 1, None, None)
    assert (r.payload, r.priority, dict(r.headers)) == (
        claimed_before.payload, 5, {"h": "1"})
    assert q.kv_get(b"key") == b"value"
    assert q.enqueue(Q, b"dup", dedup_key="sched") == scheduled
    c = claim(q)
    assert (c.id, c.attempts) == (pending, 2)
    clock.advance(300)
    assert claim(q).id == scheduled
    assert [d.id for d in q.dead_jobs(Q)] == [dead]


def test_state_survives_many_reopens_with_checkpoints(open_queue: Opener) -> None:
    """Tiny checkpoint thresholds make reopen restore from a snapshot, not just segments."""
    tiny = {"checkpoint_min_bytes": 1, "checkpoint_ratio": 0.01}
    q = open_queue(QueueConfig(retry_backoff_base=0), **tiny)
    first = q.enqueue(Q, b"a", dedup_key="k")
    q.nack(claim(q), "retry")  # pending again, but its dedup key was released at the claim
    q.enqueue_with_kv(Q, b"b", {b"kv": b"1"})
    for _ in range(3):
        q.enqueue("warm", b"w")
        q.ack(claim(q, "warm"))
    expected = {name: q.stats(name) for name in q.list_queues()}
    for _ in range(3):
        q.close()
        q = open_queue(QueueConfig(retry_backoff_base=0), **tiny)
        assert {name: q.stats(name) for name in q.list_queues()} == expected
        assert q.kv_get(b"kv") == b"1"
        r = record(q, first)
        assert (r.status, r.attempts, r.last_error) == (JobStatus.PENDING, 1, "retry")
    # as before the reopen, the released dedup key no longer points at the retried job
    assert q.enqueue(Q, b"c", dedup_key="k") != first


def test_context_manager_and_idempotent_close(fast_backend_root: Any,
                                              clock: ManualClock) -> None:
    opts = OpenOptions(clock=clock, background_threads=False)
    with Queue.open(fast_backend_root.location, storage_options=fast_backend_root.storage_options,
                    options=opts) as q:
        assert not q.closed
        job_id = q.enqueue(Q, b"x")
    assert q.closed
    with pytest.raises(QueueClosed):
        q.stats(Q)
    q.close()
    q.close(timeout=1)
    with Queue.open(fast_backend_root.location, storage_options=fast_backend_root.storage_options,
                    options=opts) as q2:
        assert record(q2, job_id).payload == b"x"
    with pytest.raises(QueueClosed):
        q2.enqueue(Q, b"y")


def test_exception_in_with_block_still_closes(fast_backend_root: Any, clock: ManualClock) -> None:
    opts = OpenOptions(clock=clock, background_threads=False)
    with pytest.raises(RuntimeError, match="user error"):  # noqa: SIM117
        with Queue.open(fast_backend_root.location,
                        storage_options=fast_backend_root.storage_options, options=opts) as q:
            q.enqueue(Q, b"x")
            raise RuntimeError("user error")
    assert q.closed
    with Queue.open(fast_backend_root.location, storage_options=fast_backend_root.storage_options,
                    options=opts) as q2:
        assert q2.stats(Q) == stats(q2, pending=1)


@pytest.mark.parametrize("segment_max_bytes", [0, 4096, 8 << 20])
def test_local_commits_append_to_segments_up_to_their_size(tmp_path, segment_max_bytes) -> None:
    """On local disk each durable call is one commit; commits share segment files unless
    ``segment_max_bytes`` is 0, and every job survives a reopen either way."""
    from taquba.log import SEGMENT_DIR

    opts = OpenOptions(segment_max_bytes=segment_max_bytes, background_threads=False)
    with Queue.open(str(tmp_path), options=opts) as q:
        ids = [q.enqueue("jobs", b"payload %d" % i) for i in range(200)]
        writes = q.committer.stats.segments_written
        files = list((tmp_path / SEGMENT_DIR).iterdir())  # before a close may checkpoint
    assert writes >= 200  # one commit per enqueue: nothing else was running
    if segment_max_bytes == 0:
        assert len(files) >= 200
    elif segment_max_bytes == 4096:
        assert 3 <= len(files) <= 20  # about 200 x 60 B of blocks in 4 KiB segments
    else:
        assert len(files) <= 3  # the fence, the one data segment, the closing fence at most
    with Queue.open(str(tmp_path), options=opts) as q:
        claimed = [q.claim("jobs") for _ in ids]
        assert [c.id for c in claimed if c is not None] == ids


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
    assert sorted(order) == sorted(b"%d-%d" % (i, n) for i in range(threads)
                                   for n in range(per_thread))
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
        ("a", b"1", {}), ("a", b"2", {}), ("a", b"p", {"priority": 5}), ("a", b"3", {}),
        ("a", b"d", {"dedup_key": "k"}), ("a", b"id", {"job_id": "mine"}),
        ("a", b"id again", {"job_id": "mine"}), ("b", b"x", {}), ("b", b"y", {}),
        ("a", b"d again", {"dedup_key": "k"}), ("a", b"4", {}),
        ("a", b"h", {"headers": {"h": "1"}}), ("a", b"5", {}),
    ]
    results: dict[int, Any] = {}
    with Queue.open(str(tmp_path), options=OpenOptions(background_threads=False)) as q:
        start = threading.Barrier(len(calls))
        threads = []
        for i, (queue, payload, opts) in enumerate(calls):
            def call(i: int = i, queue: str = queue, payload: bytes = payload,
                     opts: dict[str, Any] = opts) -> None:
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
