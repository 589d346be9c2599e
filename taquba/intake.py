"""The owner's side of the inbox: finding submissions and collecting what was applied.

``Queue.intake_now`` drives one round: :meth:`InboxPoller.poll` lists ``inbox/`` once and
reads what lies above each producer's high-water mark: the objects (in parallel on object
stores) and the new blocks of the inbox files (stores that append; see ``taquba.inbox``).
The queue applies each object or block as one event under its lock and waits until those
are durable, and only then :meth:`InboxPoller.collect` deletes the objects, and the files
whose producer has moved on (an end block, or a later file) once all their blocks are at
or below the mark (see ``taquba.inbox`` for why this is exactly once).

Inbox files are read from where the last read stopped (remembered per file, and trusted
only while the producer's mark has caught up with it; otherwise the file is read again
from its start, skipping blocks at or below the mark). A file whose blocks run out reads
as zeros or as an incomplete block; the incomplete block is read again next round, and
judged by the torn-tail rule only once the file is settled. The file of a producer that
has had nothing taken in for ``QUIET_FILE_SECONDS`` (or the retention period, if that is
shorter) is removed under the append lock (an append after that writes nothing and starts
a new file), so files left by producers that died without closing do not pile up; its
mark is dropped after the retention period like that of a producer of objects.

:class:`IntakePace` decides how long to wait between rounds: on stores where a listing
costs nothing (local disk, memory) a short fixed interval, so submissions are taken in
almost at once; on object stores a fast interval while submissions flow, doubling on
every empty round up to a ceiling, so an idle queue costs at most ``3600 / ceiling``
listings an hour. In the background rounds, a file with nothing new for a second is
read every ``QUIET_FILE_INTERVAL`` only, and all such files together at most
``QUIET_READS_PER_SECOND`` times a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .batch import Batch
from .config import check_queue_name
from .core import events as ev
from .errors import CorruptionError, InvalidArgument, StorageError
from .inbox import (
    INBOX_DIR,
    FileScan,
    Submission,
    SubmitCancel,
    SubmitEnqueue,
    decode_file_head,
    decode_object,
    parse_file_name,
    parse_name,
    scan_file,
)
from .log.format import block_at
from .records import JobStatus, WaitOutcome, WaitStatus
from .storage import ObjectNotFound, Store

if TYPE_CHECKING:
    from .queue import Queue

logger = logging.getLogger("taquba.intake")

MAX_OBJECTS_PER_ROUND = 1000
LOCAL_INTERVAL = 0.005
READ_BYTES = 16 << 10  # the first read of an inbox file's new bytes
MORE_BYTES = 1 << 20  # each later read in the same round
QUIET_AFTER = 1.0  # seconds without a new block before a file is read less often
QUIET_FILE_INTERVAL = 0.02
QUIET_READS_PER_SECOND = 200.0
QUIET_FILE_SECONDS = 60.0  # nothing taken in from a file for this long: remove it


@dataclass(frozen=True, slots=True)
class InboxObject:
    """One inbox object, or one block of an inbox file (``key`` None), read by a poll."""

    key: str | None
    producer: str
    seq: int
    submissions: list[Submission]


@dataclass(slots=True)
class Poll:
    """What one listing found."""

    fresh: list[InboxObject]  # to apply, in producer then seq order
    leftovers: list[str]  # keys at or below their producer's mark: delete only
    producers: set[str]  # every producer with an object or file listed
    more: bool  # more objects waited than one round takes
    idle_files: list[tuple[str, str, int]] = field(default_factory=list)
    # (producer, key, end of its blocks) of each current file with nothing new


@dataclass(slots=True)
class _Tail:
    """Where the owner stopped reading one inbox file: block ``seq`` starts at ``offset``."""

    seq: int
    offset: int
    changed: float  # monotonic time of the last read that found a new block
    read: float  # monotonic time of the last read


class InboxPoller:
    """Reads the inbox of one store for its owner."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.parallel = store.remote
        self._tails: dict[str, _Tail] = {}
        self._quiet_interval = QUIET_FILE_INTERVAL

    def poll(self, marks: Mapping[str, int], paced: bool = False) -> Poll:
        """List the inbox and read the objects and blocks above ``marks`` (producer -> last
        seq). ``paced``: a background round, which reads quiet files less often."""
        names = self.store.list_dir(INBOX_DIR)
        wanted: list[tuple[str, int, str]] = []
        leftovers: list[str] = []
        producers: set[str] = set()
        files: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
                in_file = parse_file_name(name)
                if in_file is not None:
                    files.setdefault(in_file[0], []).append((in_file[1], f"{INBOX_DIR}/{name}"))
                    producers.add(in_file[0])
                continue  # a temporary file or something foreign: not ours to touch
            producer, seq = parsed
            producers.add(producer)
            key = f"{INBOX_DIR}/{name}"
            if seq <= marks.get(producer, -1):
                leftovers.append(key)
            else:
                wanted.append((producer, seq, key))
        wanted.sort()
        more = len(wanted) > MAX_OBJECTS_PER_ROUND
        wanted = wanted[:MAX_OBJECTS_PER_ROUND]
        keys = [key for _, _, key in wanted]
        if self.parallel and len(keys) > 1:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="taquba-intake") as pool:
                blobs = list(pool.map(self._get, keys))
        else:
            blobs = [self._get(key) for key in keys]
        fresh: list[InboxObject] = []
        for (producer, seq, key), data in zip(wanted, blobs):
            if data is None:
                continue  # deleted meanwhile: an earlier owner took it in
            name = f"{self.store.description}/{key}"
            got_producer, got_seq, subs = decode_object(name, data)
            if (got_producer, got_seq) != (producer, seq):
                raise CorruptionError(f"{name}: holds producer {got_producer} seq {got_seq}")
            fresh.append(InboxObject(key, producer, seq, subs))
        poll = Poll(fresh, leftovers, producers, more)
        listed = {key for keyed in files.values() for _, key in keyed}
        for key in [k for k in self._tails if k not in listed]:
            del self._tails[key]
        for producer in sorted(files):
            self._read_files(
                producer, sorted(files[producer]), marks.get(producer, -1), paced, poll
            )
        self._quiet_interval = max(
            QUIET_FILE_INTERVAL, len(poll.idle_files) / QUIET_READS_PER_SECOND
        )
        return poll

    def _read_files(
        self, producer: str, files: list[tuple[int, str]], mark: int, paced: bool, poll: Poll
    ) -> None:
        """Read one producer's files in ``start`` order into ``poll``."""
        now = time.monotonic()
        for i, (start, key) in enumerate(files):
            finished = i + 1 < len(files)  # its producer went on to a later file
            tail = self._tails.get(key)
            if tail is not None and tail.seq > mark + 1:
                tail = None  # read but not applied (a failed round): read it all again
            if (
                paced
                and tail is not None
                and not finished
                and now - tail.changed > QUIET_AFTER
                and now - tail.read < self._quiet_interval
            ):
                poll.idle_files.append((producer, key, tail.offset))
                return
            room = MAX_OBJECTS_PER_ROUND - len(poll.fresh)
            if room <= 0:
                poll.more = True
                return
            try:
                scan = self._scan(key, producer, start, tail, finished, room, mark)
            except ObjectNotFound:
                self._tails.pop(key, None)
                return  # deleted meanwhile
            got = [InboxObject(None, producer, seq, subs) for seq, subs in scan.blocks]
            poll.fresh += got
            changed = now if tail is None or scan.end != tail.offset else tail.changed
            self._tails[key] = _Tail(scan.seq, scan.end, changed, now)
            settled = finished or scan.ended
            if scan.need is not None or len(got) >= room:
                poll.more = True
                return  # the rest of this file (and the later ones) next round
            if settled:
                poll.leftovers.append(key)  # deleted once the blocks read here are durable
                del self._tails[key]
                continue
            if not got:
                poll.idle_files.append((producer, key, scan.end))

    def _scan(
        self,
        key: str,
        producer: str,
        start: int,
        tail: _Tail | None,
        finished: bool,
        limit: int,
        mark: int,
    ) -> FileScan:
        """The blocks above ``mark`` from ``tail`` (or the start) on, up to ``limit``."""
        name = f"{self.store.description}/{key}"
        offset, seq = (0, start) if tail is None else (tail.offset, tail.seq)
        size = READ_BYTES
        blocks: list[tuple[int, list[Submission]]] = []
        while True:
            data = self.store.get_range(key, offset, offset + size)
            pos = 0
            if offset == 0:
                got_producer, got_start, pos = decode_file_head(name, data)
                if (got_producer, got_start) != (producer, start):
                    raise CorruptionError(
                        f"{name}: holds producer {got_producer} start {got_start}"
                    )
            scan = scan_file(
                name,
                data,
                pos,
                offset,
                seq,
                at_eof=len(data) < size,
                finished=finished,
                limit=limit - len(blocks),
                after=mark,
            )
            blocks += scan.blocks
            if scan.ended or scan.need is None or len(blocks) >= limit:
                scan.blocks = blocks
                return scan
            # More bytes to read: whole blocks past this read, or one it cut short.
            offset, seq = scan.end, scan.seq
            size = max(scan.need - offset, MORE_BYTES)

    def retire(self, key: str, offset: int) -> bool:
        """Remove the inbox file ``key`` of a quiet producer unless a whole block follows
        ``offset``; return whether it was removed."""
        name = f"{self.store.description}/{key}"

        def unused(tail: bytes) -> bool:
            if block_at(name, memoryview(tail), 0, offset) is not None:
                return False  # it submitted again: take that in first
            if tail.strip(b"\0"):
                logger.warning(
                    "%s: removing a quiet producer's file that ends in an "
                    "incomplete block at byte %d (never acknowledged)",
                    name,
                    offset,
                )
            return True

        try:
            removed = self.store.remove_appendable(key, offset, unused)
        except ObjectNotFound:
            removed = True
        if removed:
            self._tails.pop(key, None)
        return removed

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except ObjectNotFound:
            return None

    def collect(self, keys: list[str]) -> None:
        """Delete inbox objects that are applied (their events durable) or leftovers."""
        if not keys:
            return
        try:
            self.store.delete(keys)
        except StorageError as exc:
            # Harmless: they are at or below their marks, so the next round deletes them.
            logger.warning("could not delete %d applied inbox object(s): %s", len(keys), exc)


