"""Attempt history: one entry per delivery, with its outcome, through every way a delivery
ends, carried by checkpoints and seen by readers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.clock import T0, ManualClock

from taquba import Attempt, OpenOptions, Queue, QueueConfig, QueueReader
from taquba.core import attempts
from taquba.core import events as ev
from taquba.core.state import State

REPO = Path(__file__).resolve().parents[1]


def _open(root: Path, clock: ManualClock, **config: object) -> Queue:
    cfg = QueueConfig(**{"retry_backoff_base": 0, "keep_done": 3600.0, **config})  # type: ignore[arg-type]
    return Queue.open(
        str(root),
        options=OpenOptions(clock=clock, default_queue_config=cfg, background_threads=False),
    )


def _summary(history: list[Attempt]) -> list[tuple[int, str | None, str | None]]:
    return [(a.attempt, a.outcome, a.error) for a in history]


def test_nacks_then_ack(tmp_path: Path) -> None:
    clock = ManualClock()
    with _open(tmp_path / "q", clock) as q:
        job_id = q.enqueue("work", b"x")
        assert q.attempt_history(job_id) == []
        c = q.claim("work")
        assert c is not None
        clock.advance(2)
        running = q.attempt_history(job_id)
        assert running == [
            Attempt(attempt=1, claimed_at=T0, finished_at=None, outcome=None, error=None)
        ]
        q.nack(c, "first boom")
        clock.advance(1)
        c = q.claim("work")
        assert c is not None
        clock.advance(1)
        q.nack(c, ValueError("second boom"))
        c = q.claim("work")
        assert c is not None
        clock.advance(5)
        q.ack(c)
        history = q.attempt_history(job_id)
    assert _summary(history) == [
        (1, "nacked", "first boom"),
        (2, "nacked", "ValueError: second boom"),
        (3, "acked", None),
    ]
    assert history[0].claimed_at == T0 and history[0].finished_at == T0 + 2
    assert history[1].claimed_at == T0 + 3 and history[1].finished_at == T0 + 4
    assert history[2].finished_at == T0 + 9


def test_dead_letter_and_last_nack_are_dead(tmp_path: Path) -> None:
    clock = ManualClock()
    with _open(tmp_path / "q", clock, max_attempts=2) as q:
        a = q.enqueue("work", b"a")
        b = q.enqueue("work", b"b")
        ca = q.claim("work")
        cb = q.claim("work")
        assert ca is not None and cb is not None
        q.dead_letter(ca, "bad payload")
        q.nack(cb, "e1")
        cb = q.claim("work")
        assert cb is not None
        q.nack(cb, "e2")
        assert _summary(q.attempt_history(a)) == [(1, "dead", "bad payload")]
        assert _summary(q.attempt_history(b)) == [(1, "nacked", "e1"), (2, "dead", "e2")]
        # A requeued dead job keeps its history; attempts count again from 1.
        q.requeue_dead_job(b)
        cb = q.claim("work")
        assert cb is not None
        q.ack(cb)
        assert _summary(q.attempt_history(b)) == [
            (1, "nacked", "e1"),
            (2, "dead", "e2"),
            (1, "acked", None),
        ]


def test_lease_expiry_and_cancel(tmp_path: Path) -> None:
    clock = ManualClock()
    with _open(tmp_path / "q", clock, max_attempts=2, lease=10.0) as q:
        reaped = q.enqueue("work", b"r")
        cancelled = q.enqueue("work", b"c")
        c1 = q.claim("work")
        c2 = q.claim("work")
        assert c1 is not None and c2 is not None and c1.id == reaped
        q.cancel(cancelled)
        q.nack(c2, "stopped")
        clock.advance(11)
        assert q.reap_now() == 1
        c1 = q.claim("work")
        assert c1 is not None
        clock.advance(11)
        assert q.reap_now() == 1  # the last attempt: the job dies
        assert _summary(q.attempt_history(reaped)) == [
            (1, "lease_expired", "lease expired"),
            (2, "lease_expired", "lease expired"),
        ]
        assert q.get_job(reaped).status == "dead"  # type: ignore[union-attr]
        assert _summary(q.attempt_history(cancelled)) == [(1, "cancelled", "cancelled: stopped")]
        # A pending job cancelled is gone, and its history with it.
        gone = q.enqueue("work", b"g")
        c = q.claim("work")
        assert c is not None and c.id == gone
        q.nack(c, "retry me")
        assert len(q.attempt_history(gone)) == 1
        q.cancel(gone)
        assert q.attempt_history(gone) == []


def test_history_is_bounded_per_job(tmp_path: Path) -> None:
    clock = ManualClock()
    with _open(tmp_path / "q", clock, max_attempts=50) as q:
        job_id = q.enqueue("work", b"x")
        for i in range(1, 16):
            c = q.claim("work")
            assert c is not None
            q.nack(c, f"e{i}")
        history = q.attempt_history(job_id)
    assert len(history) == attempts.MAX_HISTORY
    assert [a.attempt for a in history] == list(range(6, 16))
    assert history[-1].error == "e15"


def test_history_survives_checkpoints_and_reopen_and_is_seen_by_readers(tmp_path: Path) -> None:
    clock = ManualClock()
    root = tmp_path / "q"
    opts = OpenOptions(
        clock=clock,
        background_threads=False,
        checkpoint_min_bytes=64,
        queue_configs={"work": QueueConfig(retry_backoff_base=0, keep_done=3600.0)},
    )
    with Queue.open(str(root), options=opts) as q:
        done = q.enqueue("work", b"d")
        c = q.claim("work")
        assert c is not None
        q.nack(c, "once")
        c = q.claim("work")
        assert c is not None
        q.ack(c)
        for i in range(50):  # superseded records: checkpoints come to cover the history
            q.enqueue("other", b"%d" % i)
            c = q.claim("other")
            assert c is not None
            q.ack(c)
        expected = q.attempt_history(done)
    assert sorted(p.name for p in (root / "checkpoints").iterdir())  # a checkpoint was written
    with Queue.open(str(root), options=opts) as q:
        assert q.attempt_history(done) == expected
    with QueueReader.open(str(root)) as r:
        assert r.attempt_history(done) == expected
    assert _summary(expected) == [(1, "nacked", "once"), (2, "acked", None)]


def test_snapshot_round_trip_keeps_every_field() -> None:
    s = State()
    s.apply(ev.Enqueued("work", T0, ["job-a"], [b"x"]))
    s.apply(ev.Claimed("job-a", 1, T0, 30.0))
    s.apply(ev.Failed("job-a", ev.TO_PENDING, T0 + 1, None, "bóom"))
    s.apply(ev.Claimed("job-a", 2, T0 + 2, 30.0))
    restored = State.restore(s.snapshot())
    got = [
        (e.attempt, e.claimed_at, e.finished_at, e.outcome, e.error)
        for e in restored.history["job-a"]
    ]
    assert got == [(1, T0, T0 + 1, "nacked", "bóom"), (2, T0 + 2, None, None, None)]
    assert restored.live_bytes == s.live_bytes


def test_a_state_from_before_histories_gets_one_from_the_claim_time() -> None:
    s = State()
    s.apply(ev.Enqueued("work", T0, ["job-a"], [b"x"]))
    s.apply(ev.Claimed("job-a", 1, T0, 30.0))
    s.history.clear()  # as restored from a snapshot written before histories existed
    s.apply(ev.Failed("job-a", ev.TO_PENDING, None, None, "old record"))
    assert [
        (e.attempt, e.claimed_at, e.finished_at, e.outcome, e.error) for e in s.history["job-a"]
    ] == [(1, T0, None, "nacked", "old record")]


_CRASH_CHILD = textwrap.dedent("""
    import sys, time
    from taquba import Queue, QueueConfig, OpenOptions
    q = Queue.open(sys.argv[1], options=OpenOptions(
        default_queue_config=QueueConfig(max_attempts=int(sys.argv[2]))))
    for name in ("kept", "spent"):
        q.enqueue(name, b"x", job_id=name)
        assert q.claim(name) is not None
    q.enqueue("flush", b"")  # the claims are written before this returns
    print("claimed", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_crash_leaves_abandoned_attempts(tmp_path: Path, max_attempts: int) -> None:
    root = str(tmp_path / "q")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, root, str(max_attempts)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "claimed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with Queue.open(root, options=OpenOptions(background_threads=False)) as q:
        for job_id in ("kept", "spent"):
            (entry,) = q.attempt_history(job_id)
            assert entry.attempt == 1 and entry.outcome == "abandoned"
            record = q.get_job(job_id)
            assert record is not None
            if max_attempts == 1:  # attempts spent: the job went dead, at a known time
                assert record.status == "dead"
                assert entry.finished_at == record.failed_at
                assert entry.error == "claim abandoned by a previous process"
            else:
                assert record.status == "pending"
                assert entry.finished_at is None


@pytest.mark.parametrize("name", ["v2-log", "v2-root"])
def test_stores_from_before_histories_read_with_what_their_records_say(
    tmp_path: Path, name: str
) -> None:
    fixtures = Path(__file__).with_name("fixtures")
    expected = json.loads((fixtures / f"{name}.json").read_text())
    root = tmp_path / name
    shutil.copytree(fixtures / name, root)
    seen = 0
    with QueueReader.open(str(root)) as r:
        for job_id, record in expected["jobs"].items():
            history = r.attempt_history(job_id)
            if record is None:
                assert history == []
                continue
            assert len(history) <= attempts.MAX_HISTORY
            for entry in history:
                assert entry.outcome in (*attempts.OUTCOMES, None)
            if history and record["status"] == "dead":
                assert history[-1].outcome == "dead"  # old records carry no cause
                assert history[-1].error == record["last_error"]
                seen += 1
    assert name == "v2-root" or seen  # the log fixture replays its failures
