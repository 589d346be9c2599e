"""The key-value store: ``enqueue_with_kv`` and the ``kv_*`` operations.

On the fast backends with a manual clock; see tests/support/queues.py.
"""

from __future__ import annotations

from support.queues import Q, record, stats

from taquba import MAX_KV_VALUE_SIZE, EnqueueOptions, EnqueueResult, Queue

# --------------------------------------------------------------------------- KV


def test_enqueue_with_kv_and_kv_ops(q: Queue) -> None:
    assert q.kv_get(b"k1") is None
    res = q.enqueue_with_kv(Q, b"job", {b"k1": b"v1", memoryview(b"k2"): bytearray(b"v2")})  # type: ignore[dict-item]
    assert isinstance(res, EnqueueResult) and res.is_new
    assert record(q, res.id).payload == b"job"
    assert q.kv_get(b"k1") == b"v1"
    assert q.kv_get(bytearray(b"k2")) == b"v2"  # type: ignore[arg-type]
    big = b"z" * MAX_KV_VALUE_SIZE  # exactly the limit is fine
    res2 = q.enqueue_with_kv(
        Q, b"job2", {b"k1": b"v1b", b"big": big}, EnqueueOptions(priority=1, dedup_key="d")
    )
    assert res2.is_new and record(q, res2.id).priority == 1
    assert q.kv_get(b"k1") == b"v1b" and q.kv_get(b"big") == big
    res3 = q.enqueue_with_kv(Q, b"nope", {})
    assert res3.is_new
    q.kv_delete(b"k1")
    assert q.kv_get(b"k1") is None
    q.kv_delete(b"k1")  # missing keys are fine
    q.kv_delete(b"never")
    assert q.kv_get(b"k2") == b"v2"
    assert q.stats(Q) == stats(q, pending=3)


def test_enqueue_with_kv_dedup_hit_writes_nothing(q: Queue) -> None:
    first = q.enqueue_with_kv(Q, b"a", {b"k": b"old"}, EnqueueOptions(dedup_key="d"))
    before = q.stats(Q)
    hit = q.enqueue_with_kv(Q, b"b", {b"k": b"new", b"other": b"x"}, EnqueueOptions(dedup_key="d"))
    assert hit == EnqueueResult(first.id, False)
    assert q.kv_get(b"k") == b"old"
    assert q.kv_get(b"other") is None
    assert q.stats(Q) == before


def test_kv_keys_do_not_collide_with_library_state(q: Queue) -> None:
    job_id = q.enqueue(Q, b"x")
    for key in (job_id.encode(), Q.encode(), b"manifest/00000000000000000001", b"\x00"):
        assert q.kv_get(key) is None
        q.enqueue_with_kv("kvq", b"p", {key: b"user"})
        assert q.kv_get(key) == b"user"
        q.kv_delete(key)
    assert record(q, job_id).payload == b"x"
