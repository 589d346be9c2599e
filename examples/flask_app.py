"""A Flask app deployed the usual way: web processes submit, one worker process runs jobs.

    python examples/flask_app.py worker &                       # owns the queue, runs jobs
    gunicorn -w 4 --chdir examples 'flask_app:create_app()'      # any number of web processes
    curl -X POST localhost:8000/signups -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com"}'
    curl localhost:8000/jobs/<job_id>

The queue lives in ``./data/flask-queue`` (or ``TAQUBA_LOCATION``: a path or a bucket URL).
Web processes never open the queue: they submit through a ``Producer`` and look jobs up
through a ``QueueReader``, so any number of them (gunicorn workers, the reloader, a shell)
can run beside the one worker process without disturbing it. ``python
examples/flask_app.py web`` runs the development server instead of gunicorn.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from flask import Flask, request

from taquba import (
    Claim,
    FencedError,
    InvalidArgument,
    OpenOptions,
    Producer,
    Queue,
    QueueConfig,
    QueueNotFound,
    QueueReader,
)
from taquba.worker import PermanentFailure, run_worker_concurrent

QUEUE = "emails"
DEFAULT_LOCATION = "./data/flask-queue"
log = logging.getLogger(__name__)


def location() -> str:
    return os.environ.get("TAQUBA_LOCATION", DEFAULT_LOCATION)


# ------------------------------------------------------------------ the worker process


def send_welcome_email(claim: Claim) -> None:
    """The job handler. Returning acks; PermanentFailure dead-letters; other errors retry."""
    message = json.loads(claim.payload)
    if "@" not in message["email"]:
        raise PermanentFailure(f"not an email address: {message['email']!r}")
    time.sleep(0.05)  # talk to the mail server
    log.info("sent welcome email to %s (job %s)", message["email"], claim.id)


def run_worker(queue_location: str | None = None, *, concurrency: int = 4) -> int:
    """Own the queue and run its jobs until SIGTERM or SIGINT; the exit status.

    Running jobs finish before the queue closes. If another process takes the queue over,
    the worker stops and exits with status 1, so a supervisor restarts it.
    """
    shutdown = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: shutdown.set())
    config = QueueConfig(keep_done=3600)  # keep finished jobs an hour for the status view
    queue = Queue.open(
        queue_location or location(), options=OpenOptions(default_queue_config=config)
    )
    print(f"worker: owning {queue.store.description}", flush=True)
    try:
        run_worker_concurrent(
            queue,
            QUEUE,
            send_welcome_email,
            concurrency=concurrency,
            shutdown=shutdown,
            poll_interval=0.5,
        )
    except FencedError as exc:
        log.error("another process took the queue over: %s", exc)
        return 1
    finally:
        try:
            queue.close()
        except FencedError:
            pass
    print("worker: stopped", flush=True)
    return 0


# --------------------------------------------------------------------- the web processes


def create_app(queue_location: str | None = None) -> Flask:
    """The web app: views submit jobs through a ``Producer`` and read their status through a
    ``QueueReader``. Safe to create in every web process (and before gunicorn forks)."""
    app = Flask(__name__)
    where = queue_location or location()
    producer = Producer.open(where)  # continues under a fresh id in each forked process
    app.extensions["taquba_producer"] = producer
    readers: dict[int, QueueReader] = {}
    reader_lock = threading.Lock()

    def reader() -> QueueReader | None:
        """This process's reader, refreshed; None until the worker has created the queue."""
        with reader_lock:
            r = readers.get(os.getpid())
            if r is None:
                try:
                    r = readers[os.getpid()] = QueueReader.open(where)
                except QueueNotFound:
                    return None
                return r
        r.refresh()
        return r

    @app.post("/signups")
    def signup() -> Any:
        body = request.get_json(silent=True) or {}
        email = body.get("email")
        if not isinstance(email, str) or not email:
            return {"error": "email is required"}, 400
        job_id = producer.enqueue(QUEUE, json.dumps({"email": email}).encode())
        return {"job_id": job_id}, 202

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Any:
        r = reader()
        try:
            record = None if r is None else r.get_job(job_id)
        except InvalidArgument:
            return {"error": "not a job id"}, 400
        if record is None:
            # Unknown, or submitted and not yet taken in by the worker process.
            return {"job_id": job_id, "status": "unknown"}, 404
        return {
            "job_id": record.id,
            "status": record.status.value,
            "attempts": record.attempts,
            "last_error": record.last_error,
        }

    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    command = sys.argv[1] if len(sys.argv) > 1 else "web"
    if command == "worker":
        sys.exit(run_worker())
    elif command == "web":
        create_app().run(use_reloader=True)  # reloading is harmless: web processes only submit
    else:
        sys.exit(f"usage: {sys.argv[0]} [web|worker]")
