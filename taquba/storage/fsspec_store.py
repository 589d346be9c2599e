"""A store over any fsspec filesystem with an atomic exclusive create (memory, s3, gcs, az).

Put-if-absent is ``pipe_file(path, data, mode="create")``: a conditional PUT on object
stores. fsspec's memory filesystem implements it as check-then-write (two winners were
observed with eight threads), so on it the call runs under a process-wide lock, which is
enough because a memory filesystem cannot be shared across processes. Listing caches are
never used.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import Store
from .errors import is_range_not_satisfiable

# Guards every exclusive create on an fsspec MemoryFileSystem (its store is process-global).
_MEMORY_CREATE_LOCK = threading.Lock()


class FsspecStore(Store):
    def __init__(self, fs: Any, root: str, **kwargs: Any) -> None:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        root = root.rstrip("/")
        super().__init__(f"{protocol}://{root.lstrip('/')}" if protocol != "memory"
                         else f"memory://{root}", **kwargs)
        self.fs = fs
        self.root = root
        from fsspec.implementations.memory import MemoryFileSystem

        self._create_lock = _MEMORY_CREATE_LOCK if isinstance(fs, MemoryFileSystem) else None
        self.cheap_requests = isinstance(fs, MemoryFileSystem)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        if self._create_lock is None:
            self.fs.pipe_file(self._path(key), data, mode="create")
            return
        with self._create_lock:
            self.fs.pipe_file(self._path(key), data, mode="create")

    def _raw_get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key), start=start, end=end))
        except Exception as exc:
            # S3, GCS and Azure answer 416 for a range starting at or past the end.
            if is_range_not_satisfiable(exc):
                return b""
            raise

    def _raw_list(self, directory: str) -> list[str]:
        if self._create_lock is None:
            return self._list(directory)
        # fsspec's memory listing reads entries one by one and fails (KeyError) when one
        # is deleted meanwhile: list and delete under the lock that guards creates.
        with self._create_lock:
            return self._list(directory)

    def _list(self, directory: str) -> list[str]:
        path = self._path(directory)
        try:
            entries = self.fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        except TypeError:
            entries = self.fs.ls(path, detail=True)
        names = []
        for entry in entries:
            if entry.get("type") == "directory":
                continue
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if name and not name.startswith("."):
                names.append(name)
        return names

    def _raw_delete(self, keys: list[str]) -> None:
        if self._create_lock is None:
            self._delete(keys)
            return
        with self._create_lock:
            self._delete(keys)

    def _delete(self, keys: list[str]) -> None:
        paths = [self._path(k) for k in keys]
        try:
            self.fs.rm(paths)
        except FileNotFoundError:
            for p in paths:
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    pass
