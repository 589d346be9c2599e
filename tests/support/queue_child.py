"""A queue-owning process for tests/test_queue_crash.py and tests/test_queue_fencing.py.

    python tests/support/queue_child.py SPEC_JSON

``SPEC_JSON`` holds ``mode``, ``location``, ``storage_options``, ``run`` (a number that
makes this process's job ids unique on the root) and ``checkpoint_min_bytes``.

Every stdout line is one event, written with a single ``os.write`` (atomic, so threads never
interleave) only AFTER the call it reports returned:

- ``O`` — the queue is about to be opened;
- ``S`` — the queue is open and the threads are about to start;
- ``E <id>`` — ``enqueue`` / ``enqueue_with_kv`` of job ``<id>`` returned;
- ``C <id>`` — ``claim`` returned job ``<id>``;
- ``A <id>`` — ``ack`` of job ``<id>`` returned;
- ``F <op> <id>`` — ``<op>`` of job ``<id>`` raised ``FencedError``;
- ``X <op> <ExceptionType>`` — anything else went wrong (the parent fails the test).

Job ids are ``r<run>-p<producer>-<n>`` with ``n`` counting from 0 in each producer, so the
parent can enumerate every job a producer may have created, printed or not. Jobs with an
even ``n`` are enqueued with ``enqueue_with_kv``, writing ``b"k:<id>" -> payload``.

Modes:

- ``crash``: producer and worker threads run until the parent SIGKILLs the process.
- ``busy``: like ``crash``, but every thread stops at its first ``FencedError``; once all
  have, the process prints ``D`` and exits 0.
- ``idle``: enqueue 20 jobs, claim 5 and ack 3 of them, print ``ready`` and wait for a line
  on stdin; then try an ``enqueue``, an ``ack`` and a ``nack`` (each printing ``F`` or
  ``ok <op>``), print ``D`` and exit.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

from taquba import Claim, EnqueueOptions, FencedError, OpenOptions, Queue, QueueConfig

QUEUE = "jobs"
PRODUCERS = 3
WORKERS = 3
KEEP_DONE = 30 * 24 * 3600.0  # acked jobs stay visible as DONE: the checks are exact
LEASE = 3600.0  # no lease expires while the test runs: claimed jobs only come back at open
MAX_ATTEMPTS = 1_000_000  # and come back as pending, however often a kill caught them claimed
MAX_RUN_SECONDS = 60.0  # a safety net: the parent always stops the child long before


def options(checkpoint_min_bytes: int, *, background_threads: bool = True) -> OpenOptions:
    """The options of every handle on a crash/fencing root (the parent uses them too)."""
    config = QueueConfig(lease=LEASE, keep_done=KEEP_DONE, max_attempts=MAX_ATTEMPTS)
    return OpenOptions(
        default_queue_config=config,
        checkpoint_min_bytes=checkpoint_min_bytes,
        checkpoint_ratio=0.005,
        background_threads=background_threads,
    )


def job_id(run: int, producer: int, n: int) -> str:
    return f"r{run}-p{producer}-{n}"


def payload(jid: str) -> bytes:
    return jid.encode() * 4


def kv_key(jid: str) -> bytes:
    return b"k:" + jid.encode()


def with_kv(n: int) -> bool:
    return n % 2 == 0


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def produce(q: Queue, run: int, producer: int, stop: threading.Event, fenced_stops: bool) -> None:
    rng = random.Random(run * 1000 + producer)
    n = 0
    while not stop.is_set():
        jid = job_id(run, producer, n)
        op = "enqueue_with_kv" if with_kv(n) else "enqueue"
        try:
            if with_kv(n):
                q.enqueue_with_kv(
                    QUEUE, payload(jid), {kv_key(jid): payload(jid)}, EnqueueOptions(job_id=jid)
                )
            else:
                q.enqueue(QUEUE, payload(jid), job_id=jid)
        except FencedError:
            emit(f"F {op} {jid}")
            if fenced_stops:
                return
            raise
        emit(f"E {jid}")
        n += 1
        time.sleep(rng.uniform(0, 0.002))


def work(q: Queue, stop: threading.Event, fenced_stops: bool) -> None:
    rng = random.Random()
    while not stop.is_set():
        claim = None
        try:
            claim = q.claim(QUEUE, wait=0.05)
            if claim is None:
                continue
            emit(f"C {claim.id}")
            time.sleep(rng.uniform(0, 0.004))  # the "work": claims are often in flight
            q.ack(claim)
        except FencedError:
            emit(
                f"F {'ack' if claim is not None else 'claim'} "
                f"{claim.id if claim is not None else '-'}"
            )
            if fenced_stops:
                return
            raise
        emit(f"A {claim.id}")


def run_threads(q: Queue, run: int, fenced_stops: bool) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)
            emit(f"X {fn.__name__} {type(exc).__name__}: {exc}")
            stop.set()

    threads = [
        threading.Thread(
            target=guarded,
            args=(produce, q, run, p, stop, fenced_stops),
            name=f"producer-{p}",
            daemon=True,
        )
        for p in range(PRODUCERS)
    ]
    threads += [
        threading.Thread(
            target=guarded, args=(work, q, stop, fenced_stops), name=f"worker-{w}", daemon=True
        )
        for w in range(WORKERS)
    ]
    emit("S")
    for t in threads:
        t.start()
    deadline = time.monotonic() + MAX_RUN_SECONDS
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    if any(t.is_alive() for t in threads):
        emit("X timeout the threads did not stop")


def idle(q: Queue, run: int) -> None:
    ids = [
        q.enqueue(QUEUE, payload(job_id(run, 0, n)), job_id=job_id(run, 0, n)) for n in range(20)
    ]
    for jid in ids:
        emit(f"E {jid}")
    claims: list[Claim] = []
    for _ in range(5):
        claim = q.claim(QUEUE)
        assert claim is not None
        emit(f"C {claim.id}")
        claims.append(claim)
    for claim in claims[:3]:
        q.ack(claim)
        emit(f"A {claim.id}")
    emit("ready")
    sys.stdin.readline()
    jid = job_id(run, 1, 0)
    attempts: list[tuple[str, str, Any]] = [
        ("enqueue", jid, lambda: q.enqueue(QUEUE, payload(jid), job_id=jid)),
        ("ack", claims[3].id, lambda: q.ack(claims[3])),
        ("nack", claims[4].id, lambda: q.nack(claims[4], "fenced?")),
    ]
    for op, target, call in attempts:
        try:
            call()
        except FencedError:
            emit(f"F {op} {target}")
        except Exception as exc:
            emit(f"X {op} {type(exc).__name__}: {exc}")
        else:
            emit(f"ok {op} {target}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    mode = spec["mode"]
    emit("O")
    q = Queue.open(
        spec["location"],
        options=options(spec["checkpoint_min_bytes"]),
        storage_options=spec.get("storage_options") or None,
    )
    if mode == "idle":
        idle(q, spec["run"])
    else:
        run_threads(q, spec["run"], fenced_stops=mode == "busy")
    emit("D")
    # A fenced handle may not close cleanly; the parent only cares about the lines above.
    os._exit(0)


if __name__ == "__main__":
    main()
