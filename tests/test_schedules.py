"""Cron schedules: ``add_schedule``, ``remove_schedule``, ``list_schedules`` and firing them
through ``promote_scheduled_now`` with a manual clock (daylight-saving changes included),
across reopens, takeovers and SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import schedules_child as child
from support.clock import ManualClock

from taquba import EnqueueOptions, InvalidArgument, Queue, QueueReader, Schedule, TaqubaError

Q = "cron"
Opener = Callable[..., Queue]


def at(text: str, tz: str = "UTC") -> float:
    """Epoch seconds of a local ISO time in ``tz``."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at("2026-01-01T00:00:00"))


@pytest.fixture
def open_queue(open_queue: Opener) -> Opener:
    """conftest's opener; ``background=True`` runs the background threads."""
    return lambda background=False, **options: open_queue(background_threads=background, **options)


def drain(q: Queue, queue: str = Q) -> list[Any]:
    """Claim and ack every pending job of ``queue``; their claims, in order."""
    out = []
    while (c := q.claim(queue)) is not None:
        out.append(c)
        q.ack(c)
    return out


def occurrences(claims: list[Any]) -> list[float]:
    return [float(c.headers["taquba-occurrence"]) for c in claims]


# -- adding, listing, removing ----------------------------------------------------------


def test_add_list_replace_remove_and_reopen(
    open_queue: Opener, clock: ManualClock, fast_backend_root: Any
) -> None:
    q = open_queue()
    s = q.add_schedule(
        "nightly",
        "30 2 * * *",
        Q,
        b"run",
        timezone="Europe/Paris",
        options=EnqueueOptions(priority=7, max_attempts=2, headers={"h": "v"}),
    )
    assert s == Schedule(
        name="nightly",
        cron="30 2 * * *",
        queue=Q,
        payload=b"run",
        timezone="Europe/Paris",
        next_run_at=at("2026-01-01T02:30", "Europe/Paris"),
        last_run_at=None,
        priority=7,
        max_attempts=2,
        headers={"h": "v"},
    )
    q.add_schedule("often", "*/5 * * * *", "other")
    assert [x.name for x in q.list_schedules()] == ["nightly", "often"]
    replaced = q.add_schedule("often", "@hourly", "other", b"new")
    assert replaced.cron == "@hourly" and replaced.next_run_at == clock.now + 3600
    q.close()
    q = open_queue()  # replayed
    assert q.list_schedules() == [s, replaced]
    with QueueReader.open(
        fast_backend_root.location, storage_options=fast_backend_root.storage_options
    ) as reader:
        assert reader.list_schedules() == [s, replaced]
    assert q.remove_schedule("often") is True
    assert q.remove_schedule("often") is False
    q.close()
    q = open_queue()
    assert q.list_schedules() == [s]


