"""A writer process for tests/test_log_crash.py: SIGKILLed at random, or fenced by its parent.

    python tests/support/log_child.py MODE ROOT_JSON

``ROOT_JSON`` is ``BackendRoot.to_json()`` (see tests/support/backends.py). Every stdout line is one
event, written with a single ``os.write`` (atomic on a pipe) only after the fact it reports:
an ``ack <id>`` line is written after ``Committer.append`` returned for that record.

Modes:

- ``crash``: four threads append consecutive ids forever through one committer, with
  frequent checkpoints, until the parent kills the process.
- ``idle``: append 20 records, print ``ready``, then obey stdin commands: ``append`` tries
  one more append and prints ``ok`` or ``error <ExceptionType> <requests made>``;
  ``exit`` closes and exits.
- ``race``: like ``crash`` (without checkpoints) until the first append fails; each thread
  prints ``error <ExceptionType>`` and stops, then the main thread tries three more appends
  and prints ``after <types> <requests made by them>``.
- ``cleanup``: append 60 records, one segment each, then checkpoint; the deletion of what
  the checkpoint covers stops halfway (``deleting <n>`` once n objects are gone) and hangs
  there until the parent kills the process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

# tests/ on the path, for ``support.backends`` when run as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support.backends import BackendRoot
from taquba.committer import Committer
from taquba.log import Log

THREADS = 4
CHECKPOINT_MIN_BYTES = 2048
PADDING = b"." * 48


class Chain:
    """The crash model: records are consecutive ids, the state is the list of id ranges.

    A lost or reordered record shows up as a second range (or a repeated id), and since
    every snapshot is this state, a loss survives checkpoints instead of being papered over.
    """

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []
        self.repeats: list[int] = []

    def on_snapshot(self, data: bytes) -> None:
        self.ranges = json.loads(data)["ranges"]

    def on_record(self, data: bytes) -> None:
        self.add(int(data.split(b" ", 1)[0]))

    def add(self, i: int) -> None:
        if self.ranges and i <= self.ranges[-1][1]:
            self.repeats.append(i)
        elif self.ranges and self.ranges[-1][1] + 1 == i:
            self.ranges[-1][1] = i
        else:
            self.ranges.append([i, i])

    def snapshot(self) -> bytes:
        return json.dumps({"ranges": self.ranges}).encode()

    @property
    def next_id(self) -> int:
        return self.ranges[-1][1] + 1 if self.ranges else 0


def record(i: int) -> bytes:
    return b"%d " % i + PADDING


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _open(root: BackendRoot, snapshots: bool) -> tuple[Any, Chain, Committer]:
    store = root.store()
    chain = Chain()
    log = Log.open(
        store,
        on_snapshot=chain.on_snapshot,
        on_record=chain.on_record,
        checkpoint_min_bytes=CHECKPOINT_MIN_BYTES,
    )

    def snapshot() -> bytes:
        emit("snapshot")
        return chain.snapshot()

    committer = Committer(log, snapshot=snapshot if snapshots else None)
    return store, chain, committer


def _append_next(chain: Chain, committer: Committer) -> int:
    with committer.lock:
        i = chain.next_id
        chain.add(i)
        ticket = committer.submit_locked(record(i))
        committer.wait_locked(ticket)
    return i


def crash(root: BackendRoot) -> None:
    _, chain, committer = _open(root, snapshots=True)
    emit(f"ready {chain.next_id}")

    def writer() -> None:
        try:
            while True:
                emit(f"ack {_append_next(chain, committer)}")
        except BaseException as exc:
            emit(f"error {type(exc).__name__} {exc}")
            os._exit(3)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def idle(root: BackendRoot) -> None:
    store, chain, committer = _open(root, snapshots=False)
    for _ in range(20):
        emit(f"ack {_append_next(chain, committer)}")
    emit("ready")
    for line in sys.stdin:
        command = line.strip()
        if command == "append":
            before = store.counts.copy()
            try:
                _append_next(chain, committer)
            except Exception as exc:
                emit(f"error {type(exc).__name__} {(store.counts - before).total()}")
            else:
                emit("ok")
        elif command == "exit":
            committer.close(timeout=30)
            return


def race(root: BackendRoot) -> None:
    store, chain, committer = _open(root, snapshots=False)
    emit("ready")

    def writer() -> None:
        try:
            while True:
                emit(f"ack {_append_next(chain, committer)}")
        except Exception as exc:
            emit(f"error {type(exc).__name__}")

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = store.counts.copy()
    kinds = []
    for _ in range(3):
        try:
            _append_next(chain, committer)
            kinds.append("ok")
        except Exception as exc:
            kinds.append(type(exc).__name__)
    emit(f"after {','.join(kinds)} {(store.counts - before).total()}")
    committer.close(timeout=30)


def cleanup(root: BackendRoot) -> None:
    store = root.store()
    chain = Chain()
    log = Log.open(
        store, on_snapshot=chain.on_snapshot, on_record=chain.on_record, segment_max_bytes=0
    )
    seq = 0
    for _ in range(60):
        i = chain.next_id
        chain.add(i)
        seq = log.append([record(i)])
    real_delete = store._raw_delete

    def delete_half_then_hang(keys: list[str]) -> None:
        real_delete(keys[: len(keys) // 2])
        emit(f"deleting {len(keys) // 2}")
        threading.Event().wait()  # until killed

    store._raw_delete = delete_half_then_hang  # type: ignore[method-assign]
    emit(f"ready {seq}")
    log.checkpoint(chain.snapshot(), seq)


if __name__ == "__main__":
    mode, root_json = sys.argv[1], sys.argv[2]
    {"crash": crash, "idle": idle, "race": race, "cleanup": cleanup}[mode](
        BackendRoot.from_json(root_json)
    )
