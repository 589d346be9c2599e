"""Claim waiters: a queue name's condition lives only while a claim waits on it.

Before, ``claim(name, wait>0)`` kept a Condition per queue name for good: 100k distinct
empty names held about 114 MiB. Now the last waiter of a name drops its condition; waiters
are still woken by enqueues, and a waiter that leaves does not strand one that stays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taquba import OpenOptions, Queue
from taquba.records import Claim

WAIT = 30.0  # upper bound for something that must happen; never a speed assertion


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Queue]:
    with Queue.open(str(tmp_path / "q"), options=OpenOptions(background_threads=False)) as queue:
        yield queue


class Claimer:
    def __init__(self, q: Queue, name: str, wait: float) -> None:
        self.claim: Claim | None = None
        self.thread = threading.Thread(target=self._run, args=(q, name, wait), daemon=True)
        self.thread.start()

    def _run(self, q: Queue, name: str, wait: float) -> None:
        self.claim = q.claim(name, wait=wait)

    def join(self) -> Claim | None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the claim never returned"
        return self.claim


def until_waiting(q: Queue, counts: dict[str, int]) -> None:
    """Until the given number of claims sleep on each name's condition."""
    deadline = time.monotonic() + WAIT
    while any(q._claim_waiting.get(n, 0) != k for n, k in counts.items()):
        assert time.monotonic() < deadline, (q._claim_waiting, counts)
        time.sleep(0.001)


def test_waiting_on_many_empty_names_keeps_nothing(q: Queue) -> None:
    for i in range(2000):
        assert q.claim(f"empty-{i}", wait=0.0005) is None
    assert q._claim_conds == {} and q._claim_waiting == {}


def test_waiters_on_distinct_names_are_woken_by_enqueues(q: Queue) -> None:
    names = [f"name-{i}" for i in range(20)]
    claimers = [Claimer(q, n, WAIT) for n in names]
    until_waiting(q, dict.fromkeys(names, 1))
    ids = [q.enqueue(n, n.encode()) for n in names]
    got = [c.join() for c in claimers]
    assert [c.id if c else None for c in got] == ids
    assert q._claim_conds == {} and q._claim_waiting == {}


def test_a_waiter_that_leaves_does_not_strand_one_that_stays(q: Queue) -> None:
    staying = Claimer(q, "jobs", WAIT)
    until_waiting(q, {"jobs": 1})
    assert q.claim("jobs", wait=0.01) is None  # joins the same condition, then times out
    assert q._claim_waiting == {"jobs": 1} and "jobs" in q._claim_conds
    job = q.enqueue("jobs", b"x")
    claim = staying.join()
    assert claim is not None and claim.id == job
    assert q._claim_conds == {} and q._claim_waiting == {}


def test_two_waiters_on_one_name_each_get_one_enqueue(q: Queue) -> None:
    first, second = Claimer(q, "jobs", WAIT), Claimer(q, "jobs", WAIT)
    until_waiting(q, {"jobs": 2})
    a = q.enqueue("jobs", b"a")
    until_waiting(q, {"jobs": 1})  # one of them took it; the other still waits
    b = q.enqueue("jobs", b"b")
    got = {c.id for c in (first.join(), second.join()) if c is not None}
    assert got == {a, b}
    assert q._claim_conds == {} and q._claim_waiting == {}
