"""Settlement effects (``ack``/``nack``/``dead_letter`` with ``SettlementEffects``) and
``kv_put``, on the fast backends with a manual clock; and atomicity across SIGKILLs."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import effects_child as child
from support.clock import ManualClock

from taquba import (
    MAX_KV_VALUE_SIZE,
    ClaimLost,
    EnqueueOptions,
    EnqueueRequest,
    InvalidArgument,
    JobStatus,
    KvValueTooLarge,
    OpenOptions,
    PermanentFailure,
    Queue,
    QueueConfig,
    SettlementEffects,
    TaqubaError,
    run_worker,
)
from taquba.config import MAX_PAYLOAD_SIZE
from taquba.core import events as ev
from taquba.errors import CorruptionError

Q = "jobs"
NEXT = "next"
Opener = Callable[..., Queue]


@pytest.fixture
def open_queue(open_queue: Opener) -> Opener:
    """conftest's opener, with retries at once unless a test gives its own config."""
    return lambda config=None: open_queue(config or QueueConfig(retry_backoff_base=0))


def claim_one(q: Queue, queue: str = Q) -> Any:
    c = q.claim(queue)
    assert c is not None, f"nothing to claim on {queue!r}"
    return c


def follow_up(payload: bytes, **options: Any) -> EnqueueRequest:
    return EnqueueRequest(NEXT, payload, EnqueueOptions(**options) if options else None)


def snapshot(q: Queue) -> tuple[Any, ...]:
    """What a rejected settlement must leave as it was."""
    return (q.stats(Q), q.stats(NEXT), q.list_queues(), q.kv_get(b"a"), q.kv_get(b"b"))


# -- what the effects do ------------------------------------------------------------------


def test_ack_with_effects_enqueues_writes_and_deletes_and_replays(
    open_queue: Opener, clock: ManualClock
) -> None:
    q = open_queue()
    q.kv_put(b"gone", b"soon")
    job_id = q.enqueue(Q, b"first")
    c = claim_one(q)
    q.ack(
        c,
        SettlementEffects(
            enqueue=[
                follow_up(b"second", job_id="second", priority=5, headers={"h": "v"}),
                follow_up(b"later", job_id="later", delay=30),
            ],
            kv_writes={b"a": b"1", b"b": memoryview(b"2")},
            kv_deletes=[b"gone", b"never-there"],
        ),
    )
    assert q.get_job(job_id) is None
    assert q.stats(Q).done == 1
    second = q.get_job("second")
    assert second is not None and second.status is JobStatus.PENDING
    assert (second.queue, second.payload, second.priority, dict(second.headers)) == (
        NEXT,
        b"second",
        5,
        {"h": "v"},
    )
    later = q.get_job("later")
    assert later is not None and later.status is JobStatus.SCHEDULED
    assert later.run_at == clock.now + 30
    assert (q.kv_get(b"a"), q.kv_get(b"b"), q.kv_get(b"gone")) == (b"1", b"2", None)
    q.close()
    q = open_queue()  # replay finds all of it
    assert q.get_job(job_id) is None and q.stats(Q).done == 1
    assert q.get_job("second") == second and q.get_job("later") == later
    assert (q.kv_get(b"a"), q.kv_get(b"b"), q.kv_get(b"gone")) == (b"1", b"2", None)
    assert claim_one(q, NEXT).id == "second"


def test_a_follow_up_is_claimable_at_once_by_a_waiting_worker(q: Queue) -> None:
    q.enqueue(Q, b"x")
    c = claim_one(q)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(q.claim(NEXT, wait=30.0)))
    waiter.start()
    q.ack(c, SettlementEffects(enqueue=[follow_up(b"y")]))
    waiter.join(30.0)
    assert got and got[0] is not None and got[0].payload == b"y"


