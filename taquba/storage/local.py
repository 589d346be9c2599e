"""Local-disk store with real durability (fsspec never fsyncs, so this bypasses it).

An object is published whole: it is written to a temporary file in the target directory,
fsynced, hard-linked to its final name (``link`` fails if the name exists, which makes
put-if-absent atomic), and the directory is fsynced. A crash leaves either the whole object
or nothing under the final name; stray temporary files start with ``.tmp-`` and are never
listed.
"""

from __future__ import annotations

import itertools
import os

from .base import Store
from .errors import ObjectExists

TMP_PREFIX = ".tmp-"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
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
                raise ObjectExists(f"put {self.description}/{key}: another writer opened the "
                                   "root and removed this writer's temporary file") from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if self.fsync:
            _fsync_dir(directory)

    def _raw_get(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(start)
            return f.read(max(0, end - start))

    def _raw_list(self, directory: str) -> list[str]:
        try:
            with os.scandir(self._path(directory)) as entries:
                return [e.name for e in entries
                        if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _raw_delete(self, keys: list[str]) -> None:
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
