# mypy: disable-error-code="arg-type, misc, dict-item, list-item, assignment"
# (this file passes wrongly typed values on purpose)
"""Every bad input gets the API.md error class, a message naming the problem, and no change.

The cases are one table: each row is a call, the exact error class it must raise, and a
pattern its message must contain. Before and after the call the test takes a view of the
whole observable state (stats of every queue, every known job record, the dead set, the KV
keys the cases touch, and the number of records handed to the log) and demands it be equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import fsspec
import pytest
from support.clock import T0, ManualClock

from taquba import (
    MAX_KV_VALUE_SIZE,
    CancelOutcome,
    Claim,
    ClaimLost,
    ConfigError,
    EnqueueOptions,
    InvalidArgument,
    JobNotFound,
    JobRecord,
    JobStatus,
    KvValueTooLarge,
    OpenOptions,
    Queue,
    QueueClosed,
    QueueConfig,
    QueueStats,
    TaqubaError,
    WaitOutcome,
    WaitStatus,
)

Q = "jobs"
NAN = math.nan
INF = math.inf


@dataclass
class Env:
    """A queue holding one job in every state, plus a current and a settled claim."""

    q: Queue
    root: Any
    pending: str
    scheduled: str
    dead: str
    done: str
    claim: Claim
    settled: Claim

    @property
    def ids(self) -> list[str]:
        return [self.pending, self.scheduled, self.dead, self.done, self.claim.id]


KV_KEYS = [b"key", b"fresh", b"other"]


def options(clock: ManualClock) -> OpenOptions:
    return OpenOptions(
        clock=clock, background_threads=False, default_queue_config=QueueConfig(keep_done=3600)
    )


def make_env(root: Any) -> Env:
    clock = ManualClock()
    q = Queue.open(root.location, storage_options=root.storage_options, options=options(clock))
    done = q.enqueue(Q, b"done", priority=0)
    settled = q.claim(Q)
    assert settled is not None and settled.id == done
    q.ack(settled)
    dead = q.enqueue(Q, b"dead", priority=1)
    c = q.claim(Q)
    assert c is not None and c.id == dead
    q.dead_letter(c, "poison")
    claimed = q.enqueue(Q, b"claimed", priority=2)
    current = q.claim(Q)
    assert current is not None and current.id == claimed
    pending = q.enqueue(Q, b"pending", dedup_key="dk")
    scheduled = q.enqueue(Q, b"scheduled", delay=600)
    q.enqueue_with_kv("other", b"o", {b"key": b"value"})
    return Env(
        q=q,
        root=root,
        pending=pending,
        scheduled=scheduled,
        dead=dead,
        done=done,
        claim=current,
        settled=settled,
    )


@pytest.fixture
def env(fast_backend_root: Any) -> Iterator[Env]:
    e = make_env(fast_backend_root)
    yield e
    e.q.close()


def view(q: Queue, e: Env, *, as_reopened: bool = False) -> Any:
    """Everything a bad call could have changed. ``as_reopened`` maps claimed jobs to the
    pending state a reopen gives them, so a view taken before close compares with one after."""
    stats = {name: q.stats(name) for name in q.list_queues()}
    records = {i: q.get_job(i) for i in e.ids}
    if as_reopened:
        stats = {n: replace(s, pending=s.pending + s.claimed, claimed=0) for n, s in stats.items()}
        records = {i: _released(r) for i, r in records.items()}
    return (
        q.list_queues(),
        stats,
        records,
        q.dead_jobs(Q),
        q.dead_jobs("other"),
        {k: q.kv_get(k) for k in KV_KEYS},
    )


def _released(r: JobRecord | None) -> JobRecord | None:
    if r is None or r.status is not JobStatus.CLAIMED:
        return r
    return replace(r, status=JobStatus.PENDING, claimed_at=None, lease_expires_at=None)


# --------------------------------------------------------------------------- the table

Call = Callable[[Env], object]
CASES: list[tuple[str, Call, type[TaqubaError], str]] = []


def case(name: str, exc: type[TaqubaError], pattern: str) -> Callable[[Call], Call]:
    def register(fn: Call) -> Call:
        CASES.append((name, fn, exc, pattern))
        return fn

    return register


def add(name: str, fn: Call, exc: type[TaqubaError], pattern: str) -> None:
    CASES.append((name, fn, exc, pattern))


# payloads
for label, payload in [("str", "text"), ("none", None), ("int", 5), ("list", [1, 2])]:
    add(
        f"enqueue-payload-{label}",
        lambda e, p=payload: e.q.enqueue(Q, p),
        InvalidArgument,
        "payload",
    )
    add(
        f"enqueue_with-payload-{label}",
        lambda e, p=payload: e.q.enqueue_with(Q, p, EnqueueOptions()),
        InvalidArgument,
        "payload",
    )
    add(
        f"enqueue_with_kv-payload-{label}",
        lambda e, p=payload: e.q.enqueue_with_kv(Q, p, {b"fresh": b"v"}),
        InvalidArgument,
        "payload",
    )
add(
    "enqueue_batch-item-str",
    lambda e: e.q.enqueue_batch(Q, [b"ok", "text", b"ok"]),
    InvalidArgument,
    r"payloads\[1\]",
)
add(
    "enqueue_batch-single-bytes",
    lambda e: e.q.enqueue_batch(Q, b"abc"),
    InvalidArgument,
    "payloads",
)
add("enqueue_batch-not-iterable", lambda e: e.q.enqueue_batch(Q, 5), InvalidArgument, "payloads")


def released(data: bytes = b"gone") -> memoryview:
    view = memoryview(bytearray(data))
    view.release()
    return view


add(
    "enqueue-payload-released-memoryview",
    lambda e: e.q.enqueue(Q, released()),
    InvalidArgument,
    "released memoryview",
)
add(
    "enqueue_with-payload-released-memoryview",
    lambda e: e.q.enqueue_with(Q, released(), EnqueueOptions()),
    InvalidArgument,
    "released memoryview",
)
add(
    "enqueue_with_kv-payload-released-memoryview",
    lambda e: e.q.enqueue_with_kv(Q, released(), {b"fresh": b"v"}),
    InvalidArgument,
    "released memoryview",
)
add(
    "enqueue_batch-item-released-memoryview",
    lambda e: e.q.enqueue_batch(Q, [b"ok", released()]),
    InvalidArgument,
    r"payloads\[1\] is a released memoryview",
)
add(
    "kv-value-released-memoryview",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": released()}),
    InvalidArgument,
    "KV value is a released memoryview",
)
add(
    "kv_get-released-memoryview",
    lambda e: e.q.kv_get(released(b"key")),
    InvalidArgument,
    "KV key is a released memoryview",
)
add(
    "kv_delete-released-memoryview",
    lambda e: e.q.kv_delete(released(b"key")),
    InvalidArgument,
    "KV key is a released memoryview",
)

# queue names
BAD_NAMES: list[tuple[str, object]] = [
    ("empty", ""),
    ("256-utf8-bytes", "é" * 128),
    ("256-ascii", "x" * 256),
    ("int", 5),
    ("none", None),
    ("bytes", b"jobs"),
    ("surrogate", "\ud800"),
]
for label, name in BAD_NAMES:
    for call, fn in [
        ("enqueue", lambda e, n=name: e.q.enqueue(n, b"x")),
        ("enqueue_with", lambda e, n=name: e.q.enqueue_with(n, b"x", EnqueueOptions())),
        ("enqueue_batch", lambda e, n=name: e.q.enqueue_batch(n, [b"x"])),
        ("enqueue_batch-empty", lambda e, n=name: e.q.enqueue_batch(n, [])),
        ("enqueue_with_kv", lambda e, n=name: e.q.enqueue_with_kv(n, b"x", {b"fresh": b"v"})),
        ("claim", lambda e, n=name: e.q.claim(n)),
        ("claim_batch", lambda e, n=name: e.q.claim_batch(n, 2)),
        ("stats", lambda e, n=name: e.q.stats(n)),
        ("dead_jobs", lambda e, n=name: e.q.dead_jobs(n)),
    ]:
        add(f"{call}-queue-{label}", fn, InvalidArgument, "queue name")

# durations
HUGE = 10**400  # an int no float can hold
BAD_DURATIONS: list[tuple[str, object]] = [
    ("negative", -1),
    ("nan", NAN),
    ("inf", INF),
    ("str", "5"),
    ("bool", True),
    ("negative-timedelta", timedelta(seconds=-1)),
    ("huge-int", HUGE),
    ("huge-negative-int", -HUGE),
    ("negative-inf", -INF),
]
for label, value in BAD_DURATIONS:
    add(f"claim-lease-{label}", lambda e, v=value: e.q.claim(Q, v), InvalidArgument, "lease")
    add(
        f"claim_batch-lease-{label}",
        lambda e, v=value: e.q.claim_batch(Q, 3, v),
        InvalidArgument,
        "lease",
    )
    add(
        f"enqueue-delay-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", delay=v),
        InvalidArgument,
        "delay",
    )
    add(
        f"renew_lease-{label}",
        lambda e, v=value: e.q.renew_lease(e.claim, v),
        InvalidArgument,
        "extension",
    )
    if label != "inf":  # waiting forever is allowed
        add(f"claim-wait-{label}", lambda e, v=value: e.q.claim(Q, wait=v), InvalidArgument, "wait")
        add(
            f"claim_batch-wait-{label}",
            lambda e, v=value: e.q.claim_batch(Q, 2, wait=v),
            InvalidArgument,
            "wait",
        )
        add(
            f"wait_for_completion-timeout-{label}",
            lambda e, v=value: e.q.wait_for_completion(e.pending, v),
            InvalidArgument,
            "timeout",
        )
    add(f"close-timeout-{label}", lambda e, v=value: e.q.close(v), InvalidArgument, "timeout")
add("claim-lease-zero", lambda e: e.q.claim(Q, 0), InvalidArgument, "lease")
add("renew_lease-zero", lambda e: e.q.renew_lease(e.claim, 0.0), InvalidArgument, "extension")

# points in time


class _OffsetTooLarge(tzinfo):
    """A tzinfo whose offset ``datetime`` itself refuses."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(days=3)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


