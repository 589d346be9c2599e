"""A fenced handle finds out even when idle, and then refuses every call.

Before this check, a handle replaced by another process's ``Queue.open`` learned of it only
at its next write: an idle owner's reads returned stale state, and its worker loop waited
for work forever. Now ``check_fence_now`` (run every ``OpenOptions.fence_check_interval``
by the ``taquba-fence-check`` thread) asks the storage with one small request whether a
newer manifest exists; once it does, every call raises ``FencedError`` (reads included)
and the worker loops stop and re-raise it. Checked in one process on every backend, and
with two real processes (local disk and the S3 emulator), an idle worker loop in the first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import fsspec
import pytest
from support.backends import BackendRoot
from support.faulty import FaultyFileSystem
from test_bad_input import CLOSED, make_env

from taquba import FencedError, OpenOptions, Queue, QueueClosed, QueueConfig
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR
from taquba.worker import run_worker, run_worker_concurrent

Q = "jobs"
WAIT = 60.0  # upper bound for something that must happen; never a speed assertion
CHILD = str(Path(__file__).parent / "support" / "idle_worker_child.py")


def objects(root: BackendRoot) -> dict[str, list[str]]:
    store = root.store()
    try:
        return {d: store.list_dir(d) for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)}
    finally:
        store.close()


def test_an_idle_fenced_handle_refuses_every_call_once_it_checks(backend_root: BackendRoot) -> None:
    e = make_env(backend_root)  # a job in every state, a current claim; no background threads
    q2 = Queue.open(
        backend_root.location,
        storage_options=backend_root.storage_options,
        options=OpenOptions(background_threads=False),
    )
    try:
        q2.kv_delete(b"flush")  # q2's own writes at open are durable
        before = objects(backend_root)
        with pytest.raises(FencedError, match="another process has opened"):
            e.q.check_fence_now()
        for name, call in CLOSED:
            with pytest.raises(FencedError) as info:
                call(e)
            assert type(info.value) is FencedError, (name, info.value)
        with pytest.raises(FencedError):
            e.q.check_fence_now()
        assert objects(backend_root) == before, "the fenced handle wrote something"
        e.q.close()  # closing a fenced handle is quiet, and writes nothing either
        assert objects(backend_root) == before
        with pytest.raises(QueueClosed):
            e.q.get_job(e.pending)
        assert q2.get_job(e.pending) is not None  # the new owner carries on
        q2.enqueue(Q, b"new owner")
    finally:
        e.q.close()
        q2.close()


def test_a_check_costs_one_request_and_finds_nothing_while_unfenced() -> None:
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    path = f"/fence-check-{uuid.uuid4().hex}"
    options = OpenOptions(background_threads=False)
    with Queue.open(fs, path=path, options=options) as q:
        q.enqueue(Q, b"x")
        fs.reset_counts()
        for _ in range(10):
            q.check_fence_now()
        # The documented idle cost: one request per check (3600 / interval an hour).
        assert sum(fs.count(op) for op in ("put", "get", "list", "delete", "info")) == 10
        assert q.stats(Q).pending == 1


def test_checks_beside_the_handles_own_checkpoints_never_fence_it(tmp_path: Path) -> None:
    """A check that lists the manifests while this handle writes a checkpoint's manifest
    must take that manifest for its own."""
    options = OpenOptions(
        background_threads=False,
        checkpoint_min_bytes=1,
        checkpoint_ratio=0.001,
        checkpoint_max_segments=1,
        default_queue_config=QueueConfig(keep_done=3600),
    )
    with Queue.open(str(tmp_path / "q"), options=options) as q:
        stop = threading.Event()
        errors: list[BaseException] = []

        def check() -> None:
            while not stop.is_set():
                try:
                    q.check_fence_now()
                except BaseException as exc:
                    errors.append(exc)
                    return

        checker = threading.Thread(target=check)
        checker.start()
        try:
            for i in range(300):
                q.enqueue(Q, b"%d" % i)
                c = q.claim(Q)
                assert c is not None
                q.ack(c)
        finally:
            stop.set()
            checker.join(WAIT)
        assert not errors, errors
        assert q.committer.stats.checkpoints_written > 10  # the checks did overlap them


@pytest.mark.parametrize("concurrent", [False, True], ids=["run_worker", "concurrent"])
def test_an_idle_worker_loop_stops_with_fenced_error(tmp_path: Path, concurrent: bool) -> None:
    """In one process, with the background check: the loop on the old handle re-raises."""
    root = str(tmp_path / "q")
    q1 = Queue.open(root, options=OpenOptions(fence_check_interval=0.05))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if concurrent:
                run_worker_concurrent(
                    q1,
                    Q,
                    lambda c: None,
                    concurrency=2,
                    shutdown=threading.Event(),
                    poll_interval=30,
                )
            else:
                run_worker(q1, Q, lambda c: None, shutdown=threading.Event(), poll_interval=30)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    q2 = Queue.open(root, options=OpenOptions(background_threads=False))
    try:
        worker.join(WAIT)
        assert not worker.is_alive(), "the worker loop on the fenced handle never stopped"
        assert len(errors) == 1 and type(errors[0]) is FencedError, errors
    finally:
        q1.close()
        q2.close()


@pytest.mark.parametrize("concurrent", [False, True], ids=["run_worker", "concurrent"])
@pytest.mark.parametrize("backend_root", ["local", "s3"], indirect=True)
def test_an_idle_owner_process_notices_a_second_process(
    backend_root: BackendRoot, concurrent: bool
) -> None:
    spec = {
        "location": backend_root.location,
        "storage_options": backend_root.storage_options,
        "fence_check_interval": 0.2,
        "concurrent": concurrent,
    }
    child = subprocess.Popen(
        [sys.executable, CHILD, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read()  # type: ignore[union-attr]
        q2 = Queue.open(
            backend_root.location,
            storage_options=backend_root.storage_options,
            options=OpenOptions(background_threads=False),
        )
        try:
            q2.kv_delete(b"flush")
            before = objects(backend_root)
            out, err = child.communicate(timeout=WAIT)
            assert child.returncode == 3, (out, err[-3000:])
            assert out.strip() == "F FencedError", (out, err[-3000:])
            assert objects(backend_root) == before, "the fenced process wrote something"
            q2.enqueue(Q, b"the new owner writes")
        finally:
            q2.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