def test_checkpoints_carry_schedules(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(checkpoint_min_bytes=512, checkpoint_ratio=0.1)
    q.add_schedule("s", "*/5 * * * *", Q, b"x" * 100)
    for _ in range(30):  # fire, and write enough for checkpoints and compaction
        clock.advance(300)
        assert q.promote_scheduled_now() == 1
        drain(q)
    assert q.committer.stats.checkpoints_written >= 1
    before = q.list_schedules()
    q.close()
    q = open_queue()
    assert q.list_schedules() == before
    assert before[0].last_run_at == clock.now


# -- firing --------------------------------------------------------------------------------


def test_each_occurrence_fires_once_with_its_options(q: Queue, clock: ManualClock) -> None:
    q.add_schedule(
        "five",
        "*/5 * * * *",
        Q,
        b"p",
        options=EnqueueOptions(priority=3, max_attempts=9, headers={"h": "v"}),
    )
    assert q.promote_scheduled_now() == 0
    clock.advance(299)
    assert q.promote_scheduled_now() == 0
    clock.advance(1)
    assert q.promote_scheduled_now() == 1
    assert q.promote_scheduled_now() == 0  # the same occurrence never fires twice
    (c,) = drain(q)
    assert (c.payload, c.priority, c.record.max_attempts) == (b"p", 3, 9)
    assert dict(c.headers) == {
        "h": "v",
        "taquba-schedule": "five",
        "taquba-occurrence": f"{clock.now:.0f}",
    }
    assert c.record.dedup_key == f"taquba-schedule:five:{clock.now:.0f}"
    (s,) = q.list_schedules()
    assert (s.last_run_at, s.next_run_at) == (clock.now, clock.now + 300)


def test_missed_occurrences_give_one_catch_up_job(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue()
    start = clock.now
    q.add_schedule("five", "*/5 * * * *", Q)
    clock.advance(2 * 3600 + 10)  # 24 occurrences missed
    assert q.promote_scheduled_now() == 1
    assert occurrences(drain(q)) == [start + 2 * 3600]
    (s,) = q.list_schedules()
    assert (s.last_run_at, s.next_run_at) == (start + 2 * 3600, start + 2 * 3600 + 300)
    # Downtime: closed for a day, then one job for all it missed.
    q.close()
    clock.advance(86400)
    q = open_queue()
    assert q.promote_scheduled_now() == 1
    assert occurrences(drain(q)) == [start + 2 * 3600 + 86400]
    assert q.promote_scheduled_now() == 0


def test_a_held_dedup_key_skips_the_job_but_the_schedule_moves_on(
    q: Queue, clock: ManualClock
) -> None:
    q.add_schedule("five", "*/5 * * * *", Q)
    due = clock.now + 300
    q.enqueue(Q, b"mine", dedup_key=f"taquba-schedule:five:{due:.0f}")
    clock.advance(300)
    assert q.promote_scheduled_now() == 0
    assert [c.payload for c in drain(q)] == [b"mine"]
    assert q.list_schedules()[0].last_run_at == due


def test_no_occurrence_fires_twice_across_reopen_and_takeover(
    open_queue: Opener, clock: ManualClock
) -> None:
    q = open_queue()
    q.add_schedule("five", "*/5 * * * *", Q)
    clock.advance(300)
    assert q.promote_scheduled_now() == 1
    q.close()
    q = open_queue()
    assert q.promote_scheduled_now() == 0
    taker = open_queue()  # takes over while q is still open
    assert taker.promote_scheduled_now() == 0
    clock.advance(300)
    assert taker.promote_scheduled_now() == 1
    assert len(drain(taker)) == 2


def test_removed_schedules_stop_firing(q: Queue, clock: ManualClock) -> None:
    q.add_schedule("five", "*/5 * * * *", Q)
    assert q.remove_schedule("five")
    clock.advance(3600)
    assert q.promote_scheduled_now() == 0 and q.stats(Q).pending == 0


def test_the_scheduler_thread_fires_schedules(open_queue: Opener, clock: ManualClock) -> None:
    q = open_queue(background=True, scheduler_interval=0.01)
    q.add_schedule("five", "*/5 * * * *", Q, b"bg")
    clock.advance(300)
    c = q.claim(Q, wait=30.0)  # woken by the scheduler thread's enqueue
    assert c is not None and c.payload == b"bg"


# -- daylight saving -------------------------------------------------------------------------


def fired_local(q: Queue, clock: ManualClock, tz: str, until: str, step: float = 600) -> list[str]:
    """Step the clock to ``until`` (local), firing at each step; the local occurrence times."""
    end = at(until, tz)
    out: list[float] = []
    while clock.now < end:
        clock.advance(step)
        q.promote_scheduled_now()
        out += occurrences(drain(q))
    zone = ZoneInfo(tz)
    return [datetime.fromtimestamp(t, zone).isoformat() for t in out]


@pytest.mark.parametrize(
    ("tz", "start", "until", "expected"),
    [
        (
            "Europe/Paris",
            "2026-03-27T12:00",
            "2026-03-31T00:00",
            [  # clocks skip 02:00-03:00
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
            ],
        ),
        (
            "Europe/Paris",
            "2026-10-24T12:00",
            "2026-10-27T00:00",
            [  # 02:00-03:00 happens twice
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00",
            ],
        ),
        (
            "America/New_York",
            "2026-03-07T12:00",
            "2026-03-10T00:00",
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        ),
        (
            "America/New_York",
            "2026-10-31T12:00",
            "2026-11-03T00:00",
            [  # no 02:30 twice here
                "2026-11-01T02:30:00-05:00",
                "2026-11-02T02:30:00-05:00",
            ],
        ),
    ],
)
def test_a_daily_time_fires_once_a_day_across_daylight_saving(
    q: Queue, clock: ManualClock, tz: str, start: str, until: str, expected: list[str]
) -> None:
    clock.now = at(start, tz)
    q.add_schedule("nightly", "30 2 * * *", Q, timezone=tz)
    assert fired_local(q, clock, tz, until) == expected


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Paris", "2026-03-29", 23),
        ("Europe/Paris", "2026-10-25", 25),
        ("America/New_York", "2026-03-08", 23),
        ("America/New_York", "2026-11-01", 25),
    ],
)
def test_an_hourly_schedule_fires_every_real_hour_across_daylight_saving(
    q: Queue, clock: ManualClock, tz: str, day: str, hours: int
) -> None:
    clock.now = at(f"{day}T00:00", tz) - 1
    q.add_schedule("hourly", "@hourly", Q, timezone=tz)
    got = fired_local(q, clock, tz, f"{day}T23:59", step=300)
    assert len(got) == hours, got
    assert len(set(got)) == hours
    # New York's repeated hour: 01:30 daily fires at the first 01:30 only.
    if tz == "America/New_York" and hours == 25:
        q.remove_schedule("hourly")
        clock.now = at("2026-10-31T12:00", tz)
        q.add_schedule("one-thirty", "30 1 * * *", Q, timezone=tz)
        assert fired_local(q, clock, tz, "2026-11-02T00:00") == ["2026-11-01T01:30:00-04:00"]


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"cron": "* * * *"}, "has 4 fields"),
        ({"cron": "* * * * * *"}, "has 6 fields"),
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "0 0 31 2 *"}, "Bad day-of-month"),
        ({"cron": "@sometimes"}, "unknown cron macro"),
        ({"cron": ""}, "cron must be"),
        ({"cron": 5}, "cron must be"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
        ({"timezone": ""}, "timezone must be"),
        ({"name": ""}, "schedule name"),
        ({"name": "n" * 256}, "schedule name is 256"),
        ({"queue": ""}, "queue name"),
        ({"payload": "text"}, "payload must be bytes"),
        ({"options": EnqueueOptions(delay=5)}, "cannot set delay"),
        ({"options": EnqueueOptions(dedup_key="k")}, "cannot set dedup_key"),
        ({"options": EnqueueOptions(job_id="j")}, "cannot set job_id"),
        ({"options": EnqueueOptions(headers={"taquba-schedule": "x"})}, "set by the schedule"),
        ({"options": {"priority": 1}}, "options must be an EnqueueOptions"),
    ],
)
def test_bad_schedules_are_refused_and_change_nothing(
    q: Queue, kwargs: dict[str, Any], pattern: str
) -> None:
    args = {"name": "s", "cron": "* * * * *", "queue": Q, "payload": b"", **kwargs}
    name, cron, queue, payload = (
        args.pop("name"),
        args.pop("cron"),
        args.pop("queue"),
        args.pop("payload"),
    )
    with pytest.raises(InvalidArgument, match=pattern) as info:
        q.add_schedule(name, cron, queue, payload, **args)
    assert isinstance(info.value, TaqubaError)
    assert q.list_schedules() == []


