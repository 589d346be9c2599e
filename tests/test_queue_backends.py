"""Every queue capability at least once on every backend (memory, local, S3, GCS, Azure).

A few compact scenarios per backend, each on a fresh root: the full lifecycle (enqueue,
priorities, dedup, scheduled jobs, claim, ack, nack with backoff, dead, requeue, cancel,
KV, waiting, stats), the reaper, blocking calls woken from another thread, and a reopen that
must find exactly the state that was left. The clock is manual and the background threads
are off, so the scenarios are deterministic on slow emulators too.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support.clock import T0, ManualClock

from taquba import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    CancelOutcome,
    Claim,
    ClaimLost,
    EnqueueOptions,
    EnqueueResult,
    JobNotFound,
    JobStatus,
    OpenOptions,
    Queue,
    QueueConfig,
    QueueStats,
    WaitOutcome,
    WaitStatus,
)

Q = "work"
WAIT = 30.0


def open_queue(root: Any, clock: ManualClock, **options: Any) -> Queue:
    config = QueueConfig(max_attempts=2, retry_backoff_base=5, keep_done=3600, lease=30)
    return Queue.open(
        root.location,
        storage_options=root.storage_options,
        options=OpenOptions(
            clock=clock, background_threads=False, default_queue_config=config, **options
        ),
    )


def must_claim(q: Queue, queue: str = Q, lease: Any = None) -> Claim:
    c = q.claim(queue, lease)
    assert c is not None
    return c


def test_lifecycle_and_reopen(backend_root: Any) -> None:
    clock = ManualClock()
    q = open_queue(backend_root, clock)
    try:
        assert q.list_queues() == []
        normal = q.enqueue(Q, b"normal")
        low = q.enqueue(Q, b"low", priority=PRIORITY_LOW, dedup_key="low")
        assert q.enqueue(Q, b"low again", dedup_key="low") == low  # dedup hit
        high = q.enqueue_with(
            Q, b"high", EnqueueOptions(priority=PRIORITY_HIGH, headers={"h": "v"})
        )
        later = q.enqueue(Q, b"later", delay=60)
        batch = q.enqueue_batch(Q, [b"b1", b"b2"])
        kv = q.enqueue_with_kv(
            "side",
            b"with kv",
            {b"k1": b"v1", b"k2": b"v2"},
            EnqueueOptions(job_id="side-job", dedup_key="s"),
        )
        assert kv == EnqueueResult("side-job", True)
        hit = q.enqueue_with_kv("side", b"x", {b"k1": b"changed"}, EnqueueOptions(dedup_key="s"))
        assert hit == EnqueueResult("side-job", False)
        assert q.kv_get(b"k1") == b"v1"
        assert q.stats(Q) == QueueStats(queue=Q, pending=5, scheduled=1)
        assert q.list_queues() == ["side", Q]

        # priorities: high first, then FIFO among normals, low last
        c_high = must_claim(q)
        assert (c_high.id, c_high.payload, dict(c_high.headers)) == (high, b"high", {"h": "v"})
        q.ack(c_high)
        done = q.wait_for_completion(high, 0)
        assert done.status is WaitStatus.COMPLETED and done.record is not None
        assert done.record.status is JobStatus.DONE

        # nack with backoff, then dead after max_attempts, then requeue
        c = must_claim(q)
        assert c.id == normal
        q.nack(c, "first failure")
        r = q.get_job(normal)
        assert r is not None and (r.status, r.run_at) == (JobStatus.SCHEDULED, T0 + 5)
        with pytest.raises(ClaimLost):
            q.ack(c)
        clock.advance(5)
        assert q.promote_scheduled_now() == 1
        c = must_claim(q)
        assert (c.id, c.attempts) == (normal, 2)
        q.nack(c, ValueError("second failure"))
        assert [d.id for d in q.dead_jobs(Q)] == [normal]
        assert q.stats(Q) == QueueStats(queue=Q, pending=3, scheduled=1, done=1, dead=1)
        q.requeue_dead_job(normal)
        with pytest.raises(JobNotFound):
            q.requeue_dead_job(normal)

        # cancel: scheduled (removed), claimed (requested), unknown
        assert q.cancel(later) is CancelOutcome.REMOVED
        c = must_claim(q)
        assert c.id == normal and c.attempts == 1
        assert q.cancel(normal) is CancelOutcome.REQUESTED
        assert c.cancel_requested.is_set()
        assert q.cancel("unknown") is CancelOutcome.NOT_FOUND
        q.dead_letter(c, "stopped")

        # claim_batch and renew, reap of an expired lease
        claims = q.claim_batch(Q, 5, lease=10)
        assert [x.id for x in claims] == [*batch, low]
        q.renew_lease(claims[0], 100)
        clock.advance(20)
        assert q.reap_now() == 2
        with pytest.raises(ClaimLost):
            q.ack(claims[1])
        q.ack(claims[0])
        assert q.stats(Q) == QueueStats(queue=Q, pending=2, done=2, dead=1)
        held = must_claim(q)  # left claimed at close
        assert held.id == batch[1]
        q.kv_delete(b"k2")
        expected = {name: q.stats(name) for name in q.list_queues()}
        kept = {i: q.get_job(i) for i in (high, normal, low, "side-job")}
    finally:
        q.close()

    q = open_queue(backend_root, clock)
    try:
        assert {name: q.stats(name) for name in q.list_queues()} == {
            **expected,
            Q: QueueStats(queue=Q, pending=1, done=2, dead=2),
        }
        assert {i: q.get_job(i) for i in kept} == kept
        assert q.kv_get(b"k1") == b"v1" and q.kv_get(b"k2") is None
        back = q.get_job(held.id)
        # its second attempt died with the process: attempts are spent, so it is dead
        assert back is not None and (back.status, back.attempts) == (JobStatus.DEAD, 2)
        assert back.last_error == "claim abandoned by a previous process"
        assert sorted(d.id for d in q.dead_jobs(Q)) == sorted([normal, held.id])
        assert q.enqueue("side", b"again", dedup_key="s") == "side-job"
    finally:
        q.close()


def test_blocking_calls_are_woken(backend_root: Any) -> None:
    clock = ManualClock()
    with open_queue(backend_root, clock) as q:
        results: list[Any] = []

        def claimer() -> None:
            results.append(q.claim(Q, wait=WAIT))

        thread = threading.Thread(target=claimer, daemon=True)
        thread.start()
        job_id = q.enqueue(Q, b"wake")
        thread.join(WAIT + 5)
        assert not thread.is_alive()
        c = results.pop()
        assert isinstance(c, Claim) and c.id == job_id

        waited: list[WaitOutcome] = []
        thread = threading.Thread(
            target=lambda: waited.append(q.wait_for_completion(job_id, WAIT)), daemon=True
        )
        thread.start()
        q.ack(c)
        thread.join(WAIT + 5)
        assert not thread.is_alive()
        outcome = waited.pop()
        assert outcome.status is WaitStatus.COMPLETED
        assert outcome.record is not None and outcome.record.status is JobStatus.DONE
        assert q.wait_for_completion("unknown", 0) == WaitOutcome(WaitStatus.NOT_FOUND)
        assert q.claim(Q, wait=0.05) is None


def test_retention_and_checkpointed_reopen(backend_root: Any) -> None:
    clock = ManualClock()
    tiny: dict[str, Any] = {"checkpoint_min_bytes": 1, "checkpoint_ratio": 0.01}
    with open_queue(backend_root, clock, **tiny) as q:
        ids = q.enqueue_batch(Q, [b"%d" % i for i in range(6)])
        for job_id in ids[:3]:
            c = must_claim(q)
            assert c.id == job_id
            q.ack(c)
        q.dead_letter(must_claim(q), "dead")
        q.enqueue_with_kv(Q, b"kv", {b"key": b"value"})
        clock.advance(3601)
        assert q.reap_now() == 0
        assert [q.get_job(i) for i in ids[:3]] == [None, None, None]
        assert q.stats(Q) == QueueStats(queue=Q, pending=3, done=3, dead=1)
    # reopen through an fsspec filesystem instance and a path instead of the URL
    fs, path = backend_root.filesystem()
    with Queue.open(fs, path, OpenOptions(clock=clock, background_threads=False, **tiny)) as q:
        assert q.stats(Q) == QueueStats(queue=Q, pending=3, done=3, dead=1)
        assert q.kv_get(b"key") == b"value"
        assert [must_claim(q).id for _ in range(2)] == ids[4:]
