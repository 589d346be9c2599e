"""The log layer on its own: replay, checkpoints, fencing and corruption detection.

Replay runs on every backend (``backend_root``); fencing and the checkpoint bound run on
the in-process backends (``fast_backend_root``); corruption is local disk, where a test can
edit an object in place.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from taquba.committer import Committer
from taquba.errors import CorruptionError, FencedError, QueueBroken
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Log
from taquba.log.format import (
    MAGIC_MANIFEST,
    MAGIC_SEGMENT,
    SECTOR,
    decode,
    decode_blocks,
    decode_header,
    encode,
    encode_block,
)
from taquba.storage import LocalStore, Store, open_store

DIRS = (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)


class Replayed:
    """What one ``Log.open`` handed to its callbacks, in order."""

    def __init__(self) -> None:
        self.snapshots: list[bytes] = []
        self.records: list[bytes] = []

    def on_snapshot(self, data: bytes) -> None:
        assert not self.records, "the snapshot must come before every record"
        self.snapshots.append(data)

    def on_record(self, data: bytes) -> None:
        self.records.append(data)


def open_log(store: Store, **kwargs: object) -> tuple[Log, Replayed]:
    # Most tests here are about the one-object-per-commit layout that every backend has;
    # appended segments (local disk's default) have their own section below.
    kwargs.setdefault("segment_max_bytes", 0)
    seen = Replayed()
    log = Log.open(store, on_snapshot=seen.on_snapshot, on_record=seen.on_record, **kwargs)
    return log, seen


def objects(store: Store) -> dict[str, list[str]]:
    return {d: store.list_dir(d) for d in DIRS}


def flat(batches: Iterable[Sequence[bytes]]) -> list[bytes]:
    return [r for b in batches for r in b]


def seqs(store: Store) -> list[int]:
    return [int(n) for n in store.list_dir(SEGMENT_DIR)]


# -- replay ---------------------------------------------------------------------------------


BATCHES: list[list[bytes]] = [
    [b"first"],
    [b"a", b"", b"c" * 3000],
    [bytes(range(256))],
    [f"r{i:03d}".encode() for i in range(150)],
    [b"\x00" * 10, b"last of gen 1"],
]


def test_replay_returns_every_record_in_order(backend_root):
    log, seen = open_log(backend_root.store())
    assert seen.records == [] and seen.snapshots == []
    appended = [log.append(b) for b in BATCHES]
    assert appended == list(range(appended[0], appended[0] + len(BATCHES)))
    log.close()

    log2, seen2 = open_log(backend_root.store())
    assert seen2.snapshots == []
    assert seen2.records == flat(BATCHES)
    log2.append([b"gen 2"])

    _, seen3 = open_log(backend_root.store())
    assert seen3.records == [*flat(BATCHES), b"gen 2"]
    # What is left: the five batches, gen 2 and the third open's fence. Each open deletes
    # the fence of the one before (recorded as holding nothing, or skipped: the first open
    # replayed nothing) and the manifest versions before its own.
    reader = backend_root.store()
    assert seqs(reader) == [2, 3, 4, 5, 6, 8, 9]
    assert len(reader.list_dir(MANIFEST_DIR)) == 1


def test_replay_after_checkpoints_is_snapshot_then_later_records(backend_root):
    log, _ = open_log(backend_root.store(), checkpoint_min_bytes=1)
    history: list[bytes] = []

    def append(batch: list[bytes]) -> int:
        history.extend(batch)
        return log.append(batch)

    append([b"one", b"two"])
    seq = append([b"three"])
    assert log.checkpoint_due()
    log.checkpoint(b"|".join(history), seq)
    assert not log.checkpoint_due()
    append([b"four"])
    seq = append([b"five", b"six"])
    log.checkpoint(b"|".join(history), seq)
    append([b"seven"])
    append([b"eight", b"nine"])

    log2, seen = open_log(backend_root.store())
    assert seen.snapshots == [b"one|two|three|four|five|six"]
    assert seen.records == [b"seven", b"eight", b"nine"]
    # What the checkpoints cover is gone, and so are fences but the newest: one checkpoint,
    # and under segments/ only the two batches after it and the second open's fence.
    reader = backend_root.store()
    assert len(reader.list_dir(CHECKPOINT_DIR)) == 1
    assert len(seqs(reader)) == 3
    assert len(reader.list_dir(MANIFEST_DIR)) == 1
    assert log2.replay_from == seq + 1

    # A checkpoint taken by the second handle replaces the first one.
    seq = log2.append([b"ten"])
    log2.checkpoint(b"everything", seq)
    log2.append([b"eleven"])
    _, seen3 = open_log(backend_root.store())
    assert seen3.snapshots == [b"everything"]
    assert seen3.records == [b"eleven"]


def test_checkpoint_must_follow_the_last_segment(fast_backend_root):
    log, _ = open_log(fast_backend_root.store())
    seq = log.append([b"x"])
    log.append([b"y"])
    with pytest.raises(ValueError, match="last segment"):
        log.checkpoint(b"state", seq)
    assert log.broken is None
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [] and seen.records == [b"x", b"y"]


def test_checkpoint_due_follows_bytes_since_the_last_one(fast_backend_root):
    log, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=2000)
    assert not log.checkpoint_due()
    seq = log.append([b"x" * 1000])
    assert not log.checkpoint_due()
    seq = log.append([b"x" * 1000])
    assert log.checkpoint_due()
    log.checkpoint(b"s" * 5000, seq)  # the snapshot is bigger than the floor
    log.append([b"x" * 3000])
    assert not log.checkpoint_due()  # 3000 < ratio 1.0 * 5000
    log.append([b"x" * 3000])
    assert log.checkpoint_due()


# -- fencing --------------------------------------------------------------------------------


def test_older_handle_is_fenced_on_append_and_writes_nothing_more(fast_backend_root):
    old, _ = open_log(fast_backend_root.store())
    old.append([b"acked by old"])
    new, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"acked by old"]

    with pytest.raises(FencedError):
        old.append([b"never acked"])
    assert isinstance(old.broken, FencedError)

    reader = fast_backend_root.store()
    before_objects = objects(reader)
    before_counts = old.store.counts.copy()
    with pytest.raises(QueueBroken):
        old.append([b"again"])
    with pytest.raises(QueueBroken):
        old.checkpoint(b"state", old.next_seq - 1)
    assert old.store.counts == before_counts  # not even a request
    assert objects(reader) == before_objects

    new.append([b"acked by new"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"acked by old", b"acked by new"]


def test_older_handle_is_fenced_on_checkpoint(fast_backend_root):
    old, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)
    seq = old.append([b"r1"])
    open_log(fast_backend_root.store())
    with pytest.raises(FencedError):
        old.checkpoint(b"stale snapshot", seq)
    with pytest.raises(QueueBroken):
        old.append([b"r2"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == []
    assert seen.records == [b"r1"]


def test_stale_handle_stays_fenced_after_the_new_writer_checkpoints(fast_backend_root):
    """The new writer's checkpoint must not delete the key the stale writer would take next."""
    old, _ = open_log(fast_backend_root.store())
    old.append([b"old 1"])
    new, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)
    seq = new.append([b"new 1"])
    new.checkpoint(b"old 1|new 1", seq)
    with pytest.raises(FencedError):
        old.append([b"would be acknowledged and lost"])
    new.append([b"new 2"])
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"old 1|new 1"]
    assert seen.records == [b"new 2"]


