"""Local-disk store with real durability (fsspec never fsyncs, so this bypasses it).

An object is published whole: it is written to a temporary file in the target directory,
fsynced, hard-linked to its final name (``link`` fails if the name exists, which makes
put-if-absent atomic), and the directory is fsynced. A crash leaves either the whole object
or nothing under the final name; stray temporary files start with ``.tmp-`` and are never
listed.

Appending (:meth:`LocalStore.create_appendable`): after that whole first publish the file is
kept open, and each append is one ``write`` plus one ``fdatasync`` — a single flush per
commit instead of a new file and two. Fencing carries over through an exclusive ``flock`` on
the file: an append takes it, checks that the fence key does not exist, writes (into space
reserved ahead, see :class:`LocalAppender`), syncs and releases it; a reader that must see every byte a displaced writer will ever add first creates
the fence, then reads under the same lock (:meth:`LocalStore.read_from_locked`). Whatever the
interleaving, an append either lands before that read or sees the fence and writes nothing.
Removal works the same way without a fence: :meth:`LocalStore.remove_appendable` unlinks the
file under the lock, and an append that then takes the lock finds its open file unlinked
(no links left) and writes nothing.
``flock`` locks belong to open files, so this holds between handles of one process too.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # Windows: no flock, so every commit is a file of its own
    fcntl = None  # type: ignore[assignment]

from ..errors import PermanentStorageError
from .base import Appender, Store
from .errors import ObjectExists, ObjectNotFound, translate

TMP_PREFIX = ".tmp-"
LOCK_TIMEOUT = 30.0
PREALLOCATE = 256 << 10
CAN_APPEND = fcntl is not None and hasattr(os, "pwrite")
_fallocate = getattr(os, "posix_fallocate", None)  # absent on macOS
_datasync = getattr(os, "fdatasync", os.fsync)  # absent on macOS
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_SMALL_READ = 1 << 16


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalAppender(Appender):
    """An open appendable file; not thread-safe (the log's one writer drives it).

    Space is reserved ahead with ``posix_fallocate`` and filled with zeros (up to ``limit``
    bytes, 256 KiB at a time), and blocks are written over those zeros at the end of the
    data: an ``fdatasync`` that neither changes the file's size nor turns allocated space
    into written space skips the metadata journal commit, about a third of its cost on ext4.
    The reserved space reads as zeros, which is where a reader stops.

    Nothing between two appends may ask for the file's attributes (``stat``): on Linux 6.13
    and later a timestamp that was looked at is updated finely by the next write, which
    then costs the ``fdatasync`` a third more. So whether the file was removed is asked
    with ``access`` on its path. A file made anew at the same path would pass that check
    and the write would go to the removed one, but no path is made twice: a segment is
    removed by a newer writer (the log's read-back then reports the commit fenced), and a
    producer's inbox file, removed by the owner, is never made again by its producer.
    """

    def __init__(self, store: LocalStore, key: str, fd: int, size: int, limit: int) -> None:
        self.store = store
        self.key = key
        self._path = store._path(key)
        self.size = size
        self.limit = limit
        self._allocated = size
        self._fd: int | None = fd
        self._fence = ("", "")  # (key, path) of the last fence checked

    def _reserve(self, fd: int, need: int) -> None:
        if need <= self._allocated:
            return
        target = max(need, min(self._allocated + PREALLOCATE, self.limit))
        if _fallocate is None:
            return  # writes extend the file instead
        try:
            _fallocate(fd, self._allocated, target - self._allocated)
            # Allocated space is "unwritten" until written: the first sync of a write into
            # it also commits the conversion to the journal. Writing the zeros now makes
            # that happen once per reservation instead of once per block.
            os.pwrite(fd, bytes(target - self._allocated), self._allocated)
        except OSError:
            return  # not supported by this filesystem: likewise
        self._allocated = target

    def append(self, data: bytes, fence_key: str | None = None) -> None:
        fd = self._fd
        if fd is None:
            raise PermanentStorageError(
                f"append {self.store.description}/{self.key}: the file is closed"
            )
        fence = None
        if fence_key is not None:
            if self._fence[0] != fence_key:
                self._fence = (fence_key, self.store._path(fence_key))
            fence = self._fence[1]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if fence is not None and os.path.lexists(fence):
                    self.store._count(puts=1)  # an attempt, like a conditional PUT that lost
                    raise ObjectExists(
                        f"append {self.store.description}/{self.key}: {fence_key} exists"
                    )
                if not os.access(self._path, os.F_OK):
                    self.store._count(puts=1)
                    raise ObjectNotFound(
                        f"append {self.store.description}/{self.key}: the object was removed"
                    )
                try:
                    self._reserve(fd, self.size + len(data))
                    view = memoryview(data)
                    at = self.size
                    while view:
                        n = os.pwrite(fd, view, at)
                        view = view[n:]
                        at += n
                    if self.store.fsync:
                        _datasync(fd)
                except BaseException:
                    # Leave no partial block behind if we can: readers stop at zeros.
                    try:
                        os.pwrite(fd, bytes(len(data)), self.size)
                    except OSError:
                        pass
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except (ObjectExists, ObjectNotFound):
            raise
        except Exception as exc:
            self.store._count(puts=1)
            raise translate(exc, "append", f"{self.store.description}/{self.key}") from exc
        self.size += len(data)
        self.store._count(puts=1, bytes_written=len(data))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class LocalStore(Store):
    """Objects as files under a directory; requests are system calls (one counted each)."""

    appendable = CAN_APPEND
    leaves_temp_files = True

    def __init__(self, root: str, *, fsync: bool = True, **kwargs: object) -> None:
        root = os.path.abspath(os.fspath(root))
        super().__init__(root, **kwargs)  # type: ignore[arg-type]
        self.root = root
        self.fsync = fsync
        self._made: set[str] = set()
        self._tmp_prefix = f"{TMP_PREFIX}{os.urandom(8).hex()}-"
        self._tmp_counter = itertools.count()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._made:
            return
        missing = []
        d = directory
        while not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            if self.fsync:
                _fsync_dir(os.path.dirname(d))
        self._made.add(directory)

    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self._count(puts=1, bytes_written=len(data))
        path = self._path(key)
        directory = os.path.dirname(path)
        self._ensure_dir(directory)
        tmp = os.path.join(directory, f"{self._tmp_prefix}{next(self._tmp_counter)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExists(f"put {self.description}/{key}: already exists") from None
            except FileNotFoundError:
                if not os.path.isdir(directory):
                    raise
                # Our temporary file vanished: only a newer writer opening this root removes
                # them (remove_temp_files), so this writer has been replaced — a lost put.
                raise ObjectExists(
                    f"put {self.description}/{key}: another writer opened the "
                    "root and removed this writer's temporary file"
                ) from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if self.fsync:
            _fsync_dir(directory)

    def create_appendable(self, key: str, data: bytes, reserve: int = 0) -> LocalAppender:
        self.put_if_absent(key, data)
        fd = self._retry("open", key, lambda: os.open(self._path(key), os.O_RDWR))
        return LocalAppender(self, key, fd, len(data), max(reserve, len(data)))

    def _lock(self, key: str, fd: int) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PermanentStorageError(
                        f"read {self.description}/{key}: another process has held "
                        f"its lock for {LOCK_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.001)

    def read_from_locked(self, key: str, start: int) -> bytes:
        def read() -> bytes:
            with open(self._path(key), "rb") as f:
                self._lock(key, f.fileno())
                try:
                    f.seek(start)
                    return f.read()
                finally:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

        data = self._retry("get", key, read)
        self._count(gets=1, bytes_read=len(data))
        return data

    def remove_appendable(self, key: str, start: int, unused: Callable[[bytes], bool]) -> bool:
        def remove() -> bool:
            path = self._path(key)
            with open(path, "rb") as f:
                self._lock(key, f.fileno())
                try:
                    f.seek(start)
                    tail = f.read()
                    self._count(gets=1, bytes_read=len(tail))
                    if not unused(tail):
                        return False
                    self._count(deletes=1)
                    os.unlink(path)
                finally:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            if self.fsync:
                _fsync_dir(os.path.dirname(path))
            return True

        return self._retry("delete", key, remove)

    def _raw_get(self, key: str) -> bytes:
        # The log reads its manifest version back after every commit (FENCING.md).
        try:
            fd = os.open(self._path(key), _READ_FLAGS)  # not open(): a third of its cost
        except OSError:
            self._count(gets=1)
            raise
        try:
            data = os.read(fd, _SMALL_READ)
            if len(data) == _SMALL_READ:  # larger than one read: the rest too
                chunks = [data]
                while chunk := os.read(fd, _SMALL_READ):
                    chunks.append(chunk)
                data = b"".join(chunks)
        except OSError:
            self._count(gets=1)
            raise
        finally:
            os.close(fd)
        self._count(gets=1, bytes_read=len(data))
        return data

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        # No stat of the file (open() makes one): readers follow a segment its writer is
        # appending to, and a looked-at timestamp makes the writer's next sync dearer
        # (see LocalAppender).
        self._count(gets=1)
        fd = os.open(self._path(key), _READ_FLAGS)
        try:
            chunks = []
            at = start
            while at < end:
                chunk = os.pread(fd, min(end - at, 1 << 20), at)
                if not chunk:  # past the end of the file
                    break
                chunks.append(chunk)
                at += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        self._count(bytes_read=len(data))
        return data

    def _raw_list(self, directory: str) -> list[str]:
        self._count(lists=1)
        try:
            with os.scandir(self._path(directory)) as entries:
                return [
                    e.name
                    for e in entries
                    if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _raw_delete(self, keys: list[str]) -> None:
        self._count(deletes=1)
        for key in keys:
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass

    def remove_temp_files(self, directory: str) -> int:
        """Delete leftover temporary files of crashed writers; returns how many."""
        removed = 0
        try:
            names = os.listdir(self._path(directory))
        except FileNotFoundError:
            return 0
        for n in names:
            if n.startswith(TMP_PREFIX):
                try:
                    os.unlink(os.path.join(self._path(directory), n))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed
