"""Leases: the reaper requeues or dead-letters expired claims, retention sweeps done and dead
jobs, and ``renew_lease`` moves a lease's expiry.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from support.clock import T0, ManualClock
from support.queues import Opener, Q, claim, record, stats

from taquba import ClaimLost, JobStatus, Queue, QueueConfig

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
        JobStatus.PENDING,
        1,
        "lease expired",
        None,
    )
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
    q = open_queue(
        QueueConfig(dead_retention=100), queue_configs={"forever": QueueConfig(dead_retention=None)}
    )
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
def test_retention_continues_after_reopen(
    open_queue: Opener, clock: ManualClock, checkpoints: bool
) -> None:
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
