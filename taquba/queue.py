"""The public ``Queue``: validation, the lock, and waiting for durability.

Rules this module keeps:

- One ``threading.Lock`` guards the state; Conditions on it wake claimers (one per named
  queue) and completion waiters. No user code and no storage I/O run under the lock.
- Every argument is validated before anything changes: a bad call raises an
  ``InvalidArgument`` (or ``ClaimLost`` / ``JobNotFound``) and leaves the state untouched.
- One mutation path, :meth:`Queue._commit`: a state change is one event (core/events.py),
  encoded, applied to the state and handed to the committer in one lock hold, so the log
  order is the apply order and replay rebuilds the same state.
- ``enqueue*``, ``ack``, ``nack``, ``dead_letter`` (with their settlement effects),
  ``cancel``, ``requeue_dead_job``, ``kv_put``, ``kv_delete``, ``add_schedule`` and
  ``remove_schedule`` return only once their event is durable. ``claim``, ``renew_lease``
  and the background ticks do not wait: losing one only causes a redelivery or a repeated
  tick.
- A read reports only durable state: ``get_job``, ``stats``, ``list_queues``,
  ``dead_jobs``, ``kv_get``, ``list_schedules``, ``wait_for_completion`` (and ``cancel``'s
  ``NOT_FOUND``) wait until every event applied before them is durable, except claims and
  lease renewals, whose loss only causes a redelivery. If that write fails they raise its error, as the writer's caller does.
- A handle serves only the process that opened it. In a child forked from that process every
  call raises ``QueueBroken`` before taking any lock (another thread of the parent may have
  held one at the fork), and nothing of the child writes, flushes or deletes the parent's
  objects; ``close`` in the child only marks the handle closed.
- Once the handle knows it has been fenced (a write lost to a newer writer, or
  ``check_fence_now`` saw a newer manifest), every call raises ``FencedError``, reads included.

This module holds the public methods that open and close a queue, enqueue, claim and settle;
those that look at jobs, operate on them, manage cron schedules and run the background ticks
are in operations.py (a base class). The lock, the mutation path and the refusals are in
handle.py (the base of both), and the work is done by concern in producing.py (enqueues),
consuming.py (claims and settling them), inspecting.py (looking at jobs, operating on them,
the background ticks), scheduling.py (cron schedules) and intake.py (taking in what
producers submitted).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from . import arguments, consuming, intake, producing
from .background import Background
from .config import (
    MAX_PAYLOAD_SIZE,
    Buffer,
    Duration,
    EnqueueKwargs,
    EnqueueOptions,
    OpenOptions,
    check_queue_name,
    to_seconds,
)
from .core import events as ev
from .core.state import State
from .effects import SettlementEffects
from .effects import check as effects_check
from .errors import ConfigError, InvalidArgument
from .handle import register, unregister
from .log import Log
from .operations import Operations
from .records import Claim, EnqueueResult
from .storage import Location, Store, open_store

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("taquba.queue")

MAX_CLAIM_BATCH = consuming.MAX_CLAIM_BATCH
_PLAIN = EnqueueOptions()


class Queue(Operations):
    """A durable task queue on one fsspec root. Open it with :meth:`Queue.open`.

    One handle per root and process; it is thread-safe. Besides the errors each method
    lists, every method raises ``QueueClosed`` after :meth:`close`, ``FencedError`` once
    another process has opened the root (and taken the queue over), and ``QueueBroken``
    after a storage failure broke the handle (reopen to recover) or in a process forked
    from the one that opened it.

    Durations are seconds (``int`` or ``float``) or a ``timedelta``. A method that changes
    the queue either returns once its change is durable ("Durability" in each docstring)
    or says that it does not wait; a read reports only durable state.
    """

    def __init__(self, store: Store, options: OpenOptions, *, _log: Log, _state: State) -> None:
        super().__init__(store, options, _log, _state)
        self._intake = intake.OwnerIntake(
            self,
            float(options.inbox_busy_interval),  # type: ignore[arg-type]
            None if options.inbox_interval is None else float(options.inbox_interval),  # type: ignore[arg-type]
        )
        self._background = Background(
            reap=self.reap_now,
            reaper_interval=float(options.reaper_interval),  # type: ignore[arg-type]
            promote=self.promote_scheduled_now,
            scheduler_interval=float(options.scheduler_interval),  # type: ignore[arg-type]
            check_fence=self.check_fence_now,
            fence_check_interval=None
            if options.fence_check_interval is None
            else float(options.fence_check_interval),  # type: ignore[arg-type]
            intake=self._intake.tick if self._intake.enabled else None,
            intake_interval=self._intake.pace.busy,
        )
        register(self)

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: Location,
        path: str | None = None,
        options: OpenOptions | None = None,
        *,
        storage_options: Mapping[str, object] | None = None,
    ) -> Queue:
        """Open (or create) the queue at ``location`` and take over as its single writer.

        Args:
            location: a local path (``str`` or ``os.PathLike``), an fsspec URL
                (``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://x``, ``file://``)
                or an ``fsspec.AbstractFileSystem`` instance.
            path: the root inside ``location`` when it is a filesystem instance (or
                appended to ``location`` otherwise).
            options: :class:`OpenOptions` (the defaults if None).
            storage_options: passed to fsspec when ``location`` is a URL.

        Returns:
            The open handle. Opening replays the newest checkpoint and the segments after
            it, fences off any previous writer (its next write fails with
            ``FencedError``), puts back the jobs a previous process held, and starts the
            reaper and scheduler threads unless ``options.background_threads`` is False.

        Raises:
            ConfigError: ``options`` is not an ``OpenOptions``, or ``location``, ``path``
                or ``storage_options`` is malformed (or names a backend whose library is
                not installed).
            StorageError: the store could not be read or written (after retries).
            CorruptionError: a stored object fails its checksum or cannot be decoded.
            FencedError: other processes kept opening the root meanwhile.

        Durability: the fence that takes the queue over is durable before this returns;
        the jobs put back are written soon after (a crash before that puts them back again
        at the next open).
        """
        if options is None:
            options = OpenOptions()
        elif not isinstance(options, OpenOptions):
            raise ConfigError(f"options must be an OpenOptions, got {type(options).__name__}")
        store = open_store(
            location,
            path,
            storage_options=storage_options,
            retries=options.storage_retries,
            retry_delay=float(options.storage_retry_delay),  # type: ignore[arg-type]
            retry_budget=float(options.storage_retry_budget),  # type: ignore[arg-type]
        )
        holder = [State()]

        def on_snapshot(data: bytes) -> None:
            holder[0] = State.restore(data)

        def on_record(data: bytes) -> None:
            holder[0].apply_record(data)

        # Replay makes objects per live job and no reference cycles: the cyclic collector,
        # which would walk the growing state again and again, is paused meanwhile; then the
        # new objects go to the oldest generation in one step (freeze + unfreeze), unless
        # the application froze objects itself (unfreezing would hand those back).
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            log = Log.open(
                store,
                on_snapshot=on_snapshot,
                on_record=on_record,
                checkpoint_min_bytes=options.checkpoint_min_bytes,
                checkpoint_ratio=options.checkpoint_ratio,
                checkpoint_max_segments=options.checkpoint_max_segments,
                segment_max_bytes=options.segment_max_bytes,
                background_cleanup=True,
            )
        finally:
            if paused:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
        holder[0].reset_tallies()  # the metrics count what happens from now on
        q = cls(store, options, _log=log, _state=holder[0])
        consuming.release_previous_claims(q)
        if options.background_threads:
            q._background.start()
        return q

    def __enter__(self) -> Queue:
        """The handle itself: ``with Queue.open(...) as q:`` closes it at the end."""
        return self

    def __exit__(self, *exc: object) -> None:
        """:meth:`close` (with no timeout), whether or not the block raised."""
        self.close()

    def close(self, timeout: Duration | None = None) -> None:
        """Stop the background threads, write what is pending, close the log. Idempotent.

        Args:
            timeout: how long to wait for each thread to stop (seconds or a ``timedelta``;
                None: as long as it takes).

        Raises:
            InvalidArgument: a bad ``timeout``.

        Waiting claims and completion waits wake up and raise ``QueueClosed``; so does every
        later call. In a process forked from the one that opened the handle, ``close``
        writes nothing and takes no lock: it only marks this copy of the handle closed.

        Durability: every record submitted before ``close`` is written before it returns
        (unless the committer fails to stop within ``timeout``, which is logged). When the
        log since the last checkpoint outweighs the live state, a checkpoint is written
        too, so the next open reads the live jobs instead of their history (a failure there
        is logged and loses nothing).
        """
        if timeout is not None:
            timeout = min(to_seconds(timeout, "timeout"), threading.TIMEOUT_MAX)
        if self._forked:
            self._closed = self._refuse = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = self._refuse = True
            self._wake_all_locked()
        unregister(self)
        self._background.stop(timeout)
        if not self.committer.close(timeout):
            logger.warning("taquba committer did not stop within %s s", timeout)
        self.store.close()

    # -- producing -------------------------------------------------------------------------

    def enqueue(self, queue: str, payload: Buffer, **options: Unpack[EnqueueKwargs]) -> str:
        """Enqueue one job and return its id once the job is durable.

        Args:
            queue: the queue's name (1-255 UTF-8 bytes).
            payload: the job's bytes (``bytes``, ``bytearray`` or ``memoryview``, copied),
                stored as is, at most ``MAX_PAYLOAD_SIZE`` (64 MiB).
            **options: the fields of :class:`EnqueueOptions` (``priority``, ``run_at``,
                ``delay``, ``dedup_key``, ``max_attempts``, ``headers``, ``job_id``); see
                :class:`~taquba.config.EnqueueKwargs`.

        Returns:
            The job's id; on a dedup hit, the id of the pending or scheduled job that holds
            the key (nothing new is written).

        Raises:
            InvalidArgument: a bad queue name, payload or option, or an unknown option
                (nothing is written).
            StorageError: the record could not be written; the handle is broken.

        Durability: returns only after the record is in a durable segment.
        """
        self._ensure_open()
        if not options:
            return producing.enqueue_one(self, queue, payload, _PLAIN, [])[0]
        try:
            opts = EnqueueOptions(**options)
        except TypeError as exc:
            raise InvalidArgument(f"unknown enqueue option: {exc}") from None
        return producing.enqueue_one(self, queue, payload, opts, [])[0]

    def enqueue_with(self, queue: str, payload: Buffer, options: EnqueueOptions) -> str:
        """Enqueue one job with explicit :class:`EnqueueOptions`; otherwise as :meth:`enqueue`.

        Args:
            queue: the queue's name.
            payload: the job's bytes, as for :meth:`enqueue`.
            options: an :class:`EnqueueOptions`.

        Returns:
            The job's id (on a dedup hit, the id of the job that holds the key).

        Raises:
            InvalidArgument: ``options`` is not an ``EnqueueOptions``, or a bad queue name
                or payload (nothing is written).
            StorageError: the record could not be written; the handle is broken.

        Durability: returns only after the record is in a durable segment.
        """
        self._ensure_open()
        if not isinstance(options, EnqueueOptions):
            raise InvalidArgument(
                f"options must be an EnqueueOptions, got {type(options).__name__}"
            )
        return producing.enqueue_one(self, queue, payload, options, [])[0]

    def enqueue_batch(self, queue: str, payloads: Iterable[Buffer]) -> list[str]:
        """Enqueue many jobs atomically (all or nothing), with the queue's defaults.

        Args:
            queue: the queue's name.
            payloads: an iterable of payloads (at most ``MAX_BATCH_JOBS``), each as for
                :meth:`enqueue`.

        Returns:
            The new ids, in input order (empty for no payloads); the jobs are claimed in
            that order.

        Raises:
            InvalidArgument: a bad queue name or payload, or too many (nothing is written).
            StorageError: the record could not be written; the handle is broken.

        Durability: all the jobs are in one record; returns once it is durable.
        """
        self._ensure_open()
        items = arguments.batch_items(payloads)
        n = len(items)
        check_queue_name(queue)
        if not n:
            with self._lock:
                self._check_open_locked()
            return []
        # The common case (all bytes, none too large) is checked at C speed.
        data: list[bytes] = items  # type: ignore[assignment]
        if set(map(type, items)) != {bytes} or max(map(len, data)) > MAX_PAYLOAD_SIZE:
            data = [
                arguments.payload_bytes(p, "payload" if n == 1 else f"payloads[{i}]")
                for i, p in enumerate(items)
            ]
        return producing.enqueue_batch(self, queue, data)

    def enqueue_with_kv(
        self,
        queue: str,
        payload: Buffer,
        kv_writes: Mapping[bytes, Buffer],
        options: EnqueueOptions | None = None,
    ) -> EnqueueResult:
        """Enqueue one job and write ``kv_writes`` to the KV namespace in the same record.

        Args:
            queue: the queue's name.
            payload: the job's bytes, as for :meth:`enqueue`.
            kv_writes: keys (non-empty, at most ``MAX_KV_KEY_SIZE`` bytes) to values (at
                most ``MAX_KV_VALUE_SIZE`` bytes), written together with the job.
            options: :class:`EnqueueOptions` (None: the queue's defaults).

        Returns:
            ``EnqueueResult(id, is_new)``. On a dedup hit nothing is written (not the KV
            writes either) and ``is_new`` is False.

        Raises:
            InvalidArgument: a bad argument (nothing is written).
            KvValueTooLarge: a value over ``MAX_KV_VALUE_SIZE`` (an ``InvalidArgument``).
            StorageError: the record could not be written; the handle is broken.

        Durability: the job and the writes are one record; returns once it is durable.
        """
        self._ensure_open()
        if options is None:
            options = _PLAIN
        elif not isinstance(options, EnqueueOptions):
            raise InvalidArgument(
                f"options must be an EnqueueOptions, got {type(options).__name__}"
            )
        kv = arguments.kv_writes(kv_writes)
        return EnqueueResult(*producing.enqueue_one(self, queue, payload, options, kv))

    # -- KV --------------------------------------------------------------------------------

    def kv_get(self, key: Buffer) -> bytes | None:
        """The value stored under ``key`` in the KV namespace.

        Args:
            key: the key (non-empty, at most ``MAX_KV_KEY_SIZE`` bytes).

        Returns:
            The value, or None if the key holds none.

        Raises:
            InvalidArgument: an empty or oversized key.
            StorageError: a write this read waited for failed.

        Durability: a value written by a call that has returned is always seen, and only
        durable values are reported (the read waits for the writes before it).
        """
        self._ensure_open()
        data = arguments.kv_key(key)
        with self._lock:
            self._check_open_locked()
            value = self._state.kv.get(data)
            self._wait_reported_locked()
            return value

    def kv_put(self, key: Buffer, value: Buffer) -> None:
        """Store ``value`` under ``key`` in the KV namespace (replacing any value).

        Raises ``InvalidArgument`` for an empty or oversized key, ``KvValueTooLarge`` for a
        value over ``MAX_KV_VALUE_SIZE`` (nothing is written), ``StorageError`` if the
        record could not be written. Durability: returns once the write is durable.
        """
        self._ensure_open()
        pairs = arguments.kv_writes({arguments.kv_key(key): value})
        with self._lock:
            self._check_open_locked()
            self._wait_locked(self._commit(ev.KvWritten(pairs)))

    def kv_delete(self, key: Buffer) -> None:
        """Delete ``key`` from the KV namespace. A missing key is not an error.

        Args:
            key: the key (non-empty, at most ``MAX_KV_KEY_SIZE`` bytes).

        Raises:
            InvalidArgument: an empty or oversized key.
            StorageError: the record could not be written; the handle is broken.

        Durability: returns once the deletion is durable (for a missing key: once
        everything submitted before is durable).
        """
        self._ensure_open()
        data = arguments.kv_key(key)
        with self._lock:
            self._check_open_locked()
            if data not in self._state.kv:
                self._wait_locked(self.committer.latest_locked())
                return
            self._wait_locked(self._commit(ev.KvDeleted([data])))

    # -- consuming (consuming.py) ------------------------------------------------------------

    def claim(
        self, queue: str, lease: Duration | None = None, *, wait: Duration = 0.0
    ) -> Claim | None:
        """Claim the first pending job of ``queue`` (by priority, then enqueue order).

        Due scheduled jobs of the queue are made pending first.

        Args:
            queue: the queue's name.
            lease: how long the claim holds the job before the reaper puts it back
                (seconds or a ``timedelta``, > 0; None: the queue's ``QueueConfig.lease``).
            wait: how long to wait for a job when none is pending (0: do not wait;
                ``math.inf``: until one comes or the queue closes).

        Returns:
            A :class:`Claim` to settle with :meth:`ack`, :meth:`nack`,
            :meth:`dead_letter` or :meth:`release`, or None if no job came within ``wait``.

        Raises:
            InvalidArgument: a bad queue name, lease or wait.
            QueueClosed: the queue was closed, also while waiting.

        Durability: the claim's record is written soon but not waited for; if it is lost
        the job is delivered again (at-least-once).
        """
        self._ensure_open()
        claims = consuming.claim(self, queue, 1, lease, wait)
        return claims[0] if claims else None

    def claim_batch(
        self, queue: str, max_jobs: int, lease: Duration | None = None, *, wait: Duration = 0.0
    ) -> list[Claim]:
        """Claim up to ``max_jobs`` pending jobs, waiting up to ``wait`` for the first.

        Args:
            queue: the queue's name.
            max_jobs: an int in 1..``MAX_CLAIM_BATCH``.
            lease: as for :meth:`claim`, for every claim of the batch.
            wait: as for :meth:`claim`; once one job is pending, the pending jobs up to
                ``max_jobs`` are claimed without waiting for more.

        Returns:
            The claims in claim order (priority, then enqueue order); empty if none came.

        Raises:
            InvalidArgument: a bad queue name, ``max_jobs``, lease or wait.
            QueueClosed: the queue was closed, also while waiting.

        Durability: as for :meth:`claim`: not waited for; a lost claim redelivers its job.
        """
        self._ensure_open()
        if (
            not isinstance(max_jobs, int)
            or isinstance(max_jobs, bool)
            or not 1 <= max_jobs <= MAX_CLAIM_BATCH
        ):
            raise InvalidArgument(
                f"max_jobs must be an int in 1..{MAX_CLAIM_BATCH}, got {max_jobs!r}"
            )
        return consuming.claim(self, queue, max_jobs, lease, wait)

    def ack(self, claim: Claim, effects: SettlementEffects | None = None) -> None:
        """Mark the claimed job done (kept as done if the queue has ``keep_done``).

        Args:
            claim: the current claim.
            effects: :class:`SettlementEffects` (follow-up jobs, KV writes and deletes)
                committed in the same record as the ack: all of them or none.

        Raises:
            InvalidArgument: ``claim`` is not a ``Claim``, ``effects`` is not a
                ``SettlementEffects``, or an effect is invalid (a follow-up ``job_id``
                already in use); nothing changes and the claim stays current.
            ClaimLost: the claim is no longer current (nothing changes, no effect applies).
            StorageError: the record could not be written; the handle is broken.

        Durability: returns once the ack (and its effects) is durable; the job is never
        delivered again.
        """
        self._ensure_open()
        consuming.ack(self, claim, effects_check(effects))

    def nack(self, claim: Claim, error: object, effects: SettlementEffects | None = None) -> None:
        """Report a failed attempt: retried after the queue's backoff, or dead once the
        job's attempts are spent (or a cancel was requested).

        Args:
            claim: the current claim.
            error: a str or an exception, stored as the job's ``last_error``.
            effects: :class:`SettlementEffects` applied, in the same record, only if this
                failure makes the job dead; checked either way.

        Raises ``InvalidArgument``, ``ClaimLost`` or ``StorageError`` as :meth:`ack` does.
        Durability: returns once the failure is durable.
        """
        self._ensure_open()
        checked = effects_check(effects)
        consuming.nack(self, claim, arguments.error_text(error), checked)

    def dead_letter(
        self, claim: Claim, reason: str, effects: SettlementEffects | None = None
    ) -> None:
        """Move the claimed job straight to the dead set with ``reason`` as its last error.

        ``effects`` (:class:`SettlementEffects`) commit in the same record. Raises
        ``InvalidArgument`` (also for a non-str reason), ``ClaimLost`` or ``StorageError``
        as :meth:`ack` does. Durability: returns once it is durable.
        """
        self._ensure_open()
        if not isinstance(reason, str):
            raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")
        checked = effects_check(effects)
        consuming.dead_letter(self, claim, arguments.error_text(reason), checked)

    def renew_lease(self, claim: Claim, extension: Duration) -> None:
        """Extend the claim's lease to now + ``extension``.

        Args:
            claim: the current claim; its ``lease_expires_at`` is updated.
            extension: seconds or a ``timedelta``, > 0.

        Raises:
            InvalidArgument: ``claim`` is not a ``Claim``, or a bad extension.
            ClaimLost: the claim is no longer current (nothing changes).

        Durability: not waited for: a lost renewal can only let the lease expire early,
        which redelivers the job.
        """
        self._ensure_open()
        consuming.renew_lease(self, claim, extension)

    def release(self, claim: Claim, reason: str = "released") -> None:
        """Give the claimed job back: pending again at once, with ``reason`` as its last error.

        Unlike ``nack`` there is no backoff and the job never goes dead for it: the attempt
        stays counted in ``attempts`` (as a crash's would), so a released job may later run
        more than ``max_attempts`` times in all. A job whose cancellation was requested goes
        to the dead set instead, as any ending attempt of it would. The worker loops release
        the job whose handler raised ``KeyboardInterrupt``, ``SystemExit`` or another
        ``BaseException`` that is not an ``Exception``.

        Args:
            claim: the current claim.
            reason: a str stored as the job's ``last_error``.

        Raises:
            InvalidArgument: ``claim`` is not a ``Claim``, or ``reason`` not a str.
            ClaimLost: the claim is no longer current (nothing changes).
            StorageError: the record could not be written; the handle is broken.

        Durability: returns once the release is durable.
        """
        self._ensure_open()
        if not isinstance(reason, str):
            raise InvalidArgument(f"reason must be a str, got {type(reason).__name__}")
        consuming.release(self, claim, arguments.error_text(reason))

    def __repr__(self) -> str:
        return f"Queue({self.store.description!r}{', closed' if self._closed else ''})"
