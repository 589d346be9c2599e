"""The job handler, and this process's ``Producer`` and ``QueueReader`` for the views."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from django.conf import settings

from taquba import Claim, Producer, QueueNotFound, QueueReader
from taquba.worker import PermanentFailure

log = logging.getLogger(__name__)

_lock = threading.Lock()
_producer: Producer | None = None
_readers: dict[int, QueueReader] = {}


def build_report(claim: Claim) -> None:
    """The handler: returning acks, PermanentFailure dead-letters, other errors retry."""
    request = json.loads(claim.payload)
    if request.get("kind") not in ("daily", "weekly"):
        raise PermanentFailure(f"unknown report kind {request.get('kind')!r}")
    time.sleep(0.05)  # the actual work
    log.info("built the %s report (job %s)", request["kind"], claim.id)


def producer() -> Producer:
    """The process-wide producer (a forked web worker continues it under a new id)."""
    global _producer
    with _lock:
        if _producer is None:
            _producer = Producer.open(settings.TAQUBA_LOCATION)
        return _producer


def reader() -> QueueReader | None:
    """This process's reader, refreshed; None until the worker has created the queue."""
    with _lock:
        r = _readers.get(os.getpid())
        if r is None:
            try:
                r = _readers[os.getpid()] = QueueReader.open(settings.TAQUBA_LOCATION)
            except QueueNotFound:
                return None
            return r
    r.refresh()
    return r


def queue_name() -> str:
    return str(settings.TAQUBA_QUEUE)