def test_stale_checkpoint_cannot_reuse_a_pruned_manifest_number(fast_backend_root):
    """Manifests are pruned, so a stale writer's next manifest number can be free again."""
    old, _ = open_log(fast_backend_root.store(), checkpoint_min_bytes=1)
    seq = old.append([b"r1"])
    for _ in range(4):
        newest, _ = open_log(fast_backend_root.store())
    newest.append([b"r2"])
    reader = fast_backend_root.store()
    assert f"{old.manifest_n + 1:020d}" not in reader.list_dir(MANIFEST_DIR)  # pruned
    segments_before = reader.list_dir(SEGMENT_DIR)
    with pytest.raises(FencedError):
        old.checkpoint(b"stale", seq)
    assert reader.list_dir(SEGMENT_DIR) == segments_before  # it deleted nothing
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == []
    assert seen.records == [b"r1", b"r2"]


def test_busy_writer_stops_at_its_next_commit_once_an_opener_has_claimed(fast_backend_root):
    """An opener that has claimed the epoch but not yet won the race for the next segment
    number (simulated: its claim exists and the older versions are gone, its fence does
    not) stops the old writer at once: the writer reads its version back after each
    commit. The commit that found out lies where the opener replays: it stands."""
    old, _ = open_log(fast_backend_root.store())
    for i in range(10):
        old.append([b"%d" % i])
    store = fast_backend_root.store()
    claim = encode(
        MAGIC_MANIFEST,
        {
            "epoch": old.manifest_n + 1,
            "nonce": "opener",
            "checkpoint": None,
            "replay_from": old.replay_from,
            "ends": {},
        },
    )
    store.put_if_absent(f"{MANIFEST_DIR}/{old.manifest_n + 1:020d}", claim)
    store.delete(
        [f"{MANIFEST_DIR}/{n}" for n in store.list_dir(MANIFEST_DIR) if int(n) <= old.manifest_n]
    )
    old.append([b"10"])  # acknowledged: an opener replays it
    assert isinstance(old.broken, FencedError)
    before = old.store.counts.copy()
    with pytest.raises(FencedError, match="gone or replaced"):
        old.append([b"never written"])
    assert old.store.counts == before  # not even a request
    _, seen = open_log(fast_backend_root.store())
    assert seen.records == [b"%d" % i for i in range(11)]


