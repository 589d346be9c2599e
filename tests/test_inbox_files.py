"""Inbox files: producers on local disk append their submissions as blocks to a file of
their own, and the owner reads each file on from where it stopped.

What is checked: a producer SIGKILLed mid-append loses none of its returned calls and the
owner takes every block in once; a crash-torn block at the end of a settled file is
ignored and a damaged one is refused; files roll over and are deleted once taken in; an
append that failed is never appended after; a quiet producer's file is removed (its mark
kept for the retention period) and the producer goes on in a new file; a forked child
writes a file of its own; removal and appending exclude each other.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.clock import ManualClock

import taquba.producer as producer_module
from taquba import CorruptionError, OpenOptions, Producer, Queue, QueueConfig, StorageError
from taquba.inbox import (
    INBOX_DIR,
    SubmitEnqueue,
    decode_file_head,
    encode_file_head,
    encode_submission_block,
    file_name,
    parse_file_name,
    scan_file,
    submission_frames,
)
from taquba.intake import QUIET_FILE_SECONDS
from taquba.storage import LocalStore, ObjectNotFound

Q = "mail"
HERE = Path(__file__).resolve().parent
REPO = str(HERE.parent)
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(not LocalStore.appendable, reason="no appending here")


def open_owner(root: Path, clock: ManualClock | None = None, **options: Any) -> Queue:
    config = QueueConfig(max_attempts=5, retry_backoff_base=0)
    return Queue.open(
        str(root),
        options=OpenOptions(
            clock=clock, background_threads=False, default_queue_config=config, **options
        ),
    )


def files(root: Path) -> list[str]:
    return [n for n in LocalStore(str(root)).list_dir(INBOX_DIR) if parse_file_name(n)]


def claim_all(q: Queue) -> list[bytes]:
    got = []
    while (c := q.claim(Q)) is not None:
        got.append(c.payload)
    return got


def block(*payloads: bytes) -> bytes:
    frames = [
        f
        for i, p in enumerate(payloads)
        for f in submission_frames(
            SubmitEnqueue(queue=Q, job_ids=(f"job{p.hex()}{i}",), payloads=(p,))
        )
    ]
    return encode_submission_block(frames)


# -- a producer killed while it appends ------------------------------------------------------

CHILD = """
import os, sys
from taquba import Producer
p = Producer.open(sys.argv[1])
n = 0
while True:
    ids = p.enqueue_batch("mail", [os.urandom(100_000) for _ in range(5)])
    os.write(1, ("E " + " ".join(ids) + "\\n").encode())
    n += 1
