"""The worker loops: settlement paths, concurrency, shutdown, leases, cancellation, executors."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from taquba import (
    CancelOutcome,
    ClaimLost,
    InvalidArgument,
    JobStatus,
    OpenOptions,
    QueueClosed,
    QueueConfig,
    StorageError,
)
from taquba.handling import LeaseRenewer
from taquba.queue import Queue
from taquba.records import Claim, JobRecord, WaitStatus
from taquba.worker import JobView, PermanentFailure, Worker, run_worker, run_worker_concurrent

QUEUE = "jobs"
POLL = 0.05  # how fast the loops notice shutdown; never part of an assertion
WAIT = 20.0  # upper bound on waiting for something that must happen


# --------------------------------------------------------------------------- helpers


def open_queue(
    root: Path, *, lease: float = 30.0, max_attempts: int = 3, reaper_interval: float = 0.05
) -> Queue:
    config = QueueConfig(
        lease=lease, max_attempts=max_attempts, retry_backoff_base=0, keep_done=600
    )
    return Queue.open(
        str(root), options=OpenOptions(reaper_interval=reaper_interval, default_queue_config=config)
    )


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Queue]:
    with open_queue(tmp_path / "q") as queue:
        yield queue


@contextmanager
def running(loop: Callable[..., None], *args: Any, **kwargs: Any) -> Iterator[threading.Event]:
    """Run a worker loop in a thread; on exit set its shutdown and check it ended cleanly."""
    shutdown = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop(*args, shutdown=shutdown, poll_interval=POLL, **kwargs)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-worker-loop", daemon=True)
    thread.start()
    try:
        yield shutdown
    finally:
        shutdown.set()
        thread.join(WAIT)
        assert not thread.is_alive(), "the worker loop did not return after shutdown"
    if errors:
        raise errors[0]


def finished(q: Queue, job_id: str) -> JobRecord:
    outcome = q.wait_for_completion(job_id, WAIT)
    assert outcome.status == WaitStatus.COMPLETED, (job_id, outcome)
    assert outcome.record is not None
    return outcome.record


def by_payload(claim: Any) -> None:
    """ok -> return, fail -> raise, dead -> PermanentFailure."""
    if claim.payload == b"fail":
        raise ValueError("boom on purpose")
    if claim.payload == b"dead":
        raise PermanentFailure("unprocessable input")


class ObjectHandler:
    """A handler written as a ``Worker`` object."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process(self, claim: Claim) -> None:
        self.seen.append(claim.id)
        by_payload(claim)


def check_paths(q: Queue, ids: dict[str, str]) -> None:
    ok = finished(q, ids["ok"])
    assert ok.status == JobStatus.DONE and ok.attempts == 1
    failed = finished(q, ids["fail"])
    assert failed.status == JobStatus.DEAD
    assert failed.attempts == 2  # nacked, retried, nacked again: dead at max_attempts
    assert failed.last_error is not None and "boom on purpose" in failed.last_error
    dead = finished(q, ids["dead"])
    assert dead.status == JobStatus.DEAD and dead.attempts == 1
    assert dead.last_error is not None and "unprocessable input" in dead.last_error
    stats = q.stats(QUEUE)
    assert (stats.pending, stats.claimed, stats.done, stats.dead) == (0, 0, 1, 2)


def enqueue_paths(q: Queue) -> dict[str, str]:
    return {p: q.enqueue(QUEUE, p.encode(), max_attempts=2) for p in ("ok", "fail", "dead")}


# --------------------------------------------------------------------------- settlement paths


@pytest.mark.parametrize("as_object", [False, True], ids=["callable", "worker-object"])
def test_run_worker_acks_nacks_and_dead_letters(q: Queue, as_object: bool) -> None:
    handler: Any = ObjectHandler() if as_object else by_payload
    if as_object:
        assert isinstance(handler, Worker)
    ids = enqueue_paths(q)
    with running(run_worker, q, QUEUE, handler):
        check_paths(q, ids)
    if as_object:
        assert sorted(handler.seen) == sorted([ids["ok"], ids["fail"], ids["fail"], ids["dead"]])


