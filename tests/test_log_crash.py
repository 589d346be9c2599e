"""Separate OS processes on one root: SIGKILL at random moments, and fencing.

The writer is tests/support/log_child.py. Only local disk and emulator backends can be shared
between processes (the memory filesystem lives inside one process).

``TAQUBA_CRASH_ROUNDS`` sets the number of kills (default 24), ``TAQUBA_CRASH_SEED`` the
random seed (default: a fresh one, printed so a failure can be replayed).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import log_child
from support.backends import BackendRoot, local_root
from support.log_child import Chain

import taquba
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Log
from taquba.log.format import MAGIC_SEGMENT, decode
from taquba.log.manifest import decode_manifest
from taquba.storage import Store

CHILD = log_child.__file__
ROUNDS = int(os.environ.get("TAQUBA_CRASH_ROUNDS", "24"))
LINE_TIMEOUT = 60.0  # generous: only guards against a hung child, never measures speed


_STARTED: list[Child] = []


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Whatever a test does, no child outlives it (a busy one would write forever)."""
    yield
    while _STARTED:
        child = _STARTED.pop()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(LINE_TIMEOUT)


@dataclass
class Child:
    """A running tests/support/log_child.py whose stdout lines are collected by a thread."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, mode: str, root: BackendRoot) -> Child:
        # The child must run the taquba this process imported, whatever is installed.
        package_parent = str(Path(taquba.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (package_parent, os.environ.get("PYTHONPATH")) if p
            ),
        }
        proc = subprocess.Popen(
            [sys.executable, CHILD, mode, root.to_json()],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = cls(proc)
        _STARTED.append(child)
        threading.Thread(target=child._pump, daemon=True).start()
        return child

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"child printed nothing for {LINE_TIMEOUT}s") from None
        if line is None:
            raise AssertionError(
                f"child exited ({self.proc.wait()}) after {self.seen[-5:]}: {self.stderr()}"
            )
        self.seen.append(line)
        return line

    def wait_for(self, prefix: str) -> str:
        while True:
            line = self.next_line()
            if line.startswith(prefix):
                return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(LINE_TIMEOUT)

    def finish(self) -> list[str]:
        """Wait for exit; return every line it printed."""
        self.proc.wait(LINE_TIMEOUT)
        while True:
            line = self.lines.get(timeout=LINE_TIMEOUT)
            if line is None:
                return self.seen
            self.seen.append(line)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def acked(self) -> list[int]:
        return [int(line.split()[1]) for line in self.seen if line.startswith("ack ")]


@pytest.fixture
def disk_root(tmp_path: Path) -> BackendRoot:
    return local_root(tmp_path / "root")


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def shared_root(request: pytest.FixtureRequest, tmp_path: Path) -> BackendRoot:
    """A root two processes can share: local disk, or a bucket on an emulator."""
    if request.param == "local":
        return local_root(tmp_path / "root")
    root: BackendRoot = request.getfixturevalue(f"{request.param}_emulator").root()
    return root


def replay_chain(root: BackendRoot) -> tuple[Log, Chain]:
    chain = Chain()
    log = Log.open(root.store(), on_snapshot=chain.on_snapshot, on_record=chain.on_record)
    return log, chain


def all_objects(store: Store) -> dict[str, list[str]]:
    return {d: store.list_dir(d) for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)}


# -- SIGKILL at random moments --------------------------------------------------------------


def test_sigkill_at_random_moments_loses_nothing_acknowledged(disk_root):
    seed = int(os.environ.get("TAQUBA_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    print(f"\ncrash test: TAQUBA_CRASH_SEED={seed} TAQUBA_CRASH_ROUNDS={ROUNDS}")
    durable_upto = -1  # every id <= this was replayed after some kill
    acked_total = snapshots = 0
    for round_ in range(ROUNDS):
        child = Child.start("crash", disk_root)
        if round_ % 4 == 3:
            # Anywhere, including during imports and Log.open (epoch claim, replay, fence).
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            ready = child.wait_for("ready ")
            assert int(ready.split()[1]) == durable_upto + 1  # the child replayed it all
            time.sleep(rng.uniform(0.01, 0.4))
        child.kill()
        lines = child.finish()
        assert child.proc.returncode == -signal.SIGKILL, (lines[-3:], child.stderr())
        assert not [line for line in lines if line.startswith("error")], child.stderr()
        acked = child.acked()
        acked_total += len(acked)
        snapshots += lines.count("snapshot")

        log, chain = replay_chain(disk_root)
        log.close()
        assert chain.repeats == [], f"round {round_}: ids replayed twice: {chain.repeats[:10]}"
        if not chain.ranges:
            assert durable_upto == -1 and not acked
            continue
        # One unbroken run from 0: in order, no gaps, nothing that was replayed before lost.
        assert len(chain.ranges) == 1 and chain.ranges[0][0] == 0, (
            f"round {round_}: gaps in the replayed ids: {chain.ranges[:5]}"
        )
        last = chain.ranges[0][1]
        assert last >= durable_upto, f"round {round_}: ids {last + 1}..{durable_upto} vanished"
        if acked:
            assert max(acked) <= last, (
                f"round {round_}: acknowledged ids up to {max(acked)}, replayed only to {last}"
            )
        durable_upto = last

    store = disk_root.store()
    objects = all_objects(store)
    print(
        f"crash test: {ROUNDS} kills, {acked_total} acks, {durable_upto + 1} records "
        f"replayed, {snapshots} checkpoints started; left: {len(objects[SEGMENT_DIR])} "
        f"segments, {len(objects[CHECKPOINT_DIR])} checkpoints, "
        f"{len(objects[MANIFEST_DIR])} manifests"
    )
    assert acked_total > 10 * ROUNDS  # the children really did work between kills
    assert snapshots >= ROUNDS  # ... and checkpointed all along, so kills hit that too
    assert durable_upto + 1 >= acked_total


# -- fencing across processes ---------------------------------------------------------------


def test_second_process_fences_an_idle_first_one(shared_root):
    first = Child.start("idle", shared_root)
    first.wait_for("ready")
    acked = first.acked()
    assert acked == list(range(20))

    log, chain = replay_chain(shared_root)  # this process is the second writer
    assert chain.ranges == [[0, 19]]
    reader = shared_root.store()
    before = all_objects(reader)

    first.send("append")
    kind, requests = first.wait_for("error ").split()[1:]
    assert kind == "FencedError"
    assert int(requests) >= 1  # it tried, and lost the put-if-absent
    first.send("append")
    kind, requests = first.wait_for("error ").split()[1:]
    assert kind == "FencedError" and requests == "0"  # broken: not even a request
    assert all_objects(reader) == before  # the fenced process wrote nothing
    first.send("exit")
    first.finish()
    assert first.proc.returncode == 0, first.stderr()

    # The second process carries on, and a third sees both.
    log.append([b"20 from the second"])
    _, chain = replay_chain(shared_root)
    assert chain.ranges == [[0, 20]]


def test_second_process_fences_a_busy_first_one(shared_root):
    first = Child.start("race", shared_root)
    first.wait_for("ready")
    while len(first.acked()) < 50:
        first.next_line()
    log, chain = replay_chain(shared_root)  # while the first one is appending
    lines = first.finish()
    assert first.proc.returncode == 0, first.stderr()
    acked = first.acked()
    errors = {line.split()[1] for line in lines if line.startswith("error ")}
    [after] = [line for line in lines if line.startswith("after ")]
    print(f"\n{shared_root.name}: first process acked {len(acked)} records, then {errors}")

    # Everything the first process acknowledged was replayed by the second, in order.
    assert chain.repeats == [] and len(chain.ranges) == 1 and chain.ranges[0][0] == 0
    assert max(acked) <= chain.ranges[0][1]
    assert errors == {"FencedError"}
    kinds, requests = after.split()[1:]
    assert set(kinds.split(",")) == {"FencedError"} and requests == "0"

    # Nothing the first process wrote after the second one's fence: the segments past the
    # replayed ones are the second writer's fence alone.
    reader = shared_root.store()
    segment_names = reader.list_dir(SEGMENT_DIR)
    assert int(segment_names[-1]) == log.next_seq - 1
    key = f"{SEGMENT_DIR}/{segment_names[-1]}"
    fields, records = decode(key, MAGIC_SEGMENT, reader.get(key))
    assert records == [] and fields["epoch"] == log.epoch


# -- a crash while a checkpoint deletes what it covers -----------------------------------------


def test_sigkill_during_checkpoint_cleanup_leaves_leftovers_the_next_open_removes(disk_root):
    child = Child.start("cleanup", disk_root)
    last = int(child.wait_for("ready ").split()[1])
    deleted = int(child.wait_for("deleting ").split()[1])
    child.kill()
    assert deleted > 0
    store = disk_root.store()
    [manifest] = store.list_dir(MANIFEST_DIR)
    replay_from = decode_manifest(manifest, store.get(f"{MANIFEST_DIR}/{manifest}")).replay_from
    assert replay_from == last + 1  # the checkpoint's version is durable ...
    leftovers = [int(n) for n in store.list_dir(SEGMENT_DIR) if int(n) < replay_from]
    assert len(leftovers) >= 20  # ... and half of what it covers is still there

    log, chain = replay_chain(disk_root)
    log.close()
    assert chain.ranges == [[0, 59]] and chain.repeats == []
    objects = all_objects(store)
    # below replay_from only the opener's own fence is left, kept while it owns the root
    assert [int(n) for n in objects[SEGMENT_DIR] if int(n) < log.replay_from] == [log.next_seq - 1]
    assert len(objects[CHECKPOINT_DIR]) == 1 and len(objects[MANIFEST_DIR]) == 1
