"""A store over any fsspec filesystem with an atomic exclusive create (memory, s3, gcs, az).

Put-if-absent is ``pipe_file(path, data, mode="create")``: a conditional PUT on object
stores, a locked check on the memory filesystem. Listing caches are never used.
"""

from __future__ import annotations

from typing import Any

from .base import Store


class FsspecStore(Store):
    def __init__(self, fs: Any, root: str, **kwargs: Any) -> None:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        root = root.rstrip("/")
        super().__init__(f"{protocol}://{root.lstrip('/')}" if protocol != "memory"
                         else f"memory://{root}", **kwargs)
        self.fs = fs
        self.root = root

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data, mode="create")

    def _raw_get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        return bytes(self.fs.cat_file(self._path(key), start=start, end=end))

    def _raw_list(self, directory: str) -> list[str]:
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
        paths = [self._path(k) for k in keys]
        try:
            self.fs.rm(paths)
        except FileNotFoundError:
            for p in paths:
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    pass
