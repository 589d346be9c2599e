"""Backend fixtures: every backend-facing test runs on memory, local disk, S3, GCS and Azure.
The fixtures of the ``Queue`` API tests (``clock``, ``open_queue``, ``q``) are at the end.

Emulators (moto, fake-gcs-server, Azurite) start lazily, once per session, on 127.0.0.1;
each test gets a fresh root (a new prefix in the shared bucket, or a new directory). An
emulator that cannot start skips its tests locally and fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support.backends import (  # after the sys.path entry; sets the env before gcsfs loads
    ALL_BACKENDS,
    EMULATORS,
    FAST_BACKENDS,
    FSSPEC_BACKENDS,
    BackendRoot,
    Emulator,
    drop_memory_root,
    local_root,
    memory_root,
)
from support.clock import ManualClock
from support.queues import Opener

from taquba import OpenOptions, Queue, QueueConfig

IN_CI = os.environ.get("CI") == "true"


def _start_emulator(kind: str) -> Iterator[Emulator]:
    emulator = EMULATORS[kind]()
    try:
        emulator.start_with_retries()
    except Exception as exc:  # any failure to start means "unavailable"
        emulator.stop()
        message = f"{kind} emulator unavailable: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[Emulator]:
    yield from _start_emulator("s3")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    yield from _start_emulator("gcs")


@pytest.fixture(scope="session")
def azure_emulator() -> Iterator[Emulator]:
    yield from _start_emulator("azure")


def _fresh_root(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> Iterator[BackendRoot]:
    if name == "memory":
        root = memory_root()
        try:
            yield root
        finally:
            drop_memory_root(root)
    elif name == "local":
        yield local_root(tmp_path / "root")
    else:
        emulator: Emulator = request.getfixturevalue(f"{name}_emulator")
        yield emulator.root()


@pytest.fixture(params=ALL_BACKENDS)
def backend_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendRoot]:
    """A fresh, empty root on each of the five backends."""
    yield from _fresh_root(request, request.param, tmp_path)


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendRoot]:
    """A fresh, empty root on memory and local disk only (for slow or numerous tests)."""
    yield from _fresh_root(request, request.param, tmp_path)


@pytest.fixture(params=FSSPEC_BACKENDS)
def fsspec_backend_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendRoot]:
    """A fresh root on each backend served through fsspec (all but local disk), e.g. to wrap
    its filesystem in ``faulty.FaultyFileSystem``."""
    yield from _fresh_root(request, request.param, tmp_path)


# -- the Queue API tests (tests/test_queue_*.py; helpers in tests/support/queues.py) ----------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_queue(fast_backend_root: BackendRoot, clock: ManualClock) -> Iterator[Opener]:
    """Open (or reopen) the test's root; every handle is closed at teardown."""
    handles: list[Queue] = []

    def opener(config: QueueConfig | None = None, **options: Any) -> Queue:
        options.setdefault("background_threads", False)
        opts = OpenOptions(clock=clock, default_queue_config=config or QueueConfig(), **options)
        q = Queue.open(
            fast_backend_root.location,
            storage_options=fast_backend_root.storage_options,
            options=opts,
        )
        handles.append(q)
        return q

    yield opener
    for q in handles:
        q.close()


@pytest.fixture
def q(open_queue: Opener) -> Queue:
    return open_queue()