# -- corruption (local disk: edit the objects in place) -------------------------------------


def _build(root: Path) -> list[bytes]:
    """A root with a checkpoint and segments on both sides of it; returns what replays."""
    store = open_store(str(root))
    assert isinstance(store, LocalStore)
    log, _ = open_log(store, checkpoint_min_bytes=1)
    log.append([b"a", b"b"])
    seq = log.append([b"c"])
    log.checkpoint(b"SNAPSHOT", seq)
    log.append([b"d", b"e" * 100])
    log.append([b"f"])
    log.append([b"g"])
    log.close()
    return [b"d", b"e" * 100, b"f", b"g"]


def _data_segments(root: Path) -> list[Path]:
    """Segment files with at least one record, in order."""
    paths = sorted((root / SEGMENT_DIR).iterdir())
    return [p for p in paths if decode(p.name, MAGIC_SEGMENT, p.read_bytes())[1]]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where", ["magic", "version", "header", "frame length", "frame checksum", "payload"]
)
def test_flipped_byte_in_a_segment_is_corruption_naming_it(tmp_path, where):
    expected = _build(tmp_path)
    victim = _data_segments(tmp_path)[1]  # [b"f"], the middle one after the checkpoint
    size = victim.stat().st_size
    # The object ends with one frame: length (4 bytes), CRC32 (4 bytes), b"f".
    offset = {
        "magic": 0,
        "version": 5,
        "header": 20,
        "frame length": size - 6,
        "frame checksum": size - 3,
        "payload": size - 1,
    }[where]
    _flip(victim, offset)
    with pytest.raises(CorruptionError) as info:
        open_log(open_store(str(tmp_path)))
    assert f"{SEGMENT_DIR}/{victim.name}" in str(info.value)
    # Nothing but that byte was wrong: put it back and everything replays.
    _flip(victim, offset)
    _, seen = open_log(open_store(str(tmp_path)))
    assert seen.snapshots == [b"SNAPSHOT"] and seen.records == expected


@pytest.mark.parametrize("where", ["header", "snapshot"])
def test_flipped_byte_in_a_checkpoint_is_corruption_naming_it(tmp_path, where):
    _build(tmp_path)
    [victim] = list((tmp_path / CHECKPOINT_DIR).iterdir())
    _flip(victim, 16 if where == "header" else victim.stat().st_size - 2)
    with pytest.raises(CorruptionError) as info:
        open_log(open_store(str(tmp_path)))
    assert f"{CHECKPOINT_DIR}/{victim.name}" in str(info.value)


def test_flipped_byte_in_the_current_manifest_is_corruption_naming_it(tmp_path):
    _build(tmp_path)
    victim = sorted((tmp_path / MANIFEST_DIR).iterdir())[-1]
    _flip(victim, victim.stat().st_size - 5)
    with pytest.raises(CorruptionError) as info:
        open_log(open_store(str(tmp_path)))
    assert f"{MANIFEST_DIR}/{victim.name}" in str(info.value)


@pytest.mark.parametrize("keep", ["empty", "half a header", "mid frame", "frame boundary"])
def test_truncated_segment_is_corruption(tmp_path, keep):
    _build(tmp_path)
    victim = _data_segments(tmp_path)[0]  # [b"d", b"e" * 100]
    data = victim.read_bytes()
    cut = {
        "empty": 0,
        "half a header": 7,
        "mid frame": len(data) - 50,
        "frame boundary": len(data) - (8 + 100),
    }[keep]
    victim.write_bytes(data[:cut])
    with pytest.raises(CorruptionError) as info:
        open_log(open_store(str(tmp_path)))
    assert victim.name in str(info.value)


