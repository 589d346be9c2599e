"""Storage: the only package that imports fsspec.

:func:`open_store` turns a location (a path, a URL, or an fsspec filesystem plus a root)
into a :class:`Store`. A malformed URL (``s3:/bucket``, ``s3//bucket``, ``gs:x``, no bucket)
is a :class:`~taquba.errors.ConfigError` rather than a local directory of that name, and so
is a cloud URL whose library is not installed (the message names the ``pip`` command).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import ConfigError
from .base import DEFAULT_RETRY_BUDGET, Appender, RequestCounts, Store
from .errors import ObjectExists, ObjectNotFound
from .local import LocalStore

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

Location: TypeAlias = "str | os.PathLike[str] | AbstractFileSystem"
"""Where a queue lives: a local path, an fsspec URL, or an fsspec filesystem instance."""

_CACHELESS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}
# URL scheme -> the taquba extra that installs its library, and that library.
_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
}
_LIBRARIES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def _known_protocols() -> set[str]:
    from fsspec.registry import known_implementations

    return set(known_implementations) | set(_EXTRAS) | {"file", "memory", "local"}


def _example(protocol: str) -> str:
    """What follows ``protocol://`` in a well-formed URL, for error messages."""
    extra = _EXTRAS.get(protocol.lower())
    return "path" if extra is None else ("container/path" if extra == "azure" else "bucket/path")


def _check_location(location: str) -> None:
    """Reject what looks like a URL but is not one (it would become a local directory)."""
    if "::" in location:
        return
    scheme = _SCHEME.match(location)
    if "://" not in location:
        if scheme and len(scheme.group(1)) > 1 and scheme.group(1).lower() in _known_protocols():
            name = scheme.group(1)
            raise ConfigError(f"malformed URL {location!r}: write {name}://{_example(name)}")
        first = location.split("/", 1)[0].lower()
        if location[len(first) :].startswith("//") and first in _EXTRAS:
            raise ConfigError(
                f"malformed URL {location!r}: a ':' is missing, write {first}://{_example(first)}"
            )
        return
    protocol, rest = location.split("://", 1)
    if protocol.lower() in _EXTRAS:
        bucket = rest.split("/", 1)[0]
        if bucket in ("", ".", ".."):
            word = _example(protocol).split("/")[0]
            raise ConfigError(
                f"malformed URL {location!r}: it names no {word}, write "
                f"{protocol}://{_example(protocol)}"
            )


def _missing_extra(location: str, protocol: str, exc: BaseException) -> ConfigError:
    extra = _EXTRAS.get(protocol.lower())
    if extra is None:
        return ConfigError(f"cannot open {location!r}: {exc}")
    return ConfigError(
        f"cannot open {location!r}: {_LIBRARIES[extra]} is not installed "
        f'({exc}); install it with: pip install "taquba[{extra}]"'
    )


def _store_for(fs: Any, root: str, configured: bool, **kwargs: Any) -> Store:
    """The store class that knows ``fs``: the cloud stores count every HTTP request."""
    from .cloud import AzureStore, CloudStore, GcsStore, S3Store
    from .fsspec_store import FsspecStore

    known: tuple[tuple[str, str, type[CloudStore]], ...] = (
        ("s3fs", "S3FileSystem", S3Store),
        ("gcsfs", "GCSFileSystem", GcsStore),
        ("adlfs", "AzureBlobFileSystem", AzureStore),
    )
    for module, name, store_class in known:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(fs, cls) and not fs.asynchronous:
            bucket = root.strip("/").split("/", 1)[0]
            if not bucket:
                raise ConfigError(f"a {module} root must name a bucket, got path={root!r}")
            return store_class(fs, root, configured=configured, **kwargs)
    return FsspecStore(fs, root, **kwargs)


def open_store(
    location: Any,
    path: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    retries: int = 6,
    retry_delay: float = 0.05,
    retry_budget: float = DEFAULT_RETRY_BUDGET,
) -> Store:
    """Resolve ``location`` to a :class:`Store` rooted at the queue's directory.

    ``retry_budget`` bounds each storage call, retries included (see :class:`Store`). When
    the store creates a cloud filesystem itself, the library's own retries are turned off
    and its request timeouts fit the budget, unless ``storage_options`` sets them.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if (
        not isinstance(retry_budget, (int, float))
        or isinstance(retry_budget, bool)
        or not math.isfinite(retry_budget)
        or retry_budget <= 0
    ):
        raise ConfigError(
            f"retry_budget must be a positive number of seconds, got {retry_budget!r}"
        )
    kwargs: dict[str, Any] = {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_budget": float(retry_budget),
    }
    if isinstance(location, fsspec.AbstractFileSystem):
        if storage_options:
            raise ConfigError("storage_options cannot be combined with a filesystem instance")
        root = path if path is not None else ""
        if not isinstance(root, str):
            raise ConfigError(f"path must be a str, got {root!r}")
        if type(location) is LocalFileSystem:
            return LocalStore(root or os.getcwd(), **kwargs)
        return _store_for(location, root, False, **kwargs)
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location:
        raise ConfigError(
            f"location must be a non-empty path, URL or fsspec filesystem, got {location!r}"
        )
    _check_location(location)
    if path is not None:
        if not isinstance(path, str):
            raise ConfigError(f"path must be a str, got {path!r}")
        location = location.rstrip("/") + "/" + path.lstrip("/")
    if "://" not in location and "::" not in location:
        if storage_options:
            raise ConfigError("storage_options are not used for a local path")
        return LocalStore(location, **kwargs)
    protocol = location.split("://", 1)[0]
    if protocol == "file":
        return LocalStore(location.split("://", 1)[1], **kwargs)
    opts = dict(storage_options or {})
    configured = protocol in _CACHELESS
    if configured:
        from .cloud import configure

        opts.setdefault("use_listings_cache", False)
        opts.setdefault("skip_instance_cache", True)
        try:
            opts = configure(protocol, opts, float(retry_budget))
        except ImportError as exc:
            raise _missing_extra(location, protocol, exc) from exc
    try:
        fs, root = fsspec.core.url_to_fs(location, **opts)
    except ImportError as exc:
        raise _missing_extra(location, protocol, exc) from exc
    except ValueError as exc:
        raise ConfigError(f"cannot open {location!r}: {exc}") from exc
    if isinstance(fs, LocalFileSystem):
        return LocalStore(root, **kwargs)
    if configured and hasattr(fs, "_call_s3"):
        fs.retries = 1  # s3fs's own retry loop around botocore's: taquba's is the only one
    return _store_for(fs, root, configured, **kwargs)


__all__ = [
    "Appender",
    "LocalStore",
    "Location",
    "ObjectExists",
    "ObjectNotFound",
    "RequestCounts",
    "Store",
    "open_store",
]
