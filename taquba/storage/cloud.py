"""Stores for S3 (s3fs), GCS (gcsfs) and Azure Blob (adlfs) that count every HTTP request.

fsspec's generic calls send more than they seem to: s3fs's ``cat_file`` asks for the size
(a HEAD) before a whole-object GET, ``ls`` of an empty prefix lists its parent too, adlfs's
``rm`` checks every blob first. These stores send exactly one request per counted request
instead:

- put-if-absent: one conditional PUT (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``
  in one multipart upload, Azure ``If-None-Match: *``; Azure blobs past the SDK's single-put
  size are staged in blocks, each block counted);
- read: ranged GETs of at most ``range_bytes``; a whole object is read from offset 0 in
  ranges of 8 MiB, then twice as much each time, until a GET comes back short, so an object
  under 8 MiB (a manifest, a segment) costs one GET;
- list: one request per page of the listing API (1,000 keys on S3 and GCS, 5,000 on Azure);
- delete: S3 one ``DeleteObjects`` per 1,000 keys; GCS and Azure one DELETE per key.

Retries inside the libraries are not visible here. When the store creates the filesystem
(``open_store`` with a URL) it turns off what can be turned off (:func:`configure`), so
taquba's retry loop is the only one and every attempt is counted; gcsfs always retries
5xx, 429 and connection errors on its own (not counted), within the store's time limit.

A bucket or container that does not exist is a :class:`PermanentStorageError` naming it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Mapping
from typing import Any

from ..errors import PermanentStorageError, TransientStorageError
from .errors import codes_in_chain, is_range_not_satisfiable, is_transient_code
from .fsspec_store import FsspecStore

_MISSING_CONTAINER_CODES = {"NoSuchBucket", "ContainerNotFound"}
_S3_DELETE_BATCH = 1000
_DELETE_CONCURRENCY = 8


def timeouts(budget: float) -> tuple[float, float]:
    """(connect, read) timeouts of one request for a retry budget: a quarter of it to
    connect (at most 5 s) and half of it without a byte (at most 20 s)."""
    return min(max(budget / 4, 0.1), 5.0), min(max(budget / 2, 0.1), 20.0)


def configure(protocol: str, options: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """Storage options for a filesystem the store creates: the library's own retries off
    and request timeouts that fit ``budget``, except where ``options`` says otherwise."""
    opts = dict(options)
    connect, read = timeouts(budget)
    if protocol in ("s3", "s3a"):
        config = dict(opts.get("config_kwargs") or {})
        config.setdefault("connect_timeout", connect)
        config.setdefault("read_timeout", read)
        config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
        opts["config_kwargs"] = config
    elif protocol in ("gs", "gcs"):
        if "requests_timeout" not in opts:
            import aiohttp

            opts["requests_timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read
            )
    elif protocol in ("az", "abfs", "abfss"):
        opts.setdefault("connection_timeout", connect)
        opts.setdefault("read_timeout", read)
    return opts


class CloudStore(FsspecStore):
    """Shared by the three object stores: bucket handling, whole reads, the time limit."""

    atomic_create = True
    container_word = "bucket"
    range_bytes = 64 << 20
    first_get_bytes = 8 << 20
    list_page_size = 1000

    def __init__(self, fs: Any, root: str, *, configured: bool = False, **kwargs: Any) -> None:
        super().__init__(fs, root, **kwargs)
        self.configured = configured
        self.bucket, _, self.prefix = self.root.lstrip("/").partition("/")

    def _key(self, key: str) -> str:
        """The object name of ``key`` inside the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing_container(self, exc: BaseException | None = None) -> PermanentStorageError:
        err = PermanentStorageError(
            f"{self.container_word} {self.bucket!r} does not exist ({self.description}); "
            f"create it first, or check the name in the URL"
        )
        err.__cause__ = exc
        return err

    def _check_container(self, exc: BaseException) -> None:
        if _MISSING_CONTAINER_CODES & set(codes_in_chain(exc)):
            raise self._missing_container(exc) from exc

    def _raw_get(self, key: str) -> bytes:
        parts: list[bytes] = []
        offset, size = 0, self.first_get_bytes
        while True:
            part = self._raw_get_range(key, offset, offset + size)
            parts.append(part)
            offset += len(part)
            if len(part) < size:
                return b"".join(parts)
            size = min(size * 2, self.range_bytes)

    def _raw_get_range(self, key: str, start: int, end: int) -> bytes:
        parts: list[bytes] = []
        for lo in range(start, end, self.range_bytes):
            hi = min(lo + self.range_bytes, end)
            self._count(gets=1)
            try:
                part = self._get_once(key, lo, hi)
            except Exception as exc:
                self._check_container(exc)
                if is_range_not_satisfiable(exc):
                    part = b""
                else:
                    raise
            self._count(bytes_read=len(part))
            parts.append(part)
            if len(part) < hi - lo:
                break
        return b"".join(parts)

    def _get_once(self, key: str, start: int, end: int) -> bytes:
        return bytes(
            self._run(
                self.fs._cat_file, self._path(key), start=start, end=end, transfer=end - start
            )
        )


