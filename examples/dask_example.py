"""Hand the work to a Dask cluster: this process owns the queue, Dask runs the handlers.

    python examples/dask_example.py               # in-process LocalCluster, temporary queue
    python examples/dask_example.py --processes   # worker processes instead of threads
    python examples/dask_example.py --scheduler tcp://10.0.0.5:8786   # an existing cluster

The handler travels to the Dask workers (it must be picklable) and receives a ``JobView``:
id, queue, payload, headers, attempts, priority. Its outcome comes back with the future,
and this process, the queue's single writer, acks, retries or dead-letters the job and
keeps renewing its lease while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading

from distributed import Client, LocalCluster

from taquba import Queue, WaitStatus
from taquba.worker import Job, PermanentFailure, run_worker_concurrent

QUEUE = "checksums"


def checksum(job: Job) -> None:
    """Runs on a Dask worker. Returning acks; PermanentFailure dead-letters; others retry."""
    task = json.loads(job.payload)
    if task["rounds"] < 0:
        raise PermanentFailure(f"rounds must be >= 0, got {task['rounds']}")
    digest = task["seed"].encode()
    for _ in range(task["rounds"]):
        digest = hashlib.sha256(digest).digest()
    # one write per line: print() from several threads can interleave
    sys.stdout.write(f"job {job.id}: {task['seed']} -> {digest.hex()[:16]} (pid {os.getpid()})\n")
    sys.stdout.flush()


def wait_then_stop(q: Queue, ids: list[str], shutdown: threading.Event) -> None:
    for job_id in ids:
        while q.wait_for_completion(job_id, timeout=1.0).status == WaitStatus.TIMED_OUT:
            pass
    shutdown.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="queue directory (default: a temporary directory)")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument(
        "--processes",
        action="store_true",
        help="LocalCluster with worker processes (default: threads)",
    )
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(threadName)s %(name)s: %(message)s")
    data = args.data or os.path.join(tempfile.mkdtemp(prefix="taquba-dask-"), "queue")

    with contextlib.ExitStack() as stack:
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=2 if args.processes else 1,
                    threads_per_worker=2,
                    processes=args.processes,
                    dashboard_address=":0",
                )
            )
            client = stack.enter_context(Client(cluster))
        q = stack.enter_context(Queue.open(data))

        ids = [
            q.enqueue(QUEUE, json.dumps({"seed": f"item-{i}", "rounds": 20000}).encode())
            for i in range(args.jobs)
        ]
        ids.append(q.enqueue(QUEUE, json.dumps({"seed": "bad", "rounds": -1}).encode()))
        shutdown = threading.Event()
        threading.Thread(target=wait_then_stop, args=(q, ids, shutdown), daemon=True).start()
        run_worker_concurrent(
            q,
            QUEUE,
            checksum,
            concurrency=8,
            shutdown=shutdown,
            poll_interval=0.5,
            executor=client.get_executor(),
        )
        stats = q.stats(QUEUE)
        print(f"done: {stats.done}, dead: {stats.dead}, pending: {stats.pending}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
