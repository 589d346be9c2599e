"""Deleting what the current manifest no longer needs.

Only garbage reaches here: objects that a durable, confirmed-newest manifest version of this
writer no longer names (see FENCING.md). A deletion that fails leaves harmless leftovers;
they are tried again with the next batch, and every open deletes what lies below its
``replay_from`` anyway.
"""

from __future__ import annotations

import queue
import threading

from ..errors import StorageError
from ..storage import Store


class Collector:
    """Deletes batches of keys, inline or (``background``) on a daemon thread named
    ``taquba-cleaner``, in the order submitted, retrying what failed with the next batch."""

    def __init__(self, store: Store, *, background: bool) -> None:
        self.store = store
        self.background = background
        self.leftovers: list[str] = []
        self._jobs: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, keys: list[str]) -> None:
        if not self.background:
            self._delete(keys)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="taquba-cleaner", daemon=True)
            self._thread.start()
        self._jobs.put(keys)

    def _delete(self, keys: list[str]) -> None:
        keys = self.leftovers + keys
        self.leftovers = []
        try:
            self.store.delete(keys)
        except StorageError:
            self.leftovers = keys

    def _run(self) -> None:
        while True:
            keys = self._jobs.get()
            if keys is None:
                return
            self._delete(keys)

    def close(self, timeout: float | None) -> None:
        thread = self._thread
        if thread is None:
            return
        self._jobs.put(None)
        if thread is not threading.current_thread():
            thread.join(timeout)