class S3Store(CloudStore):
    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self._count(puts=1, bytes_written=len(data))
        try:
            # One PutObject whatever the size (a single PUT takes up to 5 GiB).
            self._run(
                self.fs._pipe_file,
                self._path(key),
                data,
                mode="create",
                chunksize=max(len(data) + 1, 5 << 20),
                transfer=len(data),
            )
        except FileNotFoundError as exc:
            raise self._missing_container(exc) from exc
        except Exception as exc:
            self._check_container(exc)
            raise

    def _raw_list(self, directory: str) -> list[str]:
        prefix = self._key(directory) + "/"
        names: list[str] = []
        token: str | None = None
        while True:
            self._count(lists=1)
            kw: dict[str, Any] = {"ContinuationToken": token} if token else {}
            try:
                page = self._run(
                    self.fs._call_s3,
                    "list_objects_v2",
                    Bucket=self.bucket,
                    Prefix=prefix,
                    Delimiter="/",
                    MaxKeys=self.list_page_size,
                    **kw,
                )
            except FileNotFoundError as exc:  # a listing finds nothing, it never fails so
                raise self._missing_container(exc) from exc
            except Exception as exc:
                self._check_container(exc)
                raise
            names.extend(_names(prefix, (o["Key"] for o in page.get("Contents", ()))))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return names

    def _raw_delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), _S3_DELETE_BATCH):
            batch = keys[i : i + _S3_DELETE_BATCH]
            self._count(deletes=1)
            objects = [{"Key": self._key(k)} for k in batch]
            try:
                out = self._run(
                    self.fs._call_s3,
                    "delete_objects",
                    Bucket=self.bucket,
                    Delete={"Objects": objects, "Quiet": True},
                )
            except Exception as exc:
                self._check_container(exc)
                raise
            failed = [e for e in out.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if failed:
                text = "; ".join(f"{e.get('Key')}: {e.get('Code')}" for e in failed[:5])
                kind = (
                    TransientStorageError
                    if any(is_transient_code(str(e.get("Code"))) for e in failed)
                    else PermanentStorageError
                )
                raise kind(f"delete {self.description}: {len(failed)} objects failed: {text}")


class GcsStore(CloudStore):
    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self._count(puts=1, bytes_written=len(data))
        try:
            # A chunk size past the data keeps gcsfs on its one-request multipart upload.
            self._run(
                self.fs._pipe_file,
                self._path(key),
                data,
                mode="create",
                chunksize=len(data) + 1,
                transfer=len(data),
            )
        except FileNotFoundError as exc:  # 404 on an upload: no such bucket
            raise self._missing_container(exc) from exc

    def _raw_list(self, directory: str) -> list[str]:
        prefix = self._key(directory) + "/"
        names: list[str] = []
        token: str | None = None
        while True:
            self._count(lists=1)
            try:
                page = self._run(
                    self.fs._call,
                    "GET",
                    "b/{}/o",
                    self.bucket,
                    delimiter="/",
                    prefix=prefix,
                    maxResults=self.list_page_size,
                    pageToken=token,
                    json_out=True,
                )
            except FileNotFoundError as exc:  # a listing finds nothing, it never 404s
                raise self._missing_container(exc) from exc
            names.extend(_names(prefix, (o["name"] for o in page.get("items", ()))))
            token = page.get("nextPageToken")
            if not token:
                return names

    def _raw_delete(self, keys: list[str]) -> None:
        async def delete_one(key: str) -> None:
            try:
                await self.fs._call("DELETE", "b/{}/o/{}", self.bucket, self._key(key))
            except FileNotFoundError:
                pass

        self._count(deletes=len(keys))
        self._run(_gather_bounded, [delete_one(k) for k in keys])


class AzureStore(CloudStore):
    container_word = "container"
    range_bytes = 32 << 20  # the SDK's single-GET size: one request per range
    list_page_size = 5000

    def _options(self) -> dict[str, Any]:
        """Per-request options: the adlfs timeouts, and no SDK retries when configured."""
        opts = dict(getattr(self.fs, "_timeout_kwargs", {}))
        if self.configured:
            opts["retry_total"] = 0
        return opts

    def _container(self) -> Any:
        return self.fs.service_client.get_container_client(self.bucket)

    def _puts_for(self, size: int) -> int:
        config = getattr(self.fs.service_client, "_config", None)
        single = int(getattr(config, "max_single_put_size", 64 << 20))
        block = int(getattr(config, "max_block_size", 4 << 20))
        return 1 if size <= single else -(-size // block) + 1

    def _raw_put_if_absent(self, key: str, data: bytes) -> None:
        self._count(puts=self._puts_for(len(data)), bytes_written=len(data))
        try:
            self._run(
                self._container().upload_blob,
                self._key(key),
                data,
                overwrite=False,
                transfer=len(data),
                **self._options(),
            )
        except Exception as exc:
            self._check_container(exc)
            raise

    def _get_once(self, key: str, start: int, end: int) -> bytes:
        async def download() -> bytes:
            blob = self._container().get_blob_client(self._key(key))
            stream = await blob.download_blob(offset=start, length=end - start, **self._options())
            return bytes(await stream.readall())

        try:
            return bytes(self._run(download, transfer=end - start))
        except Exception as exc:
            self._check_container(exc)
            if "BlobNotFound" in codes_in_chain(exc):
                raise FileNotFoundError(errno.ENOENT, "blob not found", key) from exc
            raise

    def _raw_list(self, directory: str) -> list[str]:
        prefix = self._key(directory) + "/"
        names: list[str] = []

        async def walk() -> None:
            pages = (
                self._container()
                .walk_blobs(
                    name_starts_with=prefix,
                    delimiter="/",
                    results_per_page=self.list_page_size,
                    **self._options(),
                )
                .by_page()
            )
            self._count(lists=1)
            async for page in pages:
                names.extend(_names(prefix, [b.name async for b in page]))
                if pages.continuation_token:
                    self._count(lists=1)

        try:
            self._run(walk)
        except Exception as exc:
            self._check_container(exc)
            raise
        return names

    def _raw_delete(self, keys: list[str]) -> None:
        container = self._container()
        options = self._options()

        async def delete_one(key: str) -> None:
            try:
                await container.delete_blob(self._key(key), **options)
            except Exception as exc:
                if "BlobNotFound" not in codes_in_chain(exc):
                    raise

        self._count(deletes=len(keys))
        try:
            self._run(_gather_bounded, [delete_one(k) for k in keys])
        except Exception as exc:
            self._check_container(exc)
            raise


def _names(prefix: str, keys: Any) -> list[str]:
    """The object names directly under ``prefix``: no subdirectory markers, no hidden
    (temporary) names."""
    out = []
    for key in keys:
        name = str(key)[len(prefix) :]
        if name and "/" not in name and not name.startswith("."):
            out.append(name)
    return out


async def _gather_bounded(coros: list[Any]) -> None:
    """Await ``coros``, at most a few at a time; the first failure is raised."""
    gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

    async def one(coro: Any) -> None:
        async with gate:
            await coro

    await asyncio.gather(*(one(c) for c in coros))