def test_truncated_temp_file_in_segments_is_ignored_and_removed(tmp_path):
    expected = _build(tmp_path)
    last = _data_segments(tmp_path)[-1]
    stray = tmp_path / SEGMENT_DIR / ".tmp-0123456789abcdef"
    stray.write_bytes(last.read_bytes()[:-3])  # a writer that crashed before the link
    _, seen = open_log(open_store(str(tmp_path)))
    assert seen.snapshots == [b"SNAPSHOT"] and seen.records == expected
    assert not stray.exists()
    assert not any(p.name.startswith(".") for d in DIRS for p in (tmp_path / d).iterdir())


def test_missing_segment_in_the_middle_is_corruption(tmp_path):
    _build(tmp_path)
    victim = _data_segments(tmp_path)[1]
    victim.unlink()
    with pytest.raises(CorruptionError) as info:
        open_log(open_store(str(tmp_path)))
    assert victim.name in str(info.value) and "missing" in str(info.value)


def test_missing_first_segment_after_the_checkpoint_is_corruption(tmp_path):
    _build(tmp_path)
    victim = _data_segments(tmp_path)[0]
    victim.unlink()
    with pytest.raises(CorruptionError, match=victim.name):
        open_log(open_store(str(tmp_path)))


def test_missing_checkpoint_named_by_the_manifest_is_corruption(tmp_path):
    _build(tmp_path)
    [victim] = list((tmp_path / CHECKPOINT_DIR).iterdir())
    victim.unlink()
    with pytest.raises(CorruptionError, match=victim.name):
        open_log(open_store(str(tmp_path)))


def test_stray_names_are_not_replayed(tmp_path):
    expected = _build(tmp_path)
    (tmp_path / SEGMENT_DIR / "notes.txt").write_bytes(b"not a segment")
    (tmp_path / SEGMENT_DIR / "123").write_bytes(b"not a segment either")
    _, seen = open_log(open_store(str(tmp_path)))
    assert seen.records == expected


# -- the checkpoint bound: reopening costs O(live state), not O(history) --------------------


def _snapshot_of(live: set[bytes]) -> bytes:
    return b"\n".join(sorted(live))


def _rebuild(seen: Replayed) -> set[bytes]:
    live: set[bytes] = set()
    for snap in seen.snapshots:
        live = set(snap.split(b"\n")) if snap else set()
    for r in seen.records:
        if r[:1] == b"+":
            assert r[1:] not in live, r
            live.add(r[1:])
        else:
            assert r[:1] == b"-" and r[1:] in live, r
            live.remove(r[1:])
    return live


def test_reopen_reads_bytes_proportional_to_live_state_not_history(fast_backend_root):
    total, window, per_segment, min_bytes = 100_000, 100, 50, 4096
    store = fast_backend_root.store()
    log, _ = open_log(store, checkpoint_min_bytes=min_bytes)
    live: set[bytes] = set()
    committer = Committer(log, snapshot=lambda: _snapshot_of(live))
    for start in range(0, total, per_segment):
        with committer.lock:
            ticket = 0
            for k in range(start, start + per_segment):
                key = b"k%06d" % k
                live.add(key)
                ticket = committer.submit_locked(b"+" + key)
                if k >= window:
                    gone = b"k%06d" % (k - window)
                    live.remove(gone)
                    ticket = committer.submit_locked(b"-" + gone)
            committer.wait_locked(ticket)
    assert committer.close(timeout=30)
    assert len(live) == window
    stats = committer.stats
    assert stats.records_committed == 2 * total - window
    assert stats.checkpoint_failures == 0
    assert stats.checkpoints_written > 100
    assert store.counts.bytes_written > 3_000_000  # the history really was MBs

    reader = fast_backend_root.store()
    _, seen = open_log(reader, checkpoint_min_bytes=min_bytes)
    assert _rebuild(seen) == live
    read = reader.counts
    # One manifest, one checkpoint of 100 keys, and at most a threshold's worth of segments.
    assert read.bytes_read < 50 * 1024, read
    assert read.gets < 20, read
    assert len(reader.list_dir(SEGMENT_DIR)) < 20
    assert len(reader.list_dir(CHECKPOINT_DIR)) == 1
    assert len(reader.list_dir(MANIFEST_DIR)) <= 3
    print(
        f"\ncheckpoint bound: wrote {store.counts.bytes_written} bytes in "
        f"{stats.segments_written} segments and {stats.checkpoints_written} checkpoints; "
        f"reopen read {read.bytes_read} bytes in {read.gets} gets"
    )


