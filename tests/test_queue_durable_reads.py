"""Reads report a settled state only once it is durable.

An ``ack`` is applied in memory while its write is in flight. Before this rule a
``wait_for_completion`` called in that window returned COMPLETED at once (and ``get_job``
DONE); when the write then failed, the job was pending again after a reopen. Here one
segment write stalls until the test lets it go, on every backend (the filesystem is wrapped
in ``faulty.FaultyFileSystem``): while it stalls, no read reports the ack; when the write
fails, the reads raise its error and the job is pending after a reopen; when it succeeds,
they report it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import fsspec
import pytest
from support.backends import BackendRoot
from support.faulty import Stall, StallingFileSystem

from taquba import (
    CancelOutcome,
    JobStatus,
    OpenOptions,
    Queue,
    QueueBroken,
    QueueConfig,
    StorageError,
    WaitStatus,
)

Q = "jobs"
WAIT = 30.0  # upper bound for something that must happen; never a speed assertion
BLOCKED = 0.2  # how long a blocked read is given to (wrongly) return before the write ends


OPTIONS = OpenOptions(
    background_threads=False, storage_retries=0, default_queue_config=QueueConfig(keep_done=3600)
)


@pytest.fixture
def wrapped(backend_root: BackendRoot) -> Iterator[tuple[StallingFileSystem, str]]:
    inner, path = backend_root.filesystem()
    if backend_root.name == "local":  # the local store does not go through fsspec
        inner = fsspec.filesystem("file", auto_mkdir=True)
    yield StallingFileSystem(inner), path


class Call:
    """A call run in its own thread: what it returned or raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call never returned"


def ack_while_the_write_stalls(
    q: Queue, fs: StallingFileSystem, stall: Stall
) -> tuple[str, Call, dict[str, Call]]:
    """A durable job and claim; then its ack, whose write stalls; then reads of it."""
    job_id = q.enqueue(Q, b"x")
    claim = q.claim(Q)
    assert claim is not None
    q.kv_delete(b"no such key")  # the claim's record is durable: only the ack's will stall
    fs.stall = stall
    ack = Call(lambda: q.ack(claim))
    try:
        assert stall.started.wait(WAIT)
        # In memory the job is done now; its record is in flight.
        assert q.wait_for_completion(job_id, 0).status is WaitStatus.TIMED_OUT
        assert q.wait_for_completion(job_id, 0.05).status is WaitStatus.TIMED_OUT
        reads = {
            "wait_for_completion": Call(lambda: q.wait_for_completion(job_id, WAIT)),
            "get_job": Call(lambda: q.get_job(job_id)),
            "stats": Call(lambda: q.stats(Q)),
            "list_queues": Call(q.list_queues),
            "dead_jobs": Call(lambda: q.dead_jobs(Q)),
            "kv_get": Call(lambda: q.kv_get(b"k")),
            "cancel": Call(lambda: q.cancel(job_id)),
        }
        for name, call in reads.items():
            call.thread.join(BLOCKED)
            assert call.thread.is_alive(), (
                f"{name} returned {call.result!r} before the ack was durable"
            )
    except BaseException:
        stall.go.set()  # do not leave the write hanging
        raise
    return job_id, ack, reads


def test_no_read_reports_an_ack_whose_write_then_fails(
    wrapped: tuple[StallingFileSystem, str],
) -> None:
    fs, path = wrapped
    q = Queue.open(fs, path=path, options=OPTIONS)
    try:
        stall = Stall(error=PermissionError("injected: the write failed"))
        job_id, ack, reads = ack_while_the_write_stalls(q, fs, stall)
        stall.go.set()
        ack.join()
        assert isinstance(ack.error, StorageError), ack.error
        for name, call in reads.items():
            call.join()
            assert isinstance(call.error, (StorageError, QueueBroken)), (name, call.result)
        with pytest.raises(QueueBroken):  # and later reads too: the handle is broken
            q.get_job(job_id)
    finally:
        q.close()
    with Queue.open(fs, path=path, options=OPTIONS) as q2:
        record = q2.get_job(job_id)
        assert record is not None and record.status is JobStatus.PENDING  # the ack was lost
        assert q2.stats(Q).done == 0


def test_reads_report_an_ack_once_its_stalled_write_succeeds(
    wrapped: tuple[StallingFileSystem, str],
) -> None:
    fs, path = wrapped
    q = Queue.open(fs, path=path, options=OPTIONS)
    try:
        stall = Stall()
        job_id, ack, reads = ack_while_the_write_stalls(q, fs, stall)
        stall.go.set()
        ack.join()
        assert ack.error is None
        for name, call in reads.items():
            call.join()
            assert call.error is None, (name, call.error)
        outcome = reads["wait_for_completion"].result
        assert outcome.status is WaitStatus.COMPLETED  # type: ignore[attr-defined]
        assert outcome.record.status is JobStatus.DONE  # type: ignore[attr-defined]
        assert reads["get_job"].result.status is JobStatus.DONE  # type: ignore[attr-defined]
        assert reads["stats"].result.done == 1  # type: ignore[attr-defined]
        assert reads["cancel"].result is CancelOutcome.NOT_FOUND
        assert q.wait_for_completion(job_id, 0).status is WaitStatus.COMPLETED  # durable now
    finally:
        q.close()
    with Queue.open(fs, path=path, options=OPTIONS) as q2:
        assert q2.get_job(job_id).status is JobStatus.DONE  # type: ignore[union-attr]