"""


def test_producer_sigkilled_mid_append_loses_no_returned_call(tmp_path: Path) -> None:
    """Each call appends a block of 500 kB and syncs it, so most kills land inside the
    sync of a block whose caller never heard back: such a block may be taken in (whole),
    everything that returned is, and nothing twice, also by a second owner."""
    root = tmp_path / "root"
    rng = random.Random(5)
    returned: list[list[str]] = []
    for _ in range(8):
        out = tmp_path / f"p{len(returned)}.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(root)],
                stdout=f,
                env={**os.environ, "PYTHONPATH": REPO},
            )
        deadline = time.monotonic() + TIMEOUT
        while out.read_text().count("\n") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "child did not run"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        returned += [line.split()[1:] for line in out.read_text().splitlines()]
    # One producer id per process: a restarted producer never appends to an old file.
    assert len({parse_file_name(n)[0] for n in files(root)}) == 8  # type: ignore[index]
    q = open_owner(root)
    try:
        while q.intake_now():
            pass
        acked = [job_id for batch in returned for job_id in batch]
        assert all(q.get_job(job_id) is not None for job_id in acked)
        stats = q.stats(Q)
        # At most the one batch in flight per kill landed besides, whole (never in part).
        assert stats.pending % 5 == 0
        assert len(acked) <= stats.pending <= len(acked) + 5 * 8
        assert q.intake_now() == 0
        for job_id in acked:
            q.cancel(job_id)  # gone from the state: only the marks keep them from coming back
    finally:
        q.close()
    q = open_owner(root)  # a new owner reads every file again from its start: nothing twice
    try:
        assert q.intake_now() == 0
        assert all(q.get_job(job_id) is None for job_id in acked)
        assert q.stats(Q).pending == stats.pending - len(acked)
    finally:
        q.close()


# -- torn and damaged blocks -----------------------------------------------------------------


def write_file(
    root: Path, producer: str, start: int, blocks: list[bytes], tail: bytes = b"", zeros: int = 4096
) -> Path:
    path = root / INBOX_DIR / file_name(producer, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        encode_file_head(producer, start, "n", blocks[0])
        + b"".join(blocks[1:])
        + tail
        + bytes(zeros)
    )
    return path


def test_a_torn_block_ends_a_settled_file_and_is_never_applied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    producer = "00112233445566aa"
    done = [block(b"a"), block(b"b")]
    at = len(encode_file_head(producer, 0, "n", done[0]) + done[1])
    torn = block(b"t" * 3000)
    # A crash during its append: the sectors after its first never reached the disk.
    cut = torn[: 512 - at % 512] + bytes(len(torn) - (512 - at % 512))
    write_file(root, producer, 0, done, tail=cut)
    q = open_owner(root)
    try:
        assert q.intake_now() == 2  # the current file: the torn block waits, unjudged
        assert q.intake_now() == 0
        # The producer went on in a new file after the failed append (seq 2 not reused).
        write_file(root, producer, 3, [block(b"c")])
        assert q.intake_now() == 1
        assert files(root) == [file_name(producer, 3)]  # the settled file is deleted
        assert claim_all(q) == [b"a", b"b", b"c"]
        assert q.inbox_marks() == {producer: 3}
    finally:
        q.close()


def test_a_damaged_block_in_a_settled_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    producer = "00112233445566bb"
    bad = bytearray(block(b"b"))
    bad[-1] ^= 0x40  # a flipped bit in a block whose bytes are all there
    write_file(root, producer, 0, [block(b"a")], tail=bytes(bad) + block(b"after"))
    write_file(root, producer, 3, [block(b"c")])
    q = open_owner(root)
    try:
        with pytest.raises(CorruptionError, match="damaged block"):
            q.intake_now()
        assert q.stats(Q).pending == 0  # nothing of that producer was applied
    finally:
        q.close()


# -- rolling over, failed appends, fork ------------------------------------------------------


def test_files_roll_over_and_keep_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "FILE_BYTES", 600)
    root = tmp_path / "root"
    q = open_owner(root)
    try:
        with Producer.open(str(root)) as p:
            for i in range(30):
                p.enqueue(Q, str(i).encode())
                if i == 15:
                    assert len(files(root)) > 3  # rolled over several times
                    q.intake_now()
        while q.intake_now():
            pass
        assert q.intake_now() == 0
        assert files(root) == []  # every file settled (a later one, or the end block)
        assert claim_all(q) == [str(i).encode() for i in range(30)]
    finally:
        q.close()


def test_no_append_after_a_failed_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    q = open_owner(root)
    try:
        with Producer.open(str(root)) as p:
            p.enqueue(Q, b"first")
            file = p._file
            assert file is not None
            real = file.append

            def landed_then_failed(data: bytes, fence_key: str | None = None) -> None:
                real(data, fence_key)
                raise StorageError("the sync failed")

            file.append = landed_then_failed  # type: ignore[method-assign]
            with pytest.raises(StorageError, match="the sync failed"):
                p.enqueue(Q, b"second")  # landed, but the caller was told it failed
            assert p._file is None
            p.enqueue(Q, b"third")
        assert len(files(root)) == 2  # the third went to a new file
        assert q.intake_now() == 3
        assert claim_all(q) == [b"first", b"second", b"third"]
        assert files(root) == []
    finally:
        q.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_appends_to_a_file_of_its_own(tmp_path: Path) -> None:
    root = tmp_path / "root"
    p = Producer.open(str(root))
    p.enqueue(Q, b"parent before")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            p.enqueue(Q, b"child")
            p.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    p.enqueue(Q, b"parent after")
    p.close()
    assert len({parse_file_name(n)[0] for n in files(root)}) == 2  # type: ignore[index]
    q = open_owner(root)
    try:
        assert q.intake_now() == 3
        assert sorted(claim_all(q)) == [b"child", b"parent after", b"parent before"]
    finally:
        q.close()


# -- quiet producers ------------------------------------------------------------------------


def test_a_quiet_producers_file_is_removed_and_it_goes_on_in_a_new_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    clock = ManualClock()
    q = open_owner(root, clock, inbox_retention=3600.0)
    p = Producer.open(str(root), clock=clock)
    try:
        p.enqueue(Q, b"before")
        assert q.intake_now() == 1
        (first,) = files(root)
        clock.advance(QUIET_FILE_SECONDS - 1)
        q.intake_now()
        assert files(root) == [first]  # not quiet for long enough yet
        clock.advance(2)
        q.intake_now()
        assert files(root) == []  # removed: taken in, and quiet for a while
        assert list(q.inbox_marks()) == [p.producer_id]  # the mark stays
        p.enqueue(Q, b"after")  # finds its file removed: writes a new one, nothing lost
        (second,) = files(root)
        assert second != first
        assert q.intake_now() == 1
        assert claim_all(q) == [b"before", b"after"]
        clock.advance(3601)
        q.intake_now()
        assert files(root) == []
        q.intake_now()
        assert q.inbox_marks() == {}  # dropped once no file is listed after the retention
        p.enqueue(Q, b"again")
        assert q.intake_now() == 1
        assert claim_all(q) == [b"again"]
        assert list(q.inbox_marks()) == [p.producer_id]
    finally:
        p.close()
        q.close()


def test_a_file_is_not_removed_when_a_block_follows(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    head = encode_file_head("00112233445566cc", 0, "n", block(b"a"))
    appender = store.create_appendable("inbox/f", head, reserve=1 << 16)
    appender.append(block(b"b"))
    assert not store.remove_appendable("inbox/f", len(head), lambda tail: not tail.strip(b"\0"))
    assert store.remove_appendable("inbox/f", appender.size, lambda tail: True)
    assert store.list_dir("inbox") == []
    with pytest.raises(ObjectNotFound):
        appender.append(block(b"c"))  # removed under the lock: nothing written
    appender.close()


def test_scan_reads_blocks_in_order(tmp_path: Path) -> None:
    """The file layout, read back in one piece as the owner would."""
    path = write_file(tmp_path, "00112233445566dd", 7, [block(b"x"), block(b"y", b"z")])
    data = path.read_bytes()
    producer, start, pos = decode_file_head(path.name, data)
    scan = scan_file(path.name, data, pos, 0, start, at_eof=True, finished=True, limit=10)
    assert (producer, start) == ("00112233445566dd", 7)
    assert [seq for seq, _ in scan.blocks] == [7, 8]
    assert [len(subs) for _, subs in scan.blocks] == [1, 2]
    assert not scan.ended and scan.need is None and scan.seq == 9
