"""The storage contract, written once and run on every backend, then error translation.

The contract tests take ``backend_root`` (memory, local, S3, GCS, Azure). Fault tests wrap a
real backend's filesystem in ``FaultyFileSystem`` and check that transient faults are retried
and invisible, persistent ones surface after bounded retries, permanent ones at once, and a
lost response to a successful conditional PUT is recognised as our own write.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.backends import BackendRoot
from support.faulty import FaultyFileSystem

from taquba.errors import PermanentStorageError, StorageError, TransientStorageError
from taquba.storage import LocalStore, ObjectExists, ObjectNotFound, Store, open_store
from taquba.storage.errors import translate


class Sleeps(list[float]):
    """A stand-in for ``time.sleep`` that records the backoff instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def quiet(store: Store) -> Sleeps:
    sleeps = Sleeps()
    store.sleep = sleeps
    return sleeps


@pytest.fixture
def store(backend_root: BackendRoot) -> Iterator[Store]:
    s = backend_root.store()
    quiet(s)
    yield s
    s.close()


def two_handles(root: BackendRoot) -> tuple[Store, Store]:
    """Two independent stores on one root, as two processes would have."""
    a, b = root.store(), root.store()
    quiet(a)
    quiet(b)
    return a, b


def seg(n: int) -> str:
    return f"segments/{n:020d}"


# -- the contract, on every backend --------------------------------------------------------


def test_put_if_absent_creates_and_get_returns_the_bytes(store: Store) -> None:
    data = b"hello\x00world\xff" + bytes(range(256)) * 64
    store.put_if_absent(seg(1), data)
    assert store.get(seg(1)) == data
    assert store.list_dir("segments") == [f"{1:020d}"]
    assert (store.counts.puts, store.counts.gets, store.counts.lists) == (1, 1, 1)
    assert store.counts.bytes_written == len(data)
    assert store.counts.bytes_read == len(data)


def test_second_writer_gets_object_exists_and_the_first_write_stays(
    backend_root: BackendRoot,
) -> None:
    a, b = two_handles(backend_root)
    a.put_if_absent("manifest/x", b"first")
    with pytest.raises(ObjectExists) as info:
        b.put_if_absent("manifest/x", b"second")
    assert isinstance(info.value, StorageError)
    assert a.get("manifest/x") == b"first"
    assert b.get("manifest/x") == b"first"
    with pytest.raises(ObjectExists):  # the first handle is not special
        a.put_if_absent("manifest/x", b"third")


def test_reput_of_identical_bytes_counts_as_success(backend_root: BackendRoot) -> None:
    a, b = two_handles(backend_root)
    data = b"nonce-" + uuid.uuid4().bytes
    a.put_if_absent("k", data)
    b.put_if_absent("k", data)  # as a retried PUT whose first response was lost
    assert b.counts.puts == 1 and b.counts.gets == 1  # it read back before deciding
    assert a.get("k") == data


def test_empty_object_is_an_object(store: Store) -> None:
    store.put_if_absent("e/empty", b"")
    assert store.get("e/empty") == b""
    assert store.get_range("e/empty", 0, 4) == b""  # S3, GCS and Azure answer 416 here
    assert store.list_dir("e") == ["empty"]
    with pytest.raises(ObjectExists):
        store.put_if_absent("e/empty", b"x")
    assert store.get("e/empty") == b""


def test_get_range_is_a_clipped_slice(store: Store) -> None:
    data = b"0123456789"
    store.put_if_absent("r", data)
    for start, end in [(0, 10), (2, 5), (9, 10), (8, 20), (5, 5), (3, 2), (10, 12), (12, 20)]:
        assert store.get_range("r", start, end) == data[start:end], (start, end)
    with pytest.raises(ValueError):
        store.get_range("r", -3, 5)


def test_missing_object_is_object_not_found(store: Store) -> None:
    store.put_if_absent("d/present", b"x")
    reads: list[Callable[[], bytes]] = [
        lambda: store.get("d/missing"),
        lambda: store.get_range("d/missing", 0, 4),
        lambda: store.get("nodir/missing"),
    ]
    for read in reads:
        with pytest.raises(ObjectNotFound) as info:
            read()
        assert info.value.__cause__ is not None


