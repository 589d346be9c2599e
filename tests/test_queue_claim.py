"""Claiming: ``claim(wait=...)`` woken by whatever makes a job pending, its timeout, close,
and ``claim_batch``.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest
from support.clock import T0, ManualClock
from support.queues import WAIT, Opener, Q, claim, in_thread, joined, stats

from taquba import Claim, Queue, QueueClosed, QueueConfig

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
