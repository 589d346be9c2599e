"""Damage every kind of log object in both segment layouts, reopen, and classify.

A root is built with real ``Queue`` operations over two sessions (jobs enqueued, claimed and
acknowledged; one checkpoint, segments after it from both sessions). Then, one case at a
time, one object of a copy is damaged and the copy is reopened. Every outcome must be one of:

- **detected**: ``CorruptionError`` naming the damaged object;
- **identical**: the replayed state is exactly that of the undamaged root (the damage hit
  bytes nothing reads: space reserved after the blocks, an object no version names).

Anything else is **silent** (a different state without an error) or **raw** (an exception
that is not a ``CorruptionError``); the target for both is zero. The damage: a flipped bit
at every byte of every header (object headers, block headers, frame headers) and at a
stride elsewhere, truncation at the same offsets, every 512-byte sector zeroed in turn,
and the object deleted. After a clean close, even deleting the newest segment is detected:
the manifest records the last segment written.

One layout gets a crash on top (the second session killed, its last append torn): the
segment it was appending to is the only place where the log may read damage as an
interrupted append, and only for the bytes from the last complete block on (see format.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import taquba
from taquba import OpenOptions, Queue
from taquba.core.state import State
from taquba.errors import CorruptionError
from taquba.log import CHECKPOINT_DIR, MANIFEST_DIR, SEGMENT_DIR, Log
from taquba.log.format import MAGIC_SEGMENT, SECTOR, decode_blocks, decode_header, encode_block
from taquba.storage import LocalStore

QUEUE = "jobs"
STRIDE = 3  # between headers, every STRIDE-th byte gets a flip and a cut


def options(segment_max_bytes: int) -> OpenOptions:
    return OpenOptions(
        segment_max_bytes=segment_max_bytes, checkpoint_min_bytes=1800, background_threads=False
    )


def first_session(root: str, segment_max_bytes: int) -> None:
    """Big jobs done (their records are what the checkpoint supersedes), then small ones."""
    with Queue.open(root, options=options(segment_max_bytes)) as q:
        for i in range(4):
            q.enqueue(QUEUE, b"big-%d-" % i + b"x" * 500)
        for _ in range(4):
            claim = q.claim(QUEUE)
            assert claim is not None
            q.ack(claim)
        for i in range(3):
            q.enqueue(QUEUE, b"small-%d" % i)
        claim = q.claim(QUEUE)
        assert claim is not None
        q.ack(claim)


SECOND_SESSION = """
import os, sys
from taquba import OpenOptions, Queue
q = Queue.open(sys.argv[1], options=OpenOptions(segment_max_bytes=int(sys.argv[2]),
               checkpoint_min_bytes=1800, background_threads=False))
for i in range(3, 6):
    q.enqueue("jobs", b"small-%d" % i)
q.ack(q.claim("jobs"))
q.claim("jobs")
q.kv_delete(b"flush")  # durable, and so is everything before it
if sys.argv[3] == "crash":
    os._exit(0)  # as a kill would: nothing closes