class IntakePace:
    """The wait before the next intake round (see the module docstring)."""

    def __init__(self, store: Store, busy: float, idle: float) -> None:
        self.adaptive = store.remote
        self.busy = busy if self.adaptive else min(busy, LOCAL_INTERVAL)
        self.idle = idle if self.adaptive else self.busy
        self.current = self.busy

    def after(self, found: bool) -> float:
        """The next interval, given whether the last round found submissions."""
        if found or not self.adaptive:
            self.current = self.busy
        else:
            self.current = min(self.idle, self.current * 2)
        return self.current


class OwnerIntake:
    """One queue's intake: rounds of poll, apply, wait until durable, collect.

    It works on the queue's internals under the queue's lock, as its own methods do.
    """

    def __init__(self, queue: Queue, busy: float, idle: float | None) -> None:
        self.queue = queue
        self.enabled = idle is not None
        self.poller = InboxPoller(queue.store)
        self.pace = IntakePace(queue.store, busy, idle if idle is not None else busy)

    def tick(self) -> float:
        """One round from the background loop; returns the wait before the next."""
        try:
            found = self.round(paced=True)
        except StorageError as exc:
            logger.warning("inbox intake failed (retrying): %s", exc)
            found = 0
        return self.pace.after(found > 0)

    def round(self, paced: bool = False) -> int:
        """Take in what is in the inbox now; return how many submissions were applied.
        ``paced``: from the background loop (see the module docstring)."""
        if not self.enabled:
            return 0
        q = self.queue
        with q._lock:
            q._check_open_locked()
            marks = {p: seq for p, (seq, _) in q._state.inbox_marks.items()}
        poll = self.poller.poll(marks, paced)
        applied = 0
        done: list[str] = list(poll.leftovers)
        with q._lock:
            q._check_open_locked()
            now = q._now()
            batch: Batch | None = None
            for obj in poll.fresh:
                mark = q._state.inbox_marks.get(obj.producer)
                if mark is not None and obj.seq <= mark[0]:
                    if obj.key is not None:
                        done.append(obj.key)  # taken in by this owner since the listing
                    continue
                batch = intake_object_locked(q, obj.producer, obj.seq, obj.submissions, now)
                applied += len(obj.submissions)
                if obj.key is not None:
                    done.append(obj.key)
            retention = float(q.options.inbox_retention)  # type: ignore[arg-type]
            quiet = [
                p
                for p, (_, at) in q._state.inbox_marks.items()
                if at < now - retention and p not in poll.producers
            ]
            if quiet:
                batch = q._commit(ev.InboxForgot(quiet))
            if batch is not None:
                q._wait_locked(batch)
            marks_now = q._state.inbox_marks
            quiet_file = min(retention, QUIET_FILE_SECONDS)
            retire = [
                (key, offset)
                for producer, key, offset in poll.idle_files
                if producer in marks_now and marks_now[producer][1] < now - quiet_file
            ]
        for key, offset in retire:
            self.poller.retire(key, offset)
        self.poller.collect(done)
        return applied


