"""Child of tests/test_worker_acks.py: a worker loop that ends after N jobs, then the
process exits at once (``os._exit``), without closing the queue.

argv: root, loop ("run_worker" or "concurrent:<threads>"), n. Prints "ran <n>" first.
"""

from __future__ import annotations

import os
import sys
import threading

from taquba import Queue
from taquba.worker import run_worker, run_worker_concurrent

root, loop, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = Queue.open(root)
for i in range(n):
    q.enqueue("jobs", b"%d" % i)
shutdown = threading.Event()
lock = threading.Lock()
ran = [0]


def handler(claim: object) -> None:
    with lock:
        ran[0] += 1
        if ran[0] == n:
            shutdown.set()  # the loop ends right after this job's settlement


if loop == "run_worker":
    run_worker(q, "jobs", handler, shutdown=shutdown, poll_interval=0.05)
else:
    threads = int(loop.split(":")[1])
    run_worker_concurrent(
        q, "jobs", handler, concurrency=threads, shutdown=shutdown, poll_interval=0.05
    )
print("ran", ran[0], flush=True)
os._exit(0)  # no close: only what the loop made durable before returning survives