def test_open_removes_checkpoints_no_manifest_names(fast_backend_root):
    store = fast_backend_root.store()
    log, _ = open_log(store, checkpoint_min_bytes=1)
    seq = log.append([b"a"])
    log.checkpoint(b"live", seq)
    live = store.list_dir(CHECKPOINT_DIR)
    # What a crash between a checkpoint and its manifest leaves behind:
    orphan = f"{CHECKPOINT_DIR}/{seq + 1:020d}-{log.epoch:010d}"
    store.put_if_absent(orphan, b"written, never named by a manifest")
    assert len(store.list_dir(CHECKPOINT_DIR)) == 2

    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"live"]
    assert store.list_dir(CHECKPOINT_DIR) == live


def test_many_small_segments_trigger_a_checkpoint_below_the_byte_floor(fast_backend_root):
    store = fast_backend_root.store()
    log, _ = open_log(store, checkpoint_min_bytes=10**9, checkpoint_max_segments=50)
    seq = log.append([b"x"])
    log.checkpoint(b"tiny", seq)  # the live state is 4 bytes
    for _ in range(48):
        seq = log.append([b"y"])
    assert not log.checkpoint_due()  # 48 segments, far below the byte floor
    seq = log.append([b"z"])
    seq = log.append([b"z"])
    assert log.checkpoint_due()  # 50 segments: the floor no longer applies
    log.checkpoint(b"tiny", seq)
    _, seen = open_log(fast_backend_root.store())
    assert seen.snapshots == [b"tiny"] and seen.records == []


def test_background_cleanup_deletes_covered_segments_by_close(fast_backend_root):
    store = fast_backend_root.store()
    log, _ = open_log(store, checkpoint_min_bytes=1, background_cleanup=True)
    for i in range(20):
        seq = log.append([b"%d" % i])
    log.checkpoint(b"state", seq)
    log.close()
    # only the open's own fence is left under segments/: the checkpoint covers the rest
    assert seqs(store) == [1]


# -- appended segments (local disk) ---------------------------------------------------------


def open_appending(root: Path, **kwargs: object) -> tuple[Log, Replayed]:
    kwargs.setdefault("segment_max_bytes", 8 << 20)
    return open_log(open_store(str(root)), **kwargs)


def crash(log: Log) -> None:
    """Leave ``log`` as a killed process would: not closed, so nothing settles where its
    current segment ends (only its file descriptor is released)."""
    if log._appender is not None:
        log._appender.close()


def _block_segments(root: Path) -> list[Path]:
    return [
        p
        for p in sorted((root / SEGMENT_DIR).iterdir())
        if decode_header(p.name, MAGIC_SEGMENT, p.read_bytes())[0].get("blocks")
    ]


def _data_end(path: Path) -> int:
    """Where a block segment's blocks end (space reserved after them reads as zeros)."""
    data = path.read_bytes()
    _, pos = decode_header(path.name, MAGIC_SEGMENT, data)
    return decode_blocks(path.name, data, pos)[1]


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_appended_commits_share_one_segment_and_replay_in_order(tmp_path):
    log, _ = open_appending(tmp_path)
    assert [log.append(b) for b in BATCHES] == [2] * len(BATCHES)  # 1 is the open's fence
    assert len(_block_segments(tmp_path)) == 1
    log.close()
    log2, seen = open_appending(tmp_path)
    assert seen.records == flat(BATCHES)
    log2.append([b"gen 2"])
    _, seen = open_appending(tmp_path)
    assert seen.records == [*flat(BATCHES), b"gen 2"]
    # the shared segment, gen 2's segment and the newest fence: the others (1, 3) are gone
    assert seqs(open_store(str(tmp_path))) == [2, 4, 5]


def test_a_segment_ends_at_its_size_limit_and_at_a_checkpoint(tmp_path):
    log, _ = open_appending(tmp_path, segment_max_bytes=400, checkpoint_min_bytes=1)
    written = [log.append([b"%02d" % i + b"x" * 98]) for i in range(10)]
    assert written == sorted(written) and 3 <= len(set(written)) <= 5
    assert all(_data_end(p) <= 400 and p.stat().st_size <= 400 for p in _block_segments(tmp_path))
    log.checkpoint(b"ten", written[-1])
    after = log.append([b"after"])
    assert after == written[-1] + 1  # the checkpoint covered that segment whole
    log.close()
    _, seen = open_appending(tmp_path)
    assert seen.snapshots == [b"ten"] and seen.records == [b"after"]


