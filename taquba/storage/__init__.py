"""Storage: the only package that imports fsspec.

:func:`open_store` turns a location (a path, a URL, or an fsspec filesystem plus a root)
into a :class:`Store`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import Appender, RequestCounts, Store
from .errors import ObjectExists, ObjectNotFound
from .local import LocalStore

_CACHELESS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


def open_store(location: Any, path: str | None = None, *,
               storage_options: Mapping[str, Any] | None = None,
               retries: int = 6, retry_delay: float = 0.05) -> Store:
    """Resolve ``location`` to a :class:`Store` rooted at the queue's directory."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from .fsspec_store import FsspecStore

    kwargs: dict[str, Any] = {"retries": retries, "retry_delay": retry_delay}
    if isinstance(location, fsspec.AbstractFileSystem):
        if storage_options:
            raise ConfigError("storage_options cannot be combined with a filesystem instance")
        root = path if path is not None else ""
        if not isinstance(root, str):
            raise ConfigError(f"path must be a str, got {root!r}")
        if type(location) is LocalFileSystem:
            return LocalStore(root or os.getcwd(), **kwargs)
        return FsspecStore(location, root, **kwargs)
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location:
        raise ConfigError(f"location must be a non-empty path, URL or fsspec filesystem, got {location!r}")
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
    if protocol in _CACHELESS:
        opts.setdefault("use_listings_cache", False)
        opts.setdefault("skip_instance_cache", True)
    try:
        fs, root = fsspec.core.url_to_fs(location, **opts)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"cannot open {location!r}: {exc}") from exc
    if isinstance(fs, LocalFileSystem):
        return LocalStore(root, **kwargs)
    return FsspecStore(fs, root, **kwargs)


__all__ = ["Appender", "LocalStore", "ObjectExists", "ObjectNotFound", "RequestCounts", "Store", "open_store"]
