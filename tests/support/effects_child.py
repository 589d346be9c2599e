"""A queue-owning process that settles jobs with effects, for tests/test_effects.py.

    python tests/support/effects_child.py ROOT

Opens the queue at ``ROOT`` (local disk), enqueues the ``JOBS`` source jobs on a fresh root
(each with a KV entry ``d:<id>`` that its settlement deletes), and then runs ``WORKERS``
threads that claim source jobs and settle them, until the parent SIGKILLs the process or
no source job is left. A job with an even number is acked, an odd one dead-lettered, each
with the same effects: a follow-up job ``f-<id>`` in queue ``next``, the KV write
``k:<id>`` and the KV delete ``d:<id>``.

Stdout lines, each written with one ``os.write`` after the call it reports returned:
``S`` (open, working), ``A <id>`` (the settlement of ``<id>`` returned), ``D`` (nothing
left), ``X <text>`` (something unexpected; the parent fails the test).
"""

from __future__ import annotations

import os
import sys
import threading

from taquba import (
    ClaimLost,
    EnqueueOptions,
    EnqueueRequest,
    OpenOptions,
    Queue,
    QueueConfig,
    SettlementEffects,
)

SOURCE = "source"
NEXT = "next"
JOBS = 2000  # more than 4 workers settle in the longest wait before a kill
WORKERS = 4
CONFIG = QueueConfig(lease=3600.0, keep_done=30 * 24 * 3600.0, max_attempts=1_000_000)


def options() -> OpenOptions:
    """The options of every handle on the root (the parent uses them too)."""
    return OpenOptions(
        default_queue_config=CONFIG, checkpoint_min_bytes=4096, checkpoint_ratio=0.05
    )


def source_id(n: int) -> str:
    return f"s-{n}"


def effects(job_id: str) -> SettlementEffects:
    """What settling source job ``job_id`` also does."""
    return SettlementEffects(
        enqueue=[EnqueueRequest(NEXT, job_id.encode(), EnqueueOptions(job_id=f"f-{job_id}"))],
        kv_writes={f"k:{job_id}".encode(): job_id.encode()},
        kv_deletes=[f"d:{job_id}".encode()],
    )


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def work(q: Queue) -> None:
    try:
        while True:
            claim = q.claim(SOURCE)
            if claim is None:
                return
            n = int(claim.id.split("-")[1])
            try:
                if n % 2 == 0:
                    q.ack(claim, effects(claim.id))
                else:
                    q.dead_letter(claim, "odd", effects(claim.id))
            except ClaimLost:
                continue
            emit(f"A {claim.id}")
    except Exception as exc:  # reported to the parent, which fails the test
        emit(f"X {type(exc).__name__}: {exc}")


def main() -> None:
    q = Queue.open(sys.argv[1], options=options())
    if q.kv_get(b"ready") is None:
        for n in range(JOBS):
            job_id = source_id(n)
            q.enqueue_with_kv(
                SOURCE, b"x", {f"d:{job_id}".encode(): b"1"}, EnqueueOptions(job_id=job_id)
            )
        q.kv_put(b"ready", b"1")
    emit("S")
    threads = [threading.Thread(target=work, args=(q,)) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit("D")
    q.close()


if __name__ == "__main__":
    main()
