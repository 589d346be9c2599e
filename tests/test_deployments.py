"""The deployments people run, for real: web processes submit, one worker process owns.

- The Flask example under real ``gunicorn -w 4`` beside ``flask_app.py worker``: all 50 of 50
  requests are accepted and all 50 jobs finish; the status view reads through a
  ``QueueReader``; the worker is never fenced and exits 0 on SIGTERM.
- The Django example: ``manage.py runserver`` (with its reloader) beside ``manage.py
  taquba_worker``; ``manage.py check`` while both run disturbs nothing; the worker runs
  the tasks it found in the app's ``tasks.py`` and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
REPO = str(HERE.parent)
WAIT = 60.0  # an upper bound for what must happen, never a speed assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(location: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TAQUBA_LOCATION": str(location),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
        **extra,
    }


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until_serving(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # answering, even if with an error status
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in time")


def wait_for_output(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while text not in path.read_text():
        assert proc.poll() is None, f"exited {proc.returncode}: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {path.read_text()[-2000:]}"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_all_done(base: str, job_ids: list[str], suffix: str = "") -> dict[str, str]:
    """Poll the status view until every job is done or dead; their statuses."""
    deadline = time.monotonic() + WAIT
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if status.get(job_id) not in ("done", "dead"):
                _, body = http("GET", f"{base}/{job_id}{suffix}")
                status[job_id] = body["status"]
        if all(s in ("done", "dead") for s in status.values()):
            return status
        time.sleep(0.1)
    raise AssertionError(f"not all finished: {status}")


def test_flask_under_gunicorn_with_a_worker_process(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    location = tmp_path / "q"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_out = tmp_path / "worker.out"
    with open(worker_out, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "flask_app.py"), "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(location),
        )
    web_out = tmp_path / "gunicorn.out"
    with open(web_out, "wb") as out:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "4",
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(EXAMPLES),
                "flask_app:create_app()",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env_for(location),
        )
    try:
        wait_for_output(worker_out, "worker: owning", worker)
        wait_until_serving(f"{base}/jobs/none", web)
        emails = [f"user{i}@example.com" for i in range(49)] + ["not-an-address"]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda e: http("POST", f"{base}/signups", {"email": e}), emails)
            )
        assert [code for code, _ in answers] == [202] * 50, answers
        job_ids = [body["job_id"] for _, body in answers]
        assert len(set(job_ids)) == 50
        status = wait_all_done(f"{base}/jobs", job_ids)
        assert list(status.values()).count("done") == 49
        assert status[job_ids[-1]] == "dead"
        assert http("POST", f"{base}/signups", {})[0] == 400
        assert http("GET", f"{base}/jobs/no-such-job")[0] == 404
        pids = set()
        for line in web_out.read_text().splitlines():
            if "Booting worker with pid" in line:
                pids.add(line.rsplit(" ", 1)[-1])
        assert len(pids) == 4  # four web processes really served
        assert worker.poll() is None, "the worker process died (fenced?)"
    finally:
        web_code = stop(web)
        worker_code = stop(worker)
    assert "Traceback" not in web_out.read_text(), web_out.read_text()[-3000:]
    assert web_code == 0
    assert worker_code == 0, worker_out.read_text()[-3000:]
    assert "worker: stopped" in worker_out.read_text()


def test_django_runserver_taquba_worker_and_check(tmp_path: Path) -> None:
    pytest.importorskip("django")
    location = tmp_path / "q"
    manage = str(EXAMPLES / "django_app" / "manage.py")
    env = env_for(location, DJANGO_DEBUG="0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker_out = tmp_path / "taquba_worker.out"
    with open(worker_out, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, manage, "taquba_worker", "-c", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    web_out = tmp_path / "runserver.out"
    with open(web_out, "wb") as out:
        web = subprocess.Popen(
            [sys.executable, manage, "runserver", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )  # the reloader's child goes with it
    try:
        wait_for_output(worker_out, "taquba_worker: owning", worker)
        wait_until_serving(f"{base}/jobs/none/", web)
        check = subprocess.run(
            [sys.executable, manage, "check"], env=env, capture_output=True, text=True, timeout=WAIT
        )
        assert check.returncode == 0, check.stderr
        kinds = ["daily", "weekly"] * 10 + ["yearly"]
        answers = [http("POST", f"{base}/reports/", {"kind": k}) for k in kinds]
        assert [code for code, _ in answers] == [202] * len(kinds), answers
        job_ids = [body["job_id"] for _, body in answers]
        status = wait_all_done(f"{base}/jobs", job_ids, "/")
        assert [status[j] for j in job_ids] == ["done"] * 20 + ["dead"]
        done = [j for j in job_ids if status[j] == "done"]
        assert {http("GET", f"{base}/jobs/{j}/")[1]["result"]["kind"] for j in done} == {
            "daily",
            "weekly",
        }
        assert worker.poll() is None, "taquba_worker died: a web or check process fenced it"
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
        web.wait(WAIT)
        worker_code = stop(worker)
    assert worker_code == 0, worker_out.read_text()[-3000:]
    assert "taquba_worker: stopped" in worker_out.read_text()
