"""How often an owner looks at its inbox: a fixed 5 ms on stores where a listing costs
nothing, and on object stores fast while submissions flow, doubling when idle up to
``OpenOptions.inbox_interval``."""

from __future__ import annotations

import time
from typing import Any

import fsspec
from support.faulty import FaultyFileSystem

from taquba import OpenOptions, Producer, Queue
from taquba.intake import LOCAL_INTERVAL, IntakePace
from taquba.storage import open_store


def test_pace_backs_off_on_remote_stores_and_resets_on_work() -> None:
    store = open_store(FaultyFileSystem(fsspec.filesystem("memory")), path="/pace")
    assert store.remote
    pace = IntakePace(store, busy=0.25, idle=10.0)
    waits = [pace.after(False) for _ in range(8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert pace.after(True) == 0.25


def test_pace_is_fixed_on_local_disk(tmp_path: Any) -> None:
    store = open_store(str(tmp_path / "q"))
    pace = IntakePace(store, busy=0.25, idle=10.0)
    assert {pace.after(False) for _ in range(5)} == {LOCAL_INTERVAL}


def test_idle_owner_on_a_remote_store_lists_its_inbox_less_and_less(tmp_path: Any) -> None:
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    q = Queue.open(
        fs,
        "/pace-q",
        OpenOptions(inbox_busy_interval=0.01, inbox_interval=0.16, fence_check_interval=None),
    )
    try:
        with Producer.open(fs, "/pace-q") as p:
            job_id = p.enqueue("q", b"x")
        claim = q.claim("q", wait=30.0)
        assert claim is not None and claim.id == job_id
        fs.reset_counts()
        time.sleep(1.0)
        lists = fs.count("list")
        # Backing off 0.01 -> 0.16 s: at most ~10 listings in a second, not 100.
        assert 3 <= lists <= 15, lists
    finally:
        q.close()
