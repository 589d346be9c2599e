"""``Producer``: submit jobs to a queue from a process that does not own it.

Web-server workers, cron scripts and the command line submit through the inbox (see
``taquba.inbox``) instead of opening the queue, which would take it over from its owner.

Rules this module keeps:

- A call returns only once its submission is durable under the root: its inbox object is
  fsynced (local disk) or acknowledged by the object store. No owner needs to be running.
- On a store that appends (local disk), the objects are blocks instead, appended to the
  producer's own inbox file: one ``pwrite`` and one ``fdatasync`` per group commit, where a
  new object costs a temporary file, two fsyncs and a link. The first block is published
  with the file's header; the file is left for a new one after 4 MiB, after a failed
  append (which may have left part of its block: nothing is ever appended after that), and
  when the owner has removed it (a quiet producer's; the append that finds it gone writes
  nothing and goes to a new file). ``close`` appends an end block, so the owner can
  delete the file once it has taken the rest in.
- Concurrent calls in one process share one object (group commit): while one object is
  being written, the calls that arrive gather into the next, which the first of them
  writes as soon as the write in flight is done. One ``Condition``, no thread of its own.
- Objects of one producer are written one at a time, in ``seq`` order, so the owner takes
  the jobs in the order their calls returned.
- A write that fails fails every call in its object with the storage error; its ``seq``
  is not reused (the object may have landed), and the producer stays usable.
- A block's ``seq`` is its file's ``start`` plus its place in the file, so a new file
  starts at the ``seq`` after the last one tried (or at that one, if the append found the
  file removed and wrote nothing).
- In a process forked from the one that opened it, a producer continues under a new
  producer id with its own storage connection: parent and child never share a ``seq``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from .arguments import batch_items, payload_bytes
from .config import Buffer, EnqueueKwargs, EnqueueOptions, check_job_id, check_queue_name
from .core.ids import IdGenerator
from .errors import ConfigError, InvalidArgument, QueueClosed, StorageError
from .inbox import (
    END_BLOCK,
    INBOX_DIR,
    Submission,
    SubmitCancel,
    SubmitEnqueue,
    SubmitRequeueDead,
    encode_file_head,
    encode_object,
    encode_submission_block,
    file_name,
    object_name,
    submission_frames,
)
from .log.format import MAX_APPENDED_BLOCK
from .storage import Appender, Location, ObjectExists, ObjectNotFound, Store, open_store

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("taquba.producer")

_PLAIN = EnqueueOptions()
FILE_BYTES = 4 << 20  # an inbox file is left for a new one once it holds this much


class _Ticket:
    """One inbox object being gathered, then written: its callers wait on ``done``."""

    __slots__ = ("done", "error", "frames")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None


_live: weakref.WeakSet[Producer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for producer in list(_live):
        producer._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Producer:
    """Submits jobs, cancels and requeues to the queue at a root without owning it.

    Open with :meth:`Producer.open`; use from any number of threads; close when done (or
    use ``with``). The queue's owner (the process holding ``Queue.open``) takes each
    submission in within ``OpenOptions.inbox_interval``, exactly once.
    """

    def __init__(
        self, store_factory: Callable[[], Store], *, clock: Callable[[], float] | None = None
    ) -> None:
        self._store_factory = store_factory
        self.store = store_factory()
        self._clock = clock or time.time
        self._cond = threading.Condition(threading.Lock())
        self._ids = IdGenerator()
        self._closed = False
        self._new_identity()
        _live.add(self)

    def _new_identity(self) -> None:
        self.producer_id = os.urandom(8).hex()
        self._nonce = os.urandom(12).hex()
        self._seq = 0
        self._open = _Ticket()
        self._writing = False
        self._file: Appender | None = None

    def _forked(self) -> None:
        """In a forked child: a fresh lock, id and storage connection (none is shared)."""
        if self._file is not None:
            self._file.close()  # the child's copy of the descriptor; the parent keeps its own
        self._cond = threading.Condition(threading.Lock())
        self._ids = IdGenerator()
        self._new_identity()
        if not self._closed:
            self.store = self._store_factory()

    @classmethod
    def open(
        cls,
        location: Location,
        path: str | None = None,
        *,
        storage_options: Mapping[str, object] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Producer:
        """Open a producer on the queue root at ``location`` (as for ``Queue.open``).

        Args:
            location: a local path, a URL (``s3://``, ``gs://``, ``az://``, ``memory://``,
                ``file://``) or an ``fsspec.AbstractFileSystem`` instance.
            path: the root inside a filesystem instance (or appended to ``location``).
            storage_options: passed to fsspec for URLs.
            clock: a zero-argument callable returning epoch seconds, used to turn
                ``delay=`` into a time and to make job ids (default ``time.time``).

        Returns:
            The open producer. The root need not hold a queue yet.

        Raises:
            ConfigError: a malformed location or option.

        Durability: nothing is written at open.
        """
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a zero-argument callable, got {clock!r}")
        options = dict(storage_options) if storage_options else None

        def factory() -> Store:
            return open_store(location, path, storage_options=options)

        return cls(factory, clock=clock)

    def __enter__(self) -> Producer:
        """The producer itself: ``with Producer.open(...) as p:`` closes it at the end."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the storage connection. Idempotent.

        A submission being written when ``close`` is called finishes first; later calls
        raise ``QueueClosed``.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._writing:
                self._cond.wait()
        if self._file is not None:
            try:
                self._file.append(END_BLOCK)
            except Exception as exc:  # the owner removes the file once quiet
                logger.warning("could not end the inbox file %s: %s", self._file.key, exc)
            self._drop_file()
        self.store.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # -- submitting ------------------------------------------------------------------------

    def enqueue(self, queue: str, payload: Buffer, **options: Unpack[EnqueueKwargs]) -> str:
        """Submit one job; the owner creates it when it takes the submission in.

        Args:
            queue: the queue's name (1-255 UTF-8 bytes).
            payload: the job's bytes (``bytes``, ``bytearray`` or ``memoryview``, copied).
            **options: the fields of :class:`~taquba.EnqueueOptions` (see
                :class:`~taquba.config.EnqueueKwargs`). ``delay=`` counts from now (this
                process's clock). A ``dedup_key`` is applied when the owner takes the job
                in: if a pending or scheduled job of the queue holds the key then, no job
                is created.

        Returns:
            The job's id (chosen here, so known before the owner takes the job in).

        Raises:
            InvalidArgument: a bad queue name, payload or option (nothing is written).
            QueueClosed: the producer is closed.
            StorageError: the submission could not be written (it may still have landed).

        Durability: returns once the submission is durable under the root (its inbox
        object fsynced, or acknowledged by the object store); no owner needs to be running.
        """
        self._ensure_open()
        if not options:
            return self._enqueue(queue, payload, _PLAIN)
        try:
            opts = EnqueueOptions(**options)
        except TypeError as exc:
            raise InvalidArgument(f"unknown enqueue option: {exc}") from None
        return self._enqueue(queue, payload, opts)

    def enqueue_with(self, queue: str, payload: Buffer, options: EnqueueOptions) -> str:
        """Submit one job with explicit :class:`~taquba.EnqueueOptions`; as :meth:`enqueue`.

        Args:
            queue: the queue's name.
            payload: the job's bytes.
            options: an :class:`~taquba.EnqueueOptions`.

        Returns:
            The job's id.

        Raises:
            InvalidArgument: ``options`` is not an ``EnqueueOptions``, or a bad queue name
                or payload (nothing is written).
            QueueClosed: the producer is closed.
            StorageError: the submission could not be written (it may still have landed).

        Durability: as for :meth:`enqueue`.
        """
        self._ensure_open()
        if not isinstance(options, EnqueueOptions):
            raise InvalidArgument(
                f"options must be an EnqueueOptions, got {type(options).__name__}"
            )
        return self._enqueue(queue, payload, options)

    def enqueue_batch(self, queue: str, payloads: Iterable[Buffer]) -> list[str]:
        """Submit many jobs that the owner creates all together or not at all.

        Args:
            queue: the queue's name.
            payloads: an iterable of payloads, each as for :meth:`enqueue`.

        Returns:
            Their ids, in input order (empty for no payloads).

        Raises:
            InvalidArgument: a bad queue name or payload, or too many (nothing is written).
            QueueClosed: the producer is closed.
            StorageError: the submission could not be written (it may still have landed).

        Durability: as for :meth:`enqueue`; the jobs are one submission.
        """
        self._ensure_open()
        items = batch_items(payloads)
        check_queue_name(queue)
        data = tuple(payload_bytes(p, f"payloads[{i}]") for i, p in enumerate(items))
        if not data:
            return []
        with self._cond:
            job_ids = tuple(self._ids.new_many(self._now(), len(data)))
        self._submit(SubmitEnqueue(queue=queue, job_ids=job_ids, payloads=data))
        return list(job_ids)

    def cancel(self, job_id: str) -> None:
        """Submit ``Queue.cancel(job_id)``.

        When the owner takes this in, it removes the job if it is pending or scheduled, or
        asks its running handler to stop; an unknown, done or dead job is left alone. The
        outcome is not reported back.

        Args:
            job_id: the job's id.

        Raises:
            InvalidArgument: a malformed id.
            QueueClosed: the producer is closed.
            StorageError: the submission could not be written (it may still have landed).

        Durability: as for :meth:`enqueue`.
        """
        self._ensure_open()
        check_job_id(job_id)
        self._submit(SubmitCancel(job_id))

    def requeue_dead_job(self, job_id: str) -> None:
        """Submit ``Queue.requeue_dead_job(job_id)``.

        If the job is dead when the owner takes this in, it goes back to pending with its
        attempts reset; otherwise nothing happens (not reported back).

        Args:
            job_id: the job's id.

        Raises:
            InvalidArgument: a malformed id.
            QueueClosed: the producer is closed.
            StorageError: the submission could not be written (it may still have landed).

        Durability: as for :meth:`enqueue`.
        """
        self._ensure_open()
        check_job_id(job_id)
        self._submit(SubmitRequeueDead(job_id))

    # -- internals -------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise QueueClosed("the producer is closed")

    def _now(self) -> float:
        value = self._clock()
        try:
            now = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"the producer's clock returned {value!r}, not a time") from None
        if now - now != 0.0:
            raise ConfigError(f"the producer's clock returned {now!r}, not a finite time")
        return now

    def _enqueue(self, queue: str, payload: object, opts: EnqueueOptions) -> str:
        check_queue_name(queue)
        data = payload_bytes(payload, "payload")
        if opts.dedup_key is not None:
            try:
                opts.dedup_key.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(
                    f"EnqueueOptions.dedup_key is not valid UTF-8: {opts.dedup_key[:40]!r}"
                ) from None
        with self._cond:
            now = self._now()
            job_id = opts.job_id if opts.job_id is not None else self._ids.new(now)
        run_at: float | None = None
        if opts.run_at is not None:
            run_at = float(opts.run_at)  # type: ignore[arg-type]
        elif opts.delay is not None:
            run_at = now + float(opts.delay)  # type: ignore[arg-type]
        self._submit(
            SubmitEnqueue(
                queue=queue,
                job_ids=(job_id,),
                payloads=(data,),
                priority=opts.priority,
                run_at=run_at,
                dedup_key=opts.dedup_key,
                max_attempts=opts.max_attempts,
                headers=dict(opts.headers) if opts.headers else None,
                chosen_id=opts.job_id is not None,
            )
        )
        return job_id

    def _submit(self, sub: Submission) -> None:
        """Add ``sub`` to the object being gathered and return once that object is durable."""
        frames = submission_frames(sub)
        cond = self._cond
        with cond:
            self._ensure_open()
            ticket = self._open
            ticket.frames += frames
            while not ticket.done:
                if self._writing:
                    cond.wait()
                    continue
                # Nobody is writing: write everything gathered so far, ours included.
                batch, self._open = self._open, _Ticket()
                seq = self._seq
                self._seq += 1
                self._writing = True
                cond.release()
                error: BaseException | None = None
                try:
                    self._write(seq, batch.frames)
                except BaseException as exc:
                    error = exc
                finally:
                    cond.acquire()
                    self._writing = False
                    batch.error = error
                    batch.done = True
                    cond.notify_all()
            if ticket.error is not None:
                raise ticket.error

    def _write(self, seq: int, frames: list[bytes]) -> None:
        if self.store.appendable:
            self._append(seq, frames)
            return
        data = encode_object(self.producer_id, seq, self._nonce, frames)
        self._create(f"{INBOX_DIR}/{object_name(self.producer_id, seq)}", data)

    def _append(self, seq: int, frames: list[bytes]) -> None:
        """Append ``frames`` as block ``seq`` of this producer's inbox file, or start a new
        file with it (see the module docstring)."""
        block = encode_submission_block(frames)
        file = self._file
        if (
            file is not None
            and file.size + len(block) <= FILE_BYTES
            and len(block) <= MAX_APPENDED_BLOCK
        ):
            try:
                file.append(block)
                return
            except ObjectNotFound:
                self._drop_file()  # removed by the owner: nothing written, start a new file
            except BaseException:
                self._drop_file()  # part of the block may be there: append no more after it
                raise
        elif file is not None:
            self._drop_file()
        key = f"{INBOX_DIR}/{file_name(self.producer_id, seq)}"
        data = encode_file_head(self.producer_id, seq, self._nonce, block)
        self._file = self._create(key, data, appendable=True)

    def _create(self, key: str, data: bytes, appendable: bool = False) -> Appender | None:
        try:
            if appendable:
                return self.store.create_appendable(key, data, reserve=FILE_BYTES)
            self.store.put_if_absent(key, data)
            return None
        except ObjectExists:
            raise StorageError(
                f"{self.store.description}/{key}: an inbox object of this "
                "producer id already exists (two producers drew one id)"
            ) from None

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __repr__(self) -> str:
        return (
            f"Producer({self.store.description!r}, id={self.producer_id}"
            f"{', closed' if self._closed else ''})"
        )
