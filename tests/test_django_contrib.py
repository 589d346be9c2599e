"""``taquba.contrib.django`` with real Django, in real processes: a project whose app has a
``tasks.py`` and nothing else taquba-specific. ``manage.py taquba_worker`` finds the tasks
by autodiscovery and owns the queue; ``manage.py shell`` processes submit through a
``Producer`` and wait through a ``QueueReader`` without fencing it; SIGTERM lets the
running job finish; a bad ``TAQUBA`` setting is reported naming the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from taquba import JobStatus, Queue, QueueReader

pytest.importorskip("django")

REPO = str(Path(__file__).resolve().parent.parent)
WAIT = 60.0  # an upper bound for what must happen, never a speed assertion

SETTINGS = """
import os
from taquba import OpenOptions, QueueConfig

SECRET_KEY = "test-only"
INSTALLED_APPS = ["taquba.contrib.django", "shop"]
DATABASES = {}
USE_TZ = True
TAQUBA = {
    "LOCATION": os.environ["TAQUBA_LOCATION"],
    "CONCURRENCY": 2,
    "POLL_INTERVAL": 0.1,
    "OPTIONS": OpenOptions(default_queue_config=QueueConfig(keep_done=3600,
                                                            retry_backoff_base=0),
                           fence_check_interval=0.2),
}
case = os.environ.get("TAQUBA_CASE")
if case == "no-location":
    del TAQUBA["LOCATION"]
elif case == "unknown-key":
    TAQUBA["CONCURENCY"] = 3
elif case == "bad-concurrency":
    TAQUBA["CONCURRENCY"] = 0
elif case == "immediate":
    TAQUBA["IMMEDIATE"] = True
"""

TASKS = """
import pathlib
import time

from taquba.contrib.django import tasks


@tasks.task(name="shop.total", queue="shop", store_result=True)
def total(prices):
    return sum(prices)


@tasks.task(name="shop.refuse", queue="shop", max_attempts=1, store_result=True)
def refuse(reason):
    raise ValueError(reason)


@tasks.task(name="shop.slow", queue="slow")
def slow(marker, seconds):
    pathlib.Path(marker).write_text("started")
    time.sleep(seconds)
    return "finished"
"""

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project_settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "tasks.py").write_text(textwrap.dedent(TASKS))
    (root / "project_settings.py").write_text(textwrap.dedent(SETTINGS))
    (root / "manage.py").write_text(textwrap.dedent(MANAGE))
    return root


def env_for(project: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "TAQUBA_LOCATION": str(project.parent / "queue"),
        **extra,
    }


def manage(project: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env_for(project, **extra),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def start_worker(project: Path, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "taquba_worker"],
            cwd=project,
            env=env_for(project),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + WAIT
    while "taquba_worker: owning" not in out.read_text():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_runs_autodiscovered_tasks_submitted_from_other_processes(project: Path) -> None:
    out = project.parent / "worker.out"
    worker = start_worker(project, out)
    try:
        assert "running 3 task(s) on shop, slow" in out.read_text()  # found shop/tasks.py by itself
        shell = manage(
            project,
            "shell",
            "-c",
            textwrap.dedent("""
            from taquba.tasks import TaskFailed
            from shop.tasks import refuse, total
            from taquba.contrib.django import tasks
            print("TOTAL", total.delay([1, 2, 3.5]).get(timeout=60))
            r = refuse.delay("sold out")
            try:
                r.get(timeout=60)
            except TaskFailed as exc:
                print("FAILED", exc.error)
            print("OWNER", tasks.queue is not None)
        """),
        )
        assert shell.returncode == 0, shell.stderr
        assert "TOTAL 6.5" in shell.stdout  # the result, read through a QueueReader
        assert "FAILED ValueError: sold out" in shell.stdout
        assert "OWNER False" in shell.stdout  # the shell never took the queue over
        assert worker.poll() is None, out.read_text()
    finally:
        code = stop(worker)
    assert code == 0, out.read_text()
    assert "taquba_worker: stopped" in out.read_text()


def test_sigterm_lets_the_running_task_finish(project: Path) -> None:
    out = project.parent / "worker.out"
    marker = project.parent / "started"
    worker = start_worker(project, out)
    try:
        shell = manage(
            project,
            "shell",
            "-c",
            f"from shop.tasks import slow; print('ID', slow.delay({str(marker)!r}, 2).id)",
        )
        assert shell.returncode == 0, shell.stderr
        job_id = shell.stdout.split("ID ", 1)[1].split()[0]
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            assert worker.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.02)
    finally:
        code = stop(worker)  # while the task sleeps
    assert code == 0, out.read_text()
    text = out.read_text()
    assert "SIGTERM, finishing the jobs in flight" in text and "taquba_worker: stopped" in text
    with QueueReader.open(project.parent / "queue") as reader:
        record = reader.get_job(job_id)
    assert record is not None and record.status is JobStatus.DONE, record


def test_the_worker_exits_1_when_another_process_takes_the_queue_over(project: Path) -> None:
    out = project.parent / "worker.out"
    worker = start_worker(project, out)
    try:
        with Queue.open(project.parent / "queue"):  # takes the queue over: fences the worker
            code = worker.wait(WAIT)
    finally:
        stop(worker)
    assert code == 1, out.read_text()
    assert "another process took the queue over" in out.read_text()


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-location", "TAQUBA['LOCATION'] is required"),
        ("unknown-key", "unknown key(s) ['CONCURENCY']"),
        ("bad-concurrency", "TAQUBA['CONCURRENCY'] must be an int >= 1, got 0"),
    ],
)
def test_a_bad_setting_stops_the_command_naming_the_key(
    project: Path, case: str, message: str
) -> None:
    result = manage(project, "taquba_worker", TAQUBA_CASE=case)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not (project.parent / "queue").exists()


def test_immediate_setting_runs_tasks_inline_without_a_queue(project: Path) -> None:
    result = manage(
        project,
        "shell",
        "-c",
        "from shop.tasks import total; print('TOTAL', total.delay([1, 2, 3]).get())",
        TAQUBA_CASE="immediate",
    )
    assert result.returncode == 0, result.stderr
    assert "TOTAL 6" in result.stdout
    assert not (project.parent / "queue").exists()
