"""The process-wide queue, its background worker, and the job handler."""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time

from taquba import Claim, OpenOptions, Queue, QueueConfig
from taquba.worker import PermanentFailure, run_worker_concurrent

log = logging.getLogger(__name__)

_lock = threading.Lock()
_queue: Queue | None = None
_queue_name = "reports"
_shutdown = threading.Event()
_thread: threading.Thread | None = None


def build_report(claim: Claim) -> None:
    """The handler: returning acks, PermanentFailure dead-letters, other errors retry."""
    request = json.loads(claim.payload)
    if request.get("kind") not in ("daily", "weekly"):
        raise PermanentFailure(f"unknown report kind {request.get('kind')!r}")
    time.sleep(0.05)  # the actual work
    log.info("built the %s report (job %s)", request["kind"], claim.id)


def start(location: str, *, queue: str, concurrency: int = 4) -> None:
    """Open the queue and start the worker thread (once per process)."""
    global _queue, _queue_name, _thread
    with _lock:
        if _queue is not None:
            return
        options = OpenOptions(default_queue_config=QueueConfig(keep_done=3600))
        _queue = Queue.open(location, options=options)
        _queue_name = queue
        _shutdown.clear()
        _thread = threading.Thread(
            target=run_worker_concurrent, args=(_queue, queue, build_report),
            kwargs={"concurrency": concurrency, "shutdown": _shutdown, "poll_interval": 0.5},
            name="taquba-worker-loop", daemon=True)
        _thread.start()
    atexit.register(stop)


def stop(timeout: float = 30.0) -> bool:
    """Stop claiming, let running jobs finish, close the queue. True if all finished."""
    global _queue, _thread
    with _lock:
        queue, thread, _queue, _thread = _queue, _thread, None, None
    if queue is None or thread is None:
        return True
    atexit.unregister(stop)
    _shutdown.set()
    thread.join(timeout)
    queue.close()
    return not thread.is_alive()


def get_queue() -> Queue:
    if _queue is None:
        raise RuntimeError("the taquba queue is not open (TAQUBA_AUTOSTART is off?)")
    return _queue


def queue_name() -> str:
    return _queue_name
