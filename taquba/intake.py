"""The owner's side of the inbox: finding submissions and collecting what was applied.

``Queue.intake_now`` drives one round: :meth:`InboxPoller.poll` lists ``inbox/`` once and
reads the objects above each producer's high-water mark (in parallel on object stores),
the queue applies each as one event under its lock and waits until those are durable,
and only then :meth:`InboxPoller.collect` deletes the objects (see ``taquba.inbox`` for why
this is exactly once).

:class:`IntakePace` decides how long to wait between rounds: on stores where a listing
costs nothing (local disk, memory) a short fixed interval, so submissions are taken in
almost at once; on object stores a fast interval while submissions flow, doubling on
every empty round up to a ceiling, so an idle queue costs at most ``3600 / ceiling``
listings an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import events as ev
from .errors import CorruptionError, StorageError
from .inbox import INBOX_DIR, Submission, decode_object, parse_name
from .storage import ObjectNotFound, Store

if TYPE_CHECKING:
    from .queue import Queue

logger = logging.getLogger("taquba.intake")

MAX_OBJECTS_PER_ROUND = 1000
LOCAL_INTERVAL = 0.005


@dataclass(frozen=True, slots=True)
class InboxObject:
    """One inbox object read by a poll."""

    key: str
    producer: str
    seq: int
    submissions: list[Submission]


@dataclass(slots=True)
class Poll:
    """What one listing found."""

    fresh: list[InboxObject]  # to apply, in producer then seq order
    leftovers: list[str]  # keys at or below their producer's mark: delete only
    producers: set[str]  # every producer with an object listed
    more: bool  # more objects waited than one round takes


class InboxPoller:
    """Reads the inbox of one store for its owner."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.parallel = store.remote

    def poll(self, marks: Mapping[str, int]) -> Poll:
        """List the inbox and read the objects above ``marks`` (producer -> last seq)."""
        names = self.store.list_dir(INBOX_DIR)
        wanted: list[tuple[str, int, str]] = []
        leftovers: list[str] = []
        producers: set[str] = set()
        for name in names:
            parsed = parse_name(name)
            if parsed is None:
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
        return Poll(fresh, leftovers, producers, more)

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
            found = self.round()
        except StorageError as exc:
            logger.warning("inbox intake failed (retrying): %s", exc)
            found = 0
        return self.pace.after(found > 0)

    def round(self) -> int:
        """Take in what is in the inbox now; return how many submissions were applied."""
        if not self.enabled:
            return 0
        q = self.queue
        with q._lock:
            q._check_open_locked()
            marks = {p: seq for p, (seq, _) in q._state.inbox_marks.items()}
        poll = self.poller.poll(marks)
        applied = 0
        done: list[str] = list(poll.leftovers)
        with q._lock:
            q._check_open_locked()
            now = q._now()
            ticket = 0
            for obj in poll.fresh:
                mark = q._state.inbox_marks.get(obj.producer)
                if mark is not None and obj.seq <= mark[0]:
                    done.append(obj.key)  # taken in by this owner since the listing
                    continue
                ticket, n = q._intake_object_locked(obj.producer, obj.seq, obj.submissions,
                                                    now)
                applied += n
                done.append(obj.key)
            retention = float(q.options.inbox_retention)  # type: ignore[arg-type]
            quiet = [p for p, (_, at) in q._state.inbox_marks.items()
                     if at < now - retention and p not in poll.producers]
            if quiet:
                ticket = q._commit_locked(ev.encode_inbox_forget(quiet),
                                          q._state.on_inbox_forget, quiet)
            if ticket:
                q._wait_durable_locked(ticket)
        self.poller.collect(done)
        return applied