def test_list_dir_is_bytewise_sorted_and_only_direct_objects(store: Store) -> None:
    names = [
        "b",
        "a",
        "B",
        "a0",
        "_x",
        "00000000000000000010",
        "00000000000000000002",
        "z~",
        "A-1",
        "a.b",
    ]
    for i in (3, 7, 0, 9, 1, 5, 8, 2, 6, 4):
        store.put_if_absent(f"d/{names[i]}", names[i].encode())
    store.put_if_absent("d/sub/inner", b"nested")
    store.put_if_absent("d/.tmp-abc", b"temporary")
    store.put_if_absent("dd/other", b"sibling prefix")
    listed = store.list_dir("d")
    assert listed == sorted(names, key=lambda n: n.encode())
    assert store.list_dir("d/sub") == ["inner"]
    assert store.list_dir("dd") == ["other"]


def test_list_dir_of_a_missing_directory_is_empty(store: Store) -> None:
    assert store.list_dir("segments") == []
    store.put_if_absent("segments/1", b"x")
    assert store.list_dir("checkpoints") == []
    assert store.list_dir("segments/deeper") == []


def test_listing_is_never_cached(backend_root: BackendRoot) -> None:
    a, b = two_handles(backend_root)
    if backend_root.name in ("s3", "gcs", "azure"):
        fs_a, fs_b = a.fs, b.fs  # type: ignore[attr-defined]
        assert fs_a is not fs_b, "filesystem instances must not be shared (skip_instance_cache)"
        assert fs_a.dircache.use_listings_cache is False
    assert a.list_dir("segments") == []
    b.put_if_absent(seg(1), b"one")
    assert a.list_dir("segments") == [f"{1:020d}"]
    b.put_if_absent(seg(2), b"two")
    assert a.list_dir("segments") == [f"{1:020d}", f"{2:020d}"]
    b.delete([seg(1)])
    assert a.list_dir("segments") == [f"{2:020d}"]
    with pytest.raises(ObjectNotFound):
        a.get(seg(1))


def test_delete(store: Store) -> None:
    for name in ("a", "b", "c"):
        store.put_if_absent(f"d/{name}", name.encode())
    store.delete(["d/a", "d/missing", "d/c"])
    assert store.list_dir("d") == ["b"]
    with pytest.raises(ObjectNotFound):
        store.get("d/a")
    store.delete(["d/missing"])
    store.delete(["nodir/missing"])
    before = store.counts.deletes
    store.delete([])
    assert store.counts.deletes == before
    store.delete(iter(["d/b"]))
    assert store.list_dir("d") == []
    store.put_if_absent("d/a", b"again")  # a deleted key can be created anew
    assert store.get("d/a") == b"again"


