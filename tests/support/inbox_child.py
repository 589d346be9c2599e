"""Producer and owner processes for tests/test_multiprocess.py.

    python tests/support/inbox_child.py SPEC_JSON

``SPEC_JSON`` holds ``mode``, ``location``, ``storage_options`` and mode-specific fields.
Every stdout line is one event, written with one ``os.write`` (atomic, so threads never
interleave) only AFTER the call it reports returned:

- ``S`` — started (the producer or queue is open);
- ``E <id>`` — a producer's ``enqueue`` of job ``<id>`` returned;
- ``A <id>`` — the owner's ``ack`` of job ``<id>`` returned;
- ``F`` — the owner was fenced (another owner took over) and stopped;
- ``X <what>`` — anything else went wrong (the parent fails the test).

Modes:

- ``producer``: ``threads`` threads enqueue until SIGTERM (then finish the call in flight
  and print ``D``) or SIGKILL; ``limit`` bounds the calls per thread.
- ``owner``: open the queue with intake on, run ``workers`` claim -> ack threads until
  killed or fenced; ``checkpoint_min_bytes`` makes checkpoints frequent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from taquba import FencedError, OpenOptions, Producer, Queue, QueueBroken, QueueConfig

QUEUE = "jobs"
MAX_RUN_SECONDS = 120.0  # a safety net: the parent always stops the child long before


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def owner_options(spec: dict[str, Any]) -> OpenOptions:
    config = QueueConfig(lease=3600.0, max_attempts=1_000_000)
    return OpenOptions(
        default_queue_config=config,
        checkpoint_min_bytes=spec.get("checkpoint_min_bytes", 4096),
        checkpoint_ratio=0.01,
        inbox_busy_interval=0.05,
        inbox_interval=0.2,
    )


def run_producer(spec: dict[str, Any]) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    p = Producer.open(spec["location"], storage_options=spec["storage_options"])
    say("S")

    def loop(k: int) -> None:
        n = 0
        while not stop.is_set() and n < spec.get("limit", 10**9):
            try:
                job_id = p.enqueue(QUEUE, f"{k}-{n}".encode())
            except Exception as exc:
                say(f"X enqueue {type(exc).__name__}: {exc}")
                return
            say(f"E {job_id}")
            n += 1
            if spec.get("pause"):
                time.sleep(spec["pause"])

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    say("D")


def run_owner(spec: dict[str, Any]) -> None:
    q = Queue.open(
        spec["location"], storage_options=spec["storage_options"], options=owner_options(spec)
    )
    say("S")
    fenced = threading.Event()

    def work() -> None:
        while not fenced.is_set():
            try:
                claim = q.claim(QUEUE, wait=0.5)
                if claim is not None:
                    q.ack(claim)
                    say(f"A {claim.id}")
            except QueueBroken:  # FencedError included
                fenced.set()
                return
            except Exception as exc:
                say(f"X work {type(exc).__name__}: {exc}")
                fenced.set()
                return

    threads = [threading.Thread(target=work) for _ in range(spec.get("workers", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say("F")
    try:
        q.close()
    except FencedError:
        pass


def main() -> None:
    spec = json.loads(sys.argv[1])
    threading.Timer(MAX_RUN_SECONDS, lambda: os._exit(3)).start()
    {"producer": run_producer, "owner": run_owner}[spec["mode"]](spec)
    os._exit(0)


if __name__ == "__main__":
    main()
