"""The storage contract the log is written against: a flat namespace of immutable objects.

Rules every implementation keeps:

- ``put_if_absent`` is atomic: of any number of concurrent writers of one key, exactly one
  succeeds and the others see :class:`ObjectExists`. When the key already holds exactly the
  bytes being written, the put counts as a success: a conditional PUT retried after a lost
  response reports "exists" although it was ours, so callers put a unique writer nonce in
  every object and the store reads back before declaring a loss.
- An object is whole or absent: readers never see a partial object.
- ``list_dir`` returns the names of the objects directly under a directory (not
  subdirectories), sorted bytewise, with no temporary files.
- ``get_range(key, start, end)`` returns bytes ``[start, end)`` clipped to the object, like
  a slice: an empty range, or one starting at or past the end, gives ``b""``.
- Appending is optional (``appendable``; local disk only): ``create_appendable`` publishes
  an object whole like ``put_if_absent`` and returns an :class:`Appender` that adds bytes at
  its end, each append durable on return and refused once a given *fence* key exists or
  the object has been removed; ``read_from_locked`` reads an appendable object's tail while
  no append is in progress, and ``remove_appendable`` deletes one at the same moment.
- Transient backend errors are retried with bounded exponential backoff within a total
  retry budget per call; what is left is raised as a :class:`~taquba.errors.StorageError`
  subclass with the cause kept. A missing bucket or container is a
  :class:`~taquba.errors.PermanentStorageError` that names it.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import NamedTuple, TypeVar

from ..errors import StorageError, TransientStorageError
from .errors import ObjectExists, ObjectNotFound, translate

T = TypeVar("T")

DEFAULT_RETRY_BUDGET = 10.0
MIN_ATTEMPT_SECONDS = 0.05
TRANSFER_FLOOR_BYTES_PER_S = 8 << 20


@dataclass
class RequestCounts:
    """Requests a store has made to its backend (including retries)."""

    puts: int = 0
    gets: int = 0
    lists: int = 0
    deletes: int = 0
    bytes_written: int = 0
    bytes_read: int = 0

    def total(self) -> int:
        return self.puts + self.gets + self.lists + self.deletes

    def copy(self) -> RequestCounts:
        return RequestCounts(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )


class Appender(ABC):
    """Adds bytes at the end of one object created by :meth:`Store.create_appendable`."""

    key: str
    size: int

    @abstractmethod
    def append(self, data: bytes, fence_key: str | None = None) -> None:
        """Append ``data`` durably; :class:`ObjectExists` (nothing written) if ``fence_key``
        exists, :class:`ObjectNotFound` (nothing written) if the object was removed.
        Checking and writing are one step against ``read_from_locked`` and
        ``remove_appendable``."""

    @abstractmethod
    def close(self) -> None: ...


class Store(ABC):
    """A root on some filesystem holding immutable objects addressed by ``dir/name`` keys.

    Capabilities are class attributes that callers read instead of asking for a concrete
    type:

    - ``appendable``: :meth:`create_appendable` and :meth:`read_from_locked` work (appended
      blocks, each made durable with ``fdatasync``; local disk only). ``supports_append``
      is the same flag under its older name.
    - ``atomic_create``: :meth:`put_if_absent` has exactly one winner among concurrent
      writers of a key (within ``shared_across_processes``).
    - ``shared_across_processes``: other processes (and machines, for object stores) opening
      the same location see the same objects; false for fsspec's in-process memory
      filesystem.
    - ``remote``: every request is a network round trip, so independent reads are worth
      issuing in parallel.
    - ``leaves_temp_files``: a writer that dies mid-put can leave temporary files behind,
      which :meth:`remove_temp_files` collects once no other writer uses the root.

    Every request a store sends is counted in :attr:`counts` (retries included): on object
    stores one counted request is one HTTP request, as the server sees it.

    Retries are bounded twice: at most ``retries`` retries, and within ``retry_budget``
    seconds from the start of the call (no attempt starts and no backoff is slept past it).
    An attempt on an asynchronous fsspec filesystem is also cut off once the budget is
    spent, with an allowance of one second per 8 MiB it may transfer; so an
    unreachable backend surfaces as :class:`TransientStorageError` within the budget.
    """

    appendable = False
    atomic_create = True
    shared_across_processes = True
    remote = False
    leaves_temp_files = False

    def __init__(
        self,
        description: str,
        *,
        retries: int = 6,
        retry_delay: float = 0.05,
        retry_budget: float = DEFAULT_RETRY_BUDGET,
    ) -> None:
        self.description = description
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_budget = retry_budget
        self.counts = RequestCounts()
        self._counts_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep
        self.monotonic: Callable[[], float] = time.monotonic
        self._local = threading.local()

    @property
    def supports_append(self) -> bool:
        """The older name of :attr:`appendable`."""
        return self.appendable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"

    # -- public operations ---------------------------------------------------------------

    def put_if_absent(self, key: str, data: bytes) -> None:
        """Create ``key`` holding ``data``; raise :class:`ObjectExists` if someone else has it."""
        try:
            self._retry("put", key, lambda: self._raw_put_if_absent(key, data))
        except ObjectExists:
            try:
                existing = self.get(key)
            except ObjectNotFound:
                raise ObjectExists(f"put {key}: already exists (then vanished)") from None
            if existing != data:
                raise
            # Our own earlier attempt landed; its response was lost.

    def get(self, key: str) -> bytes:
        return self._retry("get", key, lambda: self._raw_get(key))

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``key``, clipped to its length like a slice."""
        if start < 0 or end < 0:
            raise ValueError(
                f"get_range {key}: negative offsets are not supported (start={start}, end={end})"
            )
        if end <= start:
            # No request: backends disagree on empty ranges (S3 returns the whole object).
            return b""
        return self._retry("get", key, lambda: self._raw_get_range(key, start, end))

    def list_dir(self, directory: str) -> list[str]:
        """Sorted names of the objects directly under ``directory`` (no trailing slash)."""
        names = self._retry("list", directory + "/", lambda: self._raw_list(directory))
        return sorted(names)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; missing keys are fine."""
        keys = list(keys)
        if not keys:
            return
        self._retry(
            "delete",
            keys[0] if len(keys) == 1 else f"{len(keys)} objects",
            lambda: self._raw_delete(keys),
        )

    def create_appendable(self, key: str, data: bytes, reserve: int = 0) -> Appender:
        """Create ``key`` holding ``data`` (as :meth:`put_if_absent`), open for appending;
        it may grow to ``reserve`` bytes, which the store may reserve ahead (reading as
        zeros until written)."""
        raise NotImplementedError(f"{type(self).__name__} cannot append")

    def read_from_locked(self, key: str, start: int) -> bytes:
        """Bytes of ``key`` from ``start`` on, read while no :class:`Appender` is appending."""
        raise NotImplementedError(f"{type(self).__name__} cannot append")

    def remove_appendable(self, key: str, start: int, unused: Callable[[bytes], bool]) -> bool:
        """Delete the appendable object ``key`` if ``unused(tail)`` holds for its bytes from
        ``start`` on, read while no :class:`Appender` is appending; return whether it was
        deleted. An append after the removal writes nothing and raises ObjectNotFound."""
        raise NotImplementedError(f"{type(self).__name__} cannot append")

    def remove_temp_files(self, directory: str) -> int:
        """Delete what crashed writers left in ``directory``; returns how many. Only stores
        with ``leaves_temp_files`` leave any."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the store."""

    # -- backend hooks: one attempt each, counting every request they send ---------------
    #
    # A hook that can bound its own run time reads :meth:`_attempt_budget`.

    @abstractmethod
    def _raw_put_if_absent(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _raw_get(self, key: str) -> bytes: ...

    @abstractmethod
    def _raw_get_range(self, key: str, start: int, end: int) -> bytes: ...

    @abstractmethod
    def _raw_list(self, directory: str) -> list[str]: ...

    @abstractmethod
    def _raw_delete(self, keys: list[str]) -> None: ...

    # -- helpers -------------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._counts_lock:
            for name, delta in deltas.items():
                setattr(self.counts, name, getattr(self.counts, name) + delta)

    def _attempt_budget(self) -> AttemptBudget:
        """The budget of the call this thread is in (a fresh one outside any call)."""
        budget: AttemptBudget | None = getattr(self._local, "budget", None)
        if budget is None:
            return AttemptBudget(self.monotonic() + self.retry_budget, self.monotonic)
        return budget

    def _retry(self, op: str, what: str, fn: Callable[[], T]) -> T:
        deadline = self.monotonic() + self.retry_budget
        outer = getattr(self._local, "budget", None)
        attempt = 0
        while True:
            self._local.budget = AttemptBudget(deadline, self.monotonic)
            try:
                return fn()
            except Exception as exc:
                err = translate(exc, op, f"{self.description}/{what}")
            finally:
                self._local.budget = outer
            if not isinstance(err, TransientStorageError) or attempt >= self.retries:
                raise err
            delay = min(self.retry_delay * (2**attempt), 2.0)
            attempt += 1
            if self.monotonic() + delay >= deadline:
                spent = TransientStorageError(
                    f"{err} (gave up after {attempt} attempts: the storage retry budget of "
                    f"{self.retry_budget:g} s is spent)"
                )
                raise spent from err.__cause__
            self.sleep(delay)


class AttemptBudget(NamedTuple):
    """What is left of a call's retry budget, handed to each attempt (a named tuple: one
    is made per attempt, on every request's path)."""

    deadline: float
    monotonic: Callable[[], float]

    def left(self) -> float:
        return self.deadline - self.monotonic()

    def wall(self, transfer_bytes: int = 0) -> float:
        """How long one request may run: the budget left (at least a moment), plus one
        second per 8 MiB it may move, so a slow but working transfer is not cut."""
        return max(self.left(), MIN_ATTEMPT_SECONDS) + transfer_bytes / TRANSFER_FLOOR_BYTES_PER_S


__all__ = [
    "Appender",
    "AttemptBudget",
    "ObjectExists",
    "ObjectNotFound",
    "RequestCounts",
    "StorageError",
    "Store",
]