@contextlib.contextmanager
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond so in-process check-then-write races do happen
    (with the default 5 ms interval a racy memory create still won most rounds alone)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def race(
    stores: list[Store], key: str, payloads: list[bytes]
) -> tuple[list[int], list[Any], list[bytes]]:
    """All stores put ``key`` at once; returns the winners' indexes, outcomes and payloads."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[Any] = [None] * len(stores)

    def write(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            stores[i].put_if_absent(key, payloads[i])
            outcomes[i] = "won"
        except BaseException as exc:  # checked by the caller
            outcomes[i] = exc

    threads = [
        threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in range(len(stores))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return [i for i, o in enumerate(outcomes) if o == "won"], outcomes, payloads


def test_exactly_one_of_eight_concurrent_writers_wins(backend_root: BackendRoot) -> None:
    writers = 8
    in_process = backend_root.name in ("memory", "local")
    rounds = 40 if in_process else 5
    stores = [backend_root.store() for _ in range(writers)]
    for s in stores:
        quiet(s)
    # Emulated backends serialise in the server; switching threads that often would only
    # slow the in-process moto server down.
    with frequent_thread_switches() if in_process else contextlib.nullcontext():
        outcomes_by_round = [
            race(
                stores,
                f"manifest/{r:020d}",
                [f"writer {i} round {r} {uuid.uuid4().hex}".encode() for i in range(writers)],
            )
            for r in range(rounds)
        ]
    for r, (winners, outcomes, payloads) in enumerate(outcomes_by_round):
        key = f"manifest/{r:020d}"
        assert len(winners) == 1, f"round {r}: winners {winners}, outcomes {outcomes}"
        losers = [o for i, o in enumerate(outcomes) if i not in winners]
        assert all(isinstance(o, ObjectExists) for o in losers), outcomes
        for s in stores:
            assert s.get(key) == payloads[winners[0]]
    assert stores[0].list_dir("manifest") == [f"{r:020d}" for r in range(rounds)]


def _race_in_child(root_json: str, writer: int, rounds: int, barrier: Any, results: Any) -> None:
    store = BackendRoot.from_json(root_json).store()
    for r in range(rounds):
        key = f"manifest/{r:020d}"
        payload = f"process {writer} round {r} pid {os.getpid()}".encode()
        barrier.wait(timeout=60)
        try:
            store.put_if_absent(key, payload)
            results.put((r, writer, "won", payload))
        except ObjectExists:
            results.put((r, writer, "lost", payload))
        except Exception as exc:  # reported to the parent
            results.put((r, writer, repr(exc), payload))


def test_exactly_one_of_eight_processes_wins_on_local_disk(tmp_path: Any) -> None:
    root = BackendRoot("local", str(tmp_path / "root"), {})
    writers, rounds = 8, 12
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_race_in_child, args=(root.to_json(), i, rounds, barrier, results), daemon=True
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(writers * rounds)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    store = root.store()
    for r in range(rounds):
        this_round = [o for o in outcomes if o[0] == r]
        assert sorted(o[2] for o in this_round) == ["lost"] * (writers - 1) + ["won"], this_round
        winner = next(o for o in this_round if o[2] == "won")
        assert store.get(f"manifest/{r:020d}") == winner[3]


def test_truncated_temp_file_in_a_local_directory_is_not_listed(tmp_path: Any) -> None:
    store = open_store(str(tmp_path / "root"))
    assert isinstance(store, LocalStore)
    store.put_if_absent(seg(1), b"whole segment")
    directory = tmp_path / "root" / "segments"
    # What a writer killed between write and link leaves behind.
    (directory / ".tmp-0123456789abcdef").write_bytes(b"half a seg")
    (directory / ".tmp-empty").write_bytes(b"")
    assert store.list_dir("segments") == [f"{1:020d}"]
    assert store.get(seg(1)) == b"whole segment"
    assert store.remove_temp_files("segments") == 2
    assert sorted(os.listdir(directory)) == [f"{1:020d}"]


def test_local_store_publishes_through_a_temp_file_and_leaves_none(tmp_path: Any) -> None:
    store = open_store(str(tmp_path / "root"))
    store.put_if_absent("segments/a", b"x" * 10_000)
    with pytest.raises(ObjectExists):
        store.put_if_absent("segments/a", b"y")
    assert os.listdir(tmp_path / "root" / "segments") == ["a"]


# -- error translation -------------------------------------------------------------------


def _client_error(code: str, status: int, condition: str | None = None) -> BaseException:
    exceptions = pytest.importorskip("botocore.exceptions")
    error: dict[str, str] = {"Code": code, "Message": f"injected {code}"}
    if condition is not None:
        error["Condition"] = condition
    return exceptions.ClientError(  # type: ignore[no-any-return]
        {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def s3_precondition_failed_as_einval() -> BaseException:
    """What s3fs raises for a 412 whose body omits ``Condition`` (e.g. SeaweedFS)."""
    cause = _client_error("PreconditionFailed", 412)
    exc = OSError(errno.EINVAL, "At least one of the pre-conditions you specified did not hold")
    exc.__cause__ = cause
    return exc


def test_s3_einval_with_precondition_failed_cause_is_object_exists() -> None:
    shaped = s3_precondition_failed_as_einval()
    err = translate(shaped, "put", "s3://b/k")
    assert isinstance(err, ObjectExists)
    assert err.__cause__ is shaped


def test_s3fs_own_translation_of_a_conditionless_412_is_object_exists() -> None:
    s3fs_errors = pytest.importorskip("s3fs.errors")
    raised = s3fs_errors.translate_boto_error(_client_error("PreconditionFailed", 412))
    assert isinstance(raised, OSError) and raised.errno == errno.EINVAL  # the shape we handle
    assert isinstance(translate(raised, "put", "s3://b/k"), ObjectExists)
    with_condition = s3fs_errors.translate_boto_error(
        _client_error("PreconditionFailed", 412, condition="If-None-Match")
    )
    assert isinstance(with_condition, FileExistsError)
    assert isinstance(translate(with_condition, "put", "s3://b/k"), ObjectExists)


def test_not_found_while_handling_object_exists_is_still_not_found() -> None:
    """The read-back after "exists" runs inside the handler; its own error must win."""
    try:
        try:
            raise translate(FileExistsError("k"), "put", "root/k")
        except ObjectExists:
            empty: dict[str, bytes] = {}
            try:
                empty["k"]  # how fsspec's memory filesystem finds nothing
            except KeyError as key_error:
                raise FileNotFoundError("k") from key_error
    except FileNotFoundError as exc:
        assert exc.__cause__ is not None and exc.__cause__.__context__ is not None
        err = translate(exc, "get", "root/k")
    assert type(err) is ObjectNotFound


def _gcs_http_error(code: int) -> BaseException:
    retry = pytest.importorskip("gcsfs.retry")
    return retry.HttpError({"code": code, "message": "injected"})  # type: ignore[no-any-return]


def _azure_error(code: str, status: int) -> BaseException:
    """Shaped like azure-storage-blob's: ``error_code`` is a ``StorageErrorCode`` str enum."""
    core = pytest.importorskip("azure.core.exceptions")
    models = pytest.importorskip("azure.storage.blob._shared.models")
    err = core.HttpResponseError(message=f"injected {code}")
    err.status_code = status
    try:
        err.error_code = models.StorageErrorCode(code)
    except ValueError:
        err.error_code = code
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: FileExistsError("k"), ObjectExists),
        (lambda: FileNotFoundError("k"), ObjectNotFound),
        (lambda: ConnectionResetError("reset"), TransientStorageError),
        (lambda: TimeoutError("slow"), TransientStorageError),
        (lambda: OSError(errno.ETIMEDOUT, "timed out"), TransientStorageError),
        (lambda: _client_error("SlowDown", 503), TransientStorageError),
        (lambda: _client_error("InternalError", 500), TransientStorageError),
        (lambda: _client_error("AccessDenied", 403), PermanentStorageError),
        (lambda: _gcs_http_error(503), TransientStorageError),
        (lambda: _gcs_http_error(429), TransientStorageError),
        (lambda: _gcs_http_error(403), PermanentStorageError),
        (lambda: _azure_error("ServerBusy", 503), TransientStorageError),
        (lambda: _azure_error("SomethingNew", 503), TransientStorageError),
        (lambda: _azure_error("BlobAlreadyExists", 409), ObjectExists),
        (lambda: _azure_error("AuthorizationFailure", 403), PermanentStorageError),
        (lambda: PermissionError(errno.EACCES, "denied"), PermanentStorageError),
        (lambda: ValueError("bad"), PermanentStorageError),
    ],
    ids=[
        "exists",
        "missing",
        "reset",
        "timeout",
        "etimedout",
        "s3-slowdown",
        "s3-500",
        "s3-denied",
        "gcs-503",
        "gcs-429",
        "gcs-403",
        "azure-busy",
        "azure-503",
        "azure-exists",
        "azure-denied",
        "permission",
        "other",
    ],
)
def test_translation_table(make: Callable[[], BaseException], expected: type) -> None:
    exc = make()
    err = translate(exc, "put", "somewhere/k")
    assert type(err) is expected
    assert err.__cause__ is exc


