"""What a reopen has to read, and the record decoders replay leans on.

- A clean close writes a checkpoint when the log since the last one outweighs the live
  state, so the next open reads the live state, not the history; it copies no backlog that
  is still live, and a displaced handle's close loses nothing.
- The short forms of the records a log holds most of (a claim, an ack that drops its job,
  a run of a batch's jobs) decode to exactly what the general decoder reads from them, and
  reject what it rejects.
"""

from __future__ import annotations

import random
import struct

import pytest
from support.backends import BackendRoot
from support.clock import T0

from taquba import OpenOptions, Queue
from taquba.core import events as ev
from taquba.core import ids
from taquba.core.codec import Reader
from taquba.core.state import State
from taquba.errors import CorruptionError, FencedError
from taquba.log import CHECKPOINT_DIR, SEGMENT_DIR
from taquba.log.policy import CLOSE_MIN_BYTES
from taquba.log.replay import parse_segment

QUIET = OpenOptions(
    background_threads=False, fence_check_interval=None, checkpoint_max_segments=100_000
)


def _records_in_segments(root: BackendRoot) -> int:
    store = root.store()
    count = 0
    for name in store.list_dir(SEGMENT_DIR):
        key = f"{SEGMENT_DIR}/{name}"
        records, _ = parse_segment(key, int(name), store.get(key), None)
        count += len(records)
    return count


def _work(q: Queue, done: int, pending: int) -> list[str]:
    """``done`` jobs enqueued one by one, claimed and acked; then ``pending`` more."""
    for i in range(done):
        q.enqueue("work", b"job %d" % i)
        handle = q.claim("work")
        assert handle is not None
        q.ack(handle)
    return [q.enqueue("work", b"left %d" % i) for i in range(pending)]


def test_a_clean_close_checkpoints_when_the_log_outweighs_the_live_state(
    fast_backend_root: BackendRoot,
) -> None:
    q = Queue.open(fast_backend_root.location, options=QUIET)
    left = _work(q, 700, 5)  # a log past CLOSE_MIN_BYTES, of jobs nearly all gone
    assert q.committer.log.bytes_since_checkpoint > CLOSE_MIN_BYTES
    assert q.committer.stats.checkpoints_written == 0  # below the floor: none while running
    q.close()

    store = fast_backend_root.store()
    assert len(store.list_dir(CHECKPOINT_DIR)) == 1
    assert _records_in_segments(fast_backend_root) == 0  # everything is in the checkpoint

    with Queue.open(fast_backend_root.location, options=QUIET) as q:
        assert q.stats("work").pending == 5
        assert q.stats("work").done == 700
        got = [q.claim("work") for _ in left]
        assert [h.id for h in got if h is not None] == left
        assert [bytes(h.payload) for h in got if h is not None] == [
            b"left %d" % i for i in range(5)
        ]


def test_a_clean_close_leaves_a_short_log_to_replay(fast_backend_root: BackendRoot) -> None:
    with Queue.open(fast_backend_root.location, options=QUIET) as q:
        _work(q, 20, 1)
        assert q.committer.log.bytes_since_checkpoint < CLOSE_MIN_BYTES
    assert fast_backend_root.store().list_dir(CHECKPOINT_DIR) == []


def test_a_clean_close_copies_no_backlog_the_log_already_holds(
    fast_backend_root: BackendRoot,
) -> None:
    with Queue.open(fast_backend_root.location, options=QUIET) as q:
        q.enqueue_batch("work", [bytes(1024)] * 200)
    assert fast_backend_root.store().list_dir(CHECKPOINT_DIR) == []
    assert _records_in_segments(fast_backend_root) == 1
    with Queue.open(fast_backend_root.location, options=QUIET) as q:
        assert q.stats("work").pending == 200


def test_the_close_of_a_displaced_handle_loses_nothing(fast_backend_root: BackendRoot) -> None:
    old = Queue.open(fast_backend_root.location, options=QUIET)
    left = _work(old, 700, 3)
    new = Queue.open(fast_backend_root.location, options=QUIET)
    old.close()  # its checkpoint cannot be published: it is fenced off (a logged warning)
    assert isinstance(old.committer.log.broken, FencedError)
    try:
        assert new.stats("work").pending == 3
        assert new.stats("work").done == 700
    finally:
        new.close()
    with Queue.open(fast_backend_root.location, options=QUIET) as q:
        assert [q.claim("work").id for _ in left] == left  # type: ignore[union-attr]
        assert len(fast_backend_root.store().list_dir(CHECKPOINT_DIR)) <= 1


# -- the decoders' short forms -----------------------------------------------------------


def _general(record: bytes) -> ev.Event:
    """What the Reader-based decoder of the record's kind reads from it."""
    reader = ev._READERS[record[0]]
    r = Reader(record, 1)
    event = reader(r)
    r.finish()
    return event