@pytest.mark.parametrize("sectors", [1, 2])
def test_an_incomplete_last_block_is_dropped_as_never_acknowledged(tmp_path, sectors):
    log, _ = open_appending(tmp_path)
    log.append([b"one"])
    log.append([b"two", b"three"])
    crash(log)
    [segment] = _block_segments(tmp_path)
    end = _data_end(segment)
    # A crash in the middle of appending the next block to a file with no space reserved
    # (where posix_fallocate is not supported, writes extend the file): the size it leaves
    # covers whole sectors written.
    block = encode_block([b"four", b"five" * 400])
    cut = (end // SECTOR + sectors) * SECTOR - end
    segment.write_bytes(segment.read_bytes()[:end] + block[:cut])
    size = segment.stat().st_size
    log2, seen = open_appending(tmp_path)
    assert seen.records == [b"one", b"two", b"three"]
    log2.append([b"six"])
    log2.close()
    # That open recorded where the segment's blocks end: the torn tail is never read again.
    for _ in range(2):
        _, seen = open_appending(tmp_path)
        assert seen.records == [b"one", b"two", b"three", b"six"]
    assert segment.stat().st_size == size and _data_end(segment) == end  # nothing rewrote it


@pytest.mark.parametrize("cut", [1, 15, 17, 30, 600])
def test_a_last_block_cut_off_a_sector_boundary_is_corruption(tmp_path, cut):
    """No file system leaves a file ending inside a sector it wrote: that is damage."""
    log, _ = open_appending(tmp_path)
    log.append([b"one"])
    crash(log)
    [segment] = _block_segments(tmp_path)
    end = _data_end(segment)
    assert (end + cut) % SECTOR
    block = encode_block([b"two", b"three" * 400])
    segment.write_bytes(segment.read_bytes()[:end] + block[:cut])
    with pytest.raises(CorruptionError, match=rf"{segment.name}: damaged block at byte {end}"):
        open_appending(tmp_path)


def test_an_incomplete_block_followed_by_a_writers_segment_is_corruption(tmp_path):
    log, _ = open_appending(tmp_path, segment_max_bytes=400)
    log.append([b"a" * 50])
    log.append([b"b" * 50])
    log.append([b"c" * 300])  # does not fit: a second segment, started by the same writer
    crash(log)
    first, _second = _block_segments(tmp_path)
    first.write_bytes(first.read_bytes()[: _data_end(first) - 10])
    with pytest.raises(CorruptionError) as info:
        open_appending(tmp_path)
    assert first.name in str(info.value) and "incomplete block" in str(info.value)


@pytest.mark.parametrize("which", ["first block", "last block"])
def test_a_damaged_complete_block_is_corruption_even_at_the_end(tmp_path, which):
    log, _ = open_appending(tmp_path)
    log.append([b"first" * 10])
    log.append([b"last" * 10])
    log.close()
    [segment] = _block_segments(tmp_path)
    end = _data_end(segment)
    _flip(segment, end - 60 if which == "first block" else end - 5)
    with pytest.raises(CorruptionError, match=segment.name):
        open_appending(tmp_path)


@pytest.mark.parametrize("lost", ["second sector", "first sector"])
@pytest.mark.parametrize("after", ["nothing", "a segment with records", "its writer's segment"])
def test_a_block_torn_across_sectors_is_dropped_at_the_end_only(tmp_path, lost, after):
    """A crash can persist some sectors of a write and not others (unwritten ones read as
    zeros in the reserved space). Only at the end of the log is that a torn append."""
    root = tmp_path / "root"
    log, _ = open_appending(root)
    log.append([b"kept"])
    crash(log)
    [segment] = _block_segments(root)
    end = _data_end(segment)
    block = encode_block([bytes(range(256)) * 8])  # 2 KiB of non-zero bytes
    torn = bytearray(block)
    boundary = -(-end // 512) * 512 - end  # where the block crosses into the next sector
    if lost == "second sector":
        torn[boundary : boundary + 512] = bytes(512)
    else:
        torn[:boundary] = bytes(boundary)
    _write_at(segment, end, bytes(torn))
    if after == "nothing":
        _, seen = open_appending(root)
        assert seen.records == [b"kept"]
        return
    # The same damage before a later segment cannot be a crash: a writer starts a segment
    # only once its last append is durable, and an opener records where a segment ends.
    next_seq = int(segment.name) + 1
    nonce = "x" if after == "a segment with records" else log.nonce
    records = [b"later"] if after == "a segment with records" else []
    data = encode(
        MAGIC_SEGMENT,
        {"epoch": 99, "nonce": nonce, "seq": next_seq, "count": len(records)},
        records,
    )
    open_store(str(root)).put_if_absent(f"{SEGMENT_DIR}/{next_seq:020d}", data)
    with pytest.raises(CorruptionError, match=segment.name):
        open_appending(root)


def test_a_truncated_first_block_is_corruption(tmp_path):
    log, _ = open_appending(tmp_path)
    log.append([b"published whole" * 10])
    crash(log)
    [segment] = _block_segments(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-20])
    with pytest.raises(CorruptionError, match="first block"):
        open_appending(tmp_path)


def test_an_appending_writer_is_fenced_and_its_acknowledged_blocks_survive(tmp_path):
    old, _ = open_appending(tmp_path)
    old.append([b"old 1"])
    old.append([b"old 2"])
    new, seen = open_appending(tmp_path)
    assert seen.records == [b"old 1", b"old 2"]
    [segment] = _block_segments(tmp_path)
    size = segment.stat().st_size
    with pytest.raises(FencedError):
        old.append([b"never acknowledged"])
    assert segment.stat().st_size == size  # the fence was seen before writing anything
    with pytest.raises(QueueBroken):
        old.append([b"again"])
    new.append([b"new 1"])
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"old 1", b"old 2", b"new 1"]


