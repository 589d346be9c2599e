"""The systems under test, behind one small interface.

- ``taquba``: :class:`taquba.Queue` on a local directory (durable: every enqueue and ack
  returns after its segment is fsynced).
- ``huey``: huey's ``SqliteStorage`` (the storage layer of ``SqliteHuey``) used directly:
  ``enqueue(bytes)`` / ``dequeue()``; WAL journal with ``synchronous=FULL`` (``fsync=True``)
  when durable. huey's dequeue is destructive, so its "claim" already is claim+ack.
- ``persist-queue``: ``persistqueue.SQLiteAckQueue`` ``put`` / ``get`` / ``ack`` with a raw
  bytes serializer (no pickling), WAL with ``synchronous=FULL`` when durable. It keeps acked
  rows and its ``get`` scans past them from the start of the table, so a drain slows down
  quadratically (1 KiB, N=20,000: ~125 jobs/s); as its README advises, the adapter calls
  ``clear_acked_data(keep_latest=0)`` every 1,000 acks (the cost is included).

A system is opened on a directory; opening an existing directory is "reopen". ``durable=False``
(peers only; taquba is always durable) is used to build large stores quickly for scenarios
whose measurement does not depend on fsync; measurements themselves run durable.
"""

from __future__ import annotations

import os
import threading
import time
import types
from collections.abc import Sequence
from typing import Any

from .common import QUEUE, module_available

PEERS = ("huey", "persist-queue")
ALL_SYSTEMS = ("taquba", *PEERS)
_MODULES = {"taquba": "taquba", "huey": "huey", "persist-queue": "persistqueue"}


def available(name: str) -> bool:
    return module_available(_MODULES[name])


def version_of(name: str) -> str | None:
    from importlib import metadata

    dist = {"taquba": "taquba", "huey": "huey", "persist-queue": "persist-queue"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if name == "taquba":
            try:
                import taquba

                return str(taquba.__version__)
            except ImportError:
                return None
        return None


def queue_class() -> Any:
    """taquba's Queue (from the package root, else from taquba.queue)."""
    try:
        from taquba import Queue  # type: ignore[attr-defined]
    except ImportError:
        from taquba.queue import Queue
    return Queue


class System:
    name = "?"

    def enqueue(self, payload: bytes) -> None:
        raise NotImplementedError

    def enqueue_many(self, payloads: Sequence[bytes]) -> None:
        """Setup helper: load many jobs quickly (not a timed path for the peers)."""
        for p in payloads:
            self.enqueue(p)

    def claim(self, wait: float = 0.0) -> Any:
        """The next job's handle, or None (after up to ``wait`` seconds)."""
        raise NotImplementedError

    def payload(self, handle: Any) -> bytes:
        raise NotImplementedError

    def ack(self, handle: Any) -> None:
        raise NotImplementedError

    def set_durable(self, durable: bool) -> None:
        pass

    def close(self) -> None:
        raise NotImplementedError


# -- taquba ----------------------------------------------------------------------------------


class TaqubaSystem(System):
    name = "taquba"

    def __init__(
        self, root: Any, *, durable: bool = True, path: str | None = None, options: Any = None
    ) -> None:
        self.q = queue_class().open(root, path, options)

    def enqueue(self, payload: bytes) -> None:
        self.q.enqueue(QUEUE, payload)

    def enqueue_many(self, payloads: Sequence[bytes]) -> None:
        for i in range(0, len(payloads), 1000):
            self.q.enqueue_batch(QUEUE, list(payloads[i : i + 1000]))

    def claim(self, wait: float = 0.0) -> Any:
        return self.q.claim(QUEUE, wait=wait)

    def payload(self, handle: Any) -> bytes:
        return bytes(handle.payload)

    def ack(self, handle: Any) -> None:
        self.q.ack(handle)

    def close(self) -> None:
        self.q.close()


def store_of(q: Any) -> Any:
    for attr in ("store", "_store"):
        s = getattr(q, attr, None)
        if s is not None and hasattr(s, "counts"):
            return s
    for attr in ("log", "_log"):
        log = getattr(q, attr, None)
        s = getattr(log, "store", None) or getattr(log, "_store", None)
        if s is not None and hasattr(s, "counts"):
            return s
    return None


def request_counts(q: Any) -> dict[str, int] | None:
    """The store's request counters as a dict (None if the queue does not expose them)."""
    s = store_of(q)
    if s is None:
        return None
    c = s.counts
    return {
        k: int(getattr(c, k))
        for k in ("puts", "gets", "lists", "deletes", "bytes_written", "bytes_read")
    }


def counts_delta(
    after: dict[str, int] | None, before: dict[str, int] | None
) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {k: after[k] - before.get(k, 0) for k in after}


_RECORDS = ("records_committed", "records", "committed_records", "commits")
_SEGMENTS = ("segments_written", "segments", "segment_puts", "puts", "batches")


def commit_stats(q: Any) -> dict[str, int] | None:
    """{'records': committed records, 'segments': segment PUTs} from the committer, if exposed."""
    committer = getattr(q, "committer", None) or getattr(q, "_committer", None)
    stats = getattr(committer, "stats", None)
    if callable(stats):
        stats = stats()
    if stats is None:
        return None

    def pick(names: tuple[str, ...]) -> int | None:
        for n in names:
            v = stats.get(n) if isinstance(stats, dict) else getattr(stats, n, None)
            if isinstance(v, int):
                return v
        return None

    records, segments = pick(_RECORDS), pick(_SEGMENTS)
    if records is None or segments is None:
        return None
    out = {"records": records, "segments": segments}
    checkpoints = pick(("checkpoints_written", "checkpoints"))
    if checkpoints is not None:
        out["checkpoints"] = checkpoints
    return out


# -- huey ------------------------------------------------------------------------------------


class HueySystem(System):
    name = "huey"

    def __init__(self, root: str, *, durable: bool = True) -> None:
        from huey.storage import SqliteStorage

        os.makedirs(root, exist_ok=True)
        self.s = SqliteStorage(name=QUEUE, filename=os.path.join(root, "huey.db"), fsync=durable)

    def enqueue(self, payload: bytes) -> None:
        self.s.enqueue(payload)

    def enqueue_many(self, payloads: Sequence[bytes]) -> None:
        # Setup only: one transaction (huey has no batch enqueue).
        with self.s.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [(QUEUE, p, 0) for p in payloads],
            )

    def claim(self, wait: float = 0.0) -> Any:
        data = self.s.dequeue()
        if data is None and wait > 0:
            # The storage layer has no blocking dequeue; huey's consumer polls with a
            # backoff of 0.1 s and up. Poll every 1 ms here (kinder to huey's latency).
            deadline = time.monotonic() + wait
            while data is None and time.monotonic() < deadline:
                time.sleep(0.001)
                data = self.s.dequeue()
        return data

    def payload(self, handle: Any) -> bytes:
        return bytes(handle)

    def ack(self, handle: Any) -> None:
        pass  # dequeue already deleted the task

    def set_durable(self, durable: bool) -> None:
        with self.s.lock:
            self.s.conn.execute(f"pragma synchronous={2 if durable else 0}")

    def close(self) -> None:
        self.s.close()


