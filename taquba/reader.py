"""``QueueReader``: see a queue's durable state from a process that does not own it.

The command line, a dashboard or a web process inspect the queue through a reader: it
follows the owner's log (``taquba.log.reader``) into the same pure ``State`` the owner
keeps, and answers from it. It writes nothing, so it never disturbs the owner, and it
shows only what is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from .config import Buffer, check_job_id, check_queue_name
from .core.state import State
from .errors import ConfigError, JobNotFound, QueueClosed
from .log.manifest import MANIFEST_DIR
from .log.reader import LogReader, RootNotFound
from .records import Attempt, JobRecord, QueueStats, Schedule
from .storage import Location, Store, open_store
from .views import (
    attempt_history,
    dead_page,
    job_record,
    kv_key,
    oldest_pending_at,
    queue_stats,
    schedules,
)


class QueueNotFound(ConfigError):
    """The location holds no queue."""


class QueueReader:
    """A read-only view of the queue at a root, as of the last :meth:`refresh`.

    Open with :meth:`QueueReader.open` (which refreshes once). Thread-safe. Every query
    answers from the durable state the last refresh read, without I/O; besides the errors
    each method lists, every method raises ``QueueClosed`` after :meth:`close`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._state = State()
        self._closed = False
        self._log = LogReader(store, on_snapshot=self._on_snapshot, on_record=self._on_record)

    @classmethod
    def open(
        cls,
        location: Location,
        path: str | None = None,
        *,
        storage_options: Mapping[str, object] | None = None,
    ) -> QueueReader:
        """Open a reader on the queue root at ``location`` and read the owner's durable state.

        Args:
            location: a local path, a URL (``s3://``, ``gs://``, ``az://``, ``memory://``,
                ``file://``) or an ``fsspec.AbstractFileSystem`` instance, as for
                ``Queue.open``.
            path: the root inside a filesystem instance (or appended to ``location``).
            storage_options: passed to fsspec for URLs.

        Returns:
            The open reader, refreshed once.

        Raises:
            ConfigError: a malformed location or option; :class:`QueueNotFound` (a
                ``ConfigError``) when the root holds no queue.
            StorageError: the storage could not be read.
            CorruptionError: a stored object fails its checksum or cannot be decoded.

        Durability: reads only what the owner made durable; writes nothing.
        """
        store = open_store(location, path, storage_options=storage_options)
        reader = cls(store)
        try:
            reader.refresh()
        except BaseException:
            store.close()
            raise
        return reader

    def _on_snapshot(self, data: bytes | None) -> None:
        self._state = State() if data is None else State.restore(data)

    def _on_record(self, data: bytes) -> None:
        self._state.apply_record(data)

    def refresh(self) -> bool:
        """Catch up with the owner's durable state, reading only what is new.

        Returns:
            True if anything changed since the last refresh.

        Raises:
            QueueNotFound: the root no longer holds a queue.
            StorageError: the storage could not be read.
            CorruptionError: a stored object fails its checksum or cannot be decoded.

        Durability: reads only what the owner made durable; writes nothing.
        """
        with self._lock:
            self._ensure_open()
            try:
                return self._log.refresh()
            except RootNotFound as exc:
                raise QueueNotFound(
                    f"{exc} (is the location right? a queue is created by Queue.open)"
                ) from None

    def close(self) -> None:
        """Release the storage connection. Idempotent; later calls raise ``QueueClosed``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.store.close()

    def __enter__(self) -> QueueReader:
        """The reader itself: ``with QueueReader.open(...) as r:`` closes it at the end."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise QueueClosed("the reader is closed")

    # -- queries (as of the last refresh) --------------------------------------------------

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job's record as of the last refresh.

        Args:
            job_id: 1-128 characters of ``[A-Za-z0-9_-]``.

        Returns:
            A frozen :class:`JobRecord`, or None if no such job is kept.

        Raises:
            InvalidArgument: a malformed id.
        """
        self._ensure_open()
        check_job_id(job_id)
        with self._lock:
            self._ensure_open()
            return job_record(self._state, job_id)

    def attempt_history(self, job_id: str) -> list[Attempt]:
        """The deliveries of job ``job_id``, oldest first (as ``Queue.attempt_history``)."""
        self._ensure_open()
        check_job_id(job_id)
        with self._lock:
            self._ensure_open()
            return attempt_history(self._state, job_id)

    def stats(self, queue: str) -> QueueStats:
        """The job counts of ``queue`` as of the last refresh.

        Args:
            queue: the queue's name.

        Returns:
            A :class:`QueueStats` (all zero for a queue never used; ``done`` cumulative).

        Raises:
            InvalidArgument: a bad queue name.
        """
        self._ensure_open()
        check_queue_name(queue)
        with self._lock:
            self._ensure_open()
            return queue_stats(self._state, queue)

    def oldest_pending_at(self, queue: str) -> float | None:
        """The enqueue time of the oldest pending job of ``queue`` (None if none is)."""
        self._ensure_open()
        check_queue_name(queue)
        with self._lock:
            self._ensure_open()
            return oldest_pending_at(self._state, queue)

    def list_queues(self) -> list[str]:
        """The names of the queues that have jobs or counts, sorted, as of the last refresh."""
        with self._lock:
            self._ensure_open()
            return sorted(self._state.queues)

    def dead_jobs(
        self, queue: str, *, after: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """A page of the dead jobs of ``queue`` in enqueue order, as of the last refresh.

        Args:
            queue: the queue's name.
            after: the last id of the previous page (None: from the start).
            limit: the page size, 1..10000.

        Returns:
            Up to ``limit`` dead jobs as frozen :class:`JobRecord` objects.

        Raises:
            InvalidArgument: a bad argument.
            JobNotFound: ``after`` names no known job.
        """
        self._ensure_open()
        with self._lock:
            self._ensure_open()
            return dead_page(self._state, queue, after, limit)

    def kv_get(self, key: Buffer) -> bytes | None:
        """The value under ``key`` in the KV namespace as of the last refresh.

        Args:
            key: the key (non-empty, at most ``MAX_KV_KEY_SIZE`` bytes).

        Returns:
            The value, or None if the key holds none.

        Raises:
            InvalidArgument: an empty or oversized key.
        """
        self._ensure_open()
        data = kv_key(key)
        with self._lock:
            self._ensure_open()
            return self._state.kv.get(data)

    def list_schedules(self) -> list[Schedule]:
        """Every cron schedule, by name (see ``Queue.add_schedule``)."""
        with self._lock:
            self._ensure_open()
            return schedules(self._state)

    def __repr__(self) -> str:
        return f"QueueReader({self.store.description!r}{', closed' if self._closed else ''})"


def holds_queue(
    location: Location,
    path: str | None = None,
    *,
    storage_options: Mapping[str, object] | None = None,
) -> bool:
    """Whether the root at ``location`` holds a queue (a manifest), with one listing and
    without reading the queue's state (for a check before submitting to it).

    Raises ``ConfigError`` for a malformed location and ``StorageError`` if the storage
    cannot be listed.
    """
    store = open_store(location, path, storage_options=storage_options)
    try:
        return bool(store.list_dir(MANIFEST_DIR))
    finally:
        store.close()


__all__ = ["JobNotFound", "QueueNotFound", "QueueReader", "holds_queue"]