def test_an_opener_waits_for_an_append_in_progress_and_replays_it(tmp_path):
    """The displaced writer passed its fence check and is mid-write when the opener fences."""
    old, _ = open_appending(tmp_path)
    old.append([b"before"])
    [segment] = _block_segments(tmp_path)
    fd = os.open(segment, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as LocalAppender.append holds it while writing
    block = encode_block([b"in flight"])
    os.write(fd, block[:7])  # half of it so far
    result: list[Replayed] = []
    opener = threading.Thread(target=lambda: result.append(open_appending(tmp_path)[1]))
    opener.start()
    fence = tmp_path / SEGMENT_DIR / f"{int(segment.name) + 1:020d}"
    deadline = time.monotonic() + 30
    while not fence.exists():
        assert time.monotonic() < deadline, "the opener never fenced"
        time.sleep(0.001)
    time.sleep(0.05)
    assert not result  # it is waiting for the lock
    os.write(fd, block[7:])
    os.fdatasync(fd)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    opener.join(30)
    assert result and result[0].records == [b"before", b"in flight"]
    with pytest.raises(FencedError):
        old.check_fenced()
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"before", b"in flight"]


@pytest.mark.parametrize("size", [50, 150], ids=["grows it", "starts the next one"])
def test_an_opener_rereads_a_segment_the_old_writer_grew_and_left(tmp_path, monkeypatch, size):
    """Listing, reading and fencing are not one step: the old writer keeps going between.
    What it writes after the opener's claim, before the fence, is replayed by the opener."""
    old, _ = open_appending(tmp_path, segment_max_bytes=300)
    old.append([b"a" * 100])
    real_get = LocalStore._raw_get
    late: list[int] = []

    def get_then_write(self, key):  # the old writer commits right after the read
        data = real_get(self, key)
        if key.startswith(SEGMENT_DIR) and not late:
            late.append(old.append([b"b" * size]))  # 50: fits that segment; 150: the next
        return data

    monkeypatch.setattr(LocalStore, "_raw_get", get_then_write)
    _, seen = open_appending(tmp_path, segment_max_bytes=300)
    monkeypatch.undo()
    # Acknowledged although the opener had claimed the root: it lands before the opener's
    # fence, so the opener replays it; the old writer knows it is displaced from then on.
    assert late and isinstance(old.broken, FencedError)
    assert seen.records == [b"a" * 100, b"b" * size]
    with pytest.raises(QueueBroken):
        old.append([b"d"])
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"a" * 100, b"b" * size]


