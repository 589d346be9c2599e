"""A queue's life: inspecting (``list_queues``, ``stats``, ``get_job``), close and reopen,
checkpoints, and how local commits fill segment files.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.clock import ManualClock
from support.queues import Opener, Q, claim, record, stats

from taquba import JobStatus, OpenOptions, Queue, QueueClosed, QueueConfig, QueueStats

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
        JobStatus.PENDING,
        1,
        None,
        None,
    )
    assert (r.payload, r.priority, dict(r.headers)) == (claimed_before.payload, 5, {"h": "1"})
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


def test_context_manager_and_idempotent_close(fast_backend_root: Any, clock: ManualClock) -> None:
    opts = OpenOptions(clock=clock, background_threads=False)
    with Queue.open(
        fast_backend_root.location, storage_options=fast_backend_root.storage_options, options=opts
    ) as q:
        assert not q.closed
        job_id = q.enqueue(Q, b"x")
    assert q.closed
    with pytest.raises(QueueClosed):
        q.stats(Q)
    q.close()
    q.close(timeout=1)
    with Queue.open(
        fast_backend_root.location, storage_options=fast_backend_root.storage_options, options=opts
    ) as q2:
        assert record(q2, job_id).payload == b"x"
    with pytest.raises(QueueClosed):
        q2.enqueue(Q, b"y")


def test_exception_in_with_block_still_closes(fast_backend_root: Any, clock: ManualClock) -> None:
    opts = OpenOptions(clock=clock, background_threads=False)
    with pytest.raises(RuntimeError, match="user error"):  # noqa: SIM117
        with Queue.open(
            fast_backend_root.location,
            storage_options=fast_backend_root.storage_options,
            options=opts,
        ) as q:
            q.enqueue(Q, b"x")
            raise RuntimeError("user error")
    assert q.closed
    with Queue.open(
        fast_backend_root.location, storage_options=fast_backend_root.storage_options, options=opts
    ) as q2:
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