# -- applying one inbox object (the queue's lock held) ------------------------------------


class _Pending:
    """What the events gathered so far for one inbox object will change, as the checks of
    its later submissions must see it (the events are applied together, at the end)."""

    def __init__(self, q: Queue) -> None:
        self.state = q._state
        # id -> (queue, status or None once gone, cancel requested, dedup key)
        self.jobs: dict[str, tuple[str, JobStatus | None, bool, str | None]] = {}
        self.dedup: dict[tuple[str, str], str | None] = {}  # (queue, key) -> holder

    def job(self, job_id: str) -> tuple[str, JobStatus | None, bool, str | None] | None:
        got = self.jobs.get(job_id)
        if got is not None:
            return None if got[1] is None else got
        job = self.state.jobs.get(job_id)
        if job is None:
            return None
        return job.queue, job.status, job.cancel_requested, job.dedup_key

    def dedup_holder(self, queue: str, key: str) -> str | None:
        if (queue, key) in self.dedup:
            return self.dedup[queue, key]
        index = self.state.queues.get(queue)
        return None if index is None else index.dedup.get(key)


def intake_object_locked(
    q: Queue, producer: str, seq: int, subs: Sequence[Submission], now: float
) -> Batch:
    """Apply one inbox object as ONE ``Intake`` event (its events and ``producer``'s new
    mark); return its batch. Submissions that create nothing (a dedup hit, a job id in
    use, a cancel of an unknown job) are checked here first and leave no event."""
    q._check_open_locked()
    pending = _Pending(q)
    events: list[ev.Event] = []
    wake: dict[str, int] = {}
    removed: list[str] = []
    requested: list[str] = []
    for sub in subs:
        if isinstance(sub, SubmitEnqueue):
            event = _enqueue_event(q, pending, sub, now)
            if event is None:
                continue
            events.append(event)
            if sub.run_at is None or sub.run_at <= now:
                wake[sub.queue] = wake.get(sub.queue, 0) + len(sub.job_ids)
            continue
        job_id = sub.job_id
        got = pending.job(job_id)
        if got is None:
            continue
        queue, status, cancel_requested, dedup_key = got
        if isinstance(sub, SubmitCancel):
            if status in (JobStatus.DONE, JobStatus.DEAD) or cancel_requested:
                continue
            events.append(ev.Cancelled(job_id))
            if status is JobStatus.CLAIMED:
                pending.jobs[job_id] = (queue, status, True, dedup_key)
                requested.append(job_id)
            else:
                pending.jobs[job_id] = (queue, None, False, None)
                if dedup_key is not None and pending.dedup_holder(queue, dedup_key) == job_id:
                    pending.dedup[queue, dedup_key] = None
                removed.append(job_id)
        elif status is JobStatus.DEAD:
            events.append(ev.DeadRequeued(job_id))
            pending.jobs[job_id] = (queue, JobStatus.PENDING, False, dedup_key)
            wake[queue] = wake.get(queue, 0) + 1
    batch = q._commit(ev.Intake(producer, seq, now, events))
    for job_id in requested:
        claim = q._claims.get(job_id)
        if claim is not None:
            claim.cancel_requested.set()
    for job_id in removed:
        q._finished_locked(job_id, batch, WaitOutcome(WaitStatus.NOT_FOUND))
    for name, n in wake.items():
        q._wake_claimers_locked(name, n)
    return batch


