"""SIGKILL a queue-owning process under load, many times, and check what comes back.

The child (tests/support/queue_child.py, mode ``crash``) runs producer threads (``enqueue`` and
``enqueue_with_kv``) and worker threads (``claim`` -> ``ack``) on one root with frequent
checkpoints, printing each call only after it returned. The parent kills it at a random
moment, reopens the root in-process and checks, against everything any child reported:

- every enqueue that returned is present, with its payload;
- every ack that returned is DONE (``keep_done`` is long, so acked jobs stay visible), and
  no acked job is pending or claimed again;
- jobs claimed when the child died are pending again (no job is left claimed);
- a job made by ``enqueue_with_kv`` exists exactly when its KV entry does — checked over
  every id a producer may have created, printed or not;
- the counts in ``stats`` are exactly those of the jobs found.

The same root is used for every kill, so state (and compaction) accumulates across kills.
``TAQUBA_CRASH_KILLS`` overrides the number of kills (default 50 when ``CI=true``, else 15);
``TAQUBA_CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from taquba import JobStatus, Queue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import queue_child as child_mod
from support.backends import BackendRoot

CHILD = child_mod.__file__
CI = os.environ.get("CI", "").lower() == "true"
KILLS = int(os.environ.get("TAQUBA_CRASH_KILLS", "50" if CI else "15"))
CHECKPOINT_MIN_BYTES = 4096
START_TIMEOUT = 60.0  # only guards against a hung child, never measures speed


@dataclass
class Ledger:
    """Everything the children reported, over all kills on one root."""

    enqueued: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    # (run, producer) -> the highest n it printed an E line for (-1: none)
    last_n: dict[tuple[int, int], int] = field(default_factory=dict)
    claims_requeued: int = 0  # claimed, not acked, found pending after the kill
    kv_jobs: int = 0
    opens_killed: int = 0  # kills that landed before the queue was open

    def candidates(self) -> list[str]:
        """Every job id a producer may have created (it has at most one call in flight)."""
        out = []
        for (run, producer), last in self.last_n.items():
            out += [child_mod.job_id(run, producer, n) for n in range(last + 3)]
        return out


@dataclass
class RunLines:
    enqueued: list[str]
    claimed: list[str]
    acked: list[str]
    problems: list[str]


def parse(text: str) -> RunLines:
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the last line was cut short by the kill
    out = RunLines([], [], [], [])
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "E":
            out.enqueued.append(rest)
        elif kind == "C":
            out.claimed.append(rest)
        elif kind == "A":
            out.acked.append(rest)
        elif kind in ("X", "F"):
            out.problems.append(line)
    return out


def spawn(
    mode: str, location: str, storage_options: Mapping[str, Any] | None, run: int, out_path: Path
) -> subprocess.Popen[bytes]:
    """Start a child whose stdout and stderr go to files (never a full pipe to block on)."""
    spec = {
        "mode": mode,
        "location": location,
        "storage_options": dict(storage_options or {}),
        "run": run,
        "checkpoint_min_bytes": CHECKPOINT_MIN_BYTES,
    }
    # O_APPEND, so each line lands whole; the child has its own copies of the descriptors.
    with open(out_path, "ab") as out, open(out_path.with_suffix(".err"), "ab") as err:
        return subprocess.Popen(
            [sys.executable, CHILD, json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


def wait_for_line(proc: subprocess.Popen[bytes], out_path: Path, line: bytes) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if line + b"\n" in out_path.read_bytes():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"child exited with {proc.returncode} before printing {line!r}: "
                f"{out_path.with_suffix('.err').read_text()[-3000:]}"
            )
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"the child did not print {line!r}")


def check_root(
    location: str,
    storage_options: Mapping[str, Any] | None,
    ledger: Ledger,
    lines: RunLines,
    what: str,
) -> None:
    """Reopen the root in-process and check it against the ledger."""
    q = Queue.open(
        location,
        options=child_mod.options(CHECKPOINT_MIN_BYTES, background_threads=False),
        storage_options=storage_options or None,
    )
    try:
        found: dict[str, JobStatus] = {}
        for jid in ledger.candidates():
            rec = q.get_job(jid)
            kv = q.kv_get(child_mod.kv_key(jid))
            if rec is not None:
                assert rec.payload == child_mod.payload(jid), f"{what}: {jid} payload changed"
                found[jid] = rec.status
            n = int(jid.rsplit("-", 1)[1])
            if child_mod.with_kv(n):
                assert (rec is None) == (kv is None), (
                    f"{what}: {jid} job {'present' if rec else 'missing'} but KV "
                    f"{'present' if kv is not None else 'missing'}"
                )
                if kv is not None:
                    assert kv == child_mod.payload(jid), f"{what}: KV of {jid} changed"
                    ledger.kv_jobs += 1 if jid in lines.enqueued else 0
            else:
                assert kv is None, f"{what}: KV entry for {jid}, which was enqueued without"
        lost = sorted(ledger.enqueued - found.keys())
        assert not lost, f"{what}: {len(lost)} acknowledged enqueue(s) lost: {lost[:5]}"
        not_done = sorted(j for j in ledger.acked if found.get(j) is not JobStatus.DONE)
        assert not not_done, (
            f"{what}: acked job(s) not DONE: {[(j, found.get(j)) for j in not_done[:5]]}"
        )
        odd = {j: s for j, s in found.items() if s not in (JobStatus.PENDING, JobStatus.DONE)}
        assert not odd, f"{what}: jobs neither pending nor done after reopen: {list(odd)[:5]}"
        acked_now = set(lines.acked)
        for jid in lines.claimed:
            if jid not in acked_now and found.get(jid) is JobStatus.PENDING:
                ledger.claims_requeued += 1
        stats = q.stats(child_mod.QUEUE)
        statuses = list(found.values())
        assert (stats.pending, stats.scheduled, stats.claimed, stats.dead) == (
            statuses.count(JobStatus.PENDING),
            0,
            0,
            0,
        ), f"{what}: {stats}"
        assert stats.done == statuses.count(JobStatus.DONE), f"{what}: {stats}"
        assert sorted(q.list_queues()) in ([], [child_mod.QUEUE])
    finally:
        q.close()


def crash_many_times(
    location: str,
    storage_options: Mapping[str, Any] | None,
    kills: int,
    workdir: Path,
    *,
    min_delay: float = 0.05,
    max_delay: float = 0.5,
) -> Ledger:
    seed = int(os.environ.get("TAQUBA_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"\n{location}: TAQUBA_CRASH_SEED={seed} TAQUBA_CRASH_KILLS={kills}")
    ledger = Ledger()
    for run in range(kills):
        what = f"kill {run + 1}/{kills} (seed {seed})"
        out_path = workdir / f"child-{run}.out"
        proc = spawn("crash", location, storage_options, run, out_path)
        try:
            if run % 5 == 4:
                # Now and then inside Queue.open: epoch claim, replay, fence, requeue.
                wait_for_line(proc, out_path, b"O")
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                wait_for_line(proc, out_path, b"S")
                time.sleep(rng.uniform(min_delay, max_delay))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(START_TIMEOUT) == -signal.SIGKILL, (
                f"{what}: the child exited by itself: {out_path.with_suffix('.err').read_text()}"
            )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = parse(out_path.read_text())
        ledger.opens_killed += b"S\n" not in out_path.read_bytes()
        assert not lines.problems, f"{what}: the child reported {lines.problems[:3]}"
        for jid in lines.enqueued:
            _, p, n = jid.split("-")
            key = (run, int(p[1:]))
            ledger.last_n[key] = max(ledger.last_n.get(key, -1), int(n))
        for producer in range(child_mod.PRODUCERS):
            ledger.last_n.setdefault((run, producer), -1)
        ledger.enqueued.update(lines.enqueued)
        ledger.acked.update(lines.acked)
        check_root(location, storage_options, ledger, lines, what)
    print(
        f"{location}: {kills} kills, {len(ledger.enqueued)} enqueues and "
        f"{len(ledger.acked)} acks reported, {ledger.claims_requeued} claims found requeued, "
        f"{ledger.kv_jobs} jobs with KV entries, {ledger.opens_killed} kills inside open, "
        f"{checkpoint_count(location, storage_options)} manifest versions"
    )
    return ledger


def checkpoint_count(location: str, storage_options: Mapping[str, Any] | None) -> int:
    """How many checkpoints the root has been through (its manifest chain is that long)."""
    from taquba.log import MANIFEST_DIR
    from taquba.storage import open_store

    store = open_store(location, storage_options=storage_options or None)
    try:
        names = store.list_dir(MANIFEST_DIR)
        return int(names[-1]) if names else 0
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_under_load_on_local_disk(tmp_path: Path) -> None:
    root = str(tmp_path / "q")
    ledger = crash_many_times(root, None, KILLS, tmp_path)
    # The runs did real work, and kills landed with claims in flight and across checkpoints.
    assert len(ledger.enqueued) > 20 * KILLS
    assert len(ledger.acked) > 10 * KILLS
    assert ledger.claims_requeued > 0
    assert ledger.kv_jobs > 0
    # manifests: one per open (2 per kill) plus one per checkpoint
    assert checkpoint_count(root, None) > 2 * KILLS + KILLS // 2


@pytest.mark.slow
@pytest.mark.parametrize("backend_root", ["s3"], indirect=True)
def test_sigkill_under_load_on_s3(backend_root: BackendRoot, tmp_path: Path) -> None:
    """Fewer, longer runs: every request goes to the emulator (a few ms each)."""
    kills = max(4, KILLS // 5)
    ledger = crash_many_times(
        backend_root.location,
        backend_root.storage_options,
        kills,
        tmp_path,
        min_delay=0.2,
        max_delay=1.5,
    )
    assert len(ledger.enqueued) > 5 * kills
    assert len(ledger.acked) > 2 * kills
    assert checkpoint_count(backend_root.location, backend_root.storage_options) > 2 * kills
