"""Many processes, one queue: producers, owners and readers as real processes.

- Every producer call that returned survives a SIGKILL of the producer.
- Intake stays exactly once over many SIGKILLs of the owner during intake, and while two
  owner processes take over from each other: every submitted id becomes exactly one job
  (an acked job never comes back, every other one is there once).
- A reader refreshes in a loop while the owner checkpoints and collects garbage, and ends
  equal to the owner; it never writes.

Children are tests/support/inbox_child.py; they print each call only after it returned.
``TAQUBA_INTAKE_KILLS`` overrides the number of owner kills (default 20).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taquba import JobStatus, OpenOptions, Queue, QueueReader

HERE = Path(__file__).resolve().parent
CHILD = str(HERE / "support" / "inbox_child.py")
REPO = str(HERE.parent)
KILLS = int(os.environ.get("TAQUBA_INTAKE_KILLS", "20"))
QUEUE = "jobs"
TIMEOUT = 60.0  # guards against a hung child only


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    out: Path

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def wait_for(self, line: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            if self.proc.poll() is not None and line not in self.lines():
                raise AssertionError(
                    f"child exited {self.proc.returncode} before {line!r}: {self.lines()[-5:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"child did not print {line!r} in time")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)


@dataclass
class Ledger:
    submitted: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)

    def read(self, child: Child) -> None:
        for line in child.lines():
            kind, _, rest = line.partition(" ")
            if kind == "X":
                raise AssertionError(f"child failed: {line}")
            if kind == "E":
                self.submitted.add(rest)
            elif kind == "A":
                self.acked.add(rest)


def spawn(tmp_path: Path, root: Any, mode: str, **spec: Any) -> Child:
    spec.update(mode=mode, location=root.location, storage_options=root.storage_options)
    out = tmp_path / f"{mode}-{time.monotonic_ns()}.out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
    }
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, CHILD, json.dumps(spec)], stdout=f, stdin=subprocess.DEVNULL, env=env
        )
    return Child(proc, out)


@pytest.fixture(params=["local", "s3"])
def shared_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A root that several processes can open: local disk and S3 (moto server)."""
    if request.param == "local":
        yield request.getfixturevalue("backend_root_local")
    else:
        emulator = request.getfixturevalue("s3_emulator")
        yield emulator.root()


@pytest.fixture
def backend_root_local(tmp_path: Path) -> Any:
    from support.backends import local_root

    return local_root(tmp_path / "root")


def drain_intake(root: Any) -> Queue:
    """Open the root as owner in this process and take in everything left."""
    q = Queue.open(
        root.location,
        storage_options=root.storage_options,
        options=OpenOptions(background_threads=False),
    )
    while q.intake_now():
        pass
    return q


def check(q: Queue, ledger: Ledger) -> None:
    """Every submitted id is exactly one job: acked ones gone for good, the rest present."""
    assert ledger.submitted, "nothing was submitted"
    assert ledger.acked <= ledger.submitted
    for job_id in ledger.acked:
        assert q.get_job(job_id) is None, f"acked job {job_id} came back"
    missing = [j for j in ledger.submitted - ledger.acked if q.get_job(j) is None]
    # An id acked whose "A" line the kill cut off is gone too: those are the only
    # submitted ids allowed to be missing, and the owner's done count says how many.
    stats = q.stats(QUEUE)
    assert stats.claimed == 0
    assert stats.pending == len(ledger.submitted) - len(ledger.acked) - len(missing)
    assert stats.done >= len(ledger.acked) + len(missing)
    assert stats.done + stats.pending == len(ledger.submitted), (
        f"{stats} for {len(ledger.submitted)} submissions: a submission was taken in twice or lost"
    )


def test_producer_calls_that_returned_survive_sigkill(shared_root: Any, tmp_path: Path) -> None:
    ledger = Ledger()
    rng = random.Random(7)
    for _ in range(5):
        producer = spawn(tmp_path, shared_root, "producer", threads=4)
        producer.wait_for("S")
        time.sleep(rng.uniform(0.2, 0.8))
        producer.kill()
        ledger.read(producer)
    q = drain_intake(shared_root)
    try:
        for job_id in ledger.submitted:
            rec = q.get_job(job_id)
            assert rec is not None and rec.status is JobStatus.PENDING
        # Calls in flight at the kill may have landed too, but nothing twice.
        assert q.stats(QUEUE).pending >= len(ledger.submitted)
    finally:
        q.close()


def test_intake_exactly_once_through_owner_sigkills(shared_root: Any, tmp_path: Path) -> None:
    ledger = Ledger()
    rng = random.Random(11)
    producer = spawn(tmp_path, shared_root, "producer", threads=3, pause=0.002)
    producer.wait_for("S")
    owners: list[Child] = []
    try:
        for _ in range(KILLS):
            owner = spawn(tmp_path, shared_root, "owner", workers=2)
            owners.append(owner)
            owner.wait_for("S")
            time.sleep(rng.uniform(0.05, 0.6))
            owner.kill()
    finally:
        producer.proc.send_signal(signal.SIGTERM)
        producer.wait_for("D")
        producer.proc.wait(TIMEOUT)
    ledger.read(producer)
    for owner in owners:
        ledger.read(owner)
    q = drain_intake(shared_root)
    try:
        check(q, ledger)
    finally:
        q.close()


def test_two_owners_take_over_from_each_other_during_intake(
    shared_root: Any, tmp_path: Path
) -> None:
    ledger = Ledger()
    producer = spawn(tmp_path, shared_root, "producer", threads=2, pause=0.002)
    producer.wait_for("S")
    owners: list[Child] = []
    try:
        for _ in range(6):
            owner = spawn(tmp_path, shared_root, "owner", workers=2)
            owners.append(owner)
            owner.wait_for("S")
            if len(owners) > 1:
                owners[-2].wait_for("F")  # the previous owner noticed and stopped
            time.sleep(0.3)
        owners[-1].kill()
    finally:
        producer.proc.send_signal(signal.SIGTERM)
        producer.wait_for("D")
        producer.proc.wait(TIMEOUT)
        for owner in owners:
            owner.kill()
    ledger.read(producer)
    for owner in owners:
        ledger.read(owner)
    q = drain_intake(shared_root)
    try:
        check(q, ledger)
    finally:
        q.close()


def test_reader_follows_an_owner_that_checkpoints(shared_root: Any, tmp_path: Path) -> None:
    producer = spawn(tmp_path, shared_root, "producer", threads=2, limit=150)
    owner = spawn(tmp_path, shared_root, "owner", workers=2, checkpoint_min_bytes=2048)
    owner.wait_for("S")
    reader = QueueReader.open(shared_root.location, storage_options=shared_root.storage_options)
    try:
        last_done = 0
        deadline = time.monotonic() + TIMEOUT
        while True:
            reader.refresh()
            stats = reader.stats(QUEUE)
            assert stats.done >= last_done  # durable state never goes back
            last_done = stats.done
            if stats.done == 300:
                break
            assert time.monotonic() < deadline, f"reader stuck at {stats}"
            time.sleep(0.01)
        assert reader.store.counts.puts == 0 and reader.store.counts.deletes == 0
        assert reader._log.reloads > 1  # it did follow checkpoints (garbage was collected)
    finally:
        reader.close()
        owner.kill()
        producer.kill()
    ledger = Ledger()
    ledger.read(producer)
    assert len(ledger.submitted) == 300