# -- faults injected under a real backend ------------------------------------------------


@pytest.fixture
def wrapped(fsspec_backend_root: BackendRoot) -> tuple[FaultyFileSystem, str]:
    inner, path = fsspec_backend_root.filesystem()
    return FaultyFileSystem(inner), path


@pytest.fixture
def faulty(wrapped: tuple[FaultyFileSystem, str]) -> FaultyFileSystem:
    return wrapped[0]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def faulty_store(wrapped: tuple[FaultyFileSystem, str], sleeps: Sleeps) -> Store:
    """A store over the fault-injecting wrapper: 4 retries, backoff recorded in ``sleeps``."""
    s = open_store(wrapped[0], path=wrapped[1], retries=4, retry_delay=0.05)
    s.sleep = sleeps
    return s


TRANSIENT: list[Callable[[], BaseException]] = [
    lambda: ConnectionResetError("injected reset"),
    lambda: TimeoutError("injected timeout"),
    lambda: _client_error("SlowDown", 503),
]


@pytest.mark.parametrize("make", TRANSIENT, ids=["reset", "timeout", "slowdown"])
def test_transient_put_faults_are_retried_and_invisible(
    faulty: FaultyFileSystem, faulty_store: Store, sleeps: Sleeps, make: Callable[[], BaseException]
) -> None:
    fault = faulty.fail("put", make, times=3)
    faulty_store.put_if_absent(seg(1), b"payload")
    assert fault.fired == 3
    assert faulty.count("put") == 4
    assert faulty_store.counts.puts == 4
    assert sleeps == [0.05, 0.1, 0.2]  # exponential backoff
    faulty.clear_faults()
    assert faulty_store.get(seg(1)) == b"payload"
    assert faulty_store.list_dir("segments") == [f"{1:020d}"]


