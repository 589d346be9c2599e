"""Producer -> inbox -> owner intake, on every backend (memory, local, S3, GCS, Azure).

What is checked: submissions work with no owner running; the owner takes each in exactly
once (a second round, a reopen and leftovers apply nothing again); the jobs of one
producer enter in the order their calls returned; dedup keys, delays, priorities, batches,
cancels and dead-job requeues behave as on ``Queue``; applied objects are deleted; bad
input is refused before anything is written.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.clock import ManualClock

from taquba import (
    PRIORITY_HIGH,
    EnqueueOptions,
    InvalidArgument,
    JobStatus,
    OpenOptions,
    Producer,
    Queue,
    QueueClosed,
    QueueConfig,
)
from taquba.inbox import (
    INBOX_DIR,
    SubmitCancel,
    SubmitEnqueue,
    decode_file_head,
    encode_object,
    object_name,
    parse_file_name,
    scan_file,
    submission_frames,
)

Q = "mail"


def open_owner(root: Any, clock: ManualClock | None = None, **options: Any) -> Queue:
    config = QueueConfig(max_attempts=5, keep_done=3600, retry_backoff_base=0)
    return Queue.open(
        root.location,
        storage_options=root.storage_options,
        options=OpenOptions(
            clock=clock, background_threads=False, default_queue_config=config, **options
        ),
    )


def open_producer(root: Any, **kw: Any) -> Producer:
    return Producer.open(root.location, storage_options=root.storage_options, **kw)


def inbox(root: Any) -> list[str]:
    return root.store().list_dir(INBOX_DIR)


def written(root: Any) -> int:
    """How many objects, or blocks of inbox files (stores that append), the inbox holds."""
    store = root.store()
    count = 0
    for name in inbox(root):
        if parse_file_name(name) is None:
            count += 1
            continue
        data = store.get(f"{INBOX_DIR}/{name}")
        _, start, pos = decode_file_head(name, data)
        count += len(
            scan_file(name, data, pos, 0, start, at_eof=True, finished=True, limit=10**9).blocks
        )
    return count


def test_submissions_without_an_owner_are_taken_in_once(backend_root: Any) -> None:
    clock = ManualClock()
    with open_producer(backend_root, clock=clock) as p:
        first = p.enqueue(Q, b"one")
        batch = p.enqueue_batch(Q, [b"two", b"three"])
        high = p.enqueue_with(
            Q, b"urgent", EnqueueOptions(priority=PRIORITY_HIGH, headers={"h": "v"})
        )
        later = p.enqueue(Q, b"later", delay=60)
        assert written(backend_root) == 4  # one object (or block) per call made alone

    q = open_owner(backend_root, clock)
    try:
        assert q.stats(Q).pending == 0  # nothing until intake
        assert q.intake_now() == 4
        assert inbox(backend_root) == []  # applied objects are deleted
        assert q.intake_now() == 0
        rec = q.get_job(high)
        assert rec is not None and rec.headers == {"h": "v"} and rec.payload == b"urgent"
        scheduled = q.get_job(later)
        assert scheduled is not None and scheduled.status is JobStatus.SCHEDULED
        assert scheduled.run_at == pytest.approx(clock() + 60)
        order = [q.claim(Q).id for _ in range(4)]  # type: ignore[union-attr]
        assert order == [high, first, *batch]
        assert q.claim(Q) is None
    finally:
        q.close()
    # Reopening replays the intake; nothing is taken in twice.
    q = open_owner(backend_root, clock)
    try:
        assert q.intake_now() == 0
        stats = q.stats(Q)
        assert stats.pending + stats.claimed + stats.scheduled == 5
    finally:
        q.close()


def test_dedup_cancel_and_requeue_at_intake(backend_root: Any) -> None:
    clock = ManualClock()
    q = open_owner(backend_root, clock)
    try:
        dead = q.enqueue(Q, b"will die")
        claim = q.claim(Q)
        assert claim is not None
        q.dead_letter(claim, "broken")
        with open_producer(backend_root, clock=clock) as p:
            a = p.enqueue(Q, b"a", dedup_key="k")
            b = p.enqueue(Q, b"b", dedup_key="k")  # a hit at intake: no job
            doomed = p.enqueue(Q, b"doomed")
            p.cancel(doomed)
            p.requeue_dead_job(dead)
            p.cancel("no-such-job")  # harmless at intake
        assert q.intake_now() == 6
        assert q.get_job(a) is not None
        assert q.get_job(b) is None
        assert q.get_job(doomed) is None
        rec = q.get_job(dead)
        assert rec is not None and rec.status is JobStatus.PENDING and rec.attempts == 0
        assert q.stats(Q).pending == 2
    finally:
        q.close()


def test_order_of_one_producer_is_kept_across_objects(fast_backend_root: Any) -> None:
    q = open_owner(fast_backend_root)
    try:
        with open_producer(fast_backend_root) as p:
            ids = [p.enqueue(Q, str(i).encode()) for i in range(40)]
            assert q.intake_now() == 40
            ids += [p.enqueue(Q, str(i).encode()) for i in range(40, 60)]
        assert q.intake_now() == 20
        got = []
        while (c := q.claim(Q)) is not None:
            got.append(c.id)
        assert got == ids
    finally:
        q.close()


def test_concurrent_calls_share_objects(fast_backend_root: Any) -> None:
    p = open_producer(fast_backend_root)
    real_put = p.store.put_if_absent

    def slow_put(key: str, data: bytes) -> None:
        time.sleep(0.02)  # a write in flight while the other calls arrive
        real_put(key, data)

    p.store.put_if_absent = slow_put  # type: ignore[method-assign]
    ids: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        for i in range(10):
            job_id = p.enqueue(Q, str(i).encode())
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    objects = inbox(fast_backend_root)
    assert len(ids) == 160
    assert len(objects) < 80  # 160 calls in far fewer objects
    q = open_owner(fast_backend_root)
    try:
        assert q.intake_now() == 160
        assert q.stats(Q).pending == 160
        assert all(q.get_job(i) is not None for i in ids)
    finally:
        q.close()


def test_background_intake_is_prompt_on_fast_backends(fast_backend_root: Any) -> None:
    q = Queue.open(fast_backend_root.location, storage_options=fast_backend_root.storage_options)
    try:
        with open_producer(fast_backend_root) as p:
            job_id = p.enqueue(Q, b"x")
        claim = q.claim(Q, wait=30.0)  # woken by the intake, not found by polling here
        assert claim is not None and claim.id == job_id
    finally:
        q.close()


def test_intake_off(fast_backend_root: Any) -> None:
    q = open_owner(fast_backend_root, inbox_interval=None)
    try:
        with open_producer(fast_backend_root) as p:
            p.enqueue(Q, b"x")
        assert q.intake_now() == 0  # turned off: the inbox is left alone
        assert written(fast_backend_root) == 1
    finally:
        q.close()


def test_leftovers_are_deleted_not_applied(fast_backend_root: Any) -> None:
    with open_producer(fast_backend_root) as p:
        p.enqueue(Q, b"x")
    store = fast_backend_root.store()
    (name,) = store.list_dir(INBOX_DIR)
    data = store.get(f"{INBOX_DIR}/{name}")
    q = open_owner(fast_backend_root)
    try:
        assert q.intake_now() == 1
        # An owner that died after its intake was durable but before the delete leaves
        # the object behind: put it back and take in again.
        store.put_if_absent(f"{INBOX_DIR}/{name}", data)
        assert q.intake_now() == 0
        assert store.list_dir(INBOX_DIR) == []
        assert q.stats(Q).pending == 1
    finally:
        q.close()


def test_marks_of_quiet_producers_are_dropped(fast_backend_root: Any) -> None:
    clock = ManualClock()
    q = open_owner(fast_backend_root, clock, inbox_retention=3600.0)
    try:
        for _ in range(3):
            with open_producer(fast_backend_root, clock=clock) as p:
                p.enqueue(Q, b"x")
        assert q.intake_now() == 3
        assert len(q.inbox_marks()) == 3
        clock.advance(3599)
        q.intake_now()
        assert len(q.inbox_marks()) == 3
        clock.advance(2)
        q.intake_now()
        assert q.inbox_marks() == {}
    finally:
        q.close()
    q = open_owner(fast_backend_root, clock)  # dropped durably
    try:
        assert q.inbox_marks() == {}
    finally:
        q.close()


def test_bad_input_changes_nothing(fast_backend_root: Any) -> None:
    with open_producer(fast_backend_root) as p:
        bad: list[tuple[Any, ...]] = [
            ("", b"x"),
            (123, b"x"),
            ("q" * 300, b"x"),
            (Q, "text"),
            (Q, None),
        ]
        for queue, payload in bad:
            with pytest.raises(InvalidArgument):
                p.enqueue(queue, payload)
        with pytest.raises(InvalidArgument, match="unknown enqueue option"):
            p.enqueue(Q, b"x", colour="red")
        with pytest.raises(InvalidArgument, match="run_at and delay"):
            p.enqueue(Q, b"x", delay=1, run_at=time.time())
        with pytest.raises(InvalidArgument):
            p.enqueue_batch(Q, b"not a list")
        with pytest.raises(InvalidArgument):
            p.enqueue_batch(Q, [b"ok", 5])
        with pytest.raises(InvalidArgument):
            p.cancel("bad id!")
        with pytest.raises(InvalidArgument):
            p.requeue_dead_job(42)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            p.enqueue_with(Q, b"x", {"priority": 1})  # type: ignore[arg-type]
    with pytest.raises(QueueClosed):
        p.enqueue(Q, b"x")
    assert inbox(fast_backend_root) == []


def test_submissions_in_one_object_see_each_other(fast_backend_root: Any) -> None:
    """An object is applied as one event, so its later submissions must be checked against
    its earlier ones: a second enqueue with the same dedup key is a hit, a cancel of a job
    enqueued just before removes it, and a repeated job id creates nothing."""
    subs = [
        SubmitEnqueue(queue=Q, job_ids=("first",), payloads=(b"1",), dedup_key="k"),
        SubmitEnqueue(queue=Q, job_ids=("second",), payloads=(b"2",), dedup_key="k"),
        SubmitEnqueue(queue=Q, job_ids=("gone",), payloads=(b"3",)),
        SubmitCancel(job_id="gone"),
        SubmitCancel(job_id="gone"),
        SubmitEnqueue(queue=Q, job_ids=("first",), payloads=(b"4",), chosen_id=True),
        SubmitEnqueue(queue=Q, job_ids=("kept",), payloads=(b"5",)),
    ]
    frames = [frame for sub in subs for frame in submission_frames(sub)]
    producer = "0123456789abcdef"
    fast_backend_root.store().put_if_absent(
        f"{INBOX_DIR}/{object_name(producer, 0)}", encode_object(producer, 0, "n", frames)
    )
    q = open_owner(fast_backend_root)
    try:
        assert q.intake_now() == len(subs)
        assert q.get_job("second") is None and q.get_job("gone") is None
        first = q.get_job("first")
        assert first is not None and first.payload == b"1"
        assert q.stats(Q).pending == 2
        assert q.inbox_marks() == {producer: 0}
    finally:
        q.close()
    q = open_owner(fast_backend_root)  # the same state replayed from the one record
    try:
        assert q.stats(Q).pending == 2 and q.inbox_marks() == {producer: 0}
        assert q.get_job("kept") is not None and q.get_job("gone") is None
    finally:
        q.close()
