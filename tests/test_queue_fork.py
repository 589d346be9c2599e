"""A Queue handle used in a process forked from its owner refuses, and writes nothing.

Before this rule, three children forked from an owner each "enqueued" 20 jobs on the
inherited handle, every call returned an id, and on reopen only 21 of the 61 jobs were
there: the children's appends overwrote the parent's blocks. Now every call in the child
raises ``QueueBroken`` naming the fork (before taking any lock: another thread of the parent
may hold one at the fork), ``close`` in the child writes nothing, and the parent's objects
are byte for byte what they were. Checked with ``os.fork``, ``multiprocessing`` (the fork
start method, a ``Process`` and a ``Pool``) and a real ``gunicorn --preload`` server whose
app opened a queue at import time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taquba import EnqueueOptions, JobStatus, OpenOptions, Queue, QueueConfig

Q = "jobs"
WAIT = 60.0  # upper bound for a child or a server; never a speed assertion
FORK_WORDS = ("forked", "Producer")


def files(root: Path) -> dict[str, bytes]:
    """Every file under the root and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def flush(q: Queue) -> None:
    """Wait until everything the handle submitted is durable (claims do not wait)."""
    q.kv_delete(b"no such key")


def wait_child(pid: int) -> int:
    """The exit status of child ``pid``; kills it if it has not ended within WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} hung (a call blocked on an inherited lock?)")


def calls_in_child(q: Queue, held: Any, n: int) -> list[tuple[str, Callable[[], object]]]:
    """Every kind of call a child might make on the inherited handle."""
    return [
        ("enqueue", lambda: q.enqueue(Q, b"child-%d" % n)),
        ("enqueue_batch", lambda: q.enqueue_batch(Q, [b"child-%d-batch" % n] * 20)),
        (
            "enqueue_with_kv",
            lambda: q.enqueue_with_kv(
                Q, b"child-%d-kv" % n, {b"k": b"child"}, EnqueueOptions(job_id=f"child-{n}")
            ),
        ),
        ("claim", lambda: q.claim(Q)),
        ("claim-wait", lambda: q.claim(Q, wait=30)),
        ("ack", lambda: q.ack(held)),
        ("get_job", lambda: q.get_job(held.id)),
        ("stats", lambda: q.stats(Q)),
        ("list_queues", lambda: q.list_queues()),
        ("kv_get", lambda: q.kv_get(b"k")),
        ("cancel", lambda: q.cancel(held.id)),
        ("wait_for_completion", lambda: q.wait_for_completion(held.id, 30)),
        ("reap_now", lambda: q.reap_now()),
        ("promote_scheduled_now", lambda: q.promote_scheduled_now()),
        ("check_fence_now", lambda: q.check_fence_now()),
    ]


def run_in_child(q: Queue, held: Any, n: int) -> dict[str, Any]:
    """What each call did in the child, then what close and a later call did."""
    report: dict[str, Any] = {}
    for name, call in calls_in_child(q, held, n):
        try:
            report[name] = ["returned", repr(call())]
        except BaseException as exc:
            report[name] = [type(exc).__name__, str(exc)]
    q.close()
    report["closed"] = q.closed
    try:
        q.enqueue(Q, b"after close")
        report["after-close"] = ["returned"]
    except BaseException as exc:
        report["after-close"] = [type(exc).__name__, str(exc)]
    return report


def fork_child(q: Queue, held: Any, n: int, *, hold_lock: bool) -> dict[str, Any]:
    """Fork; the child runs every call on ``q`` and reports through a pipe."""
    r, w = os.pipe()
    if hold_lock:
        q._lock.acquire()  # as if another thread of the parent were inside a call
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(r)
            with os.fdopen(w, "w") as out:
                json.dump(run_in_child(q, held, n), out)
            status = 0
        finally:
            os._exit(status)
    if hold_lock:
        q._lock.release()
    os.close(w)
    with os.fdopen(r) as inp:
        text = inp.read()
    assert wait_child(pid) == 0, text
    return json.loads(text)  # type: ignore[no-any-return]


def test_forked_children_get_queue_broken_and_write_nothing(tmp_path: Path) -> None:
    root = tmp_path / "q"
    options = OpenOptions(
        background_threads=False, default_queue_config=QueueConfig(keep_done=3600)
    )  # acked: shown DONE
    q = Queue.open(str(root), options=options)
    parent_jobs: list[str] = []
    try:
        parent_jobs.append(q.enqueue(Q, b"parent-0"))
        held = q.claim(Q)
        assert held is not None
        flush(q)
        before = files(root)

        reports = [fork_child(q, held, n, hold_lock=(n == 2)) for n in range(3)]

        assert files(root) == before, "a forked child changed the parent's files"
        for n, report in enumerate(reports):
            for name, _ in calls_in_child(q, held, n):
                kind, *message = report[name]
                assert kind == "QueueBroken", (n, name, report[name])
                assert all(word in message[0] for word in FORK_WORDS), message[0]
                assert str(os.getpid()) in message[0]  # names the process that opened it
            assert report["closed"] is True
            assert report["after-close"][0] == "QueueClosed"

        # The parent's handle is unaffected: it goes on writing and acknowledging.
        q.ack(held)
        parent_jobs.append(held.id)
        parent_jobs += [q.enqueue(Q, b"parent-%d" % i) for i in range(1, 21)]
        parent_jobs += q.enqueue_batch(Q, [b"parent-batch"] * 5)
    finally:
        q.close()
    with Queue.open(str(root), options=options) as q2:
        records = {job_id: q2.get_job(job_id) for job_id in parent_jobs}
        assert all(r is not None for r in records.values()), records
        assert records[held.id].status is JobStatus.DONE  # type: ignore[union-attr]
        stats = q2.stats(Q)
        assert (stats.pending, stats.claimed) == (25, 0)
        seen = []
        while (c := q2.claim(Q)) is not None:
            seen.append(c.payload)
        assert not [p for p in seen if p.startswith(b"child")]
        assert q2.get_job("child-0") is None and q2.kv_get(b"k") is None


# --------------------------------------------------------------------------- multiprocessing

_inherited: Queue | None = None  # the handle a Pool's forked workers inherit


def _enqueue_in_child(n: int) -> list[str]:
    assert _inherited is not None
    try:
        return ["returned", _inherited.enqueue(Q, b"pool-child-%d" % n)]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]


def _process_child(q: Queue, results: Any) -> None:
    out = []
    for call in (
        lambda: q.enqueue(Q, b"process-child"),
        lambda: q.stats(Q),
        q.close,
        lambda: q.enqueue(Q, b"process-child-after-close"),
    ):
        try:
            out.append(["returned", repr(call())])
        except Exception as exc:
            out.append([type(exc).__name__, str(exc)])
    results.put(out)


def test_multiprocessing_fork_children_get_queue_broken(tmp_path: Path) -> None:
    global _inherited
    root = tmp_path / "q"
    ctx = multiprocessing.get_context("fork")
    q = Queue.open(str(root))  # with its background threads, as an application has them
    try:
        parent_jobs = [q.enqueue(Q, b"parent-%d" % i) for i in range(5)]
        flush(q)
        before = files(root)

        results = ctx.SimpleQueue()
        p = ctx.Process(target=_process_child, args=(q, results))
        p.start()
        p.join(WAIT)
        assert p.exitcode == 0
        enqueue, stats, close, after = results.get()
        for kind, message in (enqueue, stats):
            assert kind == "QueueBroken" and all(w in message for w in FORK_WORDS), message
        assert close[0] == "returned" and after[0] == "QueueClosed"

        _inherited = q
        try:
            with ctx.Pool(2) as pool:
                outcomes = pool.map(_enqueue_in_child, range(6))
        finally:
            _inherited = None
        assert [kind for kind, _ in outcomes] == ["QueueBroken"] * 6, outcomes
        assert files(root) == before, "a forked child changed the parent's files"
        parent_jobs.append(q.enqueue(Q, b"parent-after"))
    finally:
        q.close()
    with Queue.open(str(root)) as q2:
        assert all(q2.get_job(j) is not None for j in parent_jobs)
        assert q2.stats(Q).pending == len(parent_jobs)


# --------------------------------------------------------------------------- gunicorn --preload

APP = textwrap.dedent('''
    """A WSGI app that opens its queue at import time, as many apps do."""
    import json
    import os

    from taquba import Queue, QueueBroken

    queue = Queue.open(os.environ["TAQUBA_TEST_ROOT"])
    MASTER_IDS = [queue.enqueue("jobs", b"master-%d" % i) for i in range(5)]
    with open(os.environ["TAQUBA_TEST_IDS"], "w") as out:
        json.dump({"pid": os.getpid(), "ids": MASTER_IDS}, out)


    def app(environ, start_response):
        try:
            body = "enqueued " + queue.enqueue("jobs", b"worker-%d" % os.getpid())
            status = "200 OK"
        except QueueBroken as exc:
            body = f"QueueBroken in {os.getpid()}: {exc}"
            status = "503 Service Unavailable"
        data = body.encode()
        start_response(status, [("Content-Type", "text/plain"),
                                ("Content-Length", str(len(data)))])
        return [data]
''')


def http_get(sock_path: str) -> tuple[int, str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(WAIT)
        s.connect(sock_path)
        s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory with a short path (a unix socket path has at most ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tq-") as d:
        yield d


def test_gunicorn_preload_workers_get_queue_broken_and_the_masters_data_survives(
    tmp_path: Path, short_dir: str
) -> None:
    pytest.importorskip("gunicorn")
    root = tmp_path / "q"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "preloaded_app.py").write_text(APP)
    ids_file = tmp_path / "ids.json"
    sock = os.path.join(short_dir, "g.sock")
    env = dict(os.environ, TAQUBA_TEST_ROOT=str(root), TAQUBA_TEST_IDS=str(ids_file))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "2",
            "--bind",
            f"unix:{sock}",
            "--chdir",
            str(tmp_path / "app"),
            "--graceful-timeout",
            "5",
            "preloaded_app:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not os.path.exists(sock):
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)
        master = json.loads(ids_file.read_text())
        responses = [http_get(sock) for _ in range(8)]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output = server.communicate(timeout=WAIT)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    for status, body in responses:
        assert status == 503, (body, output[-3000:])
        assert all(word in body for word in FORK_WORDS), body
        assert f"QueueBroken in {master['pid']}:" not in body  # it was a forked worker
    with Queue.open(str(root), options=OpenOptions(background_threads=False)) as q:
        assert q.stats(Q).pending == 5
        payloads = []
        for job_id in master["ids"]:
            record = q.get_job(job_id)
            assert record is not None and record.status is JobStatus.PENDING
            payloads.append(record.payload)
        assert payloads == [b"master-%d" % i for i in range(5)]
