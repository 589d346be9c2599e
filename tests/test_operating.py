"""What README's "Operating" section tells people to do, done for real: back up a live
root (manifests first, then the rest, checked with a reader) while its owner writes and
checkpoints in another process, and move a queue between local disk and a bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import queue_child as child_mod
from support.cli import taquba_json

from taquba import CorruptionError, OpenOptions, Queue, QueueReader, StorageError
from taquba.reader import QueueNotFound

CHILD = str(Path(__file__).parent / "support" / "queue_child.py")
COPIES = 20  # attempts at a consistent copy (README: "copy again")


def _copy_live_root(src: Path, dst: Path) -> None:
    """README's recipe on local disk: the manifests first, then everything else."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src / "manifest", dst / "manifest")
    for name in ("checkpoints", "segments", "inbox"):
        if (src / name).exists():
            shutil.copytree(
                src / name, dst / name, ignore_dangling_symlinks=True, dirs_exist_ok=True
            )


def _lines(path: Path, kind: str) -> set[str]:
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a last line without its newline may be cut short
    return {line[2:] for line in lines if line.startswith(kind + " ")}


def test_a_live_root_is_backed_up_by_copying_manifests_first(tmp_path: Path) -> None:
    root, copy = tmp_path / "q", tmp_path / "backup"
    out = tmp_path / "child.out"
    spec = {
        "mode": "crash",
        "location": str(root),
        "storage_options": {},
        "run": 1,
        "checkpoint_min_bytes": 4096,
    }
    with open(out, "wb") as stdout:
        child = subprocess.Popen(
            [sys.executable, CHILD, json.dumps(spec)], stdin=subprocess.DEVNULL, stdout=stdout
        )
    try:
        while len(_lines(out, "A")) < 200:  # under way: writing and checkpointing
            assert child.poll() is None, "the owner exited"
            time.sleep(0.01)
        checkpoints_before = len(os.listdir(root / "checkpoints"))
        good = 0
        for _ in range(COPIES):
            before = _lines(out, "E")
            _copy_live_root(root, copy)
            try:
                with QueueReader.open(str(copy)) as reader:
                    missing = [j for j in before if reader.get_job(j) is None]
            except (StorageError, CorruptionError, QueueNotFound):
                continue  # the owner checkpointed during the copy: copy again
            # Every job enqueued before the copy began is in it (acked ones are kept as done).
            assert missing == []
            good += 1
            if good == 3:
                break
        assert good == 3
        assert child.poll() is None
        assert len(os.listdir(root / "checkpoints")) >= 1 and checkpoints_before >= 1
    finally:
        child.kill()
        child.wait()
    # The copy opens as a queue of its own, with everything the reader saw.
    with QueueReader.open(str(copy)) as reader:
        stats = reader.stats(child_mod.QUEUE)
    with Queue.open(str(copy), options=child_mod.options(4096, background_threads=False)) as q:
        reopened = q.stats(child_mod.QUEUE)
    assert reopened.done == stats.done
    assert reopened.pending + reopened.claimed == stats.pending + stats.claimed


def _populate(location: str, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    with Queue.open(
        location, options=OpenOptions(background_threads=False), storage_options=storage_options
    ) as q:
        ids = {
            "pending": q.enqueue("work", b"p", headers={"h": "v"}),
            "dead": q.enqueue("work", b"d"),
            "later": q.enqueue("work", b"l", delay=3600),
        }
        for n in range(40):
            q.enqueue("other", b"%d" % n)
            claim = q.claim("other")
            assert claim is not None
            q.ack(claim)
        claim = q.claim("work")
        assert claim is not None and claim.id == ids["pending"]
        q.nack(claim, "once")
        claim = q.claim("work")
        assert claim is not None and claim.id == ids["dead"]
        q.dead_letter(claim, "bad")
    return ids


def _check(location: str, ids: dict[str, str], storage_options: dict[str, Any] | None) -> None:
    # A minute on: the nacked job's retry (1 s of backoff) is due however fast the copy went,
    # and the job delayed by an hour is still scheduled.
    options = OpenOptions(background_threads=False, clock=lambda: time.time() + 60.0)
    with Queue.open(location, options=options, storage_options=storage_options) as q:
        assert q.get_job(ids["pending"]).headers == {"h": "v"}  # type: ignore[union-attr]
        assert [a.outcome for a in q.attempt_history(ids["pending"])] == ["nacked"]
        assert q.get_job(ids["dead"]).last_error == "bad"  # type: ignore[union-attr]
        assert q.get_job(ids["later"]).status == "scheduled"  # type: ignore[union-attr]
        assert q.stats("other").done == 40
        claim = q.claim("work")
        assert claim is not None and claim.id == ids["pending"]
        q.ack(claim)


def test_a_queue_moves_between_local_disk_and_a_bucket(tmp_path: Path, s3_emulator: Any) -> None:
    local = tmp_path / "q"
    ids = _populate(str(local))
    bucket = s3_emulator.root()
    fs, path = bucket.filesystem()
    fs.put(str(local), path, recursive=True)  # aws s3 sync ./q s3://bucket/q
    opts = bucket.storage_options
    cli_opts = [
        a for key, value in opts.items() for a in ("--storage-option", f"{key}={json.dumps(value)}")
    ]
    assert {s["queue"]: s["dead"] for s in taquba_json("stats", bucket.location, *cli_opts)} == {
        "other": 0,
        "work": 1,
    }
    _check(bucket.location, ids, opts)
    # ... and back down to disk, with what happened in the bucket.
    back = tmp_path / "back"
    fs.get(path, str(back), recursive=True)
    with Queue.open(str(back), options=OpenOptions(background_threads=False)) as q:
        assert q.get_job(ids["pending"]) is None  # acked in the bucket (and not kept)
        assert q.stats("work").done == 1
        assert q.get_job(ids["dead"]).status == "dead"  # type: ignore[union-attr]
