"""Opens leave nothing behind, fences can go, and a displaced writer still never gets an
acknowledgement that no reader replays (taquba/log/FENCING.md); ``Log.check_fenced``.

Growth is counted in objects and in storage requests per open (the store's own counts),
never timed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec
import pytest
from support.backends import BackendRoot, local_root
from support.faulty import FaultyFileSystem
from test_log import open_log

from taquba import OpenOptions, Queue
from taquba.errors import CorruptionError, FencedError, StorageError
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR
from taquba.log.format import (
    MAGIC_CHECKPOINT,
    MAGIC_MANIFEST,
    MAGIC_SEGMENT,
    SECTOR,
    encode,
    encode_block,
)
from taquba.storage import RequestCounts, Store, open_store

DIRS = (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)


def objects(store: Store) -> dict[str, list[str]]:
    return {d: store.list_dir(d) for d in DIRS}


def object_count(store: Store) -> int:
    return sum(len(store.list_dir(d)) for d in DIRS)


def key(seq: int) -> str:
    return f"{SEGMENT_DIR}/{seq:020d}"


# -- opens do not accumulate -------------------------------------------------------------------


def check_opens(root: BackendRoot, since: str, segment_max_bytes: int, opens: int) -> None:
    """A root with a checkpoint (and records after it, or not), opened ``opens`` times."""
    log, _ = open_log(root.store(), segment_max_bytes=segment_max_bytes)
    seq = 0
    for i in range(5):
        seq = log.append([b"before %d" % i])
    log.checkpoint(b"snapshot", seq)
    expected: list[bytes] = []
    if since == "records since the checkpoint":
        expected = [b"after %d" % i for i in range(3)]
        for r in expected:
            log.append([r])
    log.close()
    start = object_count(root.store())

    costs: list[RequestCounts] = []
    for _ in range(opens):
        store = root.store()
        log, seen = open_log(store, segment_max_bytes=segment_max_bytes)
        log.close()
        assert seen.snapshots == [b"snapshot"] and seen.records == expected
        costs.append(store.counts.copy())
        assert object_count(root.store()) <= start
    # The first open settles what the writer left; from then on every open makes the same
    # requests and reads about the same bytes (numbers in names and headers grow a digit).
    requests = {(c.puts, c.gets, c.lists, c.deletes) for c in costs[1:]}
    assert len(requests) == 1, requests
    # GCS and Azure delete one object per request, S3 and local disk many per request.
    assert costs[1].total() - costs[1].deletes <= 12, costs[1]
    assert costs[1].deletes <= 3, costs[1]
    assert max(c.bytes_read for c in costs[1:]) <= costs[1].bytes_read + 100
    print(f"\n{root.name}: {start} objects; an open costs {costs[1]}")


SINCE = ["records since the checkpoint", "nothing since"]


@pytest.mark.parametrize("since", SINCE)
def test_opens_leave_no_objects_and_cost_the_same_every_time(backend_root, since):
    check_opens(backend_root, since, 0, 300 if backend_root.name in ("memory", "local") else 20)


@pytest.mark.parametrize("since", SINCE)
def test_opens_of_appended_segments_leave_no_objects_either(tmp_path, since):
    check_opens(local_root(tmp_path / "root"), since, 8 << 20, 300)


def test_opens_delete_only_what_is_there():
    """Fences recorded as void stay in the manifest until a checkpoint, but an open deletes
    only objects it listed: the keys it deletes do not grow with the opens before it."""
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    deleted: list[int] = []
    rm = fs.rm

    def counting_rm(path, recursive=False, maxdepth=None):  # type: ignore[no-untyped-def]
        deleted.append(len(path) if isinstance(path, list) else 1)
        rm(path, recursive=recursive, maxdepth=maxdepth)

    fs.rm = counting_rm  # type: ignore[method-assign]
    log, _ = open_log(open_store(fs, path="/opens"))
    log.append([b"a record since the (absent) checkpoint"])
    log.close()
    per_open = []
    for _ in range(100):
        deleted.clear()
        open_log(open_store(fs, path="/opens"))[0].close()
        per_open.append(sum(deleted))
    assert set(per_open[1:]) == {per_open[1]} and per_open[1] <= 4, per_open


def test_queue_opens_keep_the_root_small(tmp_path):
    opts = OpenOptions(background_threads=False)
    with Queue.open(str(tmp_path), options=opts) as q:
        job = q.enqueue("jobs", b"waiting")
    store = open_store(str(tmp_path))
    start = object_count(store)
    for _ in range(150):
        with Queue.open(str(tmp_path), options=opts) as q:
            assert q.stats("jobs").pending == 1
    assert object_count(store) <= start
    with Queue.open(str(tmp_path), options=opts) as q:
        claim = q.claim("jobs")
        assert claim is not None and claim.id == job


# -- a displaced writer ------------------------------------------------------------------------


def test_a_displaced_writer_stays_fenced_after_its_fence_is_deleted(fast_backend_root):
    check_displaced(fast_backend_root, 0)


def test_a_displaced_appending_writer_stays_fenced_after_its_segment_is_deleted(tmp_path):
    check_displaced(local_root(tmp_path / "root"), 8 << 20)


def check_displaced(root: BackendRoot, segment_max_bytes: int) -> None:
    """``old`` is displaced by ``mid``, ``mid`` by ``new``, which checkpoints: the fence that
    stopped ``old`` is gone, so its next write is not refused, yet it is no commit."""
    store = root.store()
    old, _ = open_log(root.store(), segment_max_bytes=segment_max_bytes)
    old.append([b"old 1"])
    old.append([b"old 2"])
    fence = old.next_seq  # the key the old writer would take next
    mid, _ = open_log(root.store(), segment_max_bytes=segment_max_bytes)
    assert f"{fence:020d}" in store.list_dir(SEGMENT_DIR)  # mid keeps its own fence
    new, seen = open_log(root.store(), segment_max_bytes=segment_max_bytes)
    assert seen.records == [b"old 1", b"old 2"]
    seq = new.append([b"new 1"])
    new.checkpoint(b"old 1|old 2|new 1", seq)
    assert f"{fence:020d}" not in store.list_dir(SEGMENT_DIR)  # that fence is gone

    with pytest.raises(FencedError):
        old.append([b"never acknowledged"])  # lands at a freed key, or in a deleted file
    with pytest.raises(FencedError):
        old.append([b"again"])
    before = objects(store)
    with pytest.raises(FencedError):
        mid.append([b"never written"])  # new still keeps the fence that stops mid
    assert objects(store) == before
    new.append([b"new 2"])
    new.close()
    _, seen = open_log(root.store(), segment_max_bytes=segment_max_bytes)
    assert seen.snapshots == [b"old 1|old 2|new 1"] and seen.records == [b"new 2"]
    # What the displaced writer managed to write lies below replay_from: that open deleted it.
    assert f"{fence:020d}" not in store.list_dir(SEGMENT_DIR)


def test_a_displaced_appending_writer_cannot_extend_a_settled_segment(tmp_path):
    """Once the fence that stopped it is deleted, the old writer's append is no longer
    refused; the version recording where the segment ends makes it fail all the same."""
    old, _ = open_log(open_store(str(tmp_path)), segment_max_bytes=8 << 20)
    old.append([b"old 1"])
    open_log(open_store(str(tmp_path)), segment_max_bytes=8 << 20)
    new, seen = open_log(open_store(str(tmp_path)), segment_max_bytes=8 << 20)
    assert seen.records == [b"old 1"]
    assert f"{old.next_seq:020d}" not in open_store(str(tmp_path)).list_dir(SEGMENT_DIR)
    with pytest.raises(FencedError):
        old.append([b"never acknowledged"])
    new.append([b"new 1"])
    new.close()
    _, seen = open_log(open_store(str(tmp_path)), segment_max_bytes=8 << 20)
    assert seen.records == [b"old 1", b"new 1"]


def test_a_displaced_writer_whose_fence_was_recorded_void_is_fenced(fast_backend_root):
    """Records were replayed, so no open could skip the fences: the next owner records the
    previous one's fence as holding nothing and deletes it. The writer that fence stopped
    writes there next, and that must not count."""
    store = fast_backend_root.store()
    old, _ = open_log(fast_backend_root.store())
    old.append([b"old 1"])
    fence = old.next_seq
    open_log(fast_backend_root.store())
    new, _ = open_log(fast_backend_root.store())
    assert new.replay_from < fence and f"{fence:020d}" not in store.list_dir(SEGMENT_DIR)
    with pytest.raises(FencedError):
        old.append([b"never acknowledged"])
    assert f"{fence:020d}" in store.list_dir(SEGMENT_DIR)  # it landed
    new.append([b"new 1"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"old 1", b"new 1"]
    assert f"{fence:020d}" not in store.list_dir(SEGMENT_DIR)  # that open deleted it


def test_a_missing_segment_before_recorded_fences_is_corruption(fast_backend_root):
    """The manifest says fences were written after it: the segment was not the newest."""
    log, _ = open_log(fast_backend_root.store())
    log.append([b"one"])
    seq = log.append([b"two"])
    log.close()
    open_log(fast_backend_root.store())  # records its fence as void (records came before)
    store = fast_backend_root.store()
    store.delete([key(seq), key(seq + 1)])  # the newest data segment, and the fence after it
    with pytest.raises(CorruptionError, match=f"{seq:020d} is missing"):
        open_log(fast_backend_root.store())


def test_the_newest_segment_missing_after_a_clean_close_is_corruption(fast_backend_root):
    """A close records the last segment written, so even the newest cannot vanish unseen."""
    log, _ = open_log(fast_backend_root.store())
    log.append([b"one"])
    seq = log.append([b"two"])
    log.close()
    fast_backend_root.store().delete([key(seq)])
    with pytest.raises(CorruptionError, match=f"{seq:020d} is missing"):
        open_log(fast_backend_root.store())


def test_writers_taking_over_from_each_other_never_both_acknowledge(fast_backend_root):
    """Three writers, each opened over the last, all still alive; the newest checkpoints
    everything away. Every acknowledged record is replayed; every refused one is not."""
    writers = []
    acked: list[bytes] = []
    for w in range(3):
        log, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)
        writers.append(log)
        for i in range(3):
            rec = b"w%d-%d" % (w, i)
            log.append([rec])
            acked.append(rec)
    newest = writers[-1]
    newest.checkpoint(b"|".join(acked), newest.next_seq - 1)
    refused = []
    for w, log in enumerate(writers[:-1]):
        rec = b"late w%d" % w
        with pytest.raises(FencedError):
            log.append([rec])
        refused.append(rec)
    newest.append([b"last"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"|".join(acked)] and seen.records == [b"last"]


# -- check_fenced ------------------------------------------------------------------------------


def test_check_fenced_costs_one_request_and_fences_an_idle_handle(backend_root):
    a, _ = open_log(backend_root.store())
    a.append([b"r1"])
    before = a.store.counts.copy()
    a.check_fenced()  # still the writer
    spent = a.store.counts - before
    assert spent.total() == 1 and spent.gets == 1
    assert a.broken is None

    open_log(backend_root.store())  # another process takes over
    with pytest.raises(FencedError, match="fenced off"):
        a.check_fenced()
    assert isinstance(a.broken, FencedError)
    before = a.store.counts.copy()
    with pytest.raises(FencedError):
        a.append([b"r2"])
    with pytest.raises(FencedError):
        a.check_fenced()
    assert a.store.counts == before  # broken for good: not even a request
    _, seen = open_log(backend_root.store())
    assert seen.records == [b"r1"]


def test_check_fenced_while_the_writer_commits_and_checkpoints(fast_backend_root):
    """Called from another thread, as the queue does: the writer's own new manifest
    versions never read as a takeover."""
    log, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)
    stop = threading.Event()
    errors: list[BaseException] = []
    checks = [0]

    def checker() -> None:
        while not stop.is_set():
            try:
                log.check_fenced()
                checks[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=checker)
    thread.start()
    try:
        for i in range(200):
            seq = log.append([b"%d" % i])
            if i % 10 == 9:
                log.checkpoint(b"state %d" % i, seq)
    finally:
        stop.set()
        thread.join(30)
    assert errors == [] and log.broken is None and checks[0] > 0


def test_check_fenced_storage_error_propagates_and_changes_nothing():
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    store = open_store(fs, path="/check-fenced", retries=1, retry_delay=0)
    log, _ = open_log(store)
    log.append([b"r1"])
    fs.fail("get", ConnectionResetError, times=2)
    with pytest.raises(StorageError):
        log.check_fenced()
    assert log.broken is None
    log.append([b"r2"])  # still the writer
    log.check_fenced()
    log.close()
    assert log.check_fenced() is None  # closed: nothing to check
    _, seen = open_log(open_store(fs, path="/check-fenced"))
    assert seen.records == [b"r1", b"r2"]


def test_leftovers_of_a_failed_cleanup_go_with_the_next_checkpoint():
    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    store = open_store(fs, path="/leftovers", retries=0, retry_delay=0)
    log, _ = open_log(store, checkpoint_min_bytes=1)
    seq = 0
    for i in range(5):
        seq = log.append([b"%d" % i])
    fs.fail("delete", PermissionError, times=1)
    log.checkpoint(b"first", seq)
    assert len(store.list_dir(SEGMENT_DIR)) == 6  # nothing could be deleted (+ the fence)
    seq = log.append([b"5"])
    log.checkpoint(b"second", seq)
    # what is left: the open's own fence, one checkpoint, one manifest version
    assert store.list_dir(SEGMENT_DIR) == [f"{1:020d}"]
    assert len(store.list_dir(CHECKPOINT_DIR)) == 1
    assert len(store.list_dir(MANIFEST_DIR)) == 1


# -- roots written before fences could go ------------------------------------------------------


def _old_manifest(epoch: int, checkpoint: str | None, replay_from: int) -> bytes:
    """A manifest as versions without recorded ends wrote it."""
    return encode(
        MAGIC_MANIFEST,
        {
            "epoch": epoch,
            "nonce": f"w{epoch}",
            "checkpoint": checkpoint,
            "replay_from": replay_from,
            "created_at": 0.0,
        },
    )


def _old_segment(epoch: int, seq: int, records: list[bytes]) -> bytes:
    return encode(
        MAGIC_SEGMENT,
        {"epoch": epoch, "nonce": f"w{epoch}", "seq": seq, "count": len(records)},
        records,
    )


def _old_blocks(epoch: int, seq: int, blocks: list[list[bytes]]) -> bytes:
    head = encode(
        MAGIC_SEGMENT,
        {"epoch": epoch, "nonce": f"w{epoch}", "seq": seq, "count": 0, "blocks": True},
    )
    return head + b"".join(encode_block(b) for b in blocks)


def test_a_root_written_with_permanent_fences_opens_and_sheds_them(fast_backend_root):
    """Laid out as earlier versions left it: every open's fence kept forever, the two
    newest manifest versions kept, no recorded ends."""
    store = fast_backend_root.store()
    put = store.put_if_absent
    put(f"{MANIFEST_DIR}/{4:020d}", _old_manifest(3, f"{3:020d}-{3:010d}", 4))
    put(f"{MANIFEST_DIR}/{5:020d}", _old_manifest(5, f"{3:020d}-{3:010d}", 4))
    put(
        f"{CHECKPOINT_DIR}/{3:020d}-{3:010d}",
        encode(MAGIC_CHECKPOINT, {"epoch": 3, "nonce": "w3", "seq": 3, "count": 1}, [b"snap"]),
    )
    put(key(1), _old_segment(1, 1, []))  # fences below replay_from, kept forever
    put(key(2), _old_segment(2, 2, []))
    put(key(4), _old_segment(3, 4, [b"a"]))
    put(key(5), _old_segment(5, 5, []))  # the last open's fence, in the replay range
    put(key(6), _old_segment(5, 6, [b"b", b"c"]))
    assert object_count(store) == 8

    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"snap"] and seen.records == [b"a", b"b", b"c"]
    names = {d: store.list_dir(d) for d in DIRS}
    assert len(names[MANIFEST_DIR]) == 1 and len(names[CHECKPOINT_DIR]) == 1
    # the old fences are gone; the open's own (7) stays while it owns the root
    assert names[SEGMENT_DIR] == [f"{4:020d}", f"{6:020d}", f"{7:020d}"]
    log, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"snap"] and seen.records == [b"a", b"b", b"c"]
    log.append([b"d"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"a", b"b", b"c", b"d"]


def test_an_old_root_with_a_torn_tail_before_a_later_session_still_opens(tmp_path: Path):
    """Earlier versions accepted a segment that ends in a torn block before an opener's
    fence, whatever came after; such a root still opens, and from then on the segment's
    end is recorded."""
    store = open_store(str(tmp_path))
    put = store.put_if_absent
    put(f"{MANIFEST_DIR}/{3:020d}", _old_manifest(3, None, 1))
    first = _old_blocks(1, 1, [[b"a"], [b"b"]])
    data = bytearray(first + encode_block([b"never acknowledged" * 60]))
    hole = (len(first) // SECTOR + 1) * SECTOR  # a sector of that block never written
    data[hole : hole + SECTOR] = bytes(SECTOR)
    put(key(1), bytes(data))
    put(key(2), _old_segment(3, 2, []))  # the next open's fence
    put(key(3), _old_blocks(3, 3, [[b"c"]]))
    for _ in range(2):
        log, seen = open_log(store, segment_max_bytes=8 << 20)
        assert seen.records == [b"a", b"b", b"c"]
        log.close()
    [manifest] = store.list_dir(MANIFEST_DIR)
    assert b'"ends"' in store.get(f"{MANIFEST_DIR}/{manifest}")


def test_a_manifest_number_past_63_bits_is_corruption(tmp_path: Path) -> None:
    """A name under manifest/ that no version of this library writes is reported, not a
    raw TypeError from the encoder."""
    from taquba import CorruptionError, Queue

    root = tmp_path / "q"
    with Queue.open(str(root)) as q:
        q.enqueue("a", b"x")
    (newest,) = sorted((root / "manifest").iterdir())[-1:]
    newest.rename(root / "manifest" / ("9" * 20))
    with pytest.raises(CorruptionError, match="manifest number past"):
        Queue.open(str(root))
