"""The request counts of a cloud store are the requests the server received.

A counting reverse proxy (``httpcount.CountingProxy``) sits between the store and the real
emulator (moto, fake-gcs-server, Azurite); every request that reaches the emulator is
classified as a put, get, list or delete (or anything else, e.g. the HEAD s3fs used to send
before each GET) and compared with ``store.counts``, for single calls, paged listings,
chunked reads, a read-back after a lost race, and a whole ``Queue`` open, work, close and
reopen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from support.backends import BackendRoot, Emulator
from support.httpcount import CountingProxy, Request

from taquba import Queue
from taquba.storage import ObjectExists, ObjectNotFound, RequestCounts, Store

CLOUDS = ("s3", "gcs", "azure")


def classify(kind: str, request: Request) -> str:
    """What one HTTP request that reached the emulator was, as the store counts it."""
    method, params = request.method, request.params
    if kind == "s3":
        if method == "PUT":
            return "puts"
        if method == "GET":
            return "lists" if "list-type" in params else "gets"
        if method == "POST" and "delete" in params:
            return "deletes"
    elif kind == "gcs":
        if method == "POST" and request.path.startswith("/upload/"):
            return "puts"
        if method == "GET":
            return "lists" if request.path.endswith("/o") else "gets"
        if method == "DELETE":
            return "deletes"
    else:
        if method == "PUT":
            return "puts"
        if method == "GET":
            return "lists" if params.get("comp") == ["list"] else "gets"
        if method == "DELETE":
            return "deletes"
    return f"other {method} {request.path}?{request.query}"


def received(kind: str, proxy: CountingProxy) -> Counter[str]:
    return Counter(classify(kind, r) for r in proxy.requests)


def counted(delta: RequestCounts) -> Counter[str]:
    return Counter(
        {k: getattr(delta, k) for k in ("puts", "gets", "lists", "deletes") if getattr(delta, k)}
    )


def through(emulator: Emulator, proxy: CountingProxy) -> BackendRoot:
    """A fresh root on ``emulator`` whose requests go through ``proxy``."""
    root = emulator.root()
    opts = dict(root.storage_options)
    if root.name == "azure":
        opts["connection_string"] = opts["connection_string"].replace(
            f":{emulator.port}/", f":{proxy.port}/"
        )
    else:
        opts["endpoint_url"] = proxy.url
    return BackendRoot(root.name, root.location, opts)


@pytest.fixture(params=CLOUDS)
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[str, BackendRoot, CountingProxy]]:
    kind = request.param
    emulator: Emulator = request.getfixturevalue(f"{kind}_emulator")
    with CountingProxy(emulator.port) as proxy:
        yield kind, through(emulator, proxy), proxy


class Step:
    """Run one store call; then what the store counted must be what the server got."""

    def __init__(self, kind: str, store: Store, proxy: CountingProxy) -> None:
        self.kind, self.store, self.proxy = kind, store, proxy

    def __call__(self, what: str, call: Any, expect: dict[str, int] | None = None) -> Any:
        self.proxy.clear()
        before = self.store.counts.copy()
        try:
            result = call()
        except (ObjectExists, ObjectNotFound) as exc:
            result = exc
        got = received(self.kind, self.proxy)
        mine = counted(self.store.counts - before)
        assert mine == got, f"{what}: the store counted {dict(mine)}, the server got {dict(got)}"
        if expect is not None:
            assert got == Counter(expect), f"{what}: {dict(got)}"
        return result


def test_every_store_call_counts_what_the_server_received(
    proxied: tuple[str, BackendRoot, CountingProxy],
) -> None:
    kind, root, proxy = proxied
    store = root.store()
    step = Step(kind, store, proxy)
    one = {"gets": 1}
    step("list of nothing", lambda: store.list_dir("segments"), {"lists": 1})
    step("put", lambda: store.put_if_absent("segments/1", b"one"), {"puts": 1})
    step("get", lambda: store.get("segments/1"), one)  # no HEAD before it
    step("range", lambda: store.get_range("segments/1", 1, 3), one)
    step("range past the end", lambda: store.get_range("segments/1", 10, 20), one)
    missing = step("get of a missing object", lambda: store.get("segments/9"), one)
    assert isinstance(missing, ObjectNotFound)
    lost = step(
        "put that loses",
        lambda: store.put_if_absent("segments/1", b"other"),
        {"puts": 1, "gets": 1},
    )
    assert isinstance(lost, ObjectExists)
    step(
        "put that was ours",
        lambda: store.put_if_absent("segments/1", b"one"),
        {"puts": 1, "gets": 1},
    )
    step("list of one", lambda: store.list_dir("segments"), {"lists": 1})
    step("delete of one", lambda: store.delete(["segments/1"]))
    step("delete of missing ones", lambda: store.delete(["segments/7", "nodir/8"]))
    assert step("list after deletes", lambda: store.list_dir("segments")) == []


def test_paged_listings_and_chunked_reads_count_every_request(
    proxied: tuple[str, BackendRoot, CountingProxy],
) -> None:
    kind, root, proxy = proxied
    store: Any = root.store()
    step = Step(kind, store, proxy)
    for i in range(7):
        store.put_if_absent(f"d/{i:03d}", bytes([65 + i]) * 10)
    store.list_page_size = 3  # 7 objects: three pages
    names = step("paged list", lambda: store.list_dir("d"), {"lists": 3})
    assert names == [f"{i:03d}" for i in range(7)]
    store.first_get_bytes, store.range_bytes = 4, 8  # 10 bytes: ranges of 4 and 8
    assert step("chunked get", lambda: store.get("d/000"), {"gets": 2}) == b"A" * 10
    store.first_get_bytes = 5  # 10 bytes: 5, then 8 that come back short
    assert step("chunked get, exact", lambda: store.get("d/001"), {"gets": 2}) == b"B" * 10
    assert step("split range", lambda: store.get_range("d/002", 0, 20), {"gets": 2}) == b"C" * 10
    step("delete of many", lambda: store.delete([f"d/{i:03d}" for i in range(7)]))
    assert store.list_dir("d") == []


def test_queue_open_work_and_reopen_count_what_the_server_received(
    proxied: tuple[str, BackendRoot, CountingProxy],
) -> None:
    kind, root, proxy = proxied
    proxy.clear()
    q = Queue.open(root.location, storage_options=root.storage_options)
    try:
        for i in range(5):
            q.enqueue("jobs", b"job %d" % i)
        for _ in range(3):
            claim = q.claim("jobs")
            assert claim is not None
            q.ack(claim)
    finally:
        q.close()
    first = q.store.counts.copy()  # type: ignore[attr-defined]
    assert counted(first) == received(kind, proxy)

    proxy.clear()
    q2 = Queue.open(root.location, storage_options=root.storage_options)
    try:
        reopen = q2.store.counts.copy()  # type: ignore[attr-defined]
        assert counted(reopen) == received(kind, proxy)
        assert not any(k.startswith("other") for k in received(kind, proxy))
        assert q2.stats("jobs").pending == 2
    finally:
        q2.close()
