"""The examples run as written: the script (and its SIGTERM handling), Flask, Django, Dask."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

from taquba import JobStatus
from taquba.queue import Queue

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WAIT = 30.0  # upper bound for something that must happen; never a speed assertion


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- plain script


def test_worker_script_runs_a_finite_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "worker_script.py"),
            "--data",
            str(tmp_path / "q"),
            "--jobs",
            "10",
            "--seconds",
            "0.01",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # job 9 is a .txt: dead-lettered by PermanentFailure; the others are done
    assert "stopped: 9 done, 1 dead, 0 pending, 0 claimed" in result.stdout, result.stdout


def test_sigterm_stops_the_worker_script_with_every_claimed_job_settled(tmp_path: Path) -> None:
    root = tmp_path / "q"
    total = 40
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "worker_script.py"),
                "--data",
                str(root),
                "--jobs",
                str(total),
                "--seconds",
                "0.5",
                "--concurrency",
                "4",
                "--grace",
                "20",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        lines: list[str] = []
        running = threading.Event()

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("started "):
                    running.set()

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        try:
            assert running.wait(WAIT), "no job started"
            proc.send_signal(signal.SIGTERM)
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(WAIT)
        assert proc.stdout is not None
        proc.stdout.close()
        err.seek(0)
        stderr = err.read()
    output = "".join(lines)
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr
    started = set(re.findall(r"^started (\S+) ", output, re.MULTILINE))
    finished = set(re.findall(r"^finished (\S+)$", output, re.MULTILINE))
    failed = {
        job
        for job in started
        if re.search(rf"^started {re.escape(job)} notes-", output, re.MULTILINE)
    }
    assert started and finished == started - failed  # every started job ran to the end

    with Queue.open(str(root)) as q:
        for job in started:  # settled before exit: done (record dropped) or dead, never requeued
            record = q.get_job(job)
            assert record is None or record.status in (JobStatus.DONE, JobStatus.DEAD), record
        stats = q.stats("thumbnails")
        assert stats.claimed == 0 and stats.scheduled == 0
        assert stats.done == len(finished) and stats.dead == len(failed)
        assert stats.pending == total - len(started)  # no job was claimed and left unsettled


def test_worker_script_exits_non_zero_when_another_process_takes_the_queue_over(
    tmp_path: Path,
) -> None:
    """A supervisor must see the failure: before, the worker loop died in its thread and the
    script still exited 0."""
    root = tmp_path / "q"
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "worker_script.py"),
                "--data",
                str(root),
                "--forever",
                "--jobs",
                "2",
                "--seconds",
                "5",
                "--fence-check-interval",
                "0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            while not (line := proc.stdout.readline()).startswith("started "):
                assert line, "the script ended before any job started"
            with Queue.open(str(root)):  # a second process opens the same queue
                out = proc.stdout.read()
                proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert proc.returncode == 1, stderr[-3000:]
    assert "failed: FencedError" in out, (out, stderr[-3000:])
    assert "the worker loop stopped: FencedError" in stderr


# --------------------------------------------------------------------------- Dask


def test_dask_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    dask_example = load_example("dask_example")
    assert dask_example.main(["--data", str(tmp_path / "q"), "--jobs", "4"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^job \S+: item-\d+ -> [0-9a-f]{16}", out, re.MULTILINE)) == 4
    assert "done: 4, dead: 1, pending: 0" in out


# --------------------------------------------------------------------------- tasks


def test_tasks_app_runs_its_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tasks_app.py"), "--data", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "order 42: total 4.25"
    assert lines[1] == "follow-up: receipt for order 42: 4.25"
    assert lines[2] == "refund failed: ValueError: order 7 was never paid"
    assert lines[3].startswith("schedule taquba.tasks:shop.tidy_up: 0 3 * * * (Europe/Paris)")
    assert lines[-1] == "stopped"
    with Queue.open(tmp_path / "q") as q:
        assert q.stats("orders").done == 1 and q.stats("orders").dead == 1
        assert q.stats("mail").done == 1  # the follow-up ran exactly once


def test_tasks_app_cron_job_runs_when_due(tmp_path: Path) -> None:
    from taquba import OpenOptions

    app = load_example("tasks_app")
    clock = [1_800_000_000.0]
    app.tasks.location = str(tmp_path / "q")
    app.tasks.options = OpenOptions(clock=lambda: clock[0])
    shutdown = threading.Event()
    worker = threading.Thread(
        target=app.tasks.run_worker, kwargs={"shutdown": shutdown, "poll_interval": 0.05}
    )
    worker.start()
    try:
        pause = threading.Event()
        schedules: list[object] = []
        for _ in range(int(WAIT / 0.01)):
            q = app.tasks.queue
            schedules = q.list_schedules() if q is not None else []
            if schedules:
                break
            pause.wait(0.01)
        assert q is not None and [s.name for s in schedules] == ["taquba.tasks:shop.tidy_up"]
        clock[0] = schedules[0].next_run_at + 1  # type: ignore[attr-defined]
        assert q.promote_scheduled_now() == 1
        for _ in range(int(WAIT / 0.01)):
            if q.stats("default").done == 1:
                break
            pause.wait(0.01)
        assert q.stats("default").done == 1
    finally:
        shutdown.set()
        worker.join(WAIT)
    assert not worker.is_alive()
