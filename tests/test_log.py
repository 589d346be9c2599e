"""The log layer on its own: replay, checkpoints, fencing and corruption detection.

Replay runs on every backend (``backend_root``); fencing and the checkpoint bound run on
the in-process backends (``fast_backend_root``); corruption is local disk, where a test can
edit an object in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from taquba.committer import Committer
from taquba.errors import CorruptionError, FencedError, QueueBroken
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Log
from taquba.log.format import MAGIC_MANIFEST, MAGIC_SEGMENT, decode, encode
from taquba.log.log import EPOCH_CHECK_EVERY
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
    # Segments are contiguous from 1: the first open's fence, the five batches, the second
    # open's fence, gen 2 and the third open's fence.
    reader = backend_root.store()
    assert seqs(reader) == list(range(1, 10))
    assert len(reader.list_dir(MANIFEST_DIR)) == 3


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
    # What the checkpoints cover is gone: one checkpoint, and under segments/ only the two
    # batches after it plus the fences of the two opens (fences are never deleted).
    reader = backend_root.store()
    assert len(reader.list_dir(CHECKPOINT_DIR)) == 1
    assert len(seqs(reader)) == 4
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


def test_busy_writer_yields_to_a_newer_epoch_within_a_bounded_number_of_commits(
        fast_backend_root):
    """An opener that has claimed the epoch but keeps losing the race for the next segment
    number (simulated: its manifest exists, its fence does not) stops the old writer."""
    old, _ = open_log(fast_backend_root.store())
    for i in range(10):
        old.append([b"%d" % i])
    claim = encode(MAGIC_MANIFEST, {"epoch": old.manifest_n + 1, "nonce": "opener",
                                    "checkpoint": None, "replay_from": 1})
    fast_backend_root.store().put_if_absent(f"{MANIFEST_DIR}/{old.manifest_n + 1:020d}", claim)
    more = 0
    with pytest.raises(FencedError, match="newer"):
        while True:
            old.append([b"after the claim %d" % more])
            more += 1
    assert more < EPOCH_CHECK_EVERY
    assert 10 + more == EPOCH_CHECK_EVERY  # it noticed at its first check after the claim
    _, seen = open_log(fast_backend_root.store())
    assert len(seen.records) == 10 + more  # everything it acknowledged is there


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


@pytest.mark.parametrize("where", ["magic", "version", "header", "frame length",
                                   "frame checksum", "payload"])
def test_flipped_byte_in_a_segment_is_corruption_naming_it(tmp_path, where):
    expected = _build(tmp_path)
    victim = _data_segments(tmp_path)[1]  # [b"f"], the middle one after the checkpoint
    size = victim.stat().st_size
    # The object ends with one frame: length (4 bytes), CRC32 (4 bytes), b"f".
    offset = {"magic": 0, "version": 5, "header": 20, "frame length": size - 6,
              "frame checksum": size - 3, "payload": size - 1}[where]
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
    cut = {"empty": 0, "half a header": 7, "mid frame": len(data) - 50,
           "frame boundary": len(data) - (8 + 100)}[keep]
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
    print(f"\ncheckpoint bound: wrote {store.counts.bytes_written} bytes in "
          f"{stats.segments_written} segments and {stats.checkpoints_written} checkpoints; "
          f"reopen read {read.bytes_read} bytes in {read.gets} gets")



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
    # only the fence of the open is left under segments/
    assert seqs(store) == [1]