add(
    "run_at-and-delay",
    lambda e: e.q.enqueue(Q, b"x", run_at=T0 + 5, delay=5),
    InvalidArgument,
    "run_at and delay",
)
add(
    "run_at-and-delay-zero",
    lambda e: e.q.enqueue(Q, b"x", run_at=T0 + 5, delay=0),
    InvalidArgument,
    "run_at and delay",
)
add(
    "run_at-naive-datetime",
    lambda e: e.q.enqueue(Q, b"x", run_at=datetime(2030, 1, 1)),
    InvalidArgument,
    "aware",
)
for label, value in [
    ("nan", NAN),
    ("inf", INF),
    ("negative", -1.0),
    ("str", "tomorrow"),
    ("bool", True),
    ("timedelta", timedelta(seconds=5)),
    ("huge-int", HUGE),
    ("bad-tzinfo", datetime(2030, 1, 1, tzinfo=_OffsetTooLarge())),
]:
    add(
        f"run_at-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", run_at=v),
        InvalidArgument,
        "run_at",
    )

# priorities and other enqueue options
for label, value in [
    ("negative", -1),
    ("too-big", 2**32),
    ("bool", True),
    ("float", 1.5),
    ("str", "1"),
    ("huge-int", HUGE),
]:
    add(
        f"priority-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", priority=v),
        InvalidArgument,
        "priority",
    )
    add(
        f"enqueue_with_kv-priority-{label}",
        lambda e, v=value: e.q.enqueue_with_kv(
            Q, b"x", {b"fresh": b"v"}, EnqueueOptions(priority=v)
        ),
        InvalidArgument,
        "priority",
    )
