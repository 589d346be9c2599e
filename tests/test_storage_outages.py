"""Outages surface within the storage retry budget, across taquba's and the libraries' retries.

An endpoint that refuses connections, one that accepts them and never answers, and an
emulator stopped under an open store must each raise ``TransientStorageError`` within the
budget (plus a generous slack for a slow machine: before the budget existed, the retries of
taquba, s3fs and botocore stacked up to 47-58 s). These are bounds on a failure path, not
speed measurements. The budget logic itself is checked with a fake clock.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.backends import AZURITE_ACCOUNT_KEY, BUCKET, EMULATORS, HOST, BackendRoot, free_port
from support.faulty import FaultyFileSystem

from taquba import OpenOptions, Queue
from taquba.errors import ConfigError, TransientStorageError
from taquba.storage import Store, open_store

BUDGET = 2.0
SLACK = 8.0  # an outage used to take 47-58 s to surface
CLOUDS = ("s3", "gcs", "azure")


def cloud_root(kind: str, port: int) -> BackendRoot:
    """A root on ``kind`` whose endpoint is 127.0.0.1:port."""
    if kind == "s3":
        return BackendRoot(
            "s3",
            f"s3://{BUCKET}/outage",
            {"key": "testing", "secret": "testing", "endpoint_url": f"http://{HOST}:{port}"},
        )
    if kind == "gcs":
        return BackendRoot(
            "gcs",
            f"gs://{BUCKET}/outage",
            {"endpoint_url": f"http://{HOST}:{port}", "token": "anon", "project": "test"},
        )
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_ACCOUNT_KEY};BlobEndpoint=http://{HOST}:{port}/devstoreaccount1;"
    )
    return BackendRoot("azure", f"az://{BUCKET}/outage", {"connection_string": conn})


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        s.listen(128)
        yield int(s.getsockname()[1])


def calls(store: Store) -> dict[str, Callable[[], object]]:
    return {
        "list": lambda: store.list_dir("manifest"),
        "put": lambda: store.put_if_absent("segments/1", b"payload"),
        "get": lambda: store.get("segments/1"),
        "range": lambda: store.get_range("segments/1", 0, 4),
        "delete": lambda: store.delete(["segments/1", "segments/2"]),
    }


def assert_fails_within_budget(store: Store, op: str) -> None:
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        calls(store)[op]()
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET + SLACK, f"{op} took {elapsed:.1f} s with a {BUDGET} s budget"


@pytest.mark.parametrize("op", ["list", "put", "get", "range", "delete"])
@pytest.mark.parametrize("kind", CLOUDS)
def test_a_closed_port_fails_within_the_budget(kind: str, op: str) -> None:
    store = cloud_root(kind, free_port()).store(retry_budget=BUDGET)
    assert_fails_within_budget(store, op)


@pytest.mark.parametrize("op", ["list", "put", "get", "delete"])
@pytest.mark.parametrize("kind", CLOUDS)
def test_an_endpoint_that_never_answers_fails_within_the_budget(
    kind: str, op: str, silent_port: int
) -> None:
    store = cloud_root(kind, silent_port).store(retry_budget=BUDGET, retries=100)
    started = time.monotonic()
    with pytest.raises(TransientStorageError, match="retry budget of 2 s is spent"):
        calls(store)[op]()
    assert time.monotonic() - started < BUDGET + SLACK


@pytest.mark.parametrize("kind", CLOUDS)
def test_queue_open_against_a_silent_endpoint_fails_within_the_budget(
    kind: str, silent_port: int
) -> None:
    root = cloud_root(kind, silent_port)
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        Queue.open(
            root.location,
            options=OpenOptions(storage_retry_budget=BUDGET),
            storage_options=root.storage_options,
        )
    assert time.monotonic() - started < BUDGET + SLACK


@pytest.mark.parametrize("kind", CLOUDS)
def test_an_emulator_stopped_under_an_open_store_fails_within_the_budget(
    kind: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(f"{kind}_emulator")  # skips (or fails in CI) if unavailable
    emulator = EMULATORS[kind]()
    emulator.start_with_retries()
    try:
        store = emulator.root().store(retry_budget=BUDGET)
        store.put_if_absent("segments/1", b"payload")
        assert store.get("segments/1") == b"payload"
    finally:
        emulator.stop()
    for op in ("get", "list", "put"):
        assert_fails_within_budget(store, op)


# -- the budget itself, with a fake clock ---------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def clocked(store: Store) -> FakeClock:
    clock = FakeClock()
    store.monotonic = clock.monotonic
    store.sleep = clock.sleep
    return clock


def test_retries_stop_when_the_budget_is_spent_not_only_when_counted_out() -> None:
    faulty = FaultyFileSystem(__import__("fsspec").filesystem("memory"))
    store = open_store(faulty, path="/budget", retries=50, retry_delay=0.05, retry_budget=1.0)
    clock = clocked(store)
    injected = ConnectionResetError("injected: the network is gone")
    faulty.fail("put", injected)
    with pytest.raises(TransientStorageError, match="retry budget of 1 s is spent") as info:
        store.put_if_absent("k", b"v")
    assert info.value.__cause__ is injected
    # 0.05 + 0.1 + 0.2 + 0.4 = 0.75 s slept; the next backoff (0.8 s) would pass 1 s.
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4]
    assert faulty.count("put") == 5
    assert store.counts.puts == 5


def test_a_slow_attempt_uses_up_the_budget_for_the_ones_after_it() -> None:
    faulty = FaultyFileSystem(__import__("fsspec").filesystem("memory"))
    store = open_store(faulty, path="/budget", retries=50, retry_delay=0.05, retry_budget=3.0)
    clock = clocked(store)

    def slow_failure() -> BaseException:
        clock.now += 2.0  # the request hung for 2 s, then failed
        return TimeoutError("injected: slow and failed")

    faulty.fail("get", slow_failure)
    with pytest.raises(TransientStorageError, match="spent"):
        store.get("k")
    assert faulty.count("get") == 2  # 2 s + 0.05 s + 2 s: no third attempt past 3 s
    assert clock.sleeps == [0.05]


def test_a_call_within_the_budget_still_succeeds_after_retries() -> None:
    faulty = FaultyFileSystem(__import__("fsspec").filesystem("memory"))
    store = open_store(faulty, path="/budget", retries=6, retry_budget=10.0)
    clocked(store)
    faulty.fail("put", ConnectionResetError, times=3)
    store.put_if_absent("k", b"v")
    assert store.get("k") == b"v"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "10", True, None])
def test_a_bad_budget_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="storage_retry_budget"):
        OpenOptions(storage_retry_budget=bad)
    with pytest.raises(ConfigError, match="retry_budget"):
        open_store("memory://budget", retry_budget=bad)


# -- what the store asks of the libraries when it creates the filesystem -------------------


def test_s3_filesystem_gets_timeouts_and_no_retries_of_its_own() -> None:
    store: Any = open_store(
        f"s3://{BUCKET}/x", storage_options={"endpoint_url": "http://h:1"}, retry_budget=8.0
    )
    config = store.fs.config_kwargs
    assert config["retries"] == {"max_attempts": 1, "mode": "standard"}
    assert (config["connect_timeout"], config["read_timeout"]) == (2.0, 4.0)
    assert store.fs.retries == 1


def test_what_the_user_set_in_storage_options_wins() -> None:
    mine = {"max_attempts": 3, "mode": "adaptive"}
    store: Any = open_store(
        f"s3://{BUCKET}/x",
        storage_options={
            "endpoint_url": "http://h:1",
            "config_kwargs": {"retries": mine, "read_timeout": 60},
        },
    )
    assert store.fs.config_kwargs["retries"] == mine
    assert store.fs.config_kwargs["read_timeout"] == 60
    assert store.fs.config_kwargs["connect_timeout"] == 2.5  # the default budget is 10 s

    az: Any = open_store(
        f"az://{BUCKET}/x",
        storage_options={**cloud_root("azure", 1).storage_options, "read_timeout": 77},
    )
    assert az.fs._timeout_kwargs["read_timeout"] == 77
    assert az._options()["retry_total"] == 0

    gcs: Any = open_store(
        f"gs://{BUCKET}/x",
        storage_options={**cloud_root("gcs", 1).storage_options, "requests_timeout": 42},
    )
    assert gcs.fs.requests_timeout == 42
    gcs_default: Any = open_store(
        f"gs://{BUCKET}/x", storage_options=cloud_root("gcs", 1).storage_options, retry_budget=4.0
    )
    timeout = gcs_default.fs.requests_timeout
    assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (None, 1.0, 2.0)


def test_a_filesystem_the_user_made_is_left_as_it_is() -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="k", secret="s", endpoint_url="http://h:1", skip_instance_cache=True)
    store: Any = open_store(fs, path=f"{BUCKET}/x")
    assert fs.config_kwargs == {}
    assert fs.retries == s3fs.S3FileSystem.retries
    assert type(store).__name__ == "S3Store"