def test_transient_get_list_delete_faults_are_retried_and_invisible(
    faulty: FaultyFileSystem, faulty_store: Store
) -> None:
    faulty_store.put_if_absent(seg(1), b"payload")
    faulty.fail("get", TimeoutError, times=2)
    assert faulty_store.get(seg(1)) == b"payload"
    assert faulty.count("get") == 3
    faulty.fail("get", ConnectionResetError, nth=1)
    assert faulty_store.get_range(seg(1), 1, 4) == b"ayl"
    assert faulty.count("get") == 5
    faulty.fail("list", ConnectionResetError, times=2)
    assert faulty_store.list_dir("segments") == [f"{1:020d}"]
    assert faulty.count("list") == 3
    faulty.fail("delete", ConnectionResetError, times=1)
    faulty_store.delete([seg(1)])
    assert faulty.count("delete") >= 2
    assert faulty_store.list_dir("segments") == []


def test_nth_fault_hits_only_the_nth_matching_request(
    faulty: FaultyFileSystem, faulty_store: Store
) -> None:
    faulty_store.retries = 0
    fault = faulty.fail("put", PermissionError, nth=3, match=lambda p: "segments/" in p)
    faulty_store.put_if_absent(seg(1), b"1")
    faulty_store.put_if_absent("manifest/1", b"m")  # does not match: not counted
    faulty_store.put_if_absent(seg(2), b"2")
    with pytest.raises(PermanentStorageError):
        faulty_store.put_if_absent(seg(3), b"3")
    faulty_store.put_if_absent(seg(4), b"4")
    assert (fault.seen, fault.fired) == (4, 1)
    assert faulty_store.list_dir("segments") == [f"{n:020d}" for n in (1, 2, 4)]


def test_persistent_transient_fault_surfaces_after_bounded_retries(
    faulty: FaultyFileSystem, faulty_store: Store, sleeps: Sleeps
) -> None:
    injected = ConnectionResetError("injected: the network is gone")
    faulty.fail("put", injected)  # every put, forever
    with pytest.raises(TransientStorageError) as info:
        faulty_store.put_if_absent(seg(1), b"payload")
    assert info.value.__cause__ is injected
    assert faulty.count("put") == faulty_store.retries + 1 == 5
    assert sleeps == [0.05, 0.1, 0.2, 0.4]
    faulty.clear_faults()
    assert faulty_store.list_dir("segments") == []  # nothing was written

    faulty.fail("get", TimeoutError)
    with pytest.raises(TransientStorageError):
        faulty_store.get(seg(1))
    assert faulty.count("get") == 5


@pytest.mark.parametrize("op", ["put", "get", "list"])
def test_permission_error_is_permanent_at_once_with_cause_kept(
    faulty: FaultyFileSystem, faulty_store: Store, sleeps: Sleeps, op: str
) -> None:
    faulty_store.put_if_absent("d/k", b"existing")
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: faulty_store.put_if_absent("d/new", b"x"),
        "get": lambda: faulty_store.get("d/k"),
        "list": lambda: faulty_store.list_dir("d"),
    }
    before = faulty.count(op)
    denied = PermissionError(errno.EACCES, "injected: access denied")
    faulty.fail(op, denied)
    with pytest.raises(PermanentStorageError) as info:
        calls[op]()
    assert info.value.__cause__ is denied
    assert faulty.count(op) == before + 1  # no retries
    assert sleeps == []