def test_checkpoints_follow_superseded_bytes_when_the_caller_knows_the_live_size(tmp_path):
    """A growing backlog is not copied again; draining it is what makes a checkpoint due."""
    log, _ = open_log(open_store(str(tmp_path)), checkpoint_min_bytes=10_000, checkpoint_ratio=2)
    live = 0
    for _ in range(50):  # 500 KB of records that all stay live
        log.append([b"x" * 10_000])
        live += 10_000
        assert not log.checkpoint_due(live)
    assert log.checkpoint_due()  # the byte rule alone would have copied them by now
    for _ in range(30):  # 30 of them finish: 300 KB superseded, 200 KB live
        live -= 10_000
        log.append([b"-"])
    assert not log.checkpoint_due(live)  # 300 KB (and some framing) < 2 x 200 KB
    for _ in range(6):
        live -= 10_000
        seq = log.append([b"-"])
    assert log.checkpoint_due(live)  # 360 KB > 2 x 140 KB
    log.checkpoint(b"s" * 175_000, seq, live)  # the real snapshot is 1.25x the estimate
    assert not log.checkpoint_due(live)
    for _ in range(10):  # 10 finish: estimate 40 KB live, calibrated 50 KB
        live -= 10_000
        log.append([b"-"])
    # superseded: 175 KB snapshot + 10 small records - 50 KB > 2 x 50 KB
    assert log.checkpoint_due(live)
    assert not log.checkpoint_due(live * 3)  # 175 KB - 150 KB is not


def test_reserved_space_is_written_with_zeros_before_blocks_go_into_it(tmp_path, monkeypatch):
    """Blocks overwrite zeros already written, so a sync converts no allocated space."""
    import taquba.storage.local as local

    writes: list[tuple[int, int, bool]] = []  # (offset, length, all zeros)
    pwrite = os.pwrite

    def recording_pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        writes.append((offset, len(data), not any(bytes(data))))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(local.os, "pwrite", recording_pwrite)
    log, _ = open_appending(tmp_path)
    for i in range(3):
        log.append([b"r%d" % i * 100])
    log.close()
    [segment] = _block_segments(tmp_path)
    end = _data_end(segment)
    size = segment.stat().st_size
    assert size - end >= local.PREALLOCATE // 2  # space is reserved ahead ...
    zeroed = [(o, n) for o, n, zero in writes if zero]
    assert any(o <= end and o + n >= size for o, n in zeroed)  # ... and written with zeros
    blocks = [(o, n) for o, n, zero in writes if not zero]
    assert blocks and all(
        any(zo <= o and o + n <= zo + zn for zo, zn in zeroed) for o, n in blocks
    )  # every block went over written zeros
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"r%d" % i * 100 for i in range(3)]


def test_appending_without_reserved_space_extends_the_file(tmp_path, monkeypatch):
    """Where posix_fallocate is missing (macOS) or refused, blocks simply extend the file."""
    import taquba.storage.local as local

    monkeypatch.setattr(local, "_fallocate", None)
    log, _ = open_appending(tmp_path)
    for i in range(5):
        log.append([b"r%d" % i])
    log.close()
    [segment] = _block_segments(tmp_path)
    assert segment.stat().st_size == _data_end(segment)  # no zeros after the blocks
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"r%d" % i for i in range(5)]


def test_a_store_that_cannot_append_writes_one_object_per_commit(tmp_path, monkeypatch):
    """Windows has no flock: the log falls back to publishing every commit whole."""
    monkeypatch.setattr(LocalStore, "appendable", False)
    log, _ = open_appending(tmp_path)
    assert [log.append([b"a"]), log.append([b"b"])] == [2, 3]
    assert _block_segments(tmp_path) == []
    log.close()
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"a", b"b"]


def test_an_empty_commit_ends_the_appended_segment_instead_of_fencing_it(tmp_path):
    log, _ = open_appending(tmp_path)
    first = log.append([b"a"])
    empty = log.append([])  # a segment of its own, like a fence
    after = log.append([b"b"])  # not appended behind that empty segment
    assert first < empty < after
    log.close()
    _, seen = open_appending(tmp_path)
    assert seen.records == [b"a", b"b"]


def test_segment_removed_right_after_its_creation_fences_the_handle(tmp_path):
    """A newer writer may replay, checkpoint and delete a segment between its creation
    and its opening for appends: the older handle is fenced, not broken by a bare
    "not found"."""
    store = LocalStore(str(tmp_path))
    old, _ = open_log(store, segment_max_bytes=1 << 20)
    real = store.put_if_absent

    def put_then_vanish(key: str, data: bytes) -> None:
        real(key, data)
        if key.startswith(SEGMENT_DIR + "/"):
            os.unlink(os.path.join(str(tmp_path), *key.split("/")))

    store.put_if_absent = put_then_vanish  # type: ignore[method-assign]
    with pytest.raises(FencedError, match="removed by another process"):
        old.append([b"lost"])
    assert isinstance(old.broken, FencedError)
