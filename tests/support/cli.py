"""Helpers of the command line and dashboard tests: run ``taquba`` as a subprocess, and a
live owner in another process (support/owner_child.py) that can say whether it was fenced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def taquba(
    *args: str, input: bytes | None = None, cwd: Path | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taquba ARGS`` to the end; text stdout and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "taquba", *args],
        input=input,
        capture_output=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def taquba_json(*args: str) -> Any:
    """Run a ``--json`` command that must succeed; its parsed output."""
    done = taquba(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Owner:
    """support/owner_child.py on ``location``: a live owner in another process."""

    def __init__(self, location: str) -> None:
        child = REPO / "tests" / "support" / "owner_child.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(child), location],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the owner exited ({self.proc.wait()})")
        return line.strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def assert_not_fenced(self) -> None:
        """The owner still owns the queue: its fence check and a write both succeed."""
        assert self.ask("check") == "ok"

    def job(self, job_id: str) -> str:
        return self.ask(f"job {job_id}")

    def wait_for_job(self, job_id: str, expected: str, limit: float = 60.0) -> None:
        """Wait until the owner sees ``job_id`` as ``expected`` (``"<status> <attempts>"``
        or ``"none"``), taking submissions in meanwhile; fails after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        seen = self.job(job_id)
        while seen != expected:
            assert time.monotonic() < deadline, f"job {job_id}: {seen!r}, not {expected!r}"
            self.ask("intake")
            time.sleep(0.02)
            seen = self.job(job_id)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.ask("quit") == "closed"
            finally:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(30)

    def __enter__(self) -> Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.proc.kill()
            self.proc.wait()
        else:
            self.close()
