"""Checks and conversions of per-call arguments that the queue's methods share.

Each raises :class:`~taquba.errors.InvalidArgument` (or a subclass) naming the argument
and the bad value, before anything changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .config import MAX_KV_KEY_SIZE, MAX_KV_VALUE_SIZE, MAX_PAYLOAD_SIZE, to_bytes, to_seconds
from .errors import ConfigError, InvalidArgument, KvValueTooLarge, exception_text

MAX_ERROR_CHARS = 16 * 1024
MAX_BATCH_JOBS = 100_000


def error_text(error: object) -> str:
    """How ``error`` (a str or an exception) is stored as a job's ``last_error``."""
    if isinstance(error, BaseException):
        text = exception_text(error)
    elif isinstance(error, str):
        text = error
    else:
        raise InvalidArgument(f"error must be a str or an exception, got {type(error).__name__}")
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "... [truncated]"
    return storable(text)


def storable(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot hold) written as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def payload_bytes(value: object, name: str) -> bytes:
    """A payload as bytes, no larger than ``MAX_PAYLOAD_SIZE``."""
    data = value if type(value) is bytes else to_bytes(value, name)
    if len(data) > MAX_PAYLOAD_SIZE:
        raise InvalidArgument(f"payload is {len(data)} bytes; the limit is {MAX_PAYLOAD_SIZE}")
    return data


def batch_items(payloads: object) -> list[object]:
    """The payloads of an ``enqueue_batch`` as a list (each still to be checked)."""
    if isinstance(payloads, (bytes, bytearray, memoryview, str)):
        raise InvalidArgument(
            "payloads must be an iterable of bytes payloads, not a single payload"
        )
    if not isinstance(payloads, Iterable):
        raise InvalidArgument(
            f"payloads must be an iterable of bytes, got {type(payloads).__name__}"
        )
    items = list(payloads)
    if len(items) > MAX_BATCH_JOBS:
        raise InvalidArgument(f"a batch holds at most {MAX_BATCH_JOBS} jobs, got {len(items)}")
    return items


def wait_seconds(value: object, name: str) -> float:
    """A duration to wait: seconds or a ``timedelta``, or ``math.inf`` for no limit."""
    if isinstance(value, float) and value == math.inf:
        return math.inf
    return to_seconds(value, name)


def clock_seconds(value: object) -> float:
    """A clock's reading that is not a plain float, as epoch seconds (``ConfigError`` if none)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    text = repr(value)
    if len(text) > 60:
        text = text[:40] + "..."
    raise ConfigError(
        f"OpenOptions.clock returned {text} ({type(value).__name__}), not epoch "
        "seconds as a finite float or int"
    )


def kv_key(key: object) -> bytes:
    """A KV key as non-empty bytes of at most ``MAX_KV_KEY_SIZE``."""
    data = to_bytes(key, "KV key")
    if not data:
        raise InvalidArgument("KV key must not be empty")
    if len(data) > MAX_KV_KEY_SIZE:
        raise InvalidArgument(f"KV key is {len(data)} bytes; the limit is {MAX_KV_KEY_SIZE}")
    return data


def kv_writes(writes: object) -> list[tuple[bytes, bytes]]:
    """``enqueue_with_kv``'s writes as (key, value) pairs, each checked."""
    if not isinstance(writes, Mapping):
        raise InvalidArgument(
            f"kv_writes must be a mapping of bytes to bytes, got {type(writes).__name__}"
        )
    out: list[tuple[bytes, bytes]] = []
    for k, v in writes.items():
        key = kv_key(k)
        value = to_bytes(v, "KV value")
        if len(value) > MAX_KV_VALUE_SIZE:
            raise KvValueTooLarge(
                f"KV value for key {key[:64]!r} is {len(value)} bytes; the "
                f"limit is MAX_KV_VALUE_SIZE = {MAX_KV_VALUE_SIZE}"
            )
        out.append((key, value))
    return out
