"""Helpers of the ``Queue`` API tests (``tests/test_queue_*.py``).

Those tests open their queue with ``background_threads=False`` and an injected clock (the
``clock``, ``open_queue`` and ``q`` fixtures of ``tests/conftest.py``), and drive the reaper
and scheduler themselves through ``reap_now()`` / ``promote_scheduled_now()``: nothing
there sleeps to let time pass. The few tests that block (``claim(wait=...)``,
``wait_for_completion``) do so from a second thread (:func:`in_thread`, :func:`joined`) and
only assert what happened, with generous bounds, never how fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from taquba import Claim, JobRecord, Queue, QueueStats

Q = "jobs"
WAIT = 20.0  # upper bound for something that must happen; never a speed assertion


Opener = Callable[..., Queue]


def stats(q: Queue, queue: str = Q, **counts: int) -> QueueStats:
    return QueueStats(queue=queue, **counts)


def claim(q: Queue, queue: str = Q, lease: Any = None) -> Claim:
    c = q.claim(queue, lease)
    assert c is not None, f"expected a job to claim on {queue!r}"
    return c


def record(q: Queue, job_id: str) -> JobRecord:
    r = q.get_job(job_id)
    assert r is not None, f"job {job_id} is gone"
    return r


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a daemon thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def joined(thread: threading.Thread, out: list[Any]) -> Any:
    thread.join(WAIT)
    assert not thread.is_alive(), "the blocked call never returned"
    assert len(out) == 1
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def causes(exc: BaseException | None) -> list[type[BaseException]]:
    """The types along an exception's ``__cause__`` chain."""
    out: list[type[BaseException]] = []
    while exc is not None and len(out) < 20:
        out.append(type(exc))
        exc = exc.__cause__
    return out


def until_waiting(q: Queue, job_id: str) -> None:
    """Block until a ``wait_for_completion(job_id)`` caller is registered (white-box hook)."""
    deadline = time.monotonic() + WAIT
    while job_id not in q._waiters:
        assert time.monotonic() < deadline, "the waiter never started waiting"
        time.sleep(0.001)
