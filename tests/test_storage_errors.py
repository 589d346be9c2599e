"""Errors a user can act on: a missing bucket, a malformed URL, a missing extra.

The missing bucket runs against the real emulators; the missing extra is simulated in a
child process whose ``sys.modules`` maps the library to ``None`` (so importing it fails).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.backends import BUCKET, REPO, BackendRoot, Emulator

import taquba
from taquba import ConfigError, PermanentStorageError, Queue, TransientStorageError
from taquba.storage import open_store

CLOUDS = ("s3", "gcs", "azure")


def test_storage_errors_are_exported_from_the_package() -> None:
    assert taquba.PermanentStorageError is PermanentStorageError
    assert taquba.TransientStorageError is TransientStorageError
    assert {"PermanentStorageError", "TransientStorageError"} <= set(taquba.__all__)


# -- a bucket or container that does not exist ---------------------------------------------


@pytest.fixture(params=CLOUDS)
def missing_bucket(request: pytest.FixtureRequest) -> BackendRoot:
    emulator: Emulator = request.getfixturevalue(f"{request.param}_emulator")
    root = emulator.root()
    return BackendRoot(
        root.name, root.location.replace(BUCKET, "no-such-bucket-here", 1), root.storage_options
    )


def test_opening_a_queue_in_a_missing_bucket_says_so(missing_bucket: BackendRoot) -> None:
    word = "container" if missing_bucket.name == "azure" else "bucket"
    with pytest.raises(
        PermanentStorageError, match=f"{word} 'no-such-bucket-here' does not exist"
    ) as info:
        Queue.open(missing_bucket.location, storage_options=missing_bucket.storage_options)
    assert info.value.__cause__ is not None  # the backend's own error is kept


@pytest.mark.parametrize("op", ["list", "put"])
def test_store_calls_in_a_missing_bucket_say_so_without_retrying(
    missing_bucket: BackendRoot, op: str
) -> None:
    store = missing_bucket.store()
    sleeps: list[float] = []
    store.sleep = sleeps.append
    with pytest.raises(PermanentStorageError, match="'no-such-bucket-here' does not exist"):
        if op == "list":
            store.list_dir("manifest")
        else:
            store.put_if_absent("manifest/00000000000000000001", b"x")
    assert sleeps == []  # permanent: not retried
    assert store.counts.total() == 1


# -- malformed locations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "hint"),
    [
        ("s3:/bucket/x", "write s3://bucket/path"),
        ("s3:bucket/x", "write s3://bucket/path"),
        ("s3//bucket/x", "':' is missing, write s3://bucket/path"),
        ("gs:/x", "write gs://bucket/path"),
        ("gs//x", "':' is missing"),
        ("az:x", "write az://container/path"),
        ("abfs:/c/x", "write abfs://container/path"),
        ("memory:x", "write memory://path"),
        ("file:/tmp/x", "write file://path"),
        ("s3://", "names no bucket"),
        ("s3:///x", "names no bucket"),
        ("gs:///x", "names no bucket"),
        ("az:///x", "names no container"),
        ("gs://./x", "names no bucket"),
    ],
)
def test_a_malformed_url_is_rejected_and_creates_nothing(
    location: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="malformed URL") as info:
        Queue.open(location)
    assert hint in str(info.value)
    assert repr(location) in str(info.value)
    with pytest.raises(ConfigError):
        open_store(location)
    assert list(tmp_path.iterdir()) == []  # no local directory of that name


@pytest.mark.parametrize("location", ["s3", "s3/x", "./s3//x", "data", "C:/data", "a:b"])
def test_local_paths_that_merely_look_alike_still_work(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(location)
    store.put_if_absent("k", b"v")
    assert store.get("k") == b"v"


def test_an_fsspec_filesystem_without_a_bucket_is_rejected() -> None:
    import s3fs

    fs = s3fs.S3FileSystem(
        key="k", secret="s", endpoint_url="http://127.0.0.1:1", skip_instance_cache=True
    )
    with pytest.raises(ConfigError, match="must name a bucket"):
        open_store(fs, path="")


# -- a missing extra -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("library", "url", "extra"),
    [
        ("s3fs", "s3://bucket/q", "s3"),
        ("gcsfs", "gs://bucket/q", "gcs"),
        ("adlfs", "az://container/q", "azure"),
    ],
)
def test_a_missing_library_names_the_pip_command(library: str, url: str, extra: str) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules[{library!r}] = None  # "import {library}" now fails as if not installed
        from taquba import ConfigError, Queue
        try:
            Queue.open({url!r}, storage_options={{}})
        except ConfigError as exc:
            print(exc)
        else:
            print("no error")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout
    assert f'pip install "taquba[{extra}]"' in out, out
    assert f"{library} is not installed" in out, out
    assert repr(url) in out, out
