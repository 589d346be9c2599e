"""``taquba.tasks``: the registry, the job format, delay/schedule, the worker's dispatch by
name, results and failures, inline mode, and a web-like process that submits and waits
through a ``Producer`` and a ``QueueReader`` while another process owns the queue."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.tasks_child import register_common

import taquba
from taquba import (
    MAX_KV_VALUE_SIZE,
    InvalidArgument,
    JobStatus,
    OpenOptions,
    Queue,
    QueueConfig,
    TaqubaError,
)
from taquba.tasks import RESULTS_QUEUE, TaskFailed, TaskResult, Tasks
from taquba.tasks.codec import PAYLOAD_VERSION, encode_call, result_key

HERE = Path(__file__).resolve().parent
WAIT = 60.0  # an upper bound for what must happen, never a speed assertion
NO_BACKOFF = OpenOptions(default_queue_config=QueueConfig(retry_backoff_base=0))


def make_tasks(location: Any, **kwargs: Any) -> Tasks:
    tasks = Tasks(location, options=NO_BACKOFF, **kwargs)
    register_common(tasks)
    return tasks


@contextmanager
def running(tasks: Tasks, **kwargs: Any) -> Iterator[None]:
    """``tasks.run_worker`` in a thread for the duration of the block."""
    shutdown = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            tasks.run_worker(shutdown=shutdown, poll_interval=0.05, **kwargs)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        for _ in range(int(WAIT / 0.01)):  # until the worker's loops run (the queue is
            # open and the schedules are in line): its loop threads are named for them
            if errors or any(t.name.startswith("taquba-tasks-") for t in threading.enumerate()):
                break
            threading.Event().wait(0.01)
        assert not errors, errors
        yield
    finally:
        shutdown.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert not errors, errors


# --------------------------------------------------------------------------- registry


def test_a_duplicate_task_name_is_refused_and_the_first_task_stays(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "q")
    first = tasks.registered["add"]
    with pytest.raises(InvalidArgument, match="'add' is already registered"):

        @tasks.task(name="add")
        def other() -> None: ...

    assert tasks.registered["add"] is first


def test_default_name_is_module_and_qualname_and_queues_are_listed(tmp_path: Path) -> None:
    tasks = Tasks(tmp_path / "q")

    @tasks.task
    def plain() -> None: ...

    @tasks.task(queue="mail")
    def mailer() -> None: ...

    assert (
        plain.name == f"{__name__}.test_default_name_is_module_and_qualname_and_queues_"
        "are_listed.<locals>.plain"
    )
    assert tasks.queues == ["default", "mail"]
    assert plain.__name__ == "plain"  # the wrapper looks like the function


@pytest.mark.parametrize(
    "options",
    [{"queue": ""}, {"max_attempts": 0}, {"priority": -1}, {"result_retention": -5}, {"name": ""}],
)
def test_bad_task_options_are_invalid_arguments(tmp_path: Path, options: dict[str, Any]) -> None:
    tasks = Tasks(tmp_path / "q")
    with pytest.raises(InvalidArgument):

        @tasks.task(**options)
        def f() -> None: ...

    assert tasks.registered == {}


def test_calling_a_task_runs_it_inline(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "q")
    assert tasks.registered["add"](2, 3) == 5


# --------------------------------------------------------------------------- submitting


def test_delay_enqueues_a_versioned_json_call_on_the_tasks_queue(tmp_path: Path) -> None:
    with Queue.open(tmp_path / "q") as q:
        tasks = make_tasks(q)
        result = tasks.registered["echo"].delay(1, "two", [3], k={"x": None})
        assert isinstance(result, TaskResult)
        record = q.get_job(result.id)
        assert record is not None and record.queue == "other"
        assert record.status is JobStatus.PENDING
        assert orjson.loads(record.payload) == {
            "v": PAYLOAD_VERSION,
            "task": "echo",
            "args": [1, "two", [3]],
            "kwargs": {"k": {"x": None}},
        }


@pytest.mark.parametrize(
    "args, kwargs, named",
    [
        ((datetime.datetime(2026, 1, 1),), {}, "argument 0"),
        ((1, {1, 2}), {}, "argument 1"),
        ((), {"blob": b"bytes"}, "keyword argument 'blob'"),
        ((), {"d": {1: "non-str key"}}, "keyword argument 'd'"),
        ((2**70,), {}, "argument 0"),
        ((object(),), {}, "argument 0"),
    ],
)
def test_an_argument_json_cannot_carry_is_refused_and_nothing_is_enqueued(
    tmp_path: Path, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with Queue.open(tmp_path / "q") as q:
        tasks = make_tasks(q)
        with pytest.raises(InvalidArgument, match=f"{named} of task 'echo' cannot be carried"):
            tasks.registered["echo"].delay(*args, **kwargs)
        assert q.stats("other").pending == 0


def test_schedule_takes_args_kwargs_and_enqueue_options(tmp_path: Path) -> None:
    with Queue.open(tmp_path / "q") as q:
        tasks = make_tasks(q)
        echo = tasks.registered["echo"]
        first = echo.schedule(args=(1,), kwargs={"a": 2}, delay=3600, dedup_key="once", priority=7)
        record = q.get_job(first.id)
        assert record is not None and record.status is JobStatus.SCHEDULED
        assert record.priority == 7 and record.run_at is not None
        assert orjson.loads(record.payload)["kwargs"] == {"a": 2}
        again = echo.schedule(args=(9,), delay=3600, dedup_key="once")
        assert again.id == first.id  # a dedup hit answers with the pending job
        at = echo.schedule(
            run_at=datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc), job_id="chosen-id"
        )
        assert at.id == "chosen-id"
        with pytest.raises(InvalidArgument, match="mutually exclusive"):
            echo.schedule(delay=1, run_at=1e10)
        with pytest.raises(InvalidArgument, match="args must be a sequence"):
            echo.schedule(args="abc")  # type: ignore[arg-type]
        assert q.stats("other").scheduled == 2


def test_tasks_errors_are_exported() -> None:
    assert issubclass(TaskFailed, TaqubaError)
    assert taquba.TaskFailed is TaskFailed and taquba.TaskResult is TaskResult
    assert taquba.Tasks is Tasks


# --------------------------------------------------------------------------- running


def test_a_failing_task_goes_dead_and_get_raises_task_failed(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "q")
    with running(tasks):
        result = tasks.registered["fail"].delay("out of paper")
        with pytest.raises(TaskFailed, match="out of paper") as info:
            result.get(timeout=WAIT)
        assert info.value.job_id == result.id
        assert info.value.error is not None and "RuntimeError: out of paper" in info.value.error
        assert tasks.queue is not None
        record = tasks.queue.get_job(result.id)
        assert record is not None and record.attempts == 2  # retried, then dead


def test_an_unknown_task_name_is_dead_lettered_with_a_clear_error(tmp_path: Path) -> None:
    with Queue.open(tmp_path / "q") as q:
        unknown = q.enqueue("default", encode_call("nobody.registered", [1], {}))
        garbage = q.enqueue("default", b"\xff not json")
        future = q.enqueue("default", orjson.dumps({"v": 99, "task": "add"}))
        tasks = make_tasks(q)
        with running(tasks):
            outcomes = {
                job: q.wait_for_completion(job, WAIT).record for job in (unknown, garbage, future)
            }
    errors = {}
    for job, record in outcomes.items():
        assert record is not None and record.status is JobStatus.DEAD
        assert record.attempts == 1  # not retried: it can never succeed here
        errors[job] = record.last_error or ""
    assert "unknown task 'nobody.registered'" in errors[unknown]
    assert "'add'" in errors[unknown]  # the message lists what is registered
    assert "not a task payload" in errors[garbage]
    assert "version 99 is not supported" in errors[future]


def test_oversized_or_non_json_results_dead_letter_the_job_naming_the_problem(
    tmp_path: Path,
) -> None:
    tasks = make_tasks(tmp_path / "q")
    with running(tasks):
        big = tasks.registered["huge"].delay(MAX_KV_VALUE_SIZE + 1)
        with pytest.raises(
            TaskFailed,
            match=r"result of task 'huge' is \d+ bytes as JSON, "
            "more than MAX_KV_VALUE_SIZE",
        ):
            big.get(timeout=WAIT)
        odd = tasks.registered["opaque"].delay()
        with pytest.raises(TaskFailed, match="result of task 'opaque' cannot be carried"):
            odd.get(timeout=WAIT)


def test_get_times_out_while_no_worker_runs(tmp_path: Path) -> None:
    with Queue.open(tmp_path / "q") as q:
        tasks = make_tasks(q)
        result = tasks.registered["add"].delay(1, 2)
        with pytest.raises(TimeoutError, match=result.id):
            result.get(timeout=0.05)


def test_by_default_no_result_is_kept_and_get_says_so(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "q")
    with running(tasks):
        quiet = tasks.registered["quiet"].delay()
        with pytest.raises(InvalidArgument, match="store_result=False"):
            quiet.get(timeout=1)
        q = tasks.queue
        assert q is not None
        until(lambda: q.stats("default").done == 1)
        assert q.kv_get(result_key(quiet.id)) is None
        assert q.stats(RESULTS_QUEUE).scheduled == 0  # nothing to expire


def test_run_worker_needs_tasks_and_refuses_bad_arguments(tmp_path: Path) -> None:
    empty = Tasks(tmp_path / "q")
    with pytest.raises(InvalidArgument, match="no task is registered"):
        empty.run_worker(shutdown=threading.Event())
    tasks = make_tasks(tmp_path / "q")
    with pytest.raises(InvalidArgument, match="concurrency"):
        tasks.run_worker(shutdown=threading.Event(), concurrency=0)
    assert tasks.queue is None  # the queue it opened is closed again


# --------------------------------------------------------------------------- immediate


def test_immediate_mode_runs_inline_through_json() -> None:
    tasks = make_tasks(None, immediate=True)
    assert tasks.registered["echo"].delay((1, 2), k="v").get() == {
        "args": [[1, 2]],
        "kwargs": {"k": "v"},
    }  # as a worker would see it: tuples are lists
    assert tasks.registered["add"].schedule(args=(2, 2), delay=60).get() == 4
    with pytest.raises(TaskFailed, match="RuntimeError: boom") as info:
        tasks.registered["fail"].delay("boom").get()
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(TaskFailed, match="more than MAX_KV_VALUE_SIZE"):
        tasks.registered["huge"].delay(MAX_KV_VALUE_SIZE).get()
    with pytest.raises(InvalidArgument, match="cannot be carried as JSON"):
        tasks.registered["add"].delay(datetime.date.today(), 1)
    with pytest.raises(InvalidArgument, match="immediate"):
        tasks.run_worker(shutdown=threading.Event())


def test_tasks_without_a_location_must_be_immediate() -> None:
    with pytest.raises(taquba.ConfigError, match="location"):
        Tasks()


# --------------------------------------------------------------------------- other processes


def _start_worker(location: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH")) if p
        ),
    }
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "support.tasks_child", str(location)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=HERE,
        )
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.02)):
        if "worker: running" in out.read_text() or proc.poll() is not None:
            break
        deadline.wait(0.02)
    assert proc.poll() is None, out.read_text()
    return proc


def test_another_process_submits_and_waits_without_fencing_the_owner(tmp_path: Path) -> None:
    location = tmp_path / "q"
    with Queue.open(location):
        pass  # the queue exists before the worker starts: readers need a root
    out = tmp_path / "worker.out"
    worker = _start_worker(location, out)
    try:
        web = make_tasks(location)  # never owns: submits through a Producer
        failing = web.registered["fail"].delay("from the web")
        with pytest.raises(TaskFailed, match="from the web"):
            failing.get(timeout=WAIT)  # read through a QueueReader
        assert web._producer is not None and web.queue is None
        assert worker.poll() is None, out.read_text()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        worker.wait(WAIT)
    assert worker.returncode == 0, out.read_text()
    assert "worker: stopped" in out.read_text()
    web.close()


# --------------------------------------------------------------------------- results and follow-ups


def test_get_returns_the_stored_result_written_with_the_ack(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "q")
    with running(tasks):
        assert tasks.registered["add"].delay(2, 40).get(timeout=WAIT) == 42
        echoed = tasks.registered["echo"].delay((1, 2), k=None)
        assert echoed.get(timeout=WAIT) == {"args": [[1, 2]], "kwargs": {"k": None}}
        q = tasks.queue
        assert q is not None
        stored = q.kv_get(result_key(echoed.id))
        assert stored is not None and orjson.loads(stored)["kwargs"] == {"k": None}
        # and the job that will delete it once the retention has passed
        assert q.stats(RESULTS_QUEUE).scheduled == 2


def test_an_expired_result_is_deleted_by_its_results_job(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    options = OpenOptions(
        clock=lambda: clock[0], default_queue_config=QueueConfig(retry_backoff_base=0)
    )
    with Queue.open(tmp_path / "q", options=options) as q:
        tasks = Tasks(q, result_retention=60)

        @tasks.task(name="double", store_result=True)
        def double(x: int) -> int:
            return 2 * x

        with running(tasks):
            result = double.delay(21)
            assert result.get(timeout=WAIT) == 42
            assert q.stats(RESULTS_QUEUE).scheduled == 1
            clock[0] += 61
            assert q.promote_scheduled_now() == 1
            pause = threading.Event()
            for _ in range(int(WAIT / 0.01)):
                if q.stats(RESULTS_QUEUE).done == 1:
                    break
                pause.wait(0.01)
            assert q.kv_get(result_key(result.id)) is None
            assert q.dead_jobs(RESULTS_QUEUE) == []


def test_follow_ups_are_made_with_the_ack_and_only_when_the_task_succeeds(tmp_path: Path) -> None:
    with Queue.open(tmp_path / "q", options=NO_BACKOFF) as q:
        tasks = Tasks(q)
        attempts: list[int] = []

        @tasks.task(name="child", store_result=True)
        def child(n: int) -> int:
            return n * 10

        @tasks.task(name="parent", max_attempts=2, store_result=True)
        def parent(n: int) -> str:
            made = child.follow_up(n)
            attempts.append(n)
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails after asking for a follow-up")
            return made.id

        with running(tasks):
            child_id = parent.delay(4).get(timeout=WAIT)
            assert tasks.result(child_id, "child").get(timeout=WAIT) == 40
        assert attempts == [4, 4]
        # the failed attempt's follow-up was never made: the parent's ack and one child's
        stats = q.stats("default")
        assert (stats.done, stats.pending, stats.scheduled, stats.dead) == (2, 0, 0, 0)
    with pytest.raises(InvalidArgument, match="inside a running task"):
        child.follow_up(1)


def test_immediate_mode_runs_follow_ups_after_the_task() -> None:
    tasks = Tasks(immediate=True)
    order: list[str] = []

    @tasks.task(name="second")
    def second(x: int) -> int:
        order.append("second")
        return x + 1

    @tasks.task(name="first", store_result=True)
    def first(x: int) -> str:
        made = second.follow_up(x)
        order.append("first")
        return made.id

    @tasks.task(name="broken")
    def broken() -> None:
        second.follow_up(0)
        raise RuntimeError("no")

    child_id = first.delay(1).get()
    assert order == ["first", "second"]
    assert isinstance(child_id, str)
    with pytest.raises(TaskFailed):
        broken.delay().get()
    assert order == ["first", "second"]  # the failed task's follow-up never ran


def test_a_result_asked_for_before_any_worker_created_the_queue(tmp_path: Path) -> None:
    web = make_tasks(tmp_path / "q")  # submits through a Producer: no queue exists yet
    result = web.registered["add"].delay(20, 22)
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)  # nothing to read yet: not an error, just not ready
    worker = make_tasks(tmp_path / "q")
    with running(worker):
        assert result.get(timeout=WAIT) == 42  # taken in from the inbox, run, read
    assert web.queue is None
    web.close()


def test_a_worker_killed_mid_task_makes_its_follow_up_exactly_once(tmp_path: Path) -> None:
    location = tmp_path / "q"
    marker = tmp_path / "marker"
    with Queue.open(location):
        pass
    web = make_tasks(location)
    parent = web.task(name="chain.parent", queue="chain", store_result=True)(
        lambda marker, seconds: None
    )
    first = _start_worker(location, tmp_path / "worker1.out")
    try:
        result = parent.delay(str(marker), 3600)
        for _ in range(int(WAIT / 0.01)):
            # the file appears before its line is written: wait for the whole line
            if marker.exists() and marker.read_text().endswith("\n"):
                break
            threading.Event().wait(0.01)
        assert marker.read_text() == "parent\n"  # it asked for its follow-up, then sleeps
    finally:
        first.kill()  # SIGKILL: no ack, so no follow-up may exist
        first.wait(WAIT)
    second = _start_worker(location, tmp_path / "worker2.out")
    try:
        child_id = result.get(timeout=WAIT)  # the second attempt ran to the end
        assert web.result(child_id, "chain.child").get(timeout=WAIT) is None
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(WAIT)
    assert second.returncode == 0
    assert marker.read_text().splitlines() == ["parent", "parent", "child"]
    with Queue.open(location) as q:
        stats = q.stats("chain")
        assert (stats.done, stats.pending, stats.scheduled, stats.dead) == (2, 0, 0, 0)
    web.close()


# --------------------------------------------------------------------------- periodic


@pytest.mark.parametrize(
    "cron, timezone, message",
    [
        ("* * * *", "UTC", "has 4 fields"),
        ("61 * * * *", "UTC", "bad cron expression"),
        ("@fortnightly", "UTC", "unknown cron macro"),
        ("0 3 * * *", "Mars/Olympus_Mons", "unknown time zone"),
    ],
)
def test_a_bad_cron_or_time_zone_is_refused_and_nothing_is_registered(
    tmp_path: Path, cron: str, timezone: str, message: str
) -> None:
    tasks = Tasks(tmp_path / "q")
    with pytest.raises(InvalidArgument, match=message):

        @tasks.periodic(cron, timezone=timezone)
        def tick() -> None: ...

    assert tasks.registered == {}


def test_a_periodic_task_must_take_no_arguments(tmp_path: Path) -> None:
    tasks = Tasks(tmp_path / "q")
    with pytest.raises(InvalidArgument, match="called with no arguments"):

        @tasks.periodic("@hourly")
        def tick(what: str) -> None: ...

    assert tasks.registered == {}


def _clocked(location: Path, clock: list[float]) -> OpenOptions:
    return OpenOptions(
        clock=lambda: clock[0],
        scheduler_interval=3600.0,
        default_queue_config=QueueConfig(keep_done=3600),
    )


def until(condition: Any) -> None:
    """Wait until ``condition()`` holds (WAIT is an upper bound, not a speed assertion)."""
    pause = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("the condition did not hold in time")


def _wait_done(q: Queue, queue: str, count: int) -> int:
    until(lambda: q.stats(queue).done >= count)
    return q.stats(queue).done


def test_periodic_tasks_run_on_their_schedule_and_catch_up_once_after_downtime(
    tmp_path: Path,
) -> None:
    location = tmp_path / "q"
    clock = [1_800_000_000.0]  # 2027-01-15 08:00 UTC
    runs: list[float] = []

    def registry() -> Tasks:
        tasks = Tasks(location, options=_clocked(location, clock))

        @tasks.periodic("*/5 * * * *", name="tick", queue="cron")
        def tick() -> None:
            runs.append(clock[0])

        @tasks.task(name="plain")
        def plain() -> None: ...

        return tasks

    with Queue.open(location, options=_clocked(location, clock)) as q:
        # a schedule of a task that is gone, and a user's own
        q.add_schedule("taquba.tasks:gone", "@daily", "cron", encode_call("gone", [], {}))
        q.add_schedule("mine", "@daily", "elsewhere")
    first = registry()
    with running(first):
        q = first.queue
        assert q is not None
        schedules = {s.name: s for s in q.list_schedules()}
        assert set(schedules) == {"taquba.tasks:tick", "mine"}
        tick = schedules["taquba.tasks:tick"]
        assert (tick.cron, tick.queue, tick.timezone) == ("*/5 * * * *", "cron", "UTC")
        clock[0] = tick.next_run_at
        assert q.promote_scheduled_now() == 1
        assert _wait_done(q, "cron", 1) == 1
        assert q.promote_scheduled_now() == 0  # the same occurrence never fires twice
    assert len(runs) == 1
    clock[0] += 3 * 300  # three occurrences missed while no worker runs
    second = registry()
    with running(second):
        q = second.queue
        assert q is not None
        assert q.promote_scheduled_now() == 1  # one catch-up job, not three, not none
        assert _wait_done(q, "cron", 2) == 2
    assert len(runs) == 2