def test_dead_letter_applies_effects(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    q.dead_letter(
        claim_one(q),
        "poison",
        SettlementEffects(enqueue=[follow_up(b"alert", job_id="alert")], kv_writes={b"a": b"dead"}),
    )
    assert q.get_job(job_id).status is JobStatus.DEAD  # type: ignore[union-attr]
    assert q.get_job("alert") is not None and q.kv_get(b"a") == b"dead"


def test_nack_effects_apply_only_when_the_job_goes_dead(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x", max_attempts=2)
    fx = SettlementEffects(enqueue=[follow_up(b"alert", job_id="alert")], kv_writes={b"a": b"dead"})
    q.nack(claim_one(q), "first failure", fx)  # retried: no effect
    assert q.get_job(job_id).status is JobStatus.PENDING  # type: ignore[union-attr]
    assert q.get_job("alert") is None and q.kv_get(b"a") is None
    assert q.stats(NEXT).pending == 0
    q.nack(claim_one(q), "second failure", fx)  # attempts spent: dead, with the effects
    assert q.get_job(job_id).status is JobStatus.DEAD  # type: ignore[union-attr]
    assert q.get_job("alert") is not None and q.kv_get(b"a") == b"dead"


def test_follow_up_enqueues_obey_dedup_keys(q: Queue) -> None:
    held = q.enqueue(NEXT, b"held", dedup_key="k1")
    q.enqueue(Q, b"x")
    q.ack(
        claim_one(q),
        SettlementEffects(
            enqueue=[
                follow_up(b"skipped", dedup_key="k1"),
                follow_up(b"new", dedup_key="k2", job_id="new"),
                follow_up(b"twin", dedup_key="k2"),
                follow_up(b"plain", job_id="plain"),
            ]
        ),
    )
    s = q.stats(NEXT)
    assert s.pending == 3, s  # held, new, plain
    assert [claim_one(q, NEXT).id for _ in range(3)] == [held, "new", "plain"]
    assert q.claim(NEXT) is None


def test_effects_that_all_dedup_leave_a_plain_ack(q: Queue) -> None:
    q.enqueue(NEXT, b"held", dedup_key="k")
    job_id = q.enqueue(Q, b"x")
    q.ack(claim_one(q), SettlementEffects(enqueue=[follow_up(b"dup", dedup_key="k")]))
    assert q.get_job(job_id) is None and q.stats(NEXT).pending == 1


def test_empty_effects_are_a_plain_settlement(q: Queue) -> None:
    q.enqueue(Q, b"x")
    q.ack(claim_one(q), SettlementEffects())
    assert q.stats(Q).done == 1 and not SettlementEffects()


# -- all or nothing ---------------------------------------------------------------------


def test_an_invalid_effect_rejects_the_whole_settlement(q: Queue) -> None:
    q.enqueue("other", b"o", job_id="taken")
    job_id = q.enqueue(Q, b"x")
    c = claim_one(q)
    before = snapshot(q)
    bad = [
        SettlementEffects(
            enqueue=[follow_up(b"1", job_id="ok"), follow_up(b"2", job_id="taken")],
            kv_writes={b"a": b"1"},
        ),
        SettlementEffects(
            enqueue=[follow_up(b"1", job_id="twice"), follow_up(b"2", job_id="twice")],
            kv_writes={b"b": b"1"},
        ),
    ]
    for effects in bad:
        for action in ("ack", "dead_letter", "nack"):
            with pytest.raises(InvalidArgument, match="already in use"):
                if action == "ack":
                    q.ack(c, effects)
                elif action == "dead_letter":
                    q.dead_letter(c, "r", effects)
                else:
                    q.nack(c, "e", effects)
            assert snapshot(q) == before
            assert q.get_job("ok") is None and q.get_job("twice") is None
            assert q.get_job(job_id).status is JobStatus.CLAIMED  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="SettlementEffects"):
        q.ack(c, {"enqueue": []})  # type: ignore[arg-type]
    assert snapshot(q) == before
    q.ack(c)  # the claim is still current
    assert q.stats(Q).done == 1


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: EnqueueRequest("", b"x"), InvalidArgument, "queue name"),
        (lambda: EnqueueRequest(NEXT, "text"), InvalidArgument, "EnqueueRequest.payload"),
        (
            lambda: EnqueueRequest(NEXT, b"x", {"priority": 1}),
            InvalidArgument,
            "EnqueueRequest.options",
        ),
        (
            lambda: EnqueueRequest(NEXT, b"x", EnqueueOptions(dedup_key="\udc80")),
            InvalidArgument,
            "dedup_key",
        ),
        (lambda: SettlementEffects(enqueue=[b"x"]), InvalidArgument, r"enqueue\[0\]"),
        (lambda: SettlementEffects(enqueue=b"x"), InvalidArgument, "SettlementEffects.enqueue"),
        (lambda: SettlementEffects(kv_writes={b"": b"x"}), InvalidArgument, "KV key"),
        (lambda: SettlementEffects(kv_writes=[(b"k", b"v")]), InvalidArgument, "kv_writes"),
        (
            lambda: SettlementEffects(kv_writes={b"k": b"v" * (MAX_KV_VALUE_SIZE + 1)}),
            KvValueTooLarge,
            "MAX_KV_VALUE_SIZE",
        ),
        (lambda: SettlementEffects(kv_deletes=b"key"), InvalidArgument, "kv_deletes"),
        (lambda: SettlementEffects(kv_deletes=[b"k" * 1025]), InvalidArgument, "KV key"),
        (
            lambda: SettlementEffects(kv_writes={b"k": b"v"}, kv_deletes=[b"k"]),
            InvalidArgument,
            "both written and deleted",
        ),
    ],
)
def test_bad_effects_are_refused_when_made(
    make: Callable[[], object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern) as info:
        make()
    assert isinstance(info.value, TaqubaError)


def test_an_oversized_follow_up_payload_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="payload is"):
        EnqueueRequest(NEXT, bytes(MAX_PAYLOAD_SIZE + 1))


