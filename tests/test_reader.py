"""QueueReader on every backend: it follows the owner, reads only what is new, writes nothing.

The owner runs in this process here (memory roots cannot be shared across processes);
tests/test_multiprocess.py follows an owner in another process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support.faulty import FaultyFileSystem

from taquba import (
    InvalidArgument,
    JobNotFound,
    JobStatus,
    OpenOptions,
    Queue,
    QueueClosed,
    QueueConfig,
    QueueNotFound,
    QueueReader,
)

Q = "work"


def open_owner(root: Any, **options: Any) -> Queue:
    config = QueueConfig(keep_done=3600, max_attempts=1)
    return Queue.open(
        root.location,
        storage_options=root.storage_options,
        options=OpenOptions(background_threads=False, default_queue_config=config, **options),
    )


def open_reader(root: Any) -> QueueReader:
    return QueueReader.open(root.location, storage_options=root.storage_options)


def test_reader_sees_the_owners_durable_state(backend_root: Any) -> None:
    q = open_owner(backend_root, checkpoint_min_bytes=1024, checkpoint_ratio=0.1)
    try:
        reader = open_reader(backend_root)
        assert reader.list_queues() == []
        ids = q.enqueue_batch(Q, [b"x" * 50 for _ in range(20)])
        q.enqueue_with_kv(Q, b"kv", {b"key": b"value"})
        assert reader.stats(Q).pending == 0  # as of the last refresh
        assert reader.refresh() is True
        assert reader.stats(Q).pending == 21
        assert reader.kv_get(b"key") == b"value"
        assert reader.refresh() is False  # nothing new
        for _ in range(15):
            claim = q.claim(Q)
            assert claim is not None
            q.ack(claim)
        dead = q.claim(Q)
        assert dead is not None
        q.dead_letter(dead, "broken")
        reader.refresh()
        assert reader.stats(Q) == q.stats(Q)
        assert reader.get_job(ids[0]) == q.get_job(ids[0])
        assert [j.id for j in reader.dead_jobs(Q)] == [dead.id]
        assert reader.dead_jobs(Q)[0].last_error == "broken"
        assert reader.list_queues() == [Q]
        counts = reader.store.counts
        assert counts.puts == 0 and counts.deletes == 0
        reader.close()
        with pytest.raises(QueueClosed):
            reader.stats(Q)
    finally:
        q.close()


def test_reader_stays_correct_through_checkpoints_and_takeovers(backend_root: Any) -> None:
    q = open_owner(backend_root, checkpoint_min_bytes=512, checkpoint_ratio=0.05)
    reader = open_reader(backend_root)
    try:
        for round_ in range(6):
            q.enqueue_batch(Q, [b"p" * 100 for _ in range(10)])
            for _ in range(8):
                claim = q.claim(Q)
                assert claim is not None
                q.ack(claim)
            reader.refresh()
            assert reader.stats(Q) == q.stats(Q), f"round {round_}"
            if round_ == 3:
                q.close()  # a takeover: a new epoch, a new manifest
                q = open_owner(backend_root, checkpoint_min_bytes=512, checkpoint_ratio=0.05)
        assert reader._log.reloads > 1  # checkpoints replaced what it had read
        assert reader.store.counts.puts == 0 and reader.store.counts.deletes == 0
    finally:
        reader.close()
        q.close()


def test_reader_refreshes_while_the_owner_writes(fast_backend_root: Any) -> None:
    q = open_owner(fast_backend_root, checkpoint_min_bytes=1024, checkpoint_ratio=0.05)
    reader = open_reader(fast_backend_root)
    stop = threading.Event()

    def owner() -> None:
        for _ in range(300):
            q.enqueue(Q, b"y" * 64)
            claim = q.claim(Q)
            assert claim is not None
            q.ack(claim)
        stop.set()

    t = threading.Thread(target=owner)
    t.start()
    last = 0
    while not stop.is_set():
        reader.refresh()
        done = reader.stats(Q).done
        assert done >= last
        last = done
    t.join()
    reader.refresh()
    assert reader.stats(Q) == q.stats(Q)
    reader.close()
    q.close()


def test_reader_never_writes_on_a_counting_filesystem(tmp_path: Path) -> None:
    import fsspec

    root = str(tmp_path / "root")
    q = Queue.open(
        root,
        options=OpenOptions(
            background_threads=False, checkpoint_min_bytes=512, checkpoint_ratio=0.05
        ),
    )
    fs = FaultyFileSystem(fsspec.filesystem("file"))
    reader = QueueReader.open(fs, path=root)
    try:
        for _ in range(10):
            q.enqueue_batch(Q, [b"z" * 100] * 5)
            for _ in range(5):
                claim = q.claim(Q)
                assert claim is not None
                q.ack(claim)
            reader.refresh()
        assert reader.stats(Q) == q.stats(Q)
        assert fs.counts["get"] > 0 and fs.counts["list"] > 0
        assert fs.counts["put"] == 0 and fs.counts["delete"] == 0
    finally:
        reader.close()
        q.close()


def test_reader_bad_input(tmp_path: Path, fast_backend_root: Any) -> None:
    with pytest.raises(QueueNotFound, match="no queue here"):
        QueueReader.open(str(tmp_path / "nothing"))
    junk = tmp_path / "junk"
    (junk / "manifest").mkdir(parents=True)
    (junk / "notes.txt").write_text("not a queue")
    with pytest.raises(QueueNotFound):
        QueueReader.open(str(junk))
    assert sorted(p.name for p in junk.iterdir()) == ["manifest", "notes.txt"]  # untouched
    q = open_owner(fast_backend_root)
    q.enqueue(Q, b"x")
    reader = open_reader(fast_backend_root)
    try:
        with pytest.raises(InvalidArgument):
            reader.get_job("not an id!")
        with pytest.raises(InvalidArgument):
            reader.stats("")
        with pytest.raises(InvalidArgument):
            reader.dead_jobs(Q, limit=0)
        with pytest.raises(JobNotFound):
            reader.dead_jobs(Q, after="unknown")
        with pytest.raises(InvalidArgument):
            reader.kv_get(b"")
        assert reader.get_job("unknown") is None
        rec = reader.list_queues()
        assert rec == [Q]
        assert reader.stats(Q).pending == 1
        assert reader.get_job(q.claim(Q).id) is not None  # type: ignore[union-attr]
    finally:
        reader.close()
        q.close()


def test_reader_status_matches_after_reopen(fast_backend_root: Any) -> None:
    q = open_owner(fast_backend_root)
    job_id = q.enqueue(Q, b"x")
    claim = q.claim(Q)
    assert claim is not None
    q.ack(claim)
    q.close()
    reader = open_reader(fast_backend_root)
    try:
        rec = reader.get_job(job_id)
        assert rec is not None and rec.status is JobStatus.DONE
    finally:
        reader.close()
