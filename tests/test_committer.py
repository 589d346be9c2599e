"""The group-commit thread: batching, the durability promise, ordering, failures.

Durability is checked from the outside: a record counts as durable once a separate store
finds it in a segment object (read and decoded directly, so the check never claims the
writer epoch and never fences the writer it is checking).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pytest
from support.backends import drop_memory_root, memory_root
from support.faulty import FaultyFileSystem

from taquba.committer import Committer
from taquba.errors import (
    FencedError,
    PermanentStorageError,
    QueueBroken,
    QueueClosed,
    StorageError,
    TransientStorageError,
)
from taquba.log import CHECKPOINT_DIR, SEGMENT_DIR, Log
from taquba.log.format import MAGIC_SEGMENT, decode, decode_blocks, decode_header
from taquba.storage import Store, open_store

THREADS = 64


class Replayed:
    def __init__(self) -> None:
        self.snapshots: list[bytes] = []
        self.records: list[bytes] = []


def open_log(store: Store, **kwargs: object) -> tuple[Log, Replayed]:
    # One object per commit unless a test asks for appended segments (local disk's default),
    # so that tests can count and inspect commits as segments.
    kwargs.setdefault("segment_max_bytes", 0)
    seen = Replayed()
    log = Log.open(
        store, on_snapshot=seen.snapshots.append, on_record=seen.records.append, **kwargs
    )
    return log, seen


def replay(root) -> Replayed:
    return open_log(root.store())[1]


class SegmentReader:
    """Finds records in segment objects without opening the log.

    Segments are immutable, so each one is fetched once and remembered, except appended
    ones (local disk), which grow and are fetched again; every lookup lists the directory
    again to see new ones.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.segments: dict[str, list[bytes]] = {}
        self.found: set[bytes] = set()
        self.growing: set[str] = set()

    def refresh(self) -> None:
        for name in self.store.list_dir(SEGMENT_DIR):
            if name not in self.segments or name in self.growing:
                key = f"{SEGMENT_DIR}/{name}"
                data = self.store.get(key)
                fields, pos = decode_header(key, MAGIC_SEGMENT, data)
                if fields.get("blocks"):
                    # Being appended to: a block may be half-written as we read.
                    self.growing.add(name)
                    records = decode_blocks(key, data, pos, judge=False)[0]
                else:
                    records = decode(key, MAGIC_SEGMENT, data)[1]
                self.segments[name] = records
                self.found.update(records)

    def contains(self, record: bytes) -> bool:
        with self.lock:
            if record not in self.found:
                self.refresh()
            return record in self.found

    def data_segments(self) -> list[list[bytes]]:
        with self.lock:
            self.refresh()
            return [r for _, r in sorted(self.segments.items()) if r]


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``n`` threads started together; re-raise the first failure."""
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), name=f"appender-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "appender threads did not finish"
    if errors:
        raise errors[0]


def append_and_look(committer: Committer, reader: SegmentReader, per_thread: int) -> list[bytes]:
    """THREADS threads append; each looks for its record as soon as append returns.

    Returns the records that were not readable when their append returned.
    """
    missing: list[bytes] = []

    def appender(i: int) -> None:
        for j in range(per_thread):
            rec = b"t%02d:%d" % (i, j)
            committer.append(rec)
            if not reader.contains(rec):
                missing.append(rec)

    run_threads(THREADS, appender)
    return missing


def check_per_thread_order(records: list[bytes], threads: int, per_thread: int) -> None:
    assert len(records) == len(set(records)) == threads * per_thread
    by_thread: dict[bytes, list[int]] = {}
    for r in records:
        t, j = r.split(b":")
        by_thread.setdefault(t, []).append(int(j))
    assert all(js == list(range(per_thread)) for js in by_thread.values())


# -- group commit ---------------------------------------------------------------------------


@pytest.mark.parametrize("segment_max_bytes", [0, 8 << 20], ids=["object-per-commit", "appended"])
def test_64_threads_share_segments_and_return_only_once_durable(
    fast_backend_root, segment_max_bytes
):
    """Many concurrent appenders, few writes; each appender finds its record on return."""
    per_thread = 10
    log, _ = open_log(fast_backend_root.store(), segment_max_bytes=segment_max_bytes)
    committer = Committer(log)
    missing = append_and_look(committer, SegmentReader(fast_backend_root.store()), per_thread)
    assert committer.close(timeout=30)
    assert missing == []
    stats = committer.stats
    assert stats.records_committed == THREADS * per_thread
    ratio = stats.records_committed / stats.segments_written
    print(
        f"\n{fast_backend_root.name}: {stats.records_committed} records in "
        f"{stats.segments_written} segments, {ratio:.1f} records/segment"
    )
    # Measured ≈ 30 on local disk with fsync and ≈ 20 on memory; 4 leaves a wide margin.
    assert ratio >= 4
    check_per_thread_order(replay(fast_backend_root).records, THREADS, per_thread)


def test_a_waiter_does_not_return_before_its_segment_exists(fast_backend_root):
    store = fast_backend_root.store()
    log, _ = open_log(store)
    gate = threading.Event()
    entered = threading.Event()
    raw_put = store._raw_put_if_absent

    def gated_put(key: str, data: bytes) -> None:
        if key.startswith(SEGMENT_DIR):
            entered.set()
            assert gate.wait(60)
        raw_put(key, data)

    store._raw_put_if_absent = gated_put  # type: ignore[method-assign]
    committer = Committer(log)
    reader = SegmentReader(fast_backend_root.store())
    with committer.lock:
        ticket = committer.submit_locked(b"held")
        # The committer needs this lock to take the batch: nothing can be durable yet.
        assert not ticket.done()
        assert committer.wait_locked(ticket, timeout=0) is False
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (committer.append(b"second"), returned.set()))
    waiter.start()
    assert entered.wait(30)  # the PUT of b"held" is in flight and blocked
    assert not reader.contains(b"held")
    with committer.lock:
        assert committer.wait_locked(ticket, timeout=0) is False
    assert not ticket.done()
    assert not returned.is_set()
    gate.set()
    waiter.join(30)
    assert returned.is_set()
    assert reader.contains(b"held") and reader.contains(b"second")
    with committer.lock:
        assert committer.wait_locked(ticket, timeout=0) is True
    assert ticket.done() and ticket.error() is None
    assert committer.close(timeout=30)


def test_records_are_durable_in_submission_order(fast_backend_root):
    log, _ = open_log(fast_backend_root.store())
    committer = Committer(log)
    tickets = []
    with committer.lock:
        for i in range(200):
            tickets.append(committer.submit_locked(b"%d" % i))
        assert committer.submitted == 200
        assert committer.wait_locked(tickets[-1], timeout=30)
        # Batches are written in order: the last one durable means all of them are.
        assert all(t.done() and t.error() is None for t in tickets)
    committer.append_many([b"200", b"201"])
    assert committer.close(timeout=30)
    assert replay(fast_backend_root).records == [b"%d" % i for i in range(202)]


def test_max_batch_bytes_splits_a_large_batch_in_order(fast_backend_root):
    log, _ = open_log(fast_backend_root.store())
    committer = Committer(log, max_batch_bytes=250)
    records = [b"%03d" % i + b"x" * 97 for i in range(20)]  # 100 bytes each
    with committer.lock:
        ticket = committer.submit_many_locked(records)
        committer.wait_locked(ticket)
    committer.append(b"y" * 1000)  # bigger than the limit on its own: still written
    assert committer.close(timeout=30)
    segments = SegmentReader(fast_backend_root.store()).data_segments()
    assert [r for s in segments for r in s] == [*records, b"y" * 1000]
    assert all(sum(map(len, s)) <= 250 for s in segments[:-1])
    assert len(segments) >= 1 + 20 // 2


def test_close_writes_what_is_pending_then_refuses(fast_backend_root):
    log, _ = open_log(fast_backend_root.store())
    committer = Committer(log)
    with committer.lock:
        for i in range(10):
            committer.submit_locked(b"pending %d" % i)
    assert committer.close(timeout=30)
    assert committer.close(timeout=30)  # idempotent
    with pytest.raises(QueueClosed):
        committer.append(b"late")
    with committer.lock, pytest.raises(QueueClosed):
        committer.submit_locked(b"late")
    assert replay(fast_backend_root).records == [b"pending %d" % i for i in range(10)]


def test_committer_checkpoints_with_the_snapshot_of_its_batch(fast_backend_root):
    log, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=300)
    state: list[bytes] = []
    committer = Committer(log, snapshot=lambda: b",".join(state))
    for i in range(100):
        with committer.lock:
            rec = b"%03d" % i
            state.append(rec)
            committer.wait_locked(committer.submit_locked(rec))
    assert committer.close(timeout=30)
    assert committer.stats.checkpoints_written >= 5
    seen = replay(fast_backend_root)
    assert len(seen.snapshots) == 1
    rebuilt = seen.snapshots[0].split(b",") + seen.records
    assert rebuilt == state


# -- fencing through the committer ------------------------------------------------------------


def test_fenced_committer_fails_its_waiters_and_every_later_call(fast_backend_root):
    old_log, _ = open_log(fast_backend_root.store())
    old = Committer(old_log)
    old.append(b"acked")
    new_log, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"acked"]
    with pytest.raises(FencedError):
        old.append(b"lost")
    assert isinstance(old.failure, FencedError)
    counts = old_log.store.counts.copy()
    with pytest.raises(FencedError):
        old.append(b"later")
    with pytest.raises(QueueBroken):
        old.append_many([b"later", b"still"])
    assert old_log.store.counts == counts
    assert old.close(timeout=30)
    new = Committer(new_log)
    new.append(b"new")
    assert new.close(timeout=30)
    assert replay(fast_backend_root).records == [b"acked", b"new"]


# -- fault injection (tests/support/faulty.py over the memory filesystem) ----------------------------


@dataclass
class FaultyRoot:
    """A root on the memory filesystem seen through a ``FaultyFileSystem``."""

    fs: FaultyFileSystem
    path: str

    def store(self) -> Store:
        """A store whose requests go through the faults (with instant retries)."""
        store = open_store(self.fs, path=self.path)
        store.sleep = lambda s: None
        return store

    def clean_store(self) -> Store:
        """A store on the same objects that bypasses the faults."""
        return open_store(self.fs.fs, path=self.path)

    def replay(self) -> Replayed:
        return open_log(self.clean_store())[1]


@pytest.fixture
def faulty() -> Iterator[FaultyRoot]:
    root = memory_root()
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    try:
        yield FaultyRoot(fs, fs.fs._strip_protocol(root.location))
    finally:
        drop_memory_root(root)


def under(directory: str) -> Callable[[str], bool]:
    return lambda path: f"/{directory}/" in path


@pytest.mark.parametrize("exc", [ConnectionResetError, TimeoutError])
def test_transient_put_failures_are_retried_and_invisible(faulty, exc):
    store = faulty.store()
    log, _ = open_log(store)
    committer = Committer(log)
    committer.append(b"r0")
    first = faulty.fs.fail("put", exc, nth=1)  # the very next put
    third = faulty.fs.fail("put", exc, nth=3, times=2)  # and two in a row a bit later
    puts = store.counts.puts
    for i in range(1, 6):
        committer.append(b"r%d" % i)
    assert (first.fired, third.fired) == (1, 2)
    assert store.counts.puts - puts == 5 + 3  # five segments, three of them retried
    assert committer.failure is None
    assert committer.close(timeout=30)
    assert faulty.replay().records == [b"r%d" % i for i in range(6)]


@pytest.mark.parametrize("op", ["get", "list"])
@pytest.mark.parametrize("exc", [ConnectionResetError, TimeoutError])
def test_transient_read_failures_at_open_are_retried_and_invisible(faulty, op, exc):
    log, _ = open_log(faulty.clean_store(), checkpoint_min_bytes=1)
    seq = log.append([b"a", b"b"])
    log.checkpoint(b"snapshot", seq)
    log.append([b"c"])
    log.append([b"d"])
    # Open reads the manifest, the checkpoint and two segments, and lists three times.
    faults = [faulty.fs.fail(op, exc, nth=n) for n in (1, 2, 3)]
    _, seen = open_log(faulty.store())
    assert [f.fired for f in faults] == [1, 1, 1]
    assert seen.snapshots == [b"snapshot"] and seen.records == [b"c", b"d"]


@pytest.mark.parametrize("directory", ["manifest", "segments", "checkpoints"])
def test_a_put_whose_response_was_lost_succeeds_once(faulty, directory):
    """The conditional PUT landed, the response was lost, the retry says "exists"."""
    lost = faulty.fs.lose_response("put", match=under(directory))
    store = faulty.store()
    log, _ = open_log(store, checkpoint_min_bytes=1)  # claims the epoch, writes the fence
    state: list[bytes] = []
    committer = Committer(log, snapshot=lambda: b",".join(state))
    for rec in (b"first", b"second", b"third"):  # segments, checkpoints and their manifests
        with committer.lock:
            state.append(rec)
            committer.wait_locked(committer.submit_locked(rec))
    assert lost.fired == 1
    assert committer.failure is None
    assert committer.stats.checkpoints_written >= 1
    assert committer.close(timeout=30)
    seen = faulty.replay()
    assert len(seen.snapshots) == 1
    assert seen.snapshots[0].split(b",") + seen.records == state
    # Nothing was written twice under another number: one epoch claim, one fence, one
    # segment per record; manifests: the claim, the one that skipped the open's fence (the
    # open replayed nothing), one per checkpoint while running, and at close one recording
    # the segments written since the last one (or the one of a checkpoint at close).
    assert log.epoch == 1
    assert log.next_seq == 1 + 1 + len(state)
    stats = committer.stats
    assert log.manifest_n == 2 + stats.checkpoints_written - stats.checkpoints_at_close + 1


def test_a_lost_put_response_never_duplicates_a_record(faulty):
    store = faulty.store()
    log, _ = open_log(store)
    committer = Committer(log)
    for i in range(10):
        faulty.fs.lose_response("put")
        committer.append(b"r%d" % i)
    assert committer.close(timeout=30)
    assert faulty.replay().records == [b"r%d" % i for i in range(10)]


@pytest.mark.parametrize(
    ("exc", "error", "attempts"),
    [
        (ConnectionResetError, TransientStorageError, 7),  # the store's 6 retries, then it gives up
        (PermissionError, PermanentStorageError, 1),
    ],
)
def test_a_persistent_put_failure_breaks_the_handle_and_loses_nothing_acked(
    faulty, exc, error, attempts
):
    store = faulty.store()
    log, _ = open_log(store)
    committer = Committer(log)
    committer.append_many([b"a", b"b"])
    broken = faulty.fs.fail("put", exc, times=None)
    with pytest.raises(error) as info:
        committer.append(b"c")
    assert isinstance(info.value, StorageError) and not isinstance(info.value, QueueBroken)
    assert broken.fired == attempts
    counts = store.counts.copy()
    with pytest.raises(QueueBroken):
        committer.append(b"d")
    with committer.lock, pytest.raises(QueueBroken):
        committer.submit_locked(b"d")
    assert store.counts == counts  # a broken handle makes no more requests
    assert committer.close(timeout=30)
    assert faulty.replay().records == [b"a", b"b"]


def test_reopen_after_a_failure_under_load_recovers_exactly_the_acknowledged(faulty):
    store = faulty.store()
    log, _ = open_log(store)
    committer = Committer(log)
    per_thread = 30
    acked: list[list[bytes]] = [[] for _ in range(16)]
    failed: list[BaseException] = []
    faulty.fs.fail("put", ConnectionResetError, nth=25, times=10**9)  # from the 25th put on

    def appender(i: int) -> None:
        for j in range(per_thread):
            rec = b"t%02d:%d" % (i, j)
            try:
                committer.append(rec)
            except (StorageError, QueueBroken) as exc:  # the failure's error, or broken after it
                failed.append(exc)
                return
            acked[i].append(rec)

    run_threads(16, appender)
    assert len(failed) == 16  # every thread ran into the failure
    assert any(not isinstance(e, QueueBroken) for e in failed)
    assert all(isinstance(e, (TransientStorageError, QueueBroken)) for e in failed)
    assert 0 < sum(map(len, acked)) < 16 * per_thread
    assert committer.close(timeout=30)
    replayed = faulty.replay().records
    # Exactly what was acknowledged (every failed PUT left nothing), each thread in order.
    assert sorted(replayed) == sorted(r for rs in acked for r in rs)
    for i in range(16):
        assert [r for r in replayed if r.startswith(b"t%02d:" % i)] == acked[i]


def test_a_failed_checkpoint_breaks_the_handle_after_its_batch_is_durable(faulty):
    store = faulty.store()
    log, _ = open_log(store, checkpoint_min_bytes=1)
    committer = Committer(log, snapshot=lambda: b"snapshot")
    faulty.fs.fail("put", PermissionError, match=under(CHECKPOINT_DIR), times=None)
    committer.append(b"first")  # an empty log: no checkpoint due yet
    committer.append(b"durable")  # its segment is written; the checkpoint after it fails
    # The failure lands right after that append returned: the next call either waits and
    # gets the failure's own error, or finds the handle already broken.
    with pytest.raises((PermanentStorageError, QueueBroken)):
        committer.append(b"lost")
    with pytest.raises(QueueBroken):
        committer.append(b"lost")
    assert committer.stats.checkpoint_failures == 1
    assert committer.close(timeout=30)
    seen = faulty.replay()
    assert seen.snapshots == []
    assert seen.records == [b"first", b"durable"]


def test_failed_deletes_after_a_checkpoint_leave_garbage_not_damage(faulty):
    store = faulty.store()
    log, _ = open_log(store, checkpoint_min_bytes=1)
    state: list[bytes] = []
    committer = Committer(log, snapshot=lambda: b",".join(state))
    deletes = faulty.fs.fail("delete", PermissionError, times=None)
    for i in range(10):
        with committer.lock:
            state.append(b"%d" % i)
            committer.wait_locked(committer.submit_locked(b"%d" % i))
    assert committer.close(timeout=30)
    written = committer.stats.checkpoints_written
    assert written >= 4 and committer.failure is None
    assert deletes.fired == written  # every checkpoint tried to clean up, and failed
    assert len(faulty.clean_store().list_dir(CHECKPOINT_DIR)) == written  # the garbage
    faulty.fs.clear_faults()
    seen = faulty.replay()
    assert seen.snapshots[0].split(b",") + seen.records == state
    # the next open removes the checkpoints its manifest does not name
    assert len(faulty.clean_store().list_dir(CHECKPOINT_DIR)) == 1


def test_group_commit_with_slow_puts_batches_nearly_everyone(faulty):
    faulty.fs.delay = 0.02  # every request takes 20 ms, like a PUT to object storage
    log, _ = open_log(faulty.store())
    committer = Committer(log)
    per_thread = 4
    missing = append_and_look(committer, SegmentReader(faulty.clean_store()), per_thread)
    assert committer.close(timeout=30)
    assert missing == []
    stats = committer.stats
    ratio = stats.records_committed / stats.segments_written
    print(
        f"\nslow puts: {stats.records_committed} records in {stats.segments_written} "
        f"segments, {ratio:.1f} records/segment"
    )
    # While one 20 ms PUT is in flight every other thread queues its next record: measured
    # 7 segments for 256 records (≈ 37 per segment).
    assert ratio >= 16
    check_per_thread_order(faulty.replay().records, THREADS, per_thread)


def test_a_failing_snapshot_breaks_the_handle_instead_of_hanging_its_waiters(fast_backend_root):
    log, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)

    def snapshot() -> bytes:
        raise RuntimeError("snapshot bug")

    committer = Committer(log, snapshot=snapshot)
    committer.append(b"first")  # an empty log: no checkpoint due yet
    outcome: list[BaseException | None] = []

    def append() -> None:
        try:
            committer.append(b"r")  # the first record made a checkpoint due
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=append, daemon=True)
    waiter.start()
    waiter.join(60)  # only a guard: a correct committer answers at once
    assert not waiter.is_alive(), "the waiter hangs on a dead committer thread"
    [error] = outcome
    assert isinstance(error, QueueBroken) and "snapshot bug" in str(error)
    with pytest.raises(QueueBroken):
        committer.append(b"later")
    assert committer.close(timeout=30)


def test_callers_released_by_a_write_are_gathered_into_the_next_one(faulty):
    # Without gathering, 64 callers split into two alternating batches of about 32: the
    # ones a PUT releases miss the next batch, which the other half already fills.
    faulty.fs.delay = 0.02
    log, _ = open_log(faulty.store())
    committer = Committer(log)
    per_thread = 8

    def appender(i: int) -> None:
        for j in range(per_thread):
            committer.append(b"t%02d:%d" % (i, j))

    run_threads(THREADS, appender)
    assert committer.close(timeout=30)
    stats = committer.stats
    ratio = stats.records_committed / stats.segments_written
    print(f"\ngathered: {ratio:.1f} records/segment")
    assert stats.records_committed == THREADS * per_thread
    assert ratio > THREADS / 2 + 8
    check_per_thread_order(faulty.replay().records, THREADS, per_thread)


# -- inline writers: records nobody waits for, and waking a batch ----------------------------


def eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Poll ``check`` until it holds or ``seconds`` pass (a guard, not a speed check)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_an_inline_committer_writes_the_records_nobody_waits_for(fast_backend_root):
    """A claim's record has no waiter: the thread writes it, idle or among busy callers."""
    log, _ = open_log(fast_backend_root.store())
    committer = Committer(log, inline=True)
    reader = SegmentReader(fast_backend_root.store())
    with committer.lock:
        committer.submit_locked(b"alone")  # the thread is asleep: this wakes it
    assert eventually(lambda: reader.contains(b"alone"))

    stop = threading.Event()
    appended: list[int] = []

    def busy() -> None:
        while not stop.is_set():
            committer.append(b"busy%d" % len(appended))
            appended.append(1)

    thread = threading.Thread(target=busy)
    thread.start()
    assert eventually(lambda: len(appended) >= 20)
    with committer.lock:
        committer.submit_locked(b"among")  # the thread is polling, not woken per record
    assert eventually(lambda: len(appended) >= 40)
    stop.set()
    thread.join(30)
    with committer.lock:
        committer.submit_locked(b"after")  # right after the others: nobody takes it along
    assert eventually(lambda: reader.contains(b"after"))
    assert reader.contains(b"among")
    assert committer.close(timeout=30)


