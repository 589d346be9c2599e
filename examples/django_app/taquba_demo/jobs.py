"""This process's ``QueueReader`` for the status view (one per process: a forked web
worker opens its own)."""

from __future__ import annotations

import os
import threading

from django.conf import settings

from taquba import QueueNotFound, QueueReader

_lock = threading.Lock()
_readers: dict[int, QueueReader] = {}


def reader() -> QueueReader | None:
    """This process's reader, refreshed; None until the worker has created the queue."""
    with _lock:
        r = _readers.get(os.getpid())
        if r is None:
            try:
                r = _readers[os.getpid()] = QueueReader.open(settings.TAQUBA["LOCATION"])
            except QueueNotFound:
                return None
            return r
    r.refresh()
    return r