for label, value in [
    ("zero", 0),
    ("negative", -3),
    ("bool", True),
    ("float", 2.0),
    ("huge-int", HUGE),
]:
    add(
        f"max_attempts-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", max_attempts=v),
        InvalidArgument,
        "max_attempts",
    )
for label, value in [("empty", ""), ("int", 5), ("too-long", "k" * 1025)]:
    add(
        f"dedup_key-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", dedup_key=v),
        InvalidArgument,
        "dedup_key",
    )
# A lone surrogate passes the length check but no record could hold it.
add(
    "dedup_key-surrogate",
    lambda e: e.q.enqueue(Q, b"x", dedup_key="a\ud800"),
    InvalidArgument,
    "dedup_key",
)
add(
    "enqueue_with_kv-dedup_key-surrogate",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": b"v"}, EnqueueOptions(dedup_key="\udc80")),
    InvalidArgument,
    "dedup_key",
)
for label, value in [
    ("int-value", {"a": 1}),
    ("int-key", {1: "a"}),
    ("str", "a=b"),
    ("too-big", {"h": "x" * 70_000}),
    ("surrogate-value", {"h": "\ud800"}),
    ("surrogate-key", {"\udfff": "v"}),
]:
    add(
        f"headers-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", headers=v),
        InvalidArgument,
        "headers",
    )
add("unknown-enqueue-option", lambda e: e.q.enqueue(Q, b"x", prio=1), InvalidArgument, "prio")
add(
    "enqueue_with-options-dict",
    lambda e: e.q.enqueue_with(Q, b"x", {"priority": 1}),
    InvalidArgument,
    "options",
)
add(
    "enqueue_with_kv-options-dict",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": b"v"}, {"priority": 1}),
    InvalidArgument,
    "options",
)

# job ids
for label, value in [
    ("space", "bad id"),
    ("empty", ""),
    ("too-long", "x" * 129),
    ("slash", "a/b"),
    ("unicode", "jöb"),
    ("int", 5),
    ("none-str", b"id"),
]:
    add(
        f"enqueue-job_id-{label}",
        lambda e, v=value: e.q.enqueue(Q, b"x", job_id=v),
        InvalidArgument,
        "job_id",
    )
    add(f"get_job-{label}", lambda e, v=value: e.q.get_job(v), InvalidArgument, "job_id")
    add(f"cancel-{label}", lambda e, v=value: e.q.cancel(v), InvalidArgument, "job_id")
    add(
        f"requeue_dead_job-{label}",
        lambda e, v=value: e.q.requeue_dead_job(v),
        InvalidArgument,
        "job_id",
    )
    add(
        f"wait_for_completion-{label}",
        lambda e, v=value: e.q.wait_for_completion(v, 1),
        InvalidArgument,
        "job_id",
    )
    add(
        f"dead_jobs-after-{label}",
        lambda e, v=value: e.q.dead_jobs(Q, after=v),
        InvalidArgument,
        "after",
    )
