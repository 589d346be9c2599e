"""A wrapper fsspec filesystem that adds a fixed latency to every request and counts them.

``LatencyFileSystem(inner, latency=0.02)`` forwards to ``inner`` (by default a fresh
in-memory filesystem) and sleeps ``latency`` seconds per request first, like a round trip to
S3 Standard. The sleep releases the GIL, so concurrent requests overlap as they would on a
network. Every request is counted by kind in ``.requests`` — an independent check of the
counts the store keeps itself. A batch delete (``rm`` of a list) is one request, as an S3
``DeleteObjects`` is.

Only the calls a store makes are forwarded (``pipe_file``, ``cat_file``, ``ls``, ``rm``,
``rm_file``, ``info``, ``exists``, ``mkdir``/``makedirs``); anything else raises, so a new
kind of request cannot slip past the counter.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from fsspec import AbstractFileSystem


class LatencyFileSystem(AbstractFileSystem):
    protocol = "latency"
    cachable = False

    def __init__(
        self, inner: AbstractFileSystem | None = None, latency: float = 0.02, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if inner is None:
            from fsspec.implementations.memory import MemoryFileSystem

            inner = MemoryFileSystem(skip_instance_cache=True)
        self.inner = inner
        self.latency = float(latency)
        self.requests: Counter[str] = Counter()
        self.bytes_written = 0
        self._lock = threading.Lock()

    def _request(self, kind: str, nbytes: int = 0) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.bytes_written += nbytes
        if self.latency > 0:
            time.sleep(self.latency)

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self.requests, "bytes_written": self.bytes_written}

    # -- forwarded requests ----------------------------------------------------------------

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._request("put", len(value))
        self.inner.pipe_file(path, value, mode=mode, **kwargs)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        self._request("get")
        return bytes(self.inner.cat_file(path, start=start, end=end, **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        self._request("list")
        kwargs.pop("refresh", None)
        return self.inner.ls(path, detail=detail, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self._request("delete")
        self.inner.rm(path, recursive=recursive, maxdepth=maxdepth)

    def rm_file(self, path: str) -> None:
        self._request("delete")
        self.inner.rm_file(path)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._request("head")
        result: dict[str, Any] = self.inner.info(path, **kwargs)
        return result

    def exists(self, path: str, **kwargs: Any) -> bool:
        self._request("head")
        return bool(self.inner.exists(path, **kwargs))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass  # object stores have no directories

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        raise NotImplementedError(
            "LatencyFileSystem counts whole-object requests only; use pipe_file / cat_file"
        )