def test_replacing_with_a_bad_schedule_keeps_the_old_one(q: Queue) -> None:
    good = q.add_schedule("s", "@daily", Q)
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        q.add_schedule("s", "@hourly", Q, timezone="Nowhere/Atlantis")
    assert q.list_schedules() == [good]
    with pytest.raises(InvalidArgument, match="schedule name"):
        q.remove_schedule(3)  # type: ignore[arg-type]


# -- crashes ---------------------------------------------------------------------------------


def test_each_occurrence_is_enqueued_once_across_sigkills(tmp_path: Path) -> None:
    """The owner's scheduler thread fires an every-minute schedule (one occurrence per 10 ms
    of real time) and is SIGKILLed at random points. Each restart's clock starts up to two
    minutes before the moment of the kill, as a quick restart within the same minute
    would see it: an occurrence whose job became durable must not fire again."""
    root = str(tmp_path / "root")
    script = str(child.__file__)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    rng = random.Random(7)
    start = child.BASE
    latest = start
    for run in range(12):
        out_path = tmp_path / f"out-{run}"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, script, root, repr(start)], stdout=out, env=env
            )
        ref = None
        try:
            deadline = time.monotonic() + 60
            while b"\n" not in out_path.read_bytes():
                assert proc.poll() is None, f"child exited early: {out_path.read_bytes()!r}"
                assert time.monotonic() < deadline, "child did not start"
                time.sleep(0.01)
            ref = float(out_path.read_text().split()[1])
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            killed_at = start if ref is None else child.clock(start, ref)()
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        latest = max(latest, killed_at)
        start = killed_at - rng.uniform(0.0, 120.0)
    frozen = latest + 600
    with Queue.open(root, options=child.options(lambda: frozen, background_threads=False)) as q:
        q.promote_scheduled_now()
        (s,) = q.list_schedules()
        fired = occurrences(drain(q, child.QUEUE))
    assert len(fired) >= 12, fired
    assert len(set(fired)) == len(fired), "an occurrence was enqueued twice"
    assert fired == sorted(fired)
    assert all(t % 60 == 0 for t in fired)
    assert s.last_run_at == fired[-1] == frozen // 60 * 60
    assert s.next_run_at == fired[-1] + 60
