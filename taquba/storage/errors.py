"""The one place where backend exceptions become taquba storage errors.

Mapping is most-specific-first: "already exists" and "not found" are answers, not failures;
then known transient shapes (connection resets, timeouts, throttling, 5xx); everything else
is permanent. The original exception is always kept as ``__cause__``.
"""

from __future__ import annotations

import enum
import errno

from ..errors import PermanentStorageError, StorageError, TransientStorageError


class ObjectExists(StorageError):
    """put-if-absent found the key already taken (by someone else)."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


_TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.EIO,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
}
_TRANSIENT_NAMES = {
    # botocore / aiobotocore
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ResponseStreamingError",
    "IncompleteReadError",
    # aiohttp
    "ClientConnectionError",
    "ClientOSError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ServerTimeoutError",
    "ClientConnectorError",
    # azure-core
    "ServiceRequestError",
    "ServiceResponseError",
    "ServiceRequestTimeoutError",
    "ServiceResponseTimeoutError",
    # google / gcsfs
    "RetryError",
    "TransportError",
    # fsspec: a call on its event loop ran out of time (asyncio.TimeoutError before 3.11)
    "FSTimeoutError",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
    "ServerBusy",
    "OperationTimedOut",
}
_EXISTS_CODES = {"PreconditionFailed", "ConditionNotMet", "BlobAlreadyExists", "412"}
_RANGE_CODES = {"InvalidRange", "RequestedRangeNotSatisfiable", "416"}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it. An implicit context that is one of our own errors is not
    followed: a "not found" raised while handling ObjectExists (the read-back after a lost
    conditional PUT) must not inherit the "exists" meaning."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        if cur.__cause__ is not None:
            cur = cur.__cause__
        elif cur.__suppress_context__ or isinstance(cur.__context__, StorageError):
            cur = None
        else:
            cur = cur.__context__
    return seen


def _codes(exc: BaseException) -> list[str]:
    """Every error code and HTTP status the exception carries (botocore, Azure, gcsfs)."""
    codes: list[str] = []
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            codes.append(str(code))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status:
            codes.append(str(status))
    for attr in ("error_code", "code", "status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, enum.Enum):  # azure-storage's StorageErrorCode is a str enum
            value = value.value
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            codes.append(str(value))
    return codes


def codes_in_chain(exc: BaseException) -> list[str]:
    """Every error code and HTTP status carried by ``exc`` or what caused it."""
    return [code for e in _chain(exc) for code in _codes(e)]


def is_transient_code(code: str) -> bool:
    """An error code or HTTP status that retrying may get past (throttling, 5xx, ...)."""
    if code in _TRANSIENT_CODES:
        return True
    return code.isdigit() and (int(code) >= 500 or int(code) in (408, 429))


def is_exists(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, FileExistsError):
            return True
        if any(c in _EXISTS_CODES or c.endswith("AlreadyExists") for c in _codes(e)):
            return True
    return False


def is_range_not_satisfiable(exc: BaseException) -> bool:
    """A ranged read starting at or past the end of the object (HTTP 416)."""
    for e in _chain(exc):
        if isinstance(e, (FileNotFoundError, FileExistsError, PermissionError)):
            return False
        if any(c in _RANGE_CODES for c in _codes(e)):
            return True
    return False


def is_transient(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, TransientStorageError):
            return True
        if isinstance(e, (FileNotFoundError, FileExistsError, PermissionError)):
            return False
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if any(is_transient_code(code) for code in _codes(e)):
            return True
    return False


def translate(exc: BaseException, op: str, what: str) -> StorageError:
    """Map a backend exception raised by ``op`` on ``what`` to a ``StorageError``."""
    if isinstance(exc, StorageError):
        return exc
    if is_exists(exc):
        err: StorageError = ObjectExists(f"{op} {what}: already exists")
    elif any(isinstance(e, FileNotFoundError) for e in _chain(exc)[:1]):
        err = ObjectNotFound(f"{op} {what}: not found")
    elif is_transient(exc):
        err = TransientStorageError(f"{op} {what} failed (transient): {exc!r}")
    else:
        err = PermanentStorageError(f"{op} {what} failed: {exc!r}")
    err.__cause__ = exc
    return err
