"""A fault-injecting fsspec filesystem that wraps another one.

``FaultyFileSystem(inner)`` forwards the calls a :class:`taquba.storage.Store` makes
(``pipe_file``, ``cat_file``, ``ls``, ``rm``, ``rm_file``, ``info``, ``exists``) to ``inner``,
counting every request per operation, and runs scripted faults first::

    fs = FaultyFileSystem(fsspec.filesystem("memory"))
    fs.fail("put", ConnectionResetError, times=2)          # the next two puts fail
    fs.fail("get", TimeoutError, nth=3)                    # the 3rd get from now fails
    fs.fail("list", PermissionError, match=lambda p: "segments" in p)   # every such list
    fs.lose_response("put")      # the next put happens, then raises ConnectionError
    fs.delay = 0.01              # every request sleeps first
    store = open_store(fs, path="/root")

Operations are ``put`` (pipe_file), ``get`` (cat_file), ``list`` (ls), ``delete`` (rm,
rm_file), ``info`` (info, exists) or ``*`` for any. A fault's exception may be an instance,
a class, or a zero-argument factory (a class or factory gives a fresh exception per firing).
Thread-safe: counting and deciding which fault fires happen under one lock; the inner call
and the delay happen outside it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import fsspec

OPS = ("put", "get", "list", "delete", "info")

ExcSpec = BaseException | type[BaseException] | Callable[[], BaseException]


@dataclasses.dataclass
class Fault:
    """One scripted fault; ``seen`` and ``fired`` count matching requests and firings."""

    op: str
    exc: ExcSpec
    start: int = 1  # fire from the start-th matching request on (1-based)
    times: int | None = 1  # how many times to fire; None = every time
    match: Callable[[str], bool] | None = None
    after: bool = False  # perform the request, then raise (the response was lost)
    seen: int = 0
    fired: int = 0

    def _matches(self, op: str, path: str) -> bool:
        return (self.op in ("*", op)) and (self.match is None or self.match(path))

    def _consider(self, op: str, path: str) -> bool:
        """Count a request (under the filesystem's lock); True if this fault is due on it."""
        if not self._matches(op, path):
            return False
        self.seen += 1
        return self.seen >= self.start and (self.times is None or self.fired < self.times)

    def make(self) -> BaseException:
        spec = self.exc
        if isinstance(spec, BaseException):
            return spec
        return spec()


class FaultyFileSystem(fsspec.AbstractFileSystem):  # type: ignore[misc]
    protocol = "faulty"
    cachable = False

    def __init__(self, fs: Any, *, delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fs = fs
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    # -- scripting -----------------------------------------------------------------------

    def fail(
        self,
        op: str,
        exc: ExcSpec = ConnectionResetError,
        *,
        nth: int | None = None,
        times: int | None = None,
        match: Callable[[str], bool] | None = None,
        after: bool = False,
    ) -> Fault:
        """Script a fault on ``op`` requests (optionally only those whose path ``match``).

        ``nth=k``: fire on the k-th matching request from now (and the ``times - 1`` after it).
        ``times=m``: fire on m requests. Neither: fire on every matching request.
        ``after=True``: perform the request, then raise, as if the response was lost.
        """
        if op != "*" and op not in OPS:
            raise ValueError(f"unknown operation {op!r}; use one of {OPS} or '*'")
        if nth is not None and nth < 1:
            raise ValueError(f"nth must be >= 1, got {nth}")
        if times is None and nth is not None:
            times = 1
        fault = Fault(op=op, exc=exc, start=nth or 1, times=times, match=match, after=after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def lose_response(self, op: str = "put", **kw: Any) -> Fault:
        """The next matching request takes effect, then raises ``ConnectionError``."""
        kw.setdefault("times", 1)
        return self.fail(op, lambda: ConnectionError("injected: response lost"), after=True, **kw)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, op: str) -> int:
        with self._lock:
            return self.counts[op]

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()

    # -- the forwarding core -------------------------------------------------------------

    def _call(self, op: str, path: Any, fn: Callable[[], Any]) -> Any:
        with self._lock:
            self.counts[op] += 1
            fault = None
            for f in self.faults:  # every fault counts the request; the first due one fires
                if f._consider(op, str(path)) and fault is None:
                    fault = f
            if fault is not None:
                fault.fired += 1
        if self.delay > 0:
            time.sleep(self.delay)
        if fault is not None and not fault.after:
            raise fault.make()
        result = fn()
        if fault is not None:
            raise fault.make()
        return result

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._call("put", path, lambda: self.fs.pipe_file(path, value, mode=mode, **kwargs))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        return self._call(  # type: ignore[no-any-return]
            "get", path, lambda: self.fs.cat_file(path, start=start, end=end, **kwargs)
        )

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return self._call(  # type: ignore[no-any-return]
            "list", path, lambda: self.fs.ls(path, detail=detail, **kwargs)
        )

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self._call("delete", path, lambda: self.fs.rm(path, recursive=recursive, maxdepth=maxdepth))

    def rm_file(self, path: str) -> None:
        self._call("delete", path, lambda: self.fs.rm_file(path))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._call(
            "info",
            path,  # type: ignore[no-any-return]
            lambda: self.fs.info(path, **kwargs),
        )

    def exists(self, path: str, **kwargs: Any) -> bool:
        return bool(self._call("info", path, lambda: self.fs.exists(path, **kwargs)))


STALL_LIMIT = 30.0  # longest a stalled write waits for the test


@dataclasses.dataclass
class Stall:
    """One segment write that waits for ``go``, then raises ``error`` or goes through."""

    started: threading.Event = dataclasses.field(default_factory=threading.Event)
    go: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: BaseException | None = None


class StallingFileSystem(FaultyFileSystem):
    """Holds the next segment write (a ``put`` under ``segments/``) once ``stall`` is set."""

    def __init__(self, fs: Any) -> None:
        super().__init__(fs)
        self.stall: Stall | None = None

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        stall = self.stall
        if stall is not None and "segments/" in str(path):
            self.stall = None
            stall.started.set()
            assert stall.go.wait(STALL_LIMIT), "the test never let the write go"
            if stall.error is not None:
                raise stall.error
        super().pipe_file(path, value, mode=mode, **kwargs)