q.close()
"""


def second_session(root: str, segment_max_bytes: int, *, crash: bool) -> None:
    package_parent = str(Path(taquba.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH")) if p
        ),
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            SECOND_SESSION,
            root,
            str(segment_max_bytes),
            "crash" if crash else "close",
        ],
        env=env,
        check=True,
        timeout=120,
    )


def read_files(root: Path) -> dict[str, bytes]:
    return {
        f"{d}/{p.name}": p.read_bytes()
        for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR)
        if (root / d).is_dir()
        for p in sorted((root / d).iterdir())
        if not p.name.startswith(".")
    }


def write_files(files: dict[str, bytes], root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR):
        (root / d).mkdir(parents=True)
    for key, data in files.items():
        (root / key).write_bytes(data)


def reopen(root: Path) -> bytes:
    """The state a reopen replays, as a snapshot (the log only: nothing above it writes)."""
    holder = [State()]

    def on_snapshot(data: bytes) -> None:
        holder[0] = State.restore(data)

    log = Log.open(
        LocalStore(str(root), fsync=False),
        on_snapshot=on_snapshot,
        on_record=lambda data: holder[0].apply_record(data),
    )
    log.close()
    return holder[0].snapshot()


def structure(key: str, data: bytes) -> tuple[set[int], int]:
    """Offsets of every header byte of an object, and where its used bytes end."""
    fields, pos = decode_header(key, _magic(key), data)
    offsets = set(range(pos))
    if key.startswith(SEGMENT_DIR) and fields.get("blocks"):
        end = decode_blocks(key, data, pos)[1]
        while pos < end:
            offsets.update(range(pos, pos + 16))
            length = int.from_bytes(data[pos + 8 : pos + 12], "big")
            offsets.update(_frame_headers(data, pos + 16, pos + 16 + length))
            pos += 16 + length
        return offsets, end
    offsets.update(_frame_headers(data, pos, len(data)))
    return offsets, len(data)


def _magic(key: str) -> bytes:
    from taquba.log.format import MAGIC_CHECKPOINT, MAGIC_MANIFEST

    return {
        MANIFEST_DIR: MAGIC_MANIFEST,
        SEGMENT_DIR: MAGIC_SEGMENT,
        CHECKPOINT_DIR: MAGIC_CHECKPOINT,
    }[key.split("/")[0]]


def _frame_headers(data: bytes, pos: int, end: int) -> set[int]:
    out: set[int] = set()
    while pos < end:
        out.update(range(pos, pos + 8))
        pos += 8 + int.from_bytes(data[pos : pos + 4], "big")
    return out


@dataclass
class Case:
    key: str
    what: str  # "flip", "cut", "zero" or "delete"
    at: int
    data: bytes | None


def damages(key: str, data: bytes, cuts: set[int]) -> Iterator[Case]:
    headers, used = structure(key, data)
    spots = sorted(headers | set(range(0, used, STRIDE)) | {used - 1})
    # reserved space after the blocks: a few spots, near and far
    spots += [p for p in (used, used + 1, used + 700, len(data) - 1) if used <= p < len(data)]
    for p in spots:
        flipped = bytearray(data)
        flipped[p] ^= 1 << (p % 8)
        yield Case(key, "flip", p, bytes(flipped))
    for p in sorted(set(spots) | cuts | {0, 1, used + 1}):
        if p < len(data):
            yield Case(key, "cut", p, data[:p])
    sectors = list(range(0, -(-used // SECTOR)))
    sectors += [
        s
        for s in (-(-used // SECTOR) + 2, len(data) // SECTOR - 1)
        if s * SECTOR < len(data) and s not in sectors
    ]
    for s in sectors:
        zeroed = bytearray(data)
        zeroed[s * SECTOR : (s + 1) * SECTOR] = bytes(len(zeroed[s * SECTOR : (s + 1) * SECTOR]))
        if bytes(zeroed) != data:
            yield Case(key, "zero", s * SECTOR, bytes(zeroed))
    yield Case(key, "delete", 0, None)


class Scratch:
    """A root restored to ``files`` with one object replaced, case after case. A reopen only
    creates and deletes objects (it never changes one), so restoring rewrites little."""

    def __init__(self, files: dict[str, bytes], root: Path) -> None:
        self.files = files
        self.root = root
        self.damaged: str | None = None
        write_files(files, root)

    def load(self, key: str | None = None, data: bytes | None = b"") -> Path:
        for d in (MANIFEST_DIR, SEGMENT_DIR, CHECKPOINT_DIR):
            for p in (self.root / d).iterdir():
                if f"{d}/{p.name}" not in self.files:
                    p.unlink()
        for k, original in self.files.items():
            path = self.root / k
            if k == key:
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_bytes(data)
            elif k == self.damaged or not path.exists():
                path.write_bytes(original)
        self.damaged = key
        return self.root


@dataclass
class Outcomes:
    counts: Counter[str]
    silent: list[str]
    raw: list[str]


def run_cases(
    files: dict[str, bytes],
    scratch: Scratch,
    expected: bytes,
    indistinguishable: set[tuple[str, str, int]] | None = None,
    extra_cuts: dict[str, set[int]] | None = None,
) -> Outcomes:
    counts: Counter[str] = Counter()
    silent: list[str] = []
    raw: list[str] = []
    for key, data in files.items():
        for case in damages(key, data, (extra_cuts or {}).get(key, set())):
            label = f"{key} {case.what} at {case.at}"
            try:
                state = reopen(scratch.load(key, case.data))
            except CorruptionError as exc:
                # (a deleted object shows only through what it leaves missing)
                assert key in str(exc) or case.what == "delete", (
                    f"{label}: {exc} does not name the object"
                )
                counts["detected"] += 1
                continue
            except Exception as exc:  # any other kind is the failure counted here
                raw.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            if state == expected:
                counts["identical"] += 1
            elif indistinguishable is not None and (key, case.what, case.at) in indistinguishable:
                counts["read as the crash"] += 1
            else:
                silent.append(label)
    return Outcomes(counts, silent, raw)


def build(tmp_path: Path, segment_max_bytes: int, *, crash: bool) -> Path:
    root = tmp_path / "built"
    first_session(str(root), segment_max_bytes)
    second_session(str(root), segment_max_bytes, crash=crash)
    return root


def check_acknowledged(state: bytes) -> None:
    """The undamaged root holds what the sessions were told was durable: six jobs done
    (done jobs are not kept), four small ones still there."""
    restored = State.restore(state)
    assert restored.queues[QUEUE].done_total == 6
    assert sorted(j.payload for j in restored.jobs.values()) == [
        b"small-%d" % i for i in range(2, 6)
    ]


@pytest.mark.parametrize("segment_max_bytes", [0, 8 << 20], ids=["whole", "appended"])
def test_damage_to_any_object_is_detected_or_harmless(tmp_path, segment_max_bytes):
    root = build(tmp_path, segment_max_bytes, crash=False)
    files = read_files(root)
    kinds = Counter(k.split("/")[0] for k in files)
    assert kinds[MANIFEST_DIR] == 1 and kinds[CHECKPOINT_DIR] == 1 and kinds[SEGMENT_DIR] >= 2
    scratch = Scratch(files, tmp_path / "case")
    expected = reopen(scratch.load())
    check_acknowledged(expected)
    outcomes = run_cases(files, scratch, expected)
    print(f"\n{segment_max_bytes=}: {dict(outcomes.counts)} over {len(files)} objects")
    assert outcomes.raw == []
    assert outcomes.silent == []
    assert outcomes.counts["detected"] > 1000


def test_damage_after_a_crash_is_detected_except_where_the_crash_left_off(tmp_path):
    """The second session was killed while appending: its segment ends in a torn block that
    was never acknowledged, and no close or open has settled it. Damage there is read as the
    crash's doing only where nothing can tell them apart: the file cut at a block or sector
    boundary (as if the crash had come earlier), or the whole segment deleted (it is the
    newest object, and nothing has recorded it yet). Every other damage is detected."""
    root = build(tmp_path, 8 << 20, crash=True)
    current = max((root / SEGMENT_DIR).iterdir())
    data = current.read_bytes()
    fields, pos = decode_header(current.name, MAGIC_SEGMENT, data)
    assert fields.get("blocks")
    _, end, torn = decode_blocks(current.name, data, pos)
    assert not torn
    # The append the kill interrupted: 3 KiB over several sectors, one of them never written.
    block = bytearray(encode_block([b"never acknowledged" * 170]))
    hole = -(-(end + 600) // SECTOR) * SECTOR - end
    block[hole : hole + SECTOR] = bytes(SECTOR)
    data = data[:end] + bytes(block) + data[end + len(block) :]
    current.write_bytes(data)

    files = read_files(root)
    scratch = Scratch(files, tmp_path / "case")
    expected = reopen(scratch.load())
    check_acknowledged(expected)
    # Cutting the file at the end of a block, or at a sector boundary, from the end of its
    # first block on, leaves what a crash earlier in those appends would have left.
    boundaries = set()
    at = pos
    while at < end:
        at += 16 + int.from_bytes(data[at + 8 : at + 12], "big")
        boundaries.add(at)
    first_end = min(boundaries)
    boundaries |= set(range(-(-first_end // SECTOR) * SECTOR, end + len(block), SECTOR))
    key = f"{SEGMENT_DIR}/{current.name}"
    indistinguishable = {(key, "cut", p) for p in boundaries}
    indistinguishable.add((key, "delete", 0))  # the newest object: nothing records it
    outcomes = run_cases(files, scratch, expected, indistinguishable, {key: boundaries})
    print(f"\ncrash: {dict(outcomes.counts)} over {len(files)} objects")
    assert outcomes.raw == []
    assert outcomes.silent == []
    assert outcomes.counts["detected"] > 1000
    assert outcomes.counts["read as the crash"] <= len(indistinguishable)