def test_short_claims_and_acks_decode_as_the_general_decoder_reads_them() -> None:
    rng = random.Random(7)
    gen = ids.IdGenerator()
    for _ in range(2000):
        job_id = gen.new(T0 + rng.random() * 1e6)
        claim = ev.Claimed(
            job_id, rng.randint(1, 127), T0 + rng.random() * 1e6, float(rng.randint(0, 63))
        )
        record = claim.encode()
        assert len(record) == 28  # the short form
        assert ev.decode(record) == _general(record) == claim
        ack = ev.Acked(job_id, False)
        record = ack.encode()
        assert len(record) == 18
        assert ev.decode(record) == _general(record) == ack
    # the other forms still take the general path
    for event in (
        ev.Claimed("user-1", 3, T0, 30.0),
        ev.Claimed(gen.new(T0), 200, T0, 30.0),
        ev.Claimed(gen.new(T0), 1, T0, 0.5),
        ev.Claimed(gen.new(T0), 1, T0, 3600.0),
        ev.Acked("user-1", False),
        ev.Acked(gen.new(T0), True, T0),
    ):
        assert ev.decode(event.encode()) == event


@pytest.mark.parametrize(
    "name,patch,pattern",
    [
        ("attempts 0", lambda b: b[:18] + b"\x00" + b[19:], "attempts 0"),
        (
            "non-finite time",
            lambda b: b[:19] + struct.pack(">d", float("inf")) + b[27:],
            "non-finite time",
        ),
        ("odd lease marker", lambda b: b[:27] + b"\x03", "bad duration marker 3"),
        ("lease varint runs past the end", lambda b: b[:27] + b"\x82", "truncated varint"),
    ],
)
def test_a_damaged_short_claim_is_corruption(name: str, patch: object, pattern: str) -> None:
    record = ev.Claimed(ids.IdGenerator().new(T0), 2, T0, 30.0).encode()
    bad = patch(record)  # type: ignore[operator]
    assert len(bad) == len(record)
    with pytest.raises(CorruptionError, match=pattern):
        ev.decode(bad)


def test_a_batch_decodes_to_its_jobs_across_id_carries_and_payload_sizes() -> None:
    gen = ids.IdGenerator()
    gen.new(T0)
    gen._last |= 0xF0  # the next ids carry out of the last digits within the batch
    job_ids = gen.new_many(T0, 600)
    payloads = [bytes([i % 251]) * (i % 200) for i in range(600)]  # some of 128 B and more
    event = ev.Enqueued("q", T0, job_ids, payloads)
    decoded = ev.decode(event.encode())
    assert decoded == event._replace(kv=[])
    assert list(decoded.ids) == job_ids and list(decoded.payloads) == payloads


def test_a_truncated_payload_inside_a_run_is_corruption() -> None:
    job_ids = ids.IdGenerator().new_many(T0, 10)
    record = ev.Enqueued("q", T0, job_ids, [b"x" * 20] * 10).encode()
    # The last job claims a payload longer than the bytes left.
    bad = record[:-21] + bytes([40]) + record[-20:]
    with pytest.raises(CorruptionError):
        ev.decode(bad)


def test_an_enqueue_that_lists_one_id_twice_is_corruption() -> None:
    gen = ids.IdGenerator()
    a, b = gen.new_many(T0, 2)
    record = ev.Enqueued("q", T0, [a, b, a], [b"1", b"2", b"3"]).encode()
    state = State()
    with pytest.raises(CorruptionError, match="repeats the id of a known job, or lists one twice"):
        state.apply_record(record)
    assert state.jobs == {}


def test_ids_following_is_what_the_generator_makes() -> None:
    for low in (0, 1, 0x7F, 0xFE, 0xFF):
        gen = ids.IdGenerator()
        first = gen.new(T0)
        gen._last = (gen._last & ~0xFF) | low
        gen._text = ids.encode(gen._last)
        start_text, start = gen._text, gen._last
        expected = [gen.new(T0) for _ in range(700)]
        assert ids.following(start_text, start, 700) == expected
        assert first


# -- the garbage collector around a replay -------------------------------------------------


def test_open_leaves_the_collector_as_it_found_it(tmp_path: object) -> None:
    import gc

    root = str(tmp_path)
    with Queue.open(root, options=QUIET) as q:
        q.enqueue_batch("work", [b"x"] * 100)
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            Queue.open(root, options=QUIET).close()
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_open_keeps_the_objects_an_application_froze_frozen(tmp_path: object) -> None:
    import gc

    root = str(tmp_path)
    with Queue.open(root, options=QUIET) as q:
        q.enqueue_batch("work", [b"x"] * 100)
    gc.freeze()  # as an application does before forking workers
    try:
        assert gc.get_freeze_count() > 0
        Queue.open(root, options=QUIET).close()
        # still frozen (an unfreeze empties the permanent generation; a frozen object may
        # still be freed meanwhile, so the count is not compared exactly)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
