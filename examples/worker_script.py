"""A plain script: a producer and a concurrent worker sharing one queue, stopped by signals.

    python examples/worker_script.py                    # finite demo in a temporary directory
    python examples/worker_script.py --data ./data/demo --forever   # until Ctrl-C / SIGTERM

SIGTERM or SIGINT (Ctrl-C) asks the worker to stop: nothing new is claimed, the jobs already
running finish and are settled, the queue is closed, and the script exits 0. If they do not
finish within ``--grace`` seconds the script exits 1 at once; those jobs are delivered again
the next time the queue is opened (delivery is at-least-once). A second signal exits at once.

If the worker loop dies — another process opened the same queue and took it over
(``FencedError``, noticed within ``--fence-check-interval`` seconds even when idle), or the
storage failed for good (``QueueBroken``) — the script exits 1, so that a supervisor sees the
failure instead of a clean exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from types import FrameType

from taquba import Claim, OpenOptions, Queue, QueueBroken, QueueClosed, WaitStatus
from taquba.worker import PermanentFailure, run_worker_concurrent

QUEUE = "thumbnails"
log = logging.getLogger("worker_script")


def say(line: str) -> None:
    """One whole line to stdout at once (print() from many threads can interleave)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_thumbnail(claim: Claim) -> None:
    """The handler: returning acks, PermanentFailure dead-letters, any other error retries."""
    job = json.loads(claim.payload)
    say(f"started {claim.id} {job['image']} (attempt {claim.attempts})")
    if not job["image"].endswith(".png"):
        raise PermanentFailure(f"not a png: {job['image']}")
    # Simulated work, in slices so that a cancel() of this job stops it early.
    deadline = time.monotonic() + job["seconds"]
    while time.monotonic() < deadline:
        if claim.cancel_requested.wait(min(0.05, max(deadline - time.monotonic(), 0))):
            say(f"cancelled {claim.id}")  # q.cancel(job_id) asked us to stop
            raise PermanentFailure("cancelled while running")  # returning would ack it
    say(f"finished {claim.id}")


def produce(q: Queue, count: int, seconds: float, shutdown: threading.Event, forever: bool) -> None:
    """Enqueue ``count`` jobs (then one every ``seconds`` if ``forever``); a finite demo
    sets ``shutdown`` once every job is finished."""

    def payload(i: int) -> bytes:
        image = f"photo-{i:03d}.png" if i % 10 != 9 else f"notes-{i:03d}.txt"
        return json.dumps({"image": image, "seconds": seconds}).encode()

    try:
        ids = q.enqueue_batch(QUEUE, [payload(i) for i in range(count)])  # all or nothing
        say(f"enqueued {len(ids)} jobs")
        if forever:
            i = count
            while not shutdown.wait(max(seconds, 0.1)):
                q.enqueue(QUEUE, payload(i))
                i += 1
            return
        for job_id in ids:
            while not shutdown.is_set():
                if q.wait_for_completion(job_id, timeout=0.5).status != WaitStatus.TIMED_OUT:
                    break
    except (QueueBroken, QueueClosed) as exc:  # the worker loop reports it; just stop
        log.info("producer stopped: %s", type(exc).__name__)
    shutdown.set()  # every job is finished (or the queue is gone): end the demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="queue directory (default: a fresh temporary directory)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs to enqueue (default 20)")
    parser.add_argument("--seconds", type=float, default=0.2, help="work per job (default 0.2)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds to let running jobs finish after a signal (default 30)",
    )
    parser.add_argument(
        "--forever",
        action="store_true",
        help="keep producing until SIGTERM/SIGINT instead of a finite demo",
    )
    parser.add_argument(
        "--fence-check-interval",
        type=float,
        default=30.0,
        help="seconds between checks that no other process took the queue over (default 30)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s"
    )

    data = args.data or os.path.join(tempfile.mkdtemp(prefix="taquba-demo-"), "queue")
    shutdown = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if shutdown.is_set():
            log.warning("second signal: exiting now; running jobs will be delivered again")
            os._exit(1)
        log.info("%s: stopping (running jobs finish first)", signal.Signals(signum).name)
        shutdown.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    say(f"queue at {data}")
    failure: list[BaseException] = []

    def work(q: Queue) -> None:
        try:
            run_worker_concurrent(
                q,
                QUEUE,
                make_thumbnail,
                concurrency=args.concurrency,
                shutdown=shutdown,
                poll_interval=0.5,
            )
        except BaseException as exc:  # FencedError, QueueBroken, a handler's SystemExit...
            failure.append(exc)
            log.error("the worker loop stopped: %s: %s", type(exc).__name__, exc)

    options = OpenOptions(fence_check_interval=args.fence_check_interval)
    with Queue.open(data, options=options) as q:
        worker = threading.Thread(target=work, args=(q,), name="worker-loop")
        producer = threading.Thread(
            target=produce,
            name="producer",
            daemon=True,
            args=(q, args.jobs, args.seconds, shutdown, args.forever),
        )
        worker.start()
        producer.start()
        while not shutdown.wait(0.5):  # the main thread stays free to run signal handlers
            if not worker.is_alive():  # the loop ended on its own (queue broken, ...)
                shutdown.set()
        worker.join(args.grace)
        if worker.is_alive():
            log.error("jobs still running after %.0fs; exiting without them", args.grace)
            os._exit(1)
        producer.join(5.0)  # it stops producing once shutdown is set
        if failure:  # the queue is gone (fenced, broken): say so with the exit status
            say(f"failed: {type(failure[0]).__name__}")
            return 1
        stats = q.stats(QUEUE)
    say(
        f"stopped: {stats.done} done, {stats.dead} dead, {stats.pending} pending, "
        f"{stats.claimed} claimed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
