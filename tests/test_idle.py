"""An idle queue makes no storage requests at all, even with its background threads busy,
apart from its fence check (one request per ``OpenOptions.fence_check_interval``, 30 s by
default; see tests/test_queue_fence_check.py) and its look at the inbox for producers'
submissions (one listing per ``OpenOptions.inbox_interval`` when idle on object stores, 10 s
by default; tests/test_intake_pace.py), both turned off here.

On object storage every request costs money and latency, so the reaper and the scheduler
must decide from the in-memory index alone that nothing is due. The queue is opened over
the counting wrapper filesystem with both loops ticking every 50 ms; once opening has
settled, a second of idling must not add a single request, whatever jobs are waiting
(none, pending, scheduled far ahead, claimed under a long lease, retained done and dead).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from support.faulty import OPS, FaultyFileSystem

from taquba import OpenOptions, Queue, QueueConfig, QueueStats

Q = "idle"
IDLE_SECONDS = 1.0
SETTLE_TIMEOUT = 10.0


class CountingClock:
    """The real clock, counting how often the queue reads it (proof that the ticks run)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.calls += 1
        return time.time()


def requests(fs: FaultyFileSystem) -> int:
    """Every request the wrapper has forwarded so far, of any kind."""
    return sum(fs.count(op) for op in OPS)


@pytest.fixture(params=["memory", "local"])
def counted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    if request.param == "memory":
        inner = fsspec.filesystem("memory")
        root = f"/taquba-idle-{uuid.uuid4().hex}"
    else:
        inner = fsspec.filesystem("file", auto_mkdir=True)
        root = str(tmp_path / "q")
    yield FaultyFileSystem(inner), root
    if request.param == "memory":
        inner.rm(root, recursive=True)


def settle(q: Queue, fs: FaultyFileSystem) -> None:
    """Wait until everything submitted is durable and the request count stops moving."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = -1
    while True:
        assert time.monotonic() < deadline, "the queue never settled"
        with q._lock:
            flushed = q.committer.latest_locked().done()
        now = requests(fs)
        if flushed and now == last:
            return
        last = now
        time.sleep(0.2)


Setup = Callable[[Queue], None]


def _empty(q: Queue) -> None:
    pass


def _pending_and_scheduled(q: Queue) -> None:
    q.enqueue_batch(Q, [b"a", b"b", b"c"])
    q.enqueue(Q, b"tomorrow", delay=86400)
    q.enqueue(Q, b"next year", run_at=time.time() + 365 * 86400)


def _claimed_far_lease(q: Queue) -> None:
    q.enqueue(Q, b"held")
    q.enqueue(Q, b"waiting")
    c = q.claim(Q, lease=3600)
    assert c is not None
    q.renew_lease(c, 7200)


def _retained_done_and_dead(q: Queue) -> None:
    q.enqueue_batch(Q, [b"ok", b"bad"])
    ok = q.claim(Q)
    assert ok is not None
    q.ack(ok)
    bad = q.claim(Q)
    assert bad is not None
    q.dead_letter(bad, "kept for a week")
    q.enqueue_with_kv(Q, b"kv", {b"k": b"v"})


SETUPS: dict[str, Setup] = {
    "empty": _empty,
    "pending-and-scheduled": _pending_and_scheduled,
    "claimed-with-far-lease": _claimed_far_lease,
    "retained-done-and-dead": _retained_done_and_dead,
}


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=list(SETUPS))
def test_idle_queue_makes_no_storage_requests(counted: tuple[Any, str], setup: Setup) -> None:
    fs, root = counted
    clock = CountingClock()
    options = OpenOptions(
        reaper_interval=0.05,
        scheduler_interval=0.05,
        clock=clock,
        default_queue_config=QueueConfig(lease=3600, keep_done=86400),
        fence_check_interval=None,
        inbox_interval=None,
    )
    q = Queue.open(fs, path=root, options=options)
    try:
        setup(q)
        expected = q.stats(Q)
        settle(q, fs)
        before = requests(fs)
        store_before = q.store.counts.copy()
        ticks_before = clock.calls
        time.sleep(IDLE_SECONDS)
        assert requests(fs) == before, "an idle queue made storage requests"
        assert q.store.counts == store_before
        # the loops did run meanwhile: each tick reads the clock
        assert clock.calls - ticks_before >= 4
        alive = {t.name for t in threading.enumerate() if t.is_alive()}
        assert {"taquba-reaper", "taquba-scheduler"} <= alive
        assert q.stats(Q) == expected
    finally:
        q.close()


def test_idle_after_reopen_makes_no_storage_requests(counted: tuple[Any, str]) -> None:
    """Reopening a root with history (a released claim, scheduled jobs) also goes quiet."""
    fs, root = counted
    options = OpenOptions(
        reaper_interval=0.05,
        scheduler_interval=0.05,
        default_queue_config=QueueConfig(lease=3600),
        fence_check_interval=None,
        inbox_interval=None,
    )
    with Queue.open(fs, path=root, options=options) as q:
        _pending_and_scheduled(q)
        _claimed_far_lease(q)
    q = Queue.open(fs, path=root, options=options)
    try:
        assert q.stats(Q) == QueueStats(queue=Q, pending=5, scheduled=2)
        settle(q, fs)
        before = requests(fs)
        time.sleep(IDLE_SECONDS)
        assert requests(fs) == before
    finally:
        q.close()