def test_a_late_settlement_raises_claim_lost_and_applies_nothing(
    q: Queue, clock: ManualClock
) -> None:
    job_id = q.enqueue(Q, b"x")
    c = q.claim(Q, lease=5.0)
    assert c is not None
    clock.advance(6)
    assert q.reap_now() == 1  # the lease expired: back to pending
    fx = SettlementEffects(enqueue=[follow_up(b"y", job_id="y")], kv_writes={b"a": b"1"})
    for settle in (
        lambda: q.ack(c, fx),
        lambda: q.dead_letter(c, "r", fx),
        lambda: q.nack(c, "e", fx),
    ):
        with pytest.raises(ClaimLost):
            settle()
    assert q.get_job("y") is None and q.kv_get(b"a") is None
    assert q.get_job(job_id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_effects_pickle() -> None:
    fx = SettlementEffects(
        enqueue=[follow_up(b"y", job_id="y")], kv_writes={b"a": b"1"}, kv_deletes=[b"b"]
    )
    assert pickle.loads(pickle.dumps(fx)) == fx


def test_a_settled_record_nesting_a_settled_record_is_corruption() -> None:
    inner = ev.Settled(ev.Acked("x", False), []).encode()
    record = bytearray(ev.Settled(ev.Acked("y", False), []).encode())
    record[-1] = 1
    record += bytes([len(inner)]) + inner
    with pytest.raises(CorruptionError, match=r"settled.*nests"):
        ev.decode(bytes(record))
    wrong = bytearray(ev.Settled(ev.Acked("y", False), []).encode())
    claim = ev.Claimed("x", 1, 0.0, 1.0).encode()
    wrong[-1] = 1
    wrong += bytes([len(claim)]) + claim
    with pytest.raises(CorruptionError, match="Claimed effect"):
        ev.decode(bytes(wrong))


# -- kv_put --------------------------------------------------------------------------------


def test_kv_put_writes_replaces_and_replays(open_queue: Opener) -> None:
    q = open_queue()
    q.kv_put(b"k", b"1")
    q.kv_put(bytearray(b"k"), memoryview(b"2"))
    q.kv_put(b"e", b"")
    assert (q.kv_get(b"k"), q.kv_get(b"e")) == (b"2", b"")
    q.close()
    q = open_queue()
    assert (q.kv_get(b"k"), q.kv_get(b"e")) == (b"2", b"")


def test_kv_put_refuses_bad_keys_and_values(q: Queue) -> None:
    with pytest.raises(InvalidArgument, match="KV key must not be empty"):
        q.kv_put(b"", b"v")
    with pytest.raises(KvValueTooLarge, match="MAX_KV_VALUE_SIZE"):
        q.kv_put(b"k", b"v" * (MAX_KV_VALUE_SIZE + 1))
    with pytest.raises(InvalidArgument, match="KV value"):
        q.kv_put(b"k", "text")  # type: ignore[arg-type]
    assert q.kv_get(b"k") is None


# -- workers -----------------------------------------------------------------------------


def test_a_handler_returning_effects_acks_with_them(q: Queue) -> None:
    q.enqueue(Q, b"go", job_id="go")
    q.enqueue(Q, b"bad", job_id="bad")
    q.enqueue(NEXT, b"o", job_id="taken")
    shutdown = threading.Event()

    def handler(claim: Any) -> SettlementEffects:
        if claim.id == "bad":
            if claim.attempts > 1:
                shutdown.set()
                raise PermanentFailure("stop")
            return SettlementEffects(enqueue=[follow_up(b"x", job_id="taken")])
        return SettlementEffects(
            enqueue=[follow_up(b"then", job_id="then")], kv_writes={b"a": claim.payload}
        )

    run_worker(q, Q, handler, shutdown=shutdown, poll_interval=0.05)
    assert q.get_job("go") is None and q.stats(Q).done == 1
    assert q.get_job("then") is not None and q.kv_get(b"a") == b"go"
    bad = q.get_job("bad")
    assert bad is not None and bad.status is JobStatus.DEAD
    assert bad.attempts == 2  # the first attempt's effects were refused: nacked, retried


# -- crashes -------------------------------------------------------------------------------


def _check_atomic(root: str, settled: set[str]) -> int:
    """Every source job's settlement and its effects are all there or all missing."""
    with Queue.open(
        root, options=OpenOptions(default_queue_config=child.CONFIG, background_threads=False)
    ) as q:
        applied = 0
        for n in range(child.JOBS):
            job_id = child.source_id(n)
            record = q.get_job(job_id)
            assert record is not None
            done = record.status in (JobStatus.DONE, JobStatus.DEAD)
            parts = (
                done,
                q.get_job(f"f-{job_id}") is not None,
                q.kv_get(f"k:{job_id}".encode()) == job_id.encode(),
                q.kv_get(f"d:{job_id}".encode()) is None,
            )
            assert parts in ((True,) * 4, (False,) * 4), (job_id, parts)
            if job_id in settled:
                assert done, f"{job_id}: its settlement returned, yet it is not settled"
            applied += done
        return applied


def test_settlements_with_effects_are_atomic_across_sigkills(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    script = str(child.__file__)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    rng = random.Random(12)
    settled: set[str] = set()
    kills = 0
    for _ in range(12):
        out_path = tmp_path / f"out-{kills}"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, script, root], stdout=out, env=env)
        try:
            deadline = time.monotonic() + 60
            while b"S\n" not in out_path.read_bytes():
                assert proc.poll() is None, f"child exited early: {out_path.read_bytes()!r}"
                assert time.monotonic() < deadline, "child did not start"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.15))
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = out_path.read_bytes().decode().splitlines()
        assert not [x for x in lines if x.startswith("X")], lines
        settled |= {x[2:] for x in lines if x.startswith("A ")}
        kills += not finished
        _check_atomic(root, settled)
        if "D" in lines:
            break
    assert settled, "no settlement ever returned"
    assert kills >= 2, "the child was never killed mid-run"