@pytest.mark.parametrize("as_object", [False, True], ids=["callable", "worker-object"])
def test_run_worker_concurrent_acks_nacks_and_dead_letters(q: Queue, as_object: bool) -> None:
    handler: Any = ObjectHandler() if as_object else by_payload
    ids = enqueue_paths(q)
    with running(run_worker_concurrent, q, QUEUE, handler, concurrency=3):
        check_paths(q, ids)


def test_worker_is_woken_by_enqueue_and_claims_with_wait(
    q: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    real_claim, real_batch = q.claim, q.claim_batch

    def claim(queue: str, lease: Any = None, *, wait: float = 0.0) -> Claim | None:
        waits.append(wait)
        return real_claim(queue, lease, wait=wait)

    def claim_batch(
        queue: str, max_jobs: int, lease: Any = None, *, wait: float = 0.0
    ) -> list[Claim]:
        waits.append(wait)
        return real_batch(queue, max_jobs, lease, wait=wait)

    monkeypatch.setattr(q, "claim", claim)
    monkeypatch.setattr(q, "claim_batch", claim_batch)
    started = threading.Event()
    with running(run_worker_concurrent, q, QUEUE, lambda c: started.set(), concurrency=2):
        job = q.enqueue(QUEUE, b"x")  # the loop is idle in a waiting claim at this point
        assert finished(q, job).status == JobStatus.DONE
    assert started.is_set()
    assert waits and all(w == POLL for w in waits)  # every claim blocks; none spins


def test_invalid_arguments_change_nothing(q: Queue) -> None:
    job = q.enqueue(QUEUE, b"x")
    stop = threading.Event()
    with pytest.raises(InvalidArgument):
        run_worker_concurrent(q, QUEUE, by_payload, concurrency=0, shutdown=stop)
    with pytest.raises(InvalidArgument):
        run_worker(q, QUEUE, object(), shutdown=stop)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        run_worker(q, QUEUE, by_payload, shutdown=stop, poll_interval=0)
    with pytest.raises(InvalidArgument):
        run_worker(q, "", by_payload, shutdown=stop)

    async def async_handler(claim: Claim) -> None:
        pass

    with pytest.raises(InvalidArgument):
        run_worker(q, QUEUE, async_handler, shutdown=stop)
    with pytest.raises(InvalidArgument):
        run_worker_concurrent(
            q, QUEUE, by_payload, concurrency=1, shutdown=stop, executor="threads"
        )  # type: ignore[arg-type]
    record = q.get_job(job)
    assert record is not None and record.status == JobStatus.PENDING and record.attempts == 0


# --------------------------------------------------------------------------- concurrency


def test_concurrency_is_reached_and_never_exceeded(q: Queue) -> None:
    n = 4
    barrier = threading.Barrier(n, timeout=WAIT)
    lock = threading.Lock()
    running_now = 0
    peak = 0
    claimed_seen: list[int] = []
    names: set[str] = set()

    def handler(claim: Claim) -> None:
        nonlocal running_now, peak
        with lock:
            running_now += 1
            peak = max(peak, running_now)
            names.add(threading.current_thread().name)
        claimed_seen.append(q.stats(QUEUE).claimed)
        try:
            barrier.wait()  # breaks (and the job nacks) unless n handlers run at once
            claimed_seen.append(q.stats(QUEUE).claimed)  # all slots busy: nothing more claimed
        finally:
            with lock:
                running_now -= 1

    ids = [q.enqueue(QUEUE, b"%d" % i) for i in range(2 * n)]
    with running(run_worker_concurrent, q, QUEUE, handler, concurrency=n):
        records = [finished(q, i) for i in ids]
    assert all(r.status == JobStatus.DONE and r.attempts == 1 for r in records)
    assert peak == n
    assert max(claimed_seen) <= n  # claims only for free slots
    assert names and all(name.startswith("taquba-worker-") for name in names)


# --------------------------------------------------------------------------- shutdown


def test_shutdown_while_handlers_run_drains_and_claims_nothing_new(q: Queue) -> None:
    release = threading.Event()
    started: list[str] = []
    both_started = threading.Barrier(3, timeout=WAIT)

    def handler(claim: Claim) -> None:
        started.append(claim.id)
        both_started.wait()
        assert release.wait(WAIT)

    ids = [q.enqueue(QUEUE, b"%d" % i) for i in range(5)]
    shutdown = threading.Event()
    thread = threading.Thread(
        target=run_worker_concurrent,
        args=(q, QUEUE, handler),
        kwargs={"concurrency": 2, "shutdown": shutdown, "poll_interval": POLL},
    )
    thread.start()
    both_started.wait()
    shutdown.set()
    release.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert sorted(started) == sorted(ids[:2])
    for job in ids[:2]:
        record = q.get_job(job)
        assert record is not None and record.status == JobStatus.DONE
    for job in ids[2:]:
        record = q.get_job(job)
        assert record is not None and record.status == JobStatus.PENDING
        assert record.attempts == 0
    stats = q.stats(QUEUE)
    assert (stats.pending, stats.claimed, stats.done) == (3, 0, 2)


def test_run_worker_finishes_the_job_in_flight_on_shutdown(q: Queue) -> None:
    shutdown = threading.Event()
    in_handler = threading.Event()

    def handler(claim: Claim) -> None:
        in_handler.set()
        assert shutdown.wait(WAIT)

    first, second = q.enqueue(QUEUE, b"1"), q.enqueue(QUEUE, b"2")
    thread = threading.Thread(
        target=run_worker,
        args=(q, QUEUE, handler),
        kwargs={"shutdown": shutdown, "poll_interval": POLL},
    )
    thread.start()
    assert in_handler.wait(WAIT)
    shutdown.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    done, pending = q.get_job(first), q.get_job(second)
    assert done is not None and done.status == JobStatus.DONE
    assert pending is not None and pending.status == JobStatus.PENDING and pending.attempts == 0


def test_keyboard_interrupt_in_run_worker_gives_the_job_back(q: Queue) -> None:
    def handler(claim: Claim) -> None:
        raise KeyboardInterrupt

    job = q.enqueue(QUEUE, b"x", max_attempts=5)
    with pytest.raises(KeyboardInterrupt):
        run_worker(q, QUEUE, handler, shutdown=threading.Event(), poll_interval=POLL)
    record = q.get_job(job)
    assert record is not None and record.status == JobStatus.PENDING and record.attempts == 1
    assert record.last_error is not None and "KeyboardInterrupt" in record.last_error


def test_closed_queue_ends_the_loop(tmp_path: Path) -> None:
    queue = open_queue(tmp_path / "q")
    queue.close()
    with pytest.raises(QueueClosed):
        run_worker_concurrent(
            queue, QUEUE, by_payload, concurrency=2, shutdown=threading.Event(), poll_interval=POLL
        )


# --------------------------------------------------------------------------- leases


@pytest.mark.parametrize("concurrent", [False, True], ids=["run_worker", "concurrent"])
def test_handler_outliving_its_lease_keeps_it(
    tmp_path: Path, concurrent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def handler(claim: Claim) -> None:
        calls.append(claim.attempts)
        time.sleep(2.0)  # four leases long; the reaper looks every 50 ms

    caplog.set_level(logging.WARNING, logger="taquba")
    with open_queue(tmp_path / "q", lease=0.5) as q:
        job = q.enqueue(QUEUE, b"long")
        if concurrent:
            ctx = running(run_worker_concurrent, q, QUEUE, handler, concurrency=2)
        else:
            ctx = running(run_worker, q, QUEUE, handler)
        with ctx:
            record = finished(q, job)
        assert record.status == JobStatus.DONE and record.attempts == 1
    assert calls == [1]  # never redelivered
    assert not [r for r in caplog.records if r.name.startswith("taquba.worker")]


def test_a_shorter_lease_added_while_the_renewer_sleeps_is_renewed_in_time(tmp_path: Path) -> None:
    """The renewer sleeps until its first known renewal; a claim due sooner wakes it."""
    with open_queue(tmp_path / "q") as q:
        q.enqueue_batch(QUEUE, [b"long lease", b"short lease"])
        long_claim = q.claim(QUEUE, lease=3600)
        short_claim = q.claim(QUEUE, lease=0.5)
        assert long_claim is not None and short_claim is not None
        renewer = LeaseRenewer(q)
        renewer.start()
        try:
            renewer.add(long_claim)  # the renewer now sleeps for half an hour
            time.sleep(0.1)
            renewer.add(short_claim)
            time.sleep(2.0)  # four of its leases; the reaper looks every 50 ms
            renewer.remove(short_claim)
            renewer.remove(long_claim)
        finally:
            renewer.stop()
        q.ack(short_claim)  # ClaimLost if its lease had run out
        q.ack(long_claim)
        assert q.get_job(short_claim.id).status == JobStatus.DONE  # type: ignore[union-attr]


@pytest.mark.parametrize("long_first", [True, False], ids=["long_first", "long_last"])
def test_a_long_job_keeps_its_lease_among_short_jobs(tmp_path: Path, long_first: bool) -> None:
    """Short jobs do not wake the renewer; it still renews a long job started before them
    (while they flow) or after them (when it planned to look again for them)."""
    done_short: list[str] = []

    def handler(claim: Claim) -> None:
        if claim.payload == b"long":
            time.sleep(2.0)  # four leases long
        else:
            done_short.append(claim.id)

    with open_queue(tmp_path / "q", lease=0.5) as q:
        long_job = q.enqueue(QUEUE, b"long") if long_first else ""
        short = q.enqueue_batch(QUEUE, [b"short"] * 200)
        if not long_first:
            long_job = q.enqueue(QUEUE, b"long")
        with running(run_worker_concurrent, q, QUEUE, handler, concurrency=2):
            for job_id in short:
                finished(q, job_id)
            record = finished(q, long_job)
        assert record.status == JobStatus.DONE and record.attempts == 1  # never reaped
    assert len(done_short) == 200


_EXIT_SCRIPT = """
import sys, threading, time
from taquba import OpenOptions, Queue, QueueConfig
from taquba.worker import run_worker_concurrent

q = Queue.open(sys.argv[1], options=OpenOptions(
    default_queue_config=QueueConfig(keep_done=600)))
started = threading.Event()

def handler(claim):
    started.set()
    time.sleep(1.0)
    with open(sys.argv[2], "a") as f:
        f.write(claim.payload.decode() + "\\n")

threading.Thread(target=run_worker_concurrent, args=(q, "jobs", handler),
                 kwargs=dict(concurrency=2, shutdown=threading.Event(), poll_interval=0.05),
                 daemon=True).start()
started.wait(20)
print("exiting", flush=True)
"""


def test_interpreter_exit_lets_the_jobs_in_flight_finish(tmp_path: Path) -> None:
    """A loop in a daemon thread, no shutdown set, the main thread returns: the job in hand
    runs to its end and is acked before the process exits; nothing more is claimed."""
    import subprocess
    import sys

    root, log = tmp_path / "q", tmp_path / "ran"
    with open_queue(root) as q:
        first = q.enqueue(QUEUE, b"first")
    script = tmp_path / "exit_worker.py"
    script.write_text(_EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, str(script), str(root), str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "exiting" in out.stdout
    assert log.read_text() == "first\n"  # the handler ran to its end
    with open_queue(root) as q:
        job = q.get_job(first)
        assert job is not None and job.status == JobStatus.DONE and job.attempts == 1


# --------------------------------------------------------------------------- cancellation


def test_cancellation_reaches_the_running_handler(q: Queue) -> None:
    in_handler = threading.Event()
    saw_cancel: list[bool] = []

    def handler(claim: Claim) -> None:
        if claim.payload == b"cancel me":
            in_handler.set()
            saw_cancel.append(claim.cancel_requested.wait(WAIT))  # stops early when cancelled

    job = q.enqueue(QUEUE, b"cancel me")
    with running(run_worker_concurrent, q, QUEUE, handler, concurrency=2):
        assert in_handler.wait(WAIT)
        assert q.cancel(job) == CancelOutcome.REQUESTED
        follow_up = q.enqueue(QUEUE, b"next")  # the loop goes on after the cancelled job
        assert finished(q, follow_up).status == JobStatus.DONE
    assert saw_cancel == [True]
    record = q.get_job(job)
    assert record is None or record.status in (JobStatus.DONE, JobStatus.DEAD)
    stats = q.stats(QUEUE)
    assert (stats.pending, stats.claimed) == (0, 0)


# --------------------------------------------------------------------------- settlement failures


def test_failing_settlement_is_logged_and_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taquba.worker")
    with open_queue(tmp_path / "q", lease=0.5) as q:
        real_ack = q._ack_later  # the worker loops' ack (confirmed after the next job)
        failures = iter([StorageError("injected ack failure")])

        def ack(claim: Claim, effects: object = None) -> object:
            exc = next(failures, None)
            if exc is not None:
                raise exc
            return real_ack(claim)

        monkeypatch.setattr(q, "_ack_later", ack)
        attempts: dict[str, int] = {}

        def handler(claim: Claim) -> None:
            attempts[claim.id] = claim.attempts

        first = q.enqueue(QUEUE, b"first")
        with running(run_worker_concurrent, q, QUEUE, handler, concurrency=1):
            # the first ack fails: the job's lease runs out and it is delivered again
            assert finished(q, first).status == JobStatus.DONE
            later = [q.enqueue(QUEUE, b"later %d" % i) for i in range(3)]
            assert all(finished(q, job).status == JobStatus.DONE for job in later)
    assert attempts[first] == 2
    assert any("could not ack job " + first in r.getMessage() for r in caplog.records)


def test_claim_lost_on_settlement_is_logged_and_the_loop_goes_on(
    q: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taquba.worker")
    real_ack = q._ack_later  # the worker loops' ack
    lost = iter([True])

    def ack(claim: Claim, effects: object = None) -> object:
        if next(lost, False):
            raise ClaimLost(f"claim of {claim.id} is not current")
        return real_ack(claim)

    monkeypatch.setattr(q, "_ack_later", ack)
    jobs = [q.enqueue(QUEUE, b"%d" % i) for i in range(3)]
    with running(run_worker, q, QUEUE, by_payload):
        for job in jobs[1:]:
            assert finished(q, job).status == JobStatus.DONE
    assert any("claim was lost" in r.getMessage() for r in caplog.records)


def test_reaped_job_whose_ack_raises_claim_lost_does_not_stop_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taquba.worker")
    with open_queue(tmp_path / "q", lease=0.3) as q:

        def renew_lease(claim: Claim, extension: Any) -> None:
            raise StorageError("injected renewal failure")

        monkeypatch.setattr(q, "renew_lease", renew_lease)  # so the reaper takes the job back
        reaped = threading.Event()
        attempts: list[int] = []

        def handler(claim: Claim) -> None:
            if claim.payload == b"x":
                attempts.append(claim.attempts)
            if claim.payload == b"x" and claim.attempts == 1:
                while not reaped.is_set():  # outlive the lease until the job is requeued
                    record = q.get_job(claim.id)
                    if record is not None and record.status != JobStatus.CLAIMED:
                        reaped.set()
                    time.sleep(0.02)

        job = q.enqueue(QUEUE, b"x")
        with running(run_worker_concurrent, q, QUEUE, handler, concurrency=2):
            record = finished(q, job)
            later = q.enqueue(QUEUE, b"later")
            assert finished(q, later).status == JobStatus.DONE
    assert record.status == JobStatus.DONE and record.attempts == 2
    assert attempts == [1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not renew the lease of job " + job in m for m in messages)
    assert any("could not ack job " + job + ": its claim was lost" in m for m in messages)


def test_claim_errors_are_logged_and_retried(
    q: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taquba.worker")
    real_claim = q.claim
    errors = iter([StorageError("injected claim failure")])

    def claim(queue: str, lease: Any = None, *, wait: float = 0.0) -> Claim | None:
        exc = next(errors, None)
        if exc is not None:
            raise exc
        return real_claim(queue, lease, wait=wait)

    monkeypatch.setattr(q, "claim", claim)
    job = q.enqueue(QUEUE, b"x")
    with running(run_worker, q, QUEUE, by_payload):
        assert finished(q, job).status == JobStatus.DONE
    assert any("claiming from queue" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- executors


def remote_handler(job: Any) -> None:
    """Runs in an executor: must get a picklable JobView, never the Claim."""
    if not isinstance(job, JobView) or hasattr(job, "cancel_requested"):
        raise TypeError(f"expected a JobView, got {type(job).__name__}")
    parent = job.headers.get("parent_pid")
    if parent is not None and int(parent) == os.getpid():
        raise RuntimeError("ran in the queue's process")
    by_payload(job)


def run_on_executor(q: Queue, executor: Executor, *, other_process: bool) -> None:
    headers = {"parent_pid": str(os.getpid())} if other_process else {}
    ids = {
        p: q.enqueue(QUEUE, p.encode(), max_attempts=2, headers=headers)
        for p in ("ok", "fail", "dead")
    }
    more = [q.enqueue(QUEUE, b"ok", headers=headers) for _ in range(5)]
    with running(run_worker_concurrent, q, QUEUE, remote_handler, concurrency=3, executor=executor):
        check_paths_with_extra(q, ids, more)


def check_paths_with_extra(q: Queue, ids: dict[str, str], more: list[str]) -> None:
    for job in more:
        record = finished(q, job)
        assert record.status == JobStatus.DONE, record.last_error
    ok = finished(q, ids["ok"])
    assert ok.status == JobStatus.DONE, ok.last_error
    failed = finished(q, ids["fail"])
    assert failed.status == JobStatus.DEAD and failed.attempts == 2
    assert failed.last_error is not None and "boom on purpose" in failed.last_error
    dead = finished(q, ids["dead"])
    assert dead.status == JobStatus.DEAD and dead.attempts == 1
    assert dead.last_error is not None and "unprocessable input" in dead.last_error


def test_process_pool_executor(q: Queue) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as executor:
        run_on_executor(q, executor, other_process=True)


def test_process_pool_rejects_an_unpicklable_handler(q: Queue) -> None:
    job = q.enqueue(QUEUE, b"x")
    with ProcessPoolExecutor(max_workers=1) as executor, pytest.raises(InvalidArgument):
        run_worker_concurrent(
            q, QUEUE, lambda c: None, concurrency=1, shutdown=threading.Event(), executor=executor
        )
    record = q.get_job(job)
    assert record is not None and record.attempts == 0


def test_thread_pool_executor_gets_the_claim(q: Queue) -> None:
    kinds: list[str] = []

    def handler(claim: Any) -> None:
        kinds.append(type(claim).__name__)
        assert isinstance(claim.cancel_requested, threading.Event)

    job = q.enqueue(QUEUE, b"x")
    with (
        ThreadPoolExecutor(max_workers=2) as executor,
        running(run_worker_concurrent, q, QUEUE, handler, concurrency=2, executor=executor),
    ):
        assert finished(q, job).status == JobStatus.DONE
    assert kinds == ["Claim"]


class BrokenExecutor(Executor):
    """Every future fails, as when a process-pool worker dies."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(RuntimeError("executor worker died"))
        return future


def test_executor_failure_nacks(q: Queue) -> None:
    job = q.enqueue(QUEUE, b"x", max_attempts=1)
    with running(
        run_worker_concurrent, q, QUEUE, by_payload, concurrency=2, executor=BrokenExecutor()
    ):
        record = finished(q, job)
    assert record.status == JobStatus.DEAD
    assert record.last_error is not None and "executor worker died" in record.last_error


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=3, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_dask_executor(q: Queue, dask_client: Any) -> None:
    run_on_executor(q, dask_client.get_executor(), other_process=False)


# --------------------------------------------------------------------------- BaseException rule


def test_system_exit_in_run_worker_releases_the_job_and_propagates(q: Queue) -> None:
    def handler(claim: Claim) -> None:
        raise SystemExit(3)

    job = q.enqueue(QUEUE, b"x", max_attempts=1)  # a nack would make it dead; a release not
    with pytest.raises(SystemExit):
        run_worker(q, QUEUE, handler, shutdown=threading.Event(), poll_interval=POLL)
    record = q.get_job(job)
    assert record is not None and record.status == JobStatus.PENDING and record.attempts == 1
    assert record.last_error == "interrupted: SystemExit 3"
    assert record.run_at is None  # no backoff: it can be claimed at once
    c = q.claim(QUEUE)
    assert c is not None and c.id == job and c.attempts == 2


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("on_executor", [False, True], ids=["worker-threads", "thread-pool"])
def test_an_interrupted_handler_stops_run_worker_concurrent_after_the_others_settle(
    q: Queue, interrupt: type[BaseException], on_executor: bool
) -> None:
    slow_started, slow_may_finish = threading.Event(), threading.Event()

    def handler(claim: Claim) -> None:
        if claim.payload == b"slow":
            slow_started.set()
            assert slow_may_finish.wait(WAIT)
        elif claim.payload == b"interrupt":
            assert slow_started.wait(WAIT)
            raise interrupt

    slow = q.enqueue(QUEUE, b"slow", priority=0)
    interrupted = q.enqueue(QUEUE, b"interrupt", priority=1, max_attempts=1)
    later = [q.enqueue(QUEUE, b"later", priority=2) for _ in range(5)]
    shutdown = threading.Event()
    errors: list[BaseException] = []
    executor = ThreadPoolExecutor(max_workers=2) if on_executor else None

    def loop() -> None:
        try:
            run_worker_concurrent(
                q,
                QUEUE,
                handler,
                concurrency=2,
                shutdown=shutdown,
                poll_interval=POLL,
                executor=executor,
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while (q.get_job(interrupted).last_error or "") == "":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the interrupted job was never given back"
            time.sleep(0.01)
        assert thread.is_alive(), "the loop ended while a job was still running"
        assert not errors
        slow_may_finish.set()
        thread.join(WAIT)
        assert not thread.is_alive(), "the loop went on after the interrupt"
    finally:
        slow_may_finish.set()
        shutdown.set()
        thread.join(WAIT)
        if executor is not None:
            executor.shutdown()
    assert len(errors) == 1 and type(errors[0]) is interrupt, errors
    assert q.get_job(slow).status == JobStatus.DONE  # type: ignore[union-attr]
    record = q.get_job(interrupted)
    assert record is not None and record.status == JobStatus.PENDING and record.attempts == 1
    assert record.last_error == f"interrupted: {interrupt.__name__}"
    for job in later:  # nothing was claimed after the interrupt
        r = q.get_job(job)
        assert r is not None and (r.status, r.attempts) == (JobStatus.PENDING, 0)
