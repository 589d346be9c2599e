"""The examples run as written: the script (and its SIGTERM handling), Flask, Django, Dask."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from taquba import FencedError, JobStatus, QueueClosed, WaitStatus
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
        [sys.executable, str(EXAMPLES / "worker_script.py"), "--data", str(tmp_path / "q"),
         "--jobs", "10", "--seconds", "0.01"],
        capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode == 0, result.stderr
    # job 9 is a .txt: dead-lettered by PermanentFailure; the others are done
    assert "stopped: 9 done, 1 dead, 0 pending, 0 claimed" in result.stdout, result.stdout


def test_sigterm_stops_the_worker_script_with_every_claimed_job_settled(
        tmp_path: Path) -> None:
    root = tmp_path / "q"
    total = 40
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker_script.py"), "--data", str(root),
             "--jobs", str(total), "--seconds", "0.5", "--concurrency", "4", "--grace", "20"],
            stdout=subprocess.PIPE, stderr=err, text=True)
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
    failed = {job for job in started
              if re.search(rf"^started {re.escape(job)} notes-", output, re.MULTILINE)}
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
        tmp_path: Path) -> None:
    """A supervisor must see the failure: before, the worker loop died in its thread and the
    script still exited 0."""
    root = tmp_path / "q"
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker_script.py"), "--data", str(root),
             "--forever", "--jobs", "2", "--seconds", "5", "--fence-check-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=err, text=True)
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


# --------------------------------------------------------------------------- Flask


def test_flask_app_enqueues_through_a_request_and_shuts_down(tmp_path: Path) -> None:
    flask_app = load_example("flask_app")
    app = flask_app.create_app(str(tmp_path / "q"))
    worker = app.extensions["taquba"]
    client = app.test_client()
    try:
        response = client.post("/signups", json={"email": "ada@example.com"})
        assert response.status_code == 202, response.get_data(as_text=True)
        job_id = response.get_json()["job_id"]
        outcome = worker.queue.wait_for_completion(job_id, WAIT)
        assert outcome.status == WaitStatus.COMPLETED
        status = client.get(f"/jobs/{job_id}").get_json()
        assert status["status"] == "done" and status["attempts"] == 1

        bad = client.post("/signups", json={"email": "not-an-address"}).get_json()["job_id"]
        assert worker.queue.wait_for_completion(bad, WAIT).status == WaitStatus.COMPLETED
        assert client.get(f"/jobs/{bad}").get_json()["status"] == "dead"
        assert client.post("/signups", json={}).status_code == 400
        assert client.get("/jobs/no-such-job").status_code == 404
    finally:
        assert worker.stop(timeout=WAIT)
    assert not worker.thread.is_alive()
    with pytest.raises(QueueClosed):
        worker.queue.enqueue(flask_app.QUEUE, b"late")
    assert worker.stop(timeout=WAIT)  # idempotent


def test_flask_app_reports_a_dead_worker_loop(tmp_path: Path) -> None:
    """By default the process exits 1 when the worker loop dies; here the hook records it."""
    flask_app = load_example("flask_app")
    failures: list[BaseException] = []
    app = flask_app.create_app(str(tmp_path / "q"), on_worker_failure=failures.append)
    worker = app.extensions["taquba"]
    try:
        with Queue.open(str(tmp_path / "q")), pytest.raises(FencedError):
            worker.queue.check_fence_now()  # what its fence-check thread does every 30 s
        worker.thread.join(WAIT)
        assert not worker.thread.is_alive()
        assert [type(f) for f in failures] == [FencedError]
    finally:
        worker.stop(timeout=WAIT)


# --------------------------------------------------------------------------- Django


@pytest.fixture(scope="module")
def django_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if settings.configured:
        pytest.skip("Django settings were configured elsewhere in this process")
    sys.path.insert(0, str(EXAMPLES / "django_app"))
    try:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test",
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=["taquba_demo.apps.TaqubaDemoConfig"],
            MIDDLEWARE=[],
            ROOT_URLCONF="taquba_demo.urls",
            DATABASES={},
            USE_TZ=True,
            TAQUBA_LOCATION=str(tmp_path_factory.mktemp("django") / "q"),
            TAQUBA_QUEUE="reports",
            TAQUBA_CONCURRENCY=2,
            TAQUBA_AUTOSTART=True,
        )
        django.setup()  # the AppConfig's ready() opens the queue and starts the worker
        from taquba_demo import jobs

        yield jobs
        assert jobs.stop(timeout=WAIT)
    finally:
        sys.path.remove(str(EXAMPLES / "django_app"))


def test_django_app_enqueues_through_a_request(django_jobs: Any) -> None:
    from django.test import Client

    client = Client()
    response = client.post("/reports/", data={"kind": "daily"}, content_type="application/json")
    assert response.status_code == 202, response.content
    job_id = response.json()["job_id"]
    queue = django_jobs.get_queue()
    assert queue.wait_for_completion(job_id, WAIT).status == WaitStatus.COMPLETED
    status = client.get(f"/jobs/{job_id}/").json()
    assert status["status"] == "done" and status["attempts"] == 1

    bad = client.post("/reports/", data={"kind": "yearly"},
                      content_type="application/json").json()["job_id"]
    assert queue.wait_for_completion(bad, WAIT).status == WaitStatus.COMPLETED
    assert client.get(f"/jobs/{bad}/").json()["status"] == "dead"
    assert client.post("/reports/", data={}, content_type="application/json").status_code == 400


def test_django_app_shuts_down_cleanly(django_jobs: Any) -> None:
    queue = django_jobs.get_queue()
    assert django_jobs.stop(timeout=WAIT)
    with pytest.raises(QueueClosed):
        queue.enqueue("reports", b"late")
    with pytest.raises(RuntimeError):
        django_jobs.get_queue()


# --------------------------------------------------------------------------- Dask


def test_dask_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    dask_example = load_example("dask_example")
    assert dask_example.main(["--data", str(tmp_path / "q"), "--jobs", "4"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^job \S+: item-\d+ -> [0-9a-f]{16}", out, re.MULTILINE)) == 4
    assert "done: 4, dead: 1, pending: 0" in out
