"""Two writers on one root: the newer one fences the older, and nothing acknowledged is lost.

- Across processes (local disk and the S3 emulator): process A (tests/support/queue_child.py) owns
  the queue; this test process opens the same root as B. A's next durable call raises
  ``FencedError`` (A prints it), A writes nothing more, and B has every job A reported
  durable. Once while A is idle (each kind of durable call checked one by one), once while
  A's producers and workers are busy (B opens in the middle of their commits).
- In one process: two ``Queue`` handles, on every backend; and a busy first handle, with
  checkpoints all the time, taken over by a second.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from taquba import (
    CancelOutcome,
    Claim,
    EnqueueOptions,
    FencedError,
    JobStatus,
    OpenOptions,
    Queue,
    QueueClosed,
    QueueConfig,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import queue_child as child_mod
from support.backends import BackendRoot

from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR

CHILD = child_mod.__file__
LINE_TIMEOUT = 60.0  # only guards against a hung child, never measures speed
CHECKPOINT_MIN_BYTES = 2048
Q = child_mod.QUEUE
TWO_PROCESS_BACKENDS = ["local", "s3"]


class Child:
    """A running tests/support/queue_child.py whose stdout lines are collected by a thread."""

    def __init__(self, mode: str, root: BackendRoot, run: int, checkpoint_min_bytes: int) -> None:
        spec = {
            "mode": mode,
            "location": root.location,
            "storage_options": root.storage_options,
            "run": run,
            "checkpoint_min_bytes": checkpoint_min_bytes,
        }
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str | None:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"the child printed nothing for {LINE_TIMEOUT} s") from None
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, done: Any) -> None:
        """Read lines until ``done(self.seen)`` holds."""
        while not done(self.seen):
            if self.next_line() is None:
                raise AssertionError(f"the child exited ({self.proc.wait()}): {self.stderr()}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> list[str]:
        """Wait for the child to exit; every line it printed."""
        while self.next_line() is not None:
            pass
        assert self.proc.wait(LINE_TIMEOUT) == 0, self.stderr()
        return self.seen

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def ids(self, kind: str) -> list[str]:
        return [line.split()[1] for line in self.seen if line.split()[0] == kind]

    def fenced(self) -> list[tuple[str, str]]:
        return [(line.split()[1], line.split()[2]) for line in self.seen if line[:2] == "F "]

    def problems(self) -> list[str]:
        return [line for line in self.seen if line[:2] == "X "]


def open_root(root: BackendRoot, *, never_checkpoint: bool = False) -> Queue:
    """A handle with the children's options; ``never_checkpoint`` keeps the objects on the
    root still between calls (a checkpoint is written after the call that triggered it)."""
    threshold = 1 << 40 if never_checkpoint else CHECKPOINT_MIN_BYTES
    return Queue.open(
        root.location,
        options=child_mod.options(threshold, background_threads=False),
        storage_options=root.storage_options or None,
    )


def objects(root: BackendRoot) -> dict[str, list[str]]:
    store = root.store()
    try:
        return {d: store.list_dir(d) for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)}
    finally:
        store.close()


def flush(q: Queue) -> None:
    """Wait until everything the handle submitted is durable (claims do not wait)."""
    q.kv_delete(b"no such key")


# -- two processes -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend_root", TWO_PROCESS_BACKENDS, indirect=True)
def test_second_process_fences_an_idle_first_one(backend_root: BackendRoot) -> None:
    a = Child("idle", backend_root, run=0, checkpoint_min_bytes=1 << 40)
    a.wait_for(lambda seen: "ready" in seen)
    enqueued, claimed, acked = a.ids("E"), a.ids("C"), a.ids("A")
    assert (len(enqueued), len(claimed), len(acked)) == (20, 5, 3)

    b = open_root(backend_root, never_checkpoint=True)  # this process takes over
    try:
        flush(b)  # B's own requeue of A's claims is durable: the objects are B's alone now
        for jid in enqueued:
            rec = b.get_job(jid)
            assert rec is not None and rec.payload == child_mod.payload(jid), jid
        assert {j: b.get_job(j).status for j in acked} == dict.fromkeys(acked, JobStatus.DONE)  # type: ignore[union-attr]
        # A's two unsettled claims were abandoned: pending again, the attempt counted
        for jid in claimed[3:]:
            rec = b.get_job(jid)
            assert rec is not None and (rec.status, rec.attempts) == (JobStatus.PENDING, 1)
        stats = b.stats(Q)
        assert (stats.pending, stats.claimed, stats.done) == (17, 0, 3)
        before = objects(backend_root)

        a.send("go")
        a.wait_for(lambda seen: "D" in seen)
        a.finish()
        assert not a.problems(), a.problems()
        assert [op for op, _ in a.fenced()] == ["enqueue", "ack", "nack"], a.seen[-5:]
        assert objects(backend_root) == before, "the fenced process wrote something"

        # B carries on as the writer; what A attempted after the take-over never happened.
        attempted = child_mod.job_id(0, 1, 0)
        assert b.get_job(attempted) is None
        c = b.claim(Q)
        assert c is not None
        b.ack(c)
    finally:
        b.close()
    c_handle = open_root(backend_root)
    try:
        assert c_handle.get_job(child_mod.job_id(0, 1, 0)) is None
        stats = c_handle.stats(Q)
        assert (stats.pending, stats.claimed, stats.done) == (16, 0, 4)
        for jid in claimed[3:]:
            assert c_handle.get_job(jid).status is not JobStatus.CLAIMED  # type: ignore[union-attr]
    finally:
        c_handle.close()


@pytest.mark.parametrize("backend_root", TWO_PROCESS_BACKENDS, indirect=True)
def test_second_process_fences_a_busy_first_one(backend_root: BackendRoot) -> None:
    a = Child("busy", backend_root, run=0, checkpoint_min_bytes=CHECKPOINT_MIN_BYTES)
    a.wait_for(lambda seen: len(a.ids("E")) >= 40 and len(a.ids("A")) >= 10)

    b = open_root(backend_root)  # while A's threads are committing
    try:
        lines = a.finish()  # every thread of A stops at its first FencedError
        assert not a.problems(), a.problems()
        assert lines[-1] == "D"
        fenced = a.fenced()
        assert len(fenced) == child_mod.PRODUCERS + child_mod.WORKERS, fenced
        enqueued, acked = a.ids("E"), a.ids("A")
        print(
            f"\n{backend_root.name}: A reported {len(enqueued)} enqueues and {len(acked)} "
            f"acks before it was fenced: {sorted({op for op, _ in fenced})}"
        )
        check_nothing_lost(b, enqueued, acked, fenced)
    finally:
        b.close()
    c = open_root(backend_root)
    try:
        check_nothing_lost(c, enqueued, acked, fenced)
    finally:
        c.close()


def check_nothing_lost(
    q: Queue, enqueued: list[str], acked: list[str], fenced: list[tuple[str, str]]
) -> None:
    for jid in enqueued:
        rec = q.get_job(jid)
        assert rec is not None, f"{jid}: acknowledged by the fenced process, lost"
        assert rec.status in (JobStatus.PENDING, JobStatus.DONE), (jid, rec.status)
        n = int(jid.rsplit("-", 1)[1])
        if child_mod.with_kv(n):
            assert q.kv_get(child_mod.kv_key(jid)) == child_mod.payload(jid), jid
    for jid in acked:
        rec = q.get_job(jid)
        assert rec is not None and rec.status is JobStatus.DONE, f"{jid}: acked, now {rec}"
    for op, jid in fenced:
        if op.startswith("enqueue"):  # it raised: the job must not exist, nor its KV entry
            assert q.get_job(jid) is None, f"{jid}: its enqueue raised FencedError, yet it exists"
            assert q.kv_get(child_mod.kv_key(jid)) is None
        elif op == "ack":
            # (A worker may claim a job whose enqueue is not durable yet: if the enqueue then
            # lost to the fence too, the job is gone — its producer was never told otherwise.)
            rec = q.get_job(jid)
            assert rec is None or rec.status is not JobStatus.DONE, (
                f"{jid}: its ack raised FencedError, yet it is {rec}"
            )
    assert q.stats(Q).claimed == 0


# -- one process, two handles ------------------------------------------------------------------


def _late_calls(q1: Queue, claim: Claim, ids: Mapping[str, str]) -> dict[str, Any]:
    """Each durable call, as the replaced handle would make it."""
    return {
        "enqueue": lambda: q1.enqueue(Q, b"late", job_id="late"),
        "enqueue_with_kv": lambda: q1.enqueue_with_kv(
            Q, b"late", {b"late": b"v"}, EnqueueOptions(job_id="late")
        ),
        "enqueue_batch": lambda: q1.enqueue_batch(Q, [b"late", b"later"]),
        "ack": lambda: q1.ack(claim),
        "nack": lambda: q1.nack(claim, "late"),
        "dead_letter": lambda: q1.dead_letter(claim, "late"),
        "cancel_pending": lambda: q1.cancel(ids["pending"]),
        "cancel_claimed": lambda: q1.cancel(ids["claimed"]),
        "requeue_dead_job": lambda: q1.requeue_dead_job(ids["dead"]),
        "kv_delete": lambda: q1.kv_delete(b"k"),
    }


LATE_CALLS = [
    "enqueue",
    "enqueue_with_kv",
    "enqueue_batch",
    "ack",
    "nack",
    "dead_letter",
    "cancel_pending",
    "cancel_claimed",
    "requeue_dead_job",
    "kv_delete",
]


def test_each_durable_call_of_a_replaced_handle_raises_fenced(backend_root: BackendRoot) -> None:
    """Per kind of durable call: a handle replaced by a second one raises FencedError on it
    (its put loses), writes nothing, and stays broken; the second handle has exactly what
    the first acknowledged."""
    for op in LATE_CALLS:
        root = BackendRoot(
            backend_root.name, f"{backend_root.location}/{op}", backend_root.storage_options
        )
        q1 = open_root(root, never_checkpoint=True)
        q2 = None
        try:
            ids = {"dead": q1.enqueue(Q, b"dead")}
            c = q1.claim(Q)
            assert c is not None and c.id == ids["dead"]
            q1.dead_letter(c, "poison")
            ids["done"] = q1.enqueue(Q, b"done")
            c = q1.claim(Q)
            assert c is not None and c.id == ids["done"]
            q1.ack(c)
            ids["claimed"] = q1.enqueue(Q, b"claimed")
            held = q1.claim(Q)
            assert held is not None and held.id == ids["claimed"]
            ids["pending"] = q1.enqueue(Q, b"pending")
            ids["kv"] = q1.enqueue_with_kv(Q, b"kv", {b"k": b"v"}).id
            flush(q1)

            q2 = open_root(root, never_checkpoint=True)
            flush(q2)
            before = objects(root)
            with pytest.raises(FencedError):
                _late_calls(q1, held, ids)[op]()
            with pytest.raises(FencedError):  # broken for good, even for a claim
                q1.claim(Q)
            assert objects(root) == before, f"{op}: the fenced handle wrote something"
            q1.close()  # closing a fenced handle is quiet
            with pytest.raises(QueueClosed):
                q1.enqueue(Q, b"closed")

            for q in (q2, None):
                if q is None:  # and once more from a fresh handle
                    q2.close()
                    q = q2 = open_root(root, never_checkpoint=True)
                status = {k: q.get_job(v).status for k, v in ids.items()}  # type: ignore[union-attr]
                assert status == {
                    "dead": JobStatus.DEAD,
                    "done": JobStatus.DONE,
                    "claimed": JobStatus.PENDING,
                    "pending": JobStatus.PENDING,
                    "kv": JobStatus.PENDING,
                }, op
                assert q.get_job(ids["claimed"]).attempts == 1  # type: ignore[union-attr]
                assert q.get_job("late") is None and q.kv_get(b"late") is None, op
                assert q.kv_get(b"k") == b"v", op
                stats = q.stats(Q)
                assert (stats.pending, stats.claimed, stats.done, stats.dead) == (3, 0, 1, 1), op
            assert q2.cancel(ids["pending"]) is CancelOutcome.REMOVED  # the new writer writes
        finally:
            q1.close()
            if q2 is not None:
                q2.close()


def test_busy_handle_taken_over_in_one_process(fast_backend_root: BackendRoot) -> None:
    """Producers and workers on the first handle, checkpointing all the time, when a second
    handle opens: whatever the first acknowledged is in the second, and every thread on the
    first stops at a FencedError. Five take-overs at different moments, on one root."""
    for round_, enqueues_before in enumerate((1, 10, 30, 60, 100)):
        take_over_a_busy_handle(fast_backend_root, round_, enqueues_before)


def take_over_a_busy_handle(root: BackendRoot, round_: int, enqueues_before: int) -> None:
    options = OpenOptions(
        default_queue_config=QueueConfig(lease=3600.0, keep_done=3600.0),
        checkpoint_min_bytes=512,
        checkpoint_ratio=0.1,
        background_threads=False,
    )
    storage_options = root.storage_options or None
    q1 = Queue.open(root.location, options=options, storage_options=storage_options)
    done: dict[str, list[str]] = {"E": [], "A": [], "F": [], "X": []}
    lock = threading.Lock()

    def note(kind: str, jid: str) -> None:
        with lock:
            done[kind].append(jid)

    def produce(p: int) -> None:
        n = 0
        while True:
            jid = f"r{round_}-p{p}-{n}"
            try:
                q1.enqueue_with_kv(
                    Q, jid.encode(), {jid.encode(): b"v"}, EnqueueOptions(job_id=jid)
                )
            except FencedError:
                note("F", jid)
                return
            except Exception as exc:
                note("X", f"enqueue {jid}: {exc!r}")
                return
            note("E", jid)
            n += 1

    def work() -> None:
        while True:
            try:
                c = q1.claim(Q, wait=0.01)
                if c is not None:
                    q1.ack(c)
                    note("A", c.id)
            except FencedError:
                return
            except Exception as exc:
                note("X", f"claim/ack: {exc!r}")
                return

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(3)]
    threads += [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + LINE_TIMEOUT
    while len(done["E"]) < enqueues_before and time.monotonic() < deadline:
        time.sleep(0.0005)
    q2 = Queue.open(root.location, options=options, storage_options=storage_options)
    try:
        for t in threads:
            t.join(LINE_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a thread on the fenced handle hangs"
        assert not done["X"], f"not a FencedError: {done['X'][:3]}"
        assert len(done["F"]) == 3
        check_in_process_take_over(q2, done)
    finally:
        q1.close()
        q2.close()
    q3 = Queue.open(root.location, options=options, storage_options=storage_options)
    try:
        check_in_process_take_over(q3, done)
    finally:
        q3.close()


def check_in_process_take_over(q: Queue, done: Mapping[str, list[str]]) -> None:
    for jid in done["E"]:
        rec = q.get_job(jid)
        assert rec is not None and rec.status in (JobStatus.PENDING, JobStatus.DONE), jid
        assert q.kv_get(jid.encode()) == b"v"
    for jid in done["A"]:
        rec = q.get_job(jid)
        assert rec is not None and rec.status is JobStatus.DONE, (jid, rec)
    for jid in done["F"]:
        assert q.get_job(jid) is None and q.kv_get(jid.encode()) is None, jid
    assert q.stats(Q).claimed == 0
