"""A store over any fsspec filesystem with an exclusive create (memory, or one we do not know).

Put-if-absent is ``pipe_file(path, data, mode="create")``. fsspec's memory filesystem
implements it as check-then-write (two winners were observed with eight threads), so on it
the call runs under a process-wide lock, which is enough because a memory filesystem cannot
be shared across processes. Listing caches are never used. Each hook call is counted as one
request: what the filesystem sends for it is its own business (S3, GCS and Azure get stores
of their own in :mod:`taquba.storage.cloud`, which count every HTTP request).

On an asynchronous filesystem every call runs on fsspec's event loop under a time limit
taken from the store's retry budget (:meth:`FsspecStore._call`), and is cancelled there when
the limit passes.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import Store
from .errors import is_range_not_satisfiable

# Guards every exclusive create on an fsspec MemoryFileSystem (its store is process-global).
_MEMORY_CREATE_LOCK = threading.Lock()


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else str(fs.protocol[0])


class FsspecStore(Store):
    remote = True
    atomic_create = False  # fsspec's default exclusive create is check-then-write

    def __init__(self, fs: Any, root: str, **kwargs: Any) -> None:
        protocol = _protocol(fs)
        root = root.rstrip("/")
        super().__init__(
            f"{protocol}://{root.lstrip('/')}" if protocol != "memory" else f"memory://{root}",
            **kwargs,
        )
        self.fs = fs
        self.root = root
        from fsspec.asyn import AsyncFileSystem
        from fsspec.implementations.memory import MemoryFileSystem

        self._is_async = isinstance(fs, AsyncFileSystem) and not fs.asynchronous
        self._create_lock = None
        if isinstance(fs, MemoryFileSystem):
            self._create_lock = _MEMORY_CREATE_LOCK
            self.atomic_create = True
            self.shared_across_processes = False
            self.remote = False

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _call(self, method: str, *args: Any, transfer: int = 0, **kwargs: Any) -> Any:
        """``fs.<method>(*args, **kwargs)``; on an asynchronous filesystem its coroutine
        runs under :meth:`AttemptBudget.wall` and is cancelled when that passes."""
        if not self._is_async:
            return getattr(self.fs, method)(*args, **kwargs)
        return self._run(getattr(self.fs, "_" + method), *args, transfer=transfer, **kwargs)

    def _run(self, coro_fn: Any, *args: Any, transfer: int = 0, **kwargs: Any) -> Any:
        """Run ``coro_fn(*args, **kwargs)`` on the filesystem's event loop, cancelled once
        :meth:`AttemptBudget.wall` passes (then a ``TimeoutError``, which is transient)."""
        from fsspec.asyn import sync
        from fsspec.exceptions import FSTimeoutError

        wall = self._attempt_budget().wall(transfer)
        try:
            return sync(self.fs.loop, coro_fn, *args, timeout=wall, **kwargs)
        except FSTimeoutError as exc:
            raise TimeoutError(f"no answer within {wall:.2f} s") from exc

    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self._count(puts=1, bytes_written=len(data))
        if self._create_lock is None:
            self._call("pipe_file", self._path(key), data, mode="create", transfer=len(data))
            return
        with self._create_lock:
            self.fs.pipe_file(self._path(key), data, mode="create")

    def _raw_get(self, key: str) -> bytes:
        self._count(gets=1)
        data = bytes(self._call("cat_file", self._path(key)))
        self._count(bytes_read=len(data))
        return data

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        self._count(gets=1)
        try:
            data = bytes(
                self._call("cat_file", self._path(key), start=start, end=end, transfer=end - start)
            )
        except Exception as exc:
            # S3, GCS and Azure answer 416 for a range starting at or past the end.
            if is_range_not_satisfiable(exc):
                return b""
            raise
        self._count(bytes_read=len(data))
        return data

    def _raw_list(self, directory: str) -> list[str]:
        self._count(lists=1)
        if self._create_lock is None:
            return self._list(directory)
        # fsspec's memory listing reads entries one by one and fails (KeyError) when one
        # is deleted meanwhile: list and delete under the lock that guards creates.
        with self._create_lock:
            return self._list(directory)

    def _list(self, directory: str) -> list[str]:
        path = self._path(directory)
        try:
            entries = self._call("ls", path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except TypeError:
            entries = self._call("ls", path, detail=True)
        names = []
        for entry in entries:
            if entry.get("type") == "directory":
                continue
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if name and not name.startswith("."):
                names.append(name)
        return names

    def _raw_delete(self, keys: list[str]) -> None:
        self._count(deletes=1)
        if self._create_lock is None:
            self._delete(keys)
            return
        with self._create_lock:
            self._delete(keys)

    def _delete(self, keys: list[str]) -> None:
        paths = [self._path(k) for k in keys]
        try:
            self._call("rm", paths)
        except FileNotFoundError:
            for p in paths:
                try:
                    self._call("rm_file", p)
                except FileNotFoundError:
                    pass