for which in ("pending", "scheduled", "dead", "done"):
    add(
        f"enqueue-job_id-in-use-{which}",
        lambda e, w=which: e.q.enqueue(Q, b"x", job_id=getattr(e, w)),
        InvalidArgument,
        "already in use",
    )
add(
    "enqueue-job_id-in-use-claimed",
    lambda e: e.q.enqueue("other", b"x", job_id=e.claim.id),
    InvalidArgument,
    "already in use",
)
add(
    "enqueue_with_kv-job_id-in-use",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": b"v"}, EnqueueOptions(job_id=e.pending)),
    InvalidArgument,
    "already in use",
)

# KV
add(
    "kv-value-too-large",
    lambda e: e.q.enqueue_with_kv(
        Q, b"x", {b"fresh": b"ok", b"other": b"z" * (MAX_KV_VALUE_SIZE + 1)}
    ),
    KvValueTooLarge,
    "MAX_KV_VALUE_SIZE",
)
add(
    "kv-value-too-large-bytearray",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"key": bytearray(MAX_KV_VALUE_SIZE + 1)}),
    KvValueTooLarge,
    str(MAX_KV_VALUE_SIZE),
)
add(
    "kv-value-str",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": "v"}),
    InvalidArgument,
    "KV value",
)
add(
    "kv-key-str", lambda e: e.q.enqueue_with_kv(Q, b"x", {"fresh": b"v"}), InvalidArgument, "KV key"
)
add("kv-key-empty", lambda e: e.q.enqueue_with_kv(Q, b"x", {b"": b"v"}), InvalidArgument, "KV key")
add(
    "kv-key-too-long",
    lambda e: e.q.enqueue_with_kv(Q, b"x", {b"k" * 1025: b"v"}),
    InvalidArgument,
    "KV key",
)
add(
    "kv_writes-list",
    lambda e: e.q.enqueue_with_kv(Q, b"x", [(b"fresh", b"v")]),
    InvalidArgument,
    "kv_writes",
)
add("kv_get-str", lambda e: e.q.kv_get("key"), InvalidArgument, "KV key")
add("kv_get-empty", lambda e: e.q.kv_get(b""), InvalidArgument, "KV key")
add("kv_delete-str", lambda e: e.q.kv_delete("key"), InvalidArgument, "KV key")
add("kv_delete-none", lambda e: e.q.kv_delete(None), InvalidArgument, "KV key")

# unknown jobs and wrong states
add(
    "requeue_dead_job-unknown",
    lambda e: e.q.requeue_dead_job("no-such-job"),
    JobNotFound,
    "no-such-job",
)
for which in ("pending", "scheduled", "done"):
    add(
        f"requeue_dead_job-{which}",
        lambda e, w=which: e.q.requeue_dead_job(getattr(e, w)),
        JobNotFound,
        "not dead",
    )
add("requeue_dead_job-claimed", lambda e: e.q.requeue_dead_job(e.claim.id), JobNotFound, "not dead")
add(
    "dead_jobs-after-unknown", lambda e: e.q.dead_jobs(Q, after="no-such-job"), JobNotFound, "after"
)
for label, value in [
    ("zero", 0),
    ("negative", -1),
    ("bool", True),
    ("str", "5"),
    ("too-big", 10_001),
    ("huge-int", HUGE),
]:
    add(
        f"dead_jobs-limit-{label}",
        lambda e, v=value: e.q.dead_jobs(Q, limit=v),
        InvalidArgument,
        "limit",
    )
for label, value in [
    ("zero", 0),
    ("negative", -1),
    ("bool", True),
    ("float", 2.0),
    ("too-big", 10_001),
    ("none", None),
    ("huge-int", HUGE),
]:
    add(
        f"claim_batch-max_jobs-{label}",
        lambda e, v=value: e.q.claim_batch(Q, v),
        InvalidArgument,
        "max_jobs",
    )

# claims
SETTLE: dict[str, Callable[[Queue, Any], object]] = {
    "ack": lambda q, c: q.ack(c),
    "nack": lambda q, c: q.nack(c, "e"),
    "dead_letter": lambda q, c: q.dead_letter(c, "r"),
    "renew_lease": lambda q, c: q.renew_lease(c, 5),
}
for op, settle in SETTLE.items():
    add(
        f"{op}-settled-twice", lambda e, s=settle: s(e.q, e.settled), ClaimLost, "no longer current"
    )
    for label, make in [
        ("str", lambda e: "claim"),
        ("none", lambda e: None),
        ("record", lambda e: e.claim.record),
        ("id", lambda e: e.claim.id),
    ]:
        add(
            f"{op}-wrong-claim-type-{label}",
            lambda e, s=settle, m=make: s(e.q, m(e)),
            InvalidArgument,
            "Claim",
        )
