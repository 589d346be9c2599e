"""Settling a claim and what follows: nack with backoff, dead letters and requeue, cancel,
``wait_for_completion``, and ``ClaimLost`` for a claim that is no longer held.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from support.clock import T0, ManualClock
from support.queues import WAIT, Opener, Q, claim, in_thread, joined, record, stats, until_waiting

from taquba import (
    PRIORITY_LOW,
    CancelOutcome,
    Claim,
    ClaimLost,
    ConfigError,
    JobNotFound,
    JobStatus,
    Queue,
    QueueClosed,
    QueueConfig,
    WaitOutcome,
    WaitStatus,
)

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
        JobStatus.DEAD,
        7,
        "ValueError: last",
        clock.now,
    )
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


def test_a_clock_that_returns_nan_is_a_config_error(open_queue: Opener, clock: ManualClock) -> None:
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
        JobStatus.DEAD,
        1,
        1,
        "only chance",
    )
    assert q.stats(Q) == stats(q, dead=1)
    assert [d.id for d in q.dead_jobs(Q)] == [job_id]


def test_dead_letter(q: Queue, clock: ManualClock) -> None:
    job_id = q.enqueue(Q, b"poison", max_attempts=10)
    clock.advance(3)
    q.dead_letter(claim(q), "unparseable")
    r = record(q, job_id)
    assert (r.status, r.attempts, r.last_error, r.failed_at, r.lease_expires_at) == (
        JobStatus.DEAD,
        1,
        "unparseable",
        T0 + 3,
        None,
    )
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
        job_id,
        JobStatus.DONE,
        T0 + 2,
    )
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
def test_claim_lost_changes_nothing(
    open_queue: Opener, clock: ManualClock, op: str, how: str
) -> None:
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
