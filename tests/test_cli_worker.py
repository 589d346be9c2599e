"""``taquba worker``: runs a handler or a Tasks-like object, stops gracefully on SIGTERM or
SIGINT (jobs in flight finish), exits at once on a second signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.cli import ENV

from taquba import OpenOptions, Queue, QueueConfig, QueueReader

HANDLERS = textwrap.dedent('''
    """Handlers for tests/test_cli_worker.py: each job announces itself, then waits for a
    file named go (or forever if the payload is b"forever")."""
    import json, os, pathlib, time

    HERE = pathlib.Path(__file__).parent


    def handle(claim):
        (HERE / f"started-{claim.id}").touch()
        while not (HERE / "go").exists():
            time.sleep(0.01)
        if claim.payload == b"fail":
            raise RuntimeError("asked to fail")
        (HERE / f"finished-{claim.id}").touch()


    def quick(claim):
        (HERE / f"finished-{claim.id}").write_text(str(os.getpid()))


    def forever(claim):
        (HERE / f"started-{claim.id}").touch()
        while True:
            time.sleep(1)


    class FakeTasks:
        """Duck-typed like taquba.tasks.Tasks: runs its own worker."""

        def run_worker(self, *, shutdown, concurrency):
            (HERE / "runner-started").write_text(json.dumps({"concurrency": concurrency}))
            shutdown.wait()
            (HERE / "runner-stopped").touch()


    tasks = FakeTasks()
''')


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, f"the worker exited ({proc.returncode}): " + (
            proc.stderr.read().decode() if proc.stderr else ""
        )
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.01)


def _wait_for_line(proc: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Read the worker's stderr until a line containing ``text``; the lines read."""
    assert proc.stderr is not None
    seen = b""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"the worker closed stderr ({proc.wait()}): {seen.decode()}"
        seen += line
    return seen


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    return subprocess.Popen(
        [sys.executable, "-m", "taquba", "worker", *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _seed(location: str, payloads: list[bytes]) -> list[str]:
    with Queue.open(location, options=OpenOptions(background_threads=False)) as q:
        return [q.enqueue("work", p) for p in payloads]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_lets_running_jobs_finish(tmp_path: Path, sig: signal.Signals) -> None:
    location = str(tmp_path / "q")
    ids = _seed(location, [b"a", b"fail", b"c"])
    proc = _start(
        tmp_path,
        "handlers:handle",
        "--location",
        location,
        "--queue",
        "work",
        "-c",
        "2",
        "--log-level",
        "debug",
    )
    _wait_for(tmp_path / f"started-{ids[0]}", proc)
    _wait_for(tmp_path / f"started-{ids[1]}", proc)
    proc.send_signal(sig)
    err = _wait_for_line(proc, b"finishing the jobs in flight")  # both jobs still wait
    (tmp_path / "go").touch()
    _, rest = proc.communicate(timeout=120)
    err += rest
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / f"finished-{ids[0]}").exists()
    assert not (tmp_path / f"started-{ids[2]}").exists()  # nothing claimed after the signal
    with Queue.open(
        location, options=OpenOptions(background_threads=False, default_queue_config=QueueConfig())
    ) as q:
        stats = q.stats("work")
        assert (stats.done, stats.pending, stats.claimed, stats.scheduled) == (1, 1, 0, 1)
        assert [a.outcome for a in q.attempt_history(ids[1])] == ["nacked"]
        assert q.attempt_history(ids[2]) == []


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    (job_id,) = _seed(location, [b"x"])
    proc = _start(tmp_path, "handlers:forever", "--location", location, "--queue", "work")
    _wait_for(tmp_path / f"started-{job_id}", proc)
    with QueueReader.open(location) as reader:  # wait until the claim is durable
        while reader.get_job(job_id).status != "claimed":  # type: ignore[union-attr]
            time.sleep(0.01)
            reader.refresh()
    proc.send_signal(signal.SIGTERM)
    _wait_for_line(proc, b"finishing the jobs in flight")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"exiting now" in err
    with Queue.open(location, options=OpenOptions(background_threads=False)) as q:
        assert q.get_job(job_id).status == "pending"  # type: ignore[union-attr]
        assert [a.outcome for a in q.attempt_history(job_id)] == ["abandoned"]


def test_an_object_with_run_worker_runs_itself(tmp_path: Path) -> None:
    proc = _start(tmp_path, "handlers:tasks", "-c", "3")
    _wait_for(tmp_path / "runner-started", proc)
    assert json.loads((tmp_path / "runner-started").read_text()) == {"concurrency": 3}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "runner-stopped").exists()


def test_a_runner_target_refuses_handler_options(tmp_path: Path) -> None:
    proc = _start(tmp_path, "handlers:tasks", "--location", str(tmp_path / "q"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.decode().count("\n") == 1 and "opens its own location" in err.decode()


def test_the_process_executor_runs_handlers_in_other_processes(tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    ids = _seed(location, [b"1", b"2", b"3"])
    proc = _start(
        tmp_path,
        "handlers:quick",
        "--location",
        location,
        "--queue",
        "work",
        "--executor",
        "process",
        "-c",
        "2",
    )
    for job_id in ids:
        _wait_for(tmp_path / f"finished-{job_id}", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    pids = {int((tmp_path / f"finished-{job_id}").read_text()) for job_id in ids}
    assert proc.pid not in pids
    with Queue.open(location, options=OpenOptions(background_threads=False)) as q:
        assert q.stats("work").done == 3