add("nack-error-int", lambda e: e.q.nack(e.claim, 5), InvalidArgument, "error")
add("nack-error-none", lambda e: e.q.nack(e.claim, None), InvalidArgument, "error")
add("dead_letter-reason-int", lambda e: e.q.dead_letter(e.claim, 5), InvalidArgument, "reason")
add(
    "dead_letter-reason-exception",
    lambda e: e.q.dead_letter(e.claim, ValueError("x")),
    InvalidArgument,
    "reason",
)

# options (ConfigError)
CONFIGS: list[tuple[str, Callable[[], object], str]] = [
    ("max_attempts-zero", lambda: QueueConfig(max_attempts=0), "max_attempts"),
    ("max_attempts-bool", lambda: QueueConfig(max_attempts=True), "max_attempts"),
    ("max_attempts-float", lambda: QueueConfig(max_attempts=2.0), "max_attempts"),
    ("lease-zero", lambda: QueueConfig(lease=0), "lease"),
    ("lease-negative", lambda: QueueConfig(lease=-1), "lease"),
    ("lease-nan", lambda: QueueConfig(lease=NAN), "lease"),
    ("lease-inf", lambda: QueueConfig(lease=INF), "lease"),
    ("lease-str", lambda: QueueConfig(lease="30"), "lease"),
    ("default_priority-negative", lambda: QueueConfig(default_priority=-1), "default_priority"),
    ("default_priority-too-big", lambda: QueueConfig(default_priority=2**32), "default_priority"),
    ("default_priority-bool", lambda: QueueConfig(default_priority=False), "default_priority"),
    (
        "retry_backoff_base-negative",
        lambda: QueueConfig(retry_backoff_base=-1),
        "retry_backoff_base",
    ),
    ("retry_backoff_base-nan", lambda: QueueConfig(retry_backoff_base=NAN), "retry_backoff_base"),
    ("retry_backoff_max-inf", lambda: QueueConfig(retry_backoff_max=INF), "retry_backoff_max"),
    ("keep_done-negative", lambda: QueueConfig(keep_done=-5), "keep_done"),
    ("keep_done-nan", lambda: QueueConfig(keep_done=NAN), "keep_done"),
    ("dead_retention-negative", lambda: QueueConfig(dead_retention=-1), "dead_retention"),
    ("dead_retention-inf", lambda: QueueConfig(dead_retention=INF), "dead_retention"),
    ("dead_retention-str", lambda: QueueConfig(dead_retention="7d"), "dead_retention"),
    ("reaper_interval-zero", lambda: OpenOptions(reaper_interval=0), "reaper_interval"),
    ("reaper_interval-nan", lambda: OpenOptions(reaper_interval=NAN), "reaper_interval"),
    (
        "scheduler_interval-negative",
        lambda: OpenOptions(scheduler_interval=-1),
        "scheduler_interval",
    ),
    ("scheduler_interval-inf", lambda: OpenOptions(scheduler_interval=INF), "scheduler_interval"),
    (
        "default_queue_config-str",
        lambda: OpenOptions(default_queue_config="x"),
        "default_queue_config",
    ),
    (
        "default_queue_config-none",
        lambda: OpenOptions(default_queue_config=None),
        "default_queue_config",
    ),
    ("queue_configs-list", lambda: OpenOptions(queue_configs=[]), "queue_configs"),
    (
        "queue_configs-bad-name",
        lambda: OpenOptions(queue_configs={"": QueueConfig()}),
        "queue name",
    ),
    (
        "queue_configs-long-name",
        lambda: OpenOptions(queue_configs={"é" * 128: QueueConfig()}),
        "queue name",
    ),
    (
        "queue_configs-bad-value",
        lambda: OpenOptions(queue_configs={"a": {"lease": 1}}),
        "queue_configs",
    ),
    ("clock-not-callable", lambda: OpenOptions(clock=5.0), "clock"),
    ("background_threads-str", lambda: OpenOptions(background_threads="no"), "background_threads"),
    ("max_batch_bytes-zero", lambda: OpenOptions(max_batch_bytes=0), "max_batch_bytes"),
    (
        "checkpoint_min_bytes-negative",
        lambda: OpenOptions(checkpoint_min_bytes=-1),
        "checkpoint_min_bytes",
    ),
    ("checkpoint_ratio-zero", lambda: OpenOptions(checkpoint_ratio=0), "checkpoint_ratio"),
    ("checkpoint_ratio-nan", lambda: OpenOptions(checkpoint_ratio=NAN), "checkpoint_ratio"),
    ("storage_retries-negative", lambda: OpenOptions(storage_retries=-1), "storage_retries"),
    (
        "storage_retry_delay-negative",
        lambda: OpenOptions(storage_retry_delay=-1),
        "storage_retry_delay",
    ),
    ("lease-huge-int", lambda: QueueConfig(lease=HUGE), "lease"),
    ("max_attempts-huge-int", lambda: QueueConfig(max_attempts=HUGE), "max_attempts"),
    (
        "retry_backoff_base-huge-int",
        lambda: QueueConfig(retry_backoff_base=HUGE),
        "retry_backoff_base",
    ),
    (
        "retry_backoff_max-huge-int",
        lambda: QueueConfig(retry_backoff_max=-HUGE),
        "retry_backoff_max",
    ),
    ("keep_done-huge-int", lambda: QueueConfig(keep_done=HUGE), "keep_done"),
    ("dead_retention-huge-int", lambda: QueueConfig(dead_retention=HUGE), "dead_retention"),
    ("reaper_interval-huge-int", lambda: OpenOptions(reaper_interval=HUGE), "reaper_interval"),
    (
        "scheduler_interval-huge-int",
        lambda: OpenOptions(scheduler_interval=HUGE),
        "scheduler_interval",
    ),
    ("checkpoint_ratio-huge-int", lambda: OpenOptions(checkpoint_ratio=HUGE), "checkpoint_ratio"),
    ("checkpoint_ratio-inf", lambda: OpenOptions(checkpoint_ratio=INF), "checkpoint_ratio"),
    (
        "storage_retry_delay-huge-int",
        lambda: OpenOptions(storage_retry_delay=HUGE),
        "storage_retry_delay",
    ),
    (
        "fence_check_interval-zero",
        lambda: OpenOptions(fence_check_interval=0),
        "fence_check_interval",
    ),
    (
        "fence_check_interval-nan",
        lambda: OpenOptions(fence_check_interval=NAN),
        "fence_check_interval",
    ),
    (
        "fence_check_interval-str",
        lambda: OpenOptions(fence_check_interval="30"),
        "fence_check_interval",
    ),
    (
        "fence_check_interval-huge-int",
        lambda: OpenOptions(fence_check_interval=HUGE),
        "fence_check_interval",
    ),
    ("open-options-dict", lambda: Queue.open("memory://never-created", options={}), "options"),
    ("open-location-empty", lambda: Queue.open(""), "location"),
    ("open-location-int", lambda: Queue.open(5), "location"),
    (
        "open-local-storage_options",
        lambda: Queue.open("./never", storage_options={"a": 1}),
        "storage_options",
    ),
    (
        "open-fs-storage_options",
        lambda: Queue.open(fsspec.filesystem("memory"), "never", storage_options={"a": 1}),
        "storage_options",
    ),
]
for label, make, pattern in CONFIGS:
    add(f"config-{label}", lambda e, m=make: m(), ConfigError, pattern)

