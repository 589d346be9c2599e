"""The worker loops' acks: a worker thread does not stop for its ack's write.

Rule (taquba/worker.py): a worker thread settles a job's ack without waiting for it to be
durable, and confirms it durable after settling its next job; before the loop returns, every
ack it made is confirmed. A write that then fails is logged ("could not ack job ...") and
the next claim stops the loop with the error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
from support.faulty import Stall, StallingFileSystem

from taquba import OpenOptions, Queue, QueueBroken, StorageError
from taquba.records import Claim
from taquba.worker import run_worker, run_worker_concurrent

HERE = Path(__file__).parent
CHILD = str(HERE / "support" / "worker_exit_child.py")
Q = "jobs"
WAIT = 30.0  # upper bound for something that must happen; never a speed assertion
BLOCKED = 0.3  # how long the loop is given to (wrongly) go on while an ack's write stalls


Loop = Callable[..., None]
LOOPS = {
    "run_worker": lambda q, handler, shutdown: run_worker(
        q, Q, handler, shutdown=shutdown, poll_interval=0.05
    ),
    "concurrent": lambda q, handler, shutdown: run_worker_concurrent(
        q, Q, handler, concurrency=1, shutdown=shutdown, poll_interval=0.05
    ),
}


def stalled_ack(loop: str, error: BaseException | None) -> tuple[list[bytes], Any, Any]:
    """Jobs a, b, c; the write holding a's ack stalls. Returns what ran while it stalled,
    and after it was let go (with ``error``, if any), and what the loop raised."""
    fs = StallingFileSystem(fsspec.filesystem("memory"))
    path = f"/worker-acks-{loop}-{error is not None}-{os.getpid()}"
    q = Queue.open(fs, path=path, options=OpenOptions(storage_retries=0))
    for payload in (b"a", b"b", b"c"):
        q.enqueue(Q, payload)
    ran: list[bytes] = []
    shutdown = threading.Event()
    stall = Stall(error=error)

    def handler(claim: Claim) -> None:
        ran.append(claim.payload)
        if claim.payload == b"a":
            fs.stall = stall  # the next segment write carries a's ack
        if claim.payload == b"c":
            shutdown.set()

    raised: list[BaseException] = []

    def target() -> None:
        try:
            LOOPS[loop](q, handler, shutdown)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert stall.started.wait(WAIT)
        thread.join(BLOCKED)
        while_stalled = list(ran)
    finally:
        stall.go.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    q.close()
    return while_stalled, list(ran), raised


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_thread_does_not_claim_past_an_ack_it_has_not_confirmed(loop: str) -> None:
    while_stalled, ran, raised = stalled_ack(loop, None)
    # a's ack is in flight: b runs (its ack is not waited for either), then the thread
    # waits for a's before it claims c.
    assert while_stalled == [b"a", b"b"]
    assert ran == [b"a", b"b", b"c"]
    assert raised == []


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_lost_ack_is_logged_and_stops_the_loop(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="taquba.worker")
    while_stalled, ran, raised = stalled_ack(loop, StorageError("injected write failure"))
    assert while_stalled == [b"a", b"b"]
    assert ran == [b"a", b"b"]  # c is never claimed: the handle is broken
    assert len(raised) == 1 and isinstance(raised[0], QueueBroken), raised
    assert any(
        r.getMessage().startswith("could not ack job ") and r.exc_info for r in caplog.records
    )


@pytest.mark.parametrize("loop", ["run_worker", "concurrent:1", "concurrent:4"])
def test_every_ack_is_durable_when_the_loop_returns(tmp_path: Path, loop: str) -> None:
    root = str(tmp_path / "root")
    n = 40
    out = subprocess.run(
        [sys.executable, CHILD, root, loop, str(n)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ran", str(n)]
    with Queue.open(root) as q:
        stats = q.stats(Q)
        assert (stats.done, stats.pending, stats.claimed) == (n, 0, 0), stats
        assert q.claim(Q) is None