# -- persist-queue ---------------------------------------------------------------------------

CLEAR_ACKED_EVERY = 1000
RAW_SERIALIZER = types.SimpleNamespace(dumps=lambda obj: obj, loads=lambda data: data)


class PersistQueueSystem(System):
    name = "persist-queue"

    def __init__(self, root: str, *, durable: bool = True) -> None:
        import persistqueue

        self._empty = persistqueue.Empty
        self._acks = 0
        self._acks_lock = threading.Lock()
        self.q = persistqueue.SQLiteAckQueue(
            root, multithreading=True, auto_resume=True, serializer=RAW_SERIALIZER
        )
        self.set_durable(durable)

    def enqueue(self, payload: bytes) -> None:
        self.q.put(payload)

    def enqueue_many(self, payloads: Sequence[bytes]) -> None:
        # Setup only: one transaction through the queue's own insert statement.
        q = self.q
        now = time.time()
        with q.tran_lock, q._putter as conn:
            conn.executemany(q._sql_insert, [(p, now) for p in payloads])
        q.total += len(payloads)

    def claim(self, wait: float = 0.0) -> Any:
        try:
            if wait > 0:
                return self.q.get(block=True, timeout=wait, raw=True)
            return self.q.get(block=False, raw=True)
        except self._empty:
            return None

    def payload(self, handle: Any) -> bytes:
        return bytes(handle["data"])

    def ack(self, handle: Any) -> None:
        self.q.ack(id=handle["pqid"])
        with self._acks_lock:
            self._acks += 1
            due = self._acks % CLEAR_ACKED_EVERY == 0
        if due:
            self.q.clear_acked_data(max_delete=5 * CLEAR_ACKED_EVERY, keep_latest=0)

    def set_durable(self, durable: bool) -> None:
        with self.q.tran_lock:
            for conn in {id(c): c for c in (self.q._putter, self.q._getter)}.values():
                conn.execute(f"pragma synchronous={'FULL' if durable else 'OFF'}")

    def close(self) -> None:
        self.q.close()


def open_system(name: str, root: str, *, durable: bool = True) -> System:
    if name == "taquba":
        return TaqubaSystem(root)
    if name == "huey":
        return HueySystem(root, durable=durable)
    if name == "persist-queue":
        return PersistQueueSystem(root, durable=durable)
    raise ValueError(f"unknown system {name!r}")