@pytest.fixture
def mem_root() -> Iterator[Any]:
    root = memory_root()
    try:
        yield root
    finally:
        drop_memory_root(root)


def test_a_failure_fails_every_pending_batch_at_once(mem_root):
    """One broken state: the waiters of the batch in flight and of every later batch raise."""
    store = mem_root.store()
    log, _ = open_log(store)
    gate = threading.Event()
    entered = threading.Event()
    raw_put = store._raw_put_if_absent

    def failing_put(key: str, data: bytes) -> None:
        if key.startswith(SEGMENT_DIR):
            entered.set()
            assert gate.wait(60)
            raise PermissionError("denied")
        raw_put(key, data)

    store._raw_put_if_absent = failing_put  # type: ignore[method-assign]
    committer = Committer(log, max_batch_bytes=10, inline=False)
    errors: list[BaseException] = []

    def append(rec: bytes) -> None:
        try:
            committer.append(rec)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=append, args=(b"in flight",))
    first.start()
    assert entered.wait(30)
    later = [threading.Thread(target=append, args=(b"later %02d" % i,)) for i in range(6)]
    for t in later:
        t.start()
    with committer.lock:
        pending = committer.latest_locked()
    assert eventually(lambda: committer.submitted == 7)
    gate.set()
    for t in [first, *later]:
        t.join(30)
        assert not t.is_alive()
    assert len(errors) == 7
    assert all(isinstance(e, (PermanentStorageError, QueueBroken)) for e in errors)
    assert pending.done() and pending.error() is not None
    with committer.lock, pytest.raises(QueueBroken):
        committer.check_usable_locked()
    assert committer.close(timeout=30)