# EnqueueOptions validate at construction too
add("EnqueueOptions-priority", lambda e: EnqueueOptions(priority=-1), InvalidArgument, "priority")
add(
    "EnqueueOptions-run_at-and-delay",
    lambda e: EnqueueOptions(run_at=T0, delay=1),
    InvalidArgument,
    "run_at and delay",
)


def _ids() -> list[str]:
    names = [c[0] for c in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, duplicates
    return names


@pytest.mark.parametrize(("call", "exc", "pattern"), [c[1:] for c in CASES], ids=_ids())
def test_bad_input_is_rejected_and_changes_nothing(
    env: Env, call: Call, exc: type[TaqubaError], pattern: str
) -> None:
    q = env.q
    before = view(q, env)
    submitted = q.committer.submitted
    lease = env.claim.lease_expires_at
    with pytest.raises(exc, match=pattern) as info:
        call(env)
    assert type(info.value) is exc, f"expected exactly {exc.__name__}, got {info.type.__name__}"
    assert view(q, env) == before
    assert q.committer.submitted == submitted, "a record was logged"
    assert env.claim.lease_expires_at == lease
    # the handle is still fully usable: the current claim settles normally
    q.ack(env.claim)
    assert q.stats(Q).done == before[1][Q].done + 1


# --------------------------------------------------------------------------- lookups that do not raise


LOOKUPS: list[tuple[str, Callable[[Env], object], object]] = [
    ("get_job-unknown", lambda e: e.q.get_job("no-such-job"), None),
    ("cancel-unknown", lambda e: e.q.cancel("no-such-job"), CancelOutcome.NOT_FOUND),
    ("cancel-done", lambda e: e.q.cancel(e.done), CancelOutcome.NOT_FOUND),
    ("cancel-dead", lambda e: e.q.cancel(e.dead), CancelOutcome.NOT_FOUND),
    (
        "wait-unknown",
        lambda e: e.q.wait_for_completion("no-such-job", 1),
        WaitOutcome(WaitStatus.NOT_FOUND),
    ),
    ("stats-unknown-queue", lambda e: e.q.stats("nope"), QueueStats(queue="nope")),
    ("dead_jobs-unknown-queue", lambda e: e.q.dead_jobs("nope"), []),
    ("kv_get-missing", lambda e: e.q.kv_get(b"missing"), None),
    ("kv_delete-missing", lambda e: e.q.kv_delete(b"missing"), None),
    ("claim-empty-queue", lambda e: e.q.claim("nope"), None),
    ("claim_batch-empty-queue", lambda e: e.q.claim_batch("nope", 3), []),
    ("enqueue_batch-empty", lambda e: e.q.enqueue_batch(Q, []), []),
    ("dedup-hit", lambda e: e.q.enqueue(Q, b"again", dedup_key="dk") == e.pending, True),
    ("reap-nothing-due", lambda e: e.q.reap_now(), 0),
    ("promote-nothing-due", lambda e: e.q.promote_scheduled_now(), 0),
    (
        "queue-name-255-bytes",
        lambda e: e.q.stats("é" * 127 + "x"),
        QueueStats(queue="é" * 127 + "x"),
    ),
]


@pytest.mark.parametrize(
    ("call", "expected"), [c[1:] for c in LOOKUPS], ids=[c[0] for c in LOOKUPS]
)
def test_unknown_or_empty_lookups_return_and_change_nothing(
    env: Env, call: Call, expected: object
) -> None:
    before = view(env.q, env)
    assert call(env) == expected
    assert view(env.q, env) == before


# --------------------------------------------------------------------------- after close


def _claim_wait(e: Env) -> object:
    return e.q.claim(Q, wait=30)


CLOSED: list[tuple[str, Call]] = [
    ("enqueue", lambda e: e.q.enqueue(Q, b"x")),
    ("enqueue-dedup-hit", lambda e: e.q.enqueue(Q, b"x", dedup_key="dk")),
    ("enqueue_with", lambda e: e.q.enqueue_with(Q, b"x", EnqueueOptions())),
    ("enqueue_batch", lambda e: e.q.enqueue_batch(Q, [b"x", b"y"])),
    ("enqueue_batch-empty", lambda e: e.q.enqueue_batch(Q, [])),
    ("enqueue_with_kv", lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": b"v"})),
    ("kv_get", lambda e: e.q.kv_get(b"key")),
    ("kv_delete", lambda e: e.q.kv_delete(b"key")),
    ("claim", lambda e: e.q.claim(Q)),
    ("claim-wait", _claim_wait),
    ("claim_batch", lambda e: e.q.claim_batch(Q, 3)),
    ("ack", lambda e: e.q.ack(e.claim)),
    ("nack", lambda e: e.q.nack(e.claim, "e")),
    ("dead_letter", lambda e: e.q.dead_letter(e.claim, "r")),
    ("renew_lease", lambda e: e.q.renew_lease(e.claim, 5)),
    ("get_job", lambda e: e.q.get_job(e.pending)),
    ("stats", lambda e: e.q.stats(Q)),
    ("list_queues", lambda e: e.q.list_queues()),
    ("dead_jobs", lambda e: e.q.dead_jobs(Q)),
    ("requeue_dead_job", lambda e: e.q.requeue_dead_job(e.dead)),
    ("cancel", lambda e: e.q.cancel(e.pending)),
    ("cancel-claimed", lambda e: e.q.cancel(e.claim.id)),
    ("wait_for_completion", lambda e: e.q.wait_for_completion(e.pending, 30)),
    ("reap_now", lambda e: e.q.reap_now()),
    ("promote_scheduled_now", lambda e: e.q.promote_scheduled_now()),
]


@pytest.mark.parametrize("call", [c[1] for c in CLOSED], ids=[c[0] for c in CLOSED])
def test_every_call_after_close_raises_queue_closed(fast_backend_root: Any, call: Call) -> None:
    e = make_env(fast_backend_root)
    before = view(e.q, e, as_reopened=True)
    e.q.close()
    with pytest.raises(QueueClosed, match="closed") as info:
        call(e)
    assert type(info.value) is QueueClosed
    e.q.close()  # still idempotent
    assert e.q.closed
    assert re.search("closed", repr(e.q))
    with Queue.open(
        e.root.location, storage_options=e.root.storage_options, options=options(ManualClock())
    ) as q2:
        assert view(q2, e, as_reopened=True) == before


# --------------------------------------------------------------------------- a bad clock

BAD_CLOCK_VALUES: list[tuple[str, object]] = [
    ("str", "1700000000"),
    ("none", None),
    ("nan", NAN),
    ("inf", INF),
    ("huge-int", HUGE),
    ("bool", True),
    ("list", [T0]),
]
CLOCKED_CALLS: list[tuple[str, Call]] = [
    ("enqueue", lambda e: e.q.enqueue(Q, b"x")),
    ("enqueue-delay", lambda e: e.q.enqueue(Q, b"x", delay=5)),
    ("enqueue_batch", lambda e: e.q.enqueue_batch(Q, [b"x", b"y"])),
    ("enqueue_with_kv", lambda e: e.q.enqueue_with_kv(Q, b"x", {b"fresh": b"v"})),
    ("claim", lambda e: e.q.claim(Q)),
    ("nack", lambda e: e.q.nack(e.claim, "e")),
    ("dead_letter", lambda e: e.q.dead_letter(e.claim, "r")),
    ("release", lambda e: e.q.release(e.claim, "r")),
    ("renew_lease", lambda e: e.q.renew_lease(e.claim, 5)),
    ("ack", lambda e: e.q.ack(e.claim)),
    ("reap_now", lambda e: e.q.reap_now()),
    ("promote_scheduled_now", lambda e: e.q.promote_scheduled_now()),
]


@pytest.mark.parametrize(("label", "value"), BAD_CLOCK_VALUES, ids=[c[0] for c in BAD_CLOCK_VALUES])
def test_a_clock_returning_no_time_raises_config_error_and_changes_nothing(
    env: Env, label: str, value: object
) -> None:
    q = env.q
    clock = q._clock
    assert isinstance(clock, ManualClock)
    before = view(q, env)
    submitted = q.committer.submitted
    for name, call in CLOCKED_CALLS:
        clock.now = value  # type: ignore[assignment]
        try:
            with pytest.raises(ConfigError, match=r"OpenOptions\.clock returned") as info:
                call(env)
            assert type(info.value) is ConfigError, (name, info.value)
        finally:
            clock.now = T0
        assert view(q, env) == before, name
        assert q.committer.submitted == submitted, f"{name}: a record was logged"
    q.ack(env.claim)  # the handle is still usable once the clock is
    assert q.stats(Q).done == before[1][Q].done + 1


def test_an_int_clock_is_accepted(env: Env) -> None:
    clock = env.q._clock
    assert isinstance(clock, ManualClock)
    clock.now = int(T0) + 10  # type: ignore[assignment]
    job = env.q.enqueue(Q, b"int clock")
    assert env.q.get_job(job).enqueued_at == T0 + 10  # type: ignore[union-attr]


# --------------------------------------------------------------------------- extreme but valid


def test_extreme_but_finite_durations_and_times_work_and_reopen(fast_backend_root: Any) -> None:
    """The largest durations and times the API accepts are stored and read back whole."""
    root = fast_backend_root
    open_q = lambda: Queue.open(  # noqa: E731
        root.location, storage_options=root.storage_options, options=options(ManualClock())
    )
    longest = timedelta.max
    last_day = datetime.max.replace(tzinfo=timezone.utc)
    with open_q() as q:
        far = q.enqueue(Q, b"far", delay=longest)
        farther = q.enqueue(Q, b"farther", run_at=last_day)
        largest = q.enqueue(Q, b"largest float", delay=1.7976931348623157e308)
        held = q.enqueue(Q, b"held", priority=0)
        c = q.claim(Q, lease=longest, wait=longest)
        assert c is not None and c.id == held
        q.renew_lease(c, 1e308)
        assert q.wait_for_completion(far, 0).status is WaitStatus.TIMED_OUT
        assert q.claim(Q, wait=1e-9) is None  # the rest are scheduled far ahead
        expected = {
            far: T0 + longest.total_seconds(),
            farther: last_day.timestamp(),
            largest: T0 + 1.7976931348623157e308,
        }
        assert {j: q.get_job(j).run_at for j in expected} == expected  # type: ignore[union-attr]
        q.close(timeout=longest)
    with open_q() as q:
        assert {j: q.get_job(j).run_at for j in expected} == expected  # type: ignore[union-attr]
        assert q.stats(Q).scheduled == 3


# --------------------------------------------------------------------------- buffers


def test_a_buffer_changed_after_the_call_does_not_change_what_was_stored(
    fast_backend_root: Any,
) -> None:
    root = fast_backend_root
    open_q = lambda: Queue.open(  # noqa: E731
        root.location, storage_options=root.storage_options, options=options(ManualClock())
    )
    with open_q() as q:
        payload = bytearray(b"payload")
        one = q.enqueue(Q, payload)
        key, value = bytearray(b"key-1"), bytearray(b"value-1")
        two = q.enqueue_with_kv(Q, memoryview(payload), {bytes(key): value}).id
        items = [bytearray(b"batch-0"), memoryview(bytearray(b"batch-1"))]
        three, four = q.enqueue_batch(Q, items)
        payload[:] = b"changed"
        value[:] = b"changed"
        items[0][:] = b"changed"
        items[1][:] = b"changed"

        def check(q: Queue) -> None:
            got = {j: q.get_job(j).payload for j in (one, two, three, four)}  # type: ignore[union-attr]
            assert got == {one: b"payload", two: b"payload", three: b"batch-0", four: b"batch-1"}
            assert q.kv_get(b"key-1") == b"value-1"
            assert q.kv_get(bytearray(b"key-1")) == b"value-1"
            assert q.kv_get(memoryview(b"key-1")) == b"value-1"

        check(q)
    with open_q() as q:
        check(q)