def _enqueue_event(
    q: Queue, pending: _Pending, sub: SubmitEnqueue, now: float
) -> ev.Enqueued | None:
    """The event of one submitted enqueue, or None when it creates nothing."""
    queue = sub.queue
    try:
        check_queue_name(queue)
    except InvalidArgument:
        logger.warning("inbox: dropped a submission with a bad queue name %r", queue)
        return None
    if sub.dedup_key is not None and pending.dedup_holder(queue, sub.dedup_key) is not None:
        return None  # a dedup hit: no job
    if len(set(sub.job_ids)) != len(sub.job_ids) or any(
        pending.job(job_id) is not None for job_id in sub.job_ids
    ):
        logger.warning("inbox: dropped a submission to %r whose job id is in use", queue)
        return None
    cfg = q._config(queue)
    priority = cfg.default_priority if sub.priority is None else sub.priority
    max_attempts = cfg.max_attempts if sub.max_attempts is None else sub.max_attempts
    run_at = sub.run_at if sub.run_at is not None and sub.run_at > now else None
    headers = sub.headers or None
    specs = None
    if run_at is not None or sub.dedup_key is not None or headers:
        spec = ev.JobSpec(priority, max_attempts, run_at, sub.dedup_key, headers)
        specs = [spec] * len(sub.job_ids)
    status = JobStatus.PENDING if run_at is None else JobStatus.SCHEDULED
    for job_id in sub.job_ids:
        pending.jobs[job_id] = (queue, status, False, sub.dedup_key)
        if sub.dedup_key is not None:
            pending.dedup[queue, sub.dedup_key] = job_id
    return ev.Enqueued(
        queue, now, list(sub.job_ids), list(sub.payloads), priority, max_attempts, specs
    )
