"""A Flask app: views enqueue, a background thread in the same process works the queue.

    python examples/flask_app.py            # http://127.0.0.1:5000, queue in ./data/flask-queue
    curl -X POST localhost:5000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com"}'
    curl localhost:5000/jobs/<job_id>

One process owns a queue (a second one opening the same location takes it over), so run
the app as a single process: no reloader, one gunicorn worker (``gunicorn -w 1 --threads 8
'flask_app:create_app()'``), and call ``app.extensions["taquba"].stop()`` from the server's
exit hook. ``atexit`` is the fallback for a plain interpreter exit.

If the worker loop dies — another process opened the same queue and took it over
(``FencedError``), or the storage failed for good (``QueueBroken``) — the process exits with
status 1 so that its supervisor restarts it, instead of serving on with a dead queue.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask, request

from taquba import Claim, InvalidArgument, OpenOptions, Queue, QueueConfig
from taquba.worker import PermanentFailure, run_worker_concurrent

QUEUE = "emails"
log = logging.getLogger(__name__)


def send_welcome_email(claim: Claim) -> None:
    """The job handler. Returning acks; PermanentFailure dead-letters; other errors retry."""
    message = json.loads(claim.payload)
    if "@" not in message["email"]:
        raise PermanentFailure(f"not an email address: {message['email']!r}")
    time.sleep(0.05)  # talk to the mail server
    log.info("sent welcome email to %s (job %s)", message["email"], claim.id)


def exit_process(exc: BaseException) -> None:
    """What happens by default when the worker loop dies: the whole process exits with 1."""
    log.critical("the taquba worker stopped (%s: %s); exiting so that the process is "
                 "restarted", type(exc).__name__, exc)
    sys.stderr.flush()
    os._exit(1)  # from a background thread: sys.exit would only end this thread


class BackgroundWorker:
    """The app's queue and the thread running ``run_worker_concurrent`` on it.

    ``on_failure`` is called with the exception that ended the worker loop (default:
    :func:`exit_process`).
    """

    def __init__(self, location: str, *, concurrency: int = 4,
                 on_failure: Callable[[BaseException], None] = exit_process) -> None:
        config = QueueConfig(keep_done=3600)  # keep finished jobs an hour for the status view
        self.queue = Queue.open(location, options=OpenOptions(default_queue_config=config))
        self.shutdown = threading.Event()
        self.concurrency = concurrency
        self.on_failure = on_failure
        self.thread = threading.Thread(target=self._work, name="taquba-worker-loop",
                                       daemon=True)
        self.thread.start()
        atexit.register(self.stop)

    def _work(self) -> None:
        try:
            run_worker_concurrent(self.queue, QUEUE, send_welcome_email,
                                  concurrency=self.concurrency, shutdown=self.shutdown,
                                  poll_interval=0.5)
        except BaseException as exc:  # FencedError, QueueBroken, a handler's SystemExit...
            if not self.shutdown.is_set():
                self.on_failure(exc)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming, let running jobs finish, close the queue. True if all finished."""
        atexit.unregister(self.stop)
        self.shutdown.set()
        self.thread.join(timeout)
        finished = not self.thread.is_alive()
        if not finished:
            log.warning("taquba worker still busy after %.0fs; closing the queue anyway", timeout)
        self.queue.close()
        return finished


def create_app(queue_location: str | None = None, *,
               on_worker_failure: Callable[[BaseException], None] = exit_process) -> Flask:
    """Open the queue at ``queue_location`` and start its worker; the app's views enqueue."""
    app = Flask(__name__)
    location = queue_location or os.environ.get("TAQUBA_LOCATION", "./data/flask-queue")
    worker = BackgroundWorker(location, on_failure=on_worker_failure)
    app.extensions["taquba"] = worker

    @app.post("/signups")
    def signup() -> Any:
        body = request.get_json(silent=True) or {}
        email = body.get("email")
        if not isinstance(email, str) or not email:
            return {"error": "email is required"}, 400
        job_id = worker.queue.enqueue(QUEUE, json.dumps({"email": email}).encode())
        return {"job_id": job_id}, 202

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Any:
        try:
            record = worker.queue.get_job(job_id)
        except InvalidArgument:
            record = None
        if record is None:
            return {"error": "no such job"}, 404
        return {"job_id": record.id, "status": record.status.value,
                "attempts": record.attempts, "last_error": record.last_error}

    return app


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the development server like Ctrl-C does


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, _interrupt)
    flask_app = create_app()
    try:
        flask_app.run(use_reloader=False)  # the reloader would open the queue twice
    except KeyboardInterrupt:
        pass
    finally:
        flask_app.extensions["taquba"].stop()
