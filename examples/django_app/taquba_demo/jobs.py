"""The process-wide queue, its background worker, and the job handler.

If the worker loop dies — another process opened the same queue and took it over
(``FencedError``), or the storage failed for good (``QueueBroken``) — the process exits with
status 1 so that its supervisor restarts it (see ``exit_process``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

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


def exit_process(exc: BaseException) -> None:
    """What happens by default when the worker loop dies: the whole process exits with 1."""
    log.critical("the taquba worker stopped (%s: %s); exiting so that the process is "
                 "restarted", type(exc).__name__, exc)
    sys.stderr.flush()
    os._exit(1)  # from a background thread: sys.exit would only end this thread


def _work(queue: Queue, name: str, concurrency: int,
          on_failure: Callable[[BaseException], None]) -> None:
    try:
        run_worker_concurrent(queue, name, build_report, concurrency=concurrency,
                              shutdown=_shutdown, poll_interval=0.5)
    except BaseException as exc:  # FencedError, QueueBroken, a handler's SystemExit...
        if not _shutdown.is_set():
            on_failure(exc)


def start(location: str, *, queue: str, concurrency: int = 4,
          on_failure: Callable[[BaseException], None] = exit_process) -> None:
    """Open the queue and start the worker thread (once per process). ``on_failure`` is
    called with the exception that ended the worker loop."""
    global _queue, _queue_name, _thread
    with _lock:
        if _queue is not None:
            return
        options = OpenOptions(default_queue_config=QueueConfig(keep_done=3600))
        _queue = Queue.open(location, options=options)
        _queue_name = queue
        _shutdown.clear()
        _thread = threading.Thread(
            target=_work, args=(_queue, queue, concurrency, on_failure),
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