def test_a_batch_wakes_every_waiter_even_when_one_gives_up_first(mem_root):
    """Waiters are woken one after another: one that timed out must not break the chain."""
    log, _ = open_log(mem_root.store())
    committer = Committer(log)
    from taquba.batch import Batch

    batch = Batch()
    batch.prepare_wait()
    woken: list[int] = []

    def waiter(i: int, timeout: float | None) -> None:
        if batch.wait(timeout):
            woken.append(i)

    threads = [
        threading.Thread(target=waiter, args=(i, 0.05 if i == 2 else None)) for i in range(5)
    ]
    for t in threads:
        t.start()
    threads[2].join(30)  # gave up before the batch was resolved
    batch.set_result()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a waiter was never woken"
    assert sorted(woken) == [0, 1, 3, 4]
    assert committer.close(timeout=30)


def test_a_nudge_wakes_one_waiter_without_resolving_the_batch() -> None:
    from taquba.batch import Batch

    batch = Batch()
    batch.nudge()  # nobody waits yet: the next waiter takes it
    batch.prepare_wait()
    assert batch.wait(30) is False and not batch.done()
    assert batch.wait(0.01) is False  # taken: the next wait times out
    batch.set_exception(RuntimeError("lost"))
    assert batch.wait(0) is True and isinstance(batch.error(), RuntimeError)