def test_lost_response_to_a_successful_put_is_our_own_write(
    faulty: FaultyFileSystem, faulty_store: Store
) -> None:
    """The ambiguous 412: the PUT landed, the response was lost, the retry sees 'exists'."""
    data = b"writer-nonce " + uuid.uuid4().bytes
    fault = faulty.lose_response("put")
    faulty_store.put_if_absent(seg(1), data)
    assert fault.fired == 1
    assert faulty.count("put") == 2  # the original and the retry that reported "exists"
    assert faulty.count("get") == 1  # the read-back that recognised our bytes
    assert faulty_store.get(seg(1)) == data


def test_lost_response_does_not_hide_a_real_loss(
    faulty: FaultyFileSystem, faulty_store: Store, fsspec_backend_root: BackendRoot
) -> None:
    other = fsspec_backend_root.store()
    other.put_if_absent(seg(1), b"the other writer's segment")
    faulty.lose_response("put")
    with pytest.raises(ObjectExists):
        faulty_store.put_if_absent(seg(1), b"ours")
    assert faulty_store.get(seg(1)) == b"the other writer's segment"


def test_s3_einval_shape_from_the_backend_is_a_loss_or_our_write(
    faulty: FaultyFileSystem, faulty_store: Store, fsspec_backend_root: BackendRoot
) -> None:
    other = fsspec_backend_root.store()
    other.put_if_absent("m/theirs", b"theirs")
    faulty.fail("put", s3_precondition_failed_as_einval, times=1)
    with pytest.raises(ObjectExists):
        faulty_store.put_if_absent("m/theirs", b"ours")

    other.put_if_absent("m/ours", b"ours")  # as if our first attempt had landed
    faulty.fail("put", s3_precondition_failed_as_einval, times=1)
    faulty_store.put_if_absent("m/ours", b"ours")
    assert faulty.count("put") == 2


def test_exists_then_vanished_is_still_a_loss(
    faulty: FaultyFileSystem, faulty_store: Store
) -> None:
    faulty.fail("put", FileExistsError, times=1)  # "exists", but nothing is there
    with pytest.raises(ObjectExists, match="vanished"):
        faulty_store.put_if_absent("m/ghost", b"x")


def test_injected_delay_is_applied_to_every_request(
    faulty: FaultyFileSystem, faulty_store: Store
) -> None:
    import time

    faulty.delay = 0.02
    start = time.monotonic()
    faulty_store.put_if_absent("d/a", b"a")
    faulty_store.get("d/a")
    faulty_store.list_dir("d")
    assert time.monotonic() - start >= 0.06
    assert (faulty.count("put"), faulty.count("get"), faulty.count("list")) == (1, 1, 1)


# -- capabilities ----------------------------------------------------------------------------


EXPECTED_CAPABILITIES = {
    # backend: (appendable, atomic_create, shared_across_processes, remote, leaves_temp_files)
    "memory": (False, True, False, False, False),
    "local": (sys.platform != "win32", True, True, False, True),
    "s3": (False, True, True, True, False),
    "gcs": (False, True, True, True, False),
    "azure": (False, True, True, True, False),
}


def test_capabilities_say_what_each_backend_can_do(store: Store, backend_root: BackendRoot) -> None:
    got = (
        store.appendable,
        store.atomic_create,
        store.shared_across_processes,
        store.remote,
        store.leaves_temp_files,
    )
    assert got == EXPECTED_CAPABILITIES[backend_root.name]
    assert store.supports_append == store.appendable  # the older name
    if not store.appendable:
        with pytest.raises(NotImplementedError):
            store.create_appendable("segments/1", b"x")
    if not store.leaves_temp_files:
        assert store.remove_temp_files("segments") == 0


def test_a_filesystem_taquba_does_not_know_makes_no_atomicity_claim() -> None:
    import fsspec

    store = open_store(FaultyFileSystem(fsspec.filesystem("memory")), path="/unknown")
    assert store.atomic_create is False
    assert store.remote is True
