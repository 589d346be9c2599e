"""The exception hierarchy of taquba.

Every error the library raises on purpose is a :class:`TaqubaError`. Errors coming from a
storage backend are translated in exactly one place (``taquba.storage``) and keep the
original exception as ``__cause__``.
"""

from __future__ import annotations


class TaqubaError(Exception):
    """Root of every error raised by taquba."""


class ConfigError(TaqubaError, ValueError):
    """An option or configuration value is invalid."""


class InvalidArgument(TaqubaError, ValueError):
    """An argument to a queue call is invalid. Nothing was changed."""


class KvValueTooLarge(InvalidArgument):
    """A KV value is larger than ``MAX_KV_VALUE_SIZE``."""


class JobNotFound(TaqubaError, LookupError):
    """The job does not exist (or is not in the state the call needs)."""


class ClaimLost(TaqubaError):
    """The claim is no longer current: its lease expired, or the job was settled or cancelled."""


class QueueClosed(TaqubaError):
    """The queue handle has been closed."""


class QueueBroken(TaqubaError):
    """A record could not be made durable; the handle must be reopened.

    Everything reported durable before the failure is safe; the failed calls may or may
    not have been persisted.
    """


class FencedError(QueueBroken):
    """Another process opened the same root and took over as the writer."""


class StorageError(TaqubaError):
    """A storage backend failed. ``__cause__`` holds the backend's own exception."""


class TransientStorageError(StorageError):
    """A storage failure that may succeed when retried (timeouts, throttling, 5xx)."""


class PermanentStorageError(StorageError):
    """A storage failure that retrying will not fix (permissions, missing bucket, ...)."""


class CorruptionError(StorageError):
    """A stored object failed its checksum or could not be decoded."""


def exception_text(exc: BaseException) -> str:
    """How a failure is stored as ``last_error``: ``"Type: message"`` (or just ``"Type"``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "ClaimLost",
    "ConfigError",
    "CorruptionError",
    "FencedError",
    "InvalidArgument",
    "JobNotFound",
    "KvValueTooLarge",
    "PermanentStorageError",
    "QueueBroken",
    "QueueClosed",
    "StorageError",
    "TaqubaError",
    "TransientStorageError",
]
