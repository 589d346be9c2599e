"""Options and constants of the public API, validated at construction.

Every option class is a frozen, slotted, keyword-only dataclass. A bad value raises
:class:`~taquba.errors.ConfigError` (for options) or :class:`~taquba.errors.InvalidArgument`
(for per-call arguments) with a message naming the field and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict, cast

from .errors import ConfigError, InvalidArgument

PRIORITY_HIGH = 100
PRIORITY_NORMAL = 1000
PRIORITY_LOW = 10000
MAX_PRIORITY = 2**32 - 1
MAX_KV_VALUE_SIZE = 262144
MAX_KV_KEY_SIZE = 1024
MAX_QUEUE_NAME_BYTES = 255
MAX_JOB_ID_CHARS = 128
MAX_HEADER_BYTES = 65536
MAX_PAYLOAD_SIZE = 64 * 1024 * 1024

Buffer = bytes | bytearray | memoryview
"""A payload, key or value: ``bytes``, or a ``bytearray`` / ``memoryview`` copied on the call."""
Duration = float | timedelta
"""A duration: seconds (an ``int`` or ``float``) or a ``timedelta``."""
PointInTime = float | datetime
"""A point in time: epoch seconds (an ``int`` or ``float``) or an aware ``datetime``."""

_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _show(value: object) -> str:
    """``repr(value)``, shortened: a message names a bad value without pasting 400 digits."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _finite_float(value: int | float) -> float | None:
    """``value`` as a float, or None when it is infinite, NaN or too large for a float."""
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond ~1.8e308
        return None
    return seconds if math.isfinite(seconds) else None


def to_seconds(
    value: object, name: str, *, allow_zero: bool = True, error: type[Exception] = InvalidArgument
) -> float:
    """Convert a duration (seconds or ``timedelta``) to finite, non-negative float seconds."""
    seconds: float | None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _finite_float(value)
    else:
        raise error(f"{name} must be seconds (int/float) or a timedelta, got {_show(value)}")
    if seconds is None:
        raise error(f"{name} must be a finite duration, got {_show(value)}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise error(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {_show(value)}")
    return seconds


def to_epoch(value: object, name: str) -> float:
    """Convert a point in time (epoch seconds or an aware ``datetime``) to epoch seconds."""
    if isinstance(value, datetime):
        try:
            aware = value.tzinfo is not None and value.utcoffset() is not None
            seconds = value.timestamp() if aware else None
        except (ValueError, OverflowError, TypeError) as exc:  # a tzinfo or date out of range
            raise InvalidArgument(
                f"{name} cannot be converted to epoch seconds: {value!r} ({exc})"
            ) from None
        if seconds is None:
            raise InvalidArgument(f"{name} must be an aware datetime (with tzinfo), got {value!r}")
        return seconds
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        finite = _finite_float(value)
        if finite is None or finite < 0:
            raise InvalidArgument(f"{name} must be finite epoch seconds >= 0, got {_show(value)}")
        return finite
    raise InvalidArgument(f"{name} must be epoch seconds or an aware datetime, got {_show(value)}")


def check_priority(
    value: object, name: str = "priority", error: type[Exception] = InvalidArgument
) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{name} must be an int in 0..{MAX_PRIORITY}, got {_show(value)}")
    if not 0 <= value <= MAX_PRIORITY:
        raise error(f"{name} must be in 0..{MAX_PRIORITY}, got {_show(value)}")
    return value


def check_max_attempts(
    value: object, name: str = "max_attempts", error: type[Exception] = InvalidArgument
) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > 2**31:
        raise error(f"{name} must be an int in 1..{2**31}, got {_show(value)}")
    return value


def check_queue_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"queue name must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise InvalidArgument("queue name must not be empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"queue name is not valid UTF-8: {name!r}") from exc
    if size > MAX_QUEUE_NAME_BYTES:
        raise InvalidArgument(
            f"queue name is {size} UTF-8 bytes, the limit is {MAX_QUEUE_NAME_BYTES}: {name[:40]!r}..."
        )
    return name


def check_job_id(job_id: object, name: str = "job_id") -> str:
    if not isinstance(job_id, str):
        raise InvalidArgument(f"{name} must be a str, got {type(job_id).__name__}: {job_id!r}")
    if not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidArgument(
            f"{name} must be 1-{MAX_JOB_ID_CHARS} characters of [A-Za-z0-9_-], got {job_id[:140]!r}"
        )
    return job_id


def to_bytes(value: object, name: str) -> bytes:
    """A private copy of a buffer: later changes to a bytearray or memoryview do not reach it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        try:
            return bytes(value)
        except ValueError:  # the memoryview was released
            raise InvalidArgument(
                f"{name} is a released memoryview; pass the data itself or a live view of it"
            ) from None
    raise InvalidArgument(
        f"{name} must be bytes, bytearray or memoryview, got {type(value).__name__}"
    )


def check_headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise InvalidArgument(
            f"headers must be a mapping of str to str, got {type(headers).__name__}"
        )
    out: dict[str, str] = {}
    size = 0
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"headers must map str to str, got {k!r}: {v!r}")
        try:
            size += len(k.encode()) + len(v.encode())
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"headers must be valid Unicode text (no lone surrogates), got {k!r}: {v!r}"
            ) from None
        out[k] = v
    if size > MAX_HEADER_BYTES:
        raise InvalidArgument(f"headers are {size} bytes, the limit is {MAX_HEADER_BYTES}")
    return out


_DEFAULT_DEAD_RETENTION = 7 * 24 * 3600.0


class EnqueueKwargs(TypedDict, total=False):
    """The keyword options of ``enqueue`` (``Queue.enqueue``, ``Producer.enqueue``): the
    fields of :class:`EnqueueOptions`, each optional."""

    priority: int
    run_at: PointInTime
    delay: Duration
    dedup_key: str
    max_attempts: int
    headers: Mapping[str, str]
    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """Per-queue behaviour, set for a queue by :attr:`OpenOptions.queue_configs` (or for
    every other queue by :attr:`OpenOptions.default_queue_config`).

    Durations are seconds or a ``timedelta``; after construction every duration field holds
    float seconds. A bad value raises :class:`~taquba.errors.ConfigError` naming the field.

    Attributes:
        max_attempts: how many times a job may be claimed before a failure makes it dead
            (1..2**31; default 3). ``EnqueueOptions.max_attempts`` overrides it per job.
        lease: how long a claim holds its job before the reaper puts it back (> 0; default
            30 s). ``claim(lease=...)`` overrides it per claim, and ``renew_lease`` extends it.
        default_priority: the priority of a job enqueued without one (0..2**32-1, lower
            runs first; default ``PRIORITY_NORMAL``).
        retry_backoff_base: the delay before the retry after the first failure (>= 0;
            default 1 s); it doubles with every further failure. 0 retries at once.
        retry_backoff_max: the longest such delay (>= 0; default 300 s).
        keep_done: how long an acked job stays visible as ``DONE`` (``get_job``,
            ``wait_for_completion``); None (the default) forgets it at the ack.
        dead_retention: how long a dead job is kept before it is deleted (default 7 days);
            None keeps dead jobs until they are requeued.
    """

    max_attempts: int = 3
    lease: Duration = 30.0
    default_priority: int = PRIORITY_NORMAL
    retry_backoff_base: Duration = 1.0
    retry_backoff_max: Duration = 300.0
    keep_done: Duration | None = None
    dead_retention: Duration | None = _DEFAULT_DEAD_RETENTION

    def __post_init__(self) -> None:
        check_max_attempts(self.max_attempts, "QueueConfig.max_attempts", ConfigError)
        set_ = object.__setattr__
        set_(
            self,
            "lease",
            to_seconds(self.lease, "QueueConfig.lease", allow_zero=False, error=ConfigError),
        )
        check_priority(self.default_priority, "QueueConfig.default_priority", ConfigError)
        set_(
            self,
            "retry_backoff_base",
            to_seconds(
                self.retry_backoff_base, "QueueConfig.retry_backoff_base", error=ConfigError
            ),
        )
        set_(
            self,
            "retry_backoff_max",
            to_seconds(self.retry_backoff_max, "QueueConfig.retry_backoff_max", error=ConfigError),
        )
        if self.keep_done is not None:
            set_(
                self,
                "keep_done",
                to_seconds(self.keep_done, "QueueConfig.keep_done", error=ConfigError),
            )
        if self.dead_retention is not None:
            set_(
                self,
                "dead_retention",
                to_seconds(self.dead_retention, "QueueConfig.dead_retention", error=ConfigError),
            )

    def backoff(self, failed_attempts: int) -> float:
        """Delay before the retry that follows the ``failed_attempts``-th failure."""
        base = cast(float, self.retry_backoff_base)
        if base == 0 or failed_attempts < 1:
            return 0.0
        exponent = min(failed_attempts - 1, 1023)
        return float(min(base * 2.0**exponent, cast(float, self.retry_backoff_max)))


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenOptions:
    """Options for :meth:`taquba.Queue.open`.

    Durations are seconds or a ``timedelta``; after construction every duration field holds
    float seconds. A bad value raises :class:`~taquba.errors.ConfigError` naming the field.

    Attributes:
        reaper_interval: how often the ``taquba-reaper`` thread puts back jobs whose lease
            expired and sweeps retention (:meth:`~taquba.Queue.reap_now`; > 0, default 5 s).
        scheduler_interval: how often the ``taquba-scheduler`` thread makes due scheduled
            jobs pending (:meth:`~taquba.Queue.promote_scheduled_now`; > 0, default 1 s).
            A claim also promotes the due jobs of its queue first.
        default_queue_config: the :class:`QueueConfig` of every queue not named in
            ``queue_configs``.
        queue_configs: a :class:`QueueConfig` per queue name.
        clock: a zero-argument callable returning epoch seconds, in place of
            ``time.time`` (tests pass a manual clock; default None).
        max_batch_bytes: the largest segment the committer writes in one PUT (default
            8 MiB); a larger group of records is split.
        checkpoint_min_bytes, checkpoint_ratio: a checkpoint (a snapshot of the live state,
            after which older objects are deleted) is written once what a reopen would read
            holds more superseded bytes (records of finished jobs, replaced KV values, the
            parts of the last snapshot that no longer hold) than ``max(checkpoint_min_bytes,
            checkpoint_ratio * live state)``. So a reopen reads at most about ``1 + ratio``
            times the live state plus the floor, and a backlog that is still live is never
            copied again; a larger ratio writes fewer bytes (fewer checkpoints), a smaller
            one reopens faster. Defaults 1 MiB and 4.0.
        checkpoint_max_segments: past this many segments since the last checkpoint, a
            checkpoint is also written once that log outgrows it, which bounds the number
            of objects a reopen reads (default 256).
        segment_max_bytes: on local disk, commits are appended to the current segment file
            (one ``fdatasync`` each) until it holds this many bytes (default 8 MiB); 0
            writes every commit as a file of its own (two fsyncs). Object stores always
            write one object per commit.
        storage_retries, storage_retry_delay: how many times a transient storage error is
            retried (default 6), and the delay before the first retry (default 0.05 s; it
            doubles with each retry, up to 2 s).
        background_threads: whether ``Queue.open`` starts the reaper, scheduler, fence-check
            and intake threads (default True). Without them, call the ``*_now`` methods.
        storage_retry_budget: the most time one storage call may take, retries included
            (plus one second per 8 MiB it moves; default 10 s); an unreachable backend then
            raises ``TransientStorageError`` within it. For a cloud URL the library's own
            retries are turned off and its connect/read timeouts fit this budget, unless
            ``storage_options`` sets them.
        fence_check_interval: how often an open queue asks the storage, with one small
            request, whether another process has opened the same root since (and so taken
            it over). Once it has, every call on this handle raises ``FencedError``, reads
            included, and the worker loops stop and re-raise it. A handle finds out at its
            next write anyway; the check is for handles that are idle or only read. The
            default, 30 s, costs an idle queue 3600 / 30 = 120 requests an hour; None turns
            the check off. Without ``background_threads``, call
            :meth:`~taquba.Queue.check_fence_now`.
        inbox_interval: intake of submissions from :class:`~taquba.Producer` processes
            (see ``taquba.inbox``). On object stores, the longest wait between two looks at
            the inbox, reached by doubling from ``inbox_busy_interval`` while nothing
            arrives; so an idle queue lists its inbox at most ``3600 / inbox_interval``
            times an hour (360 at the default 10 s) and a submission to an idle queue waits
            at most this long. None turns intake off. On local disk and memory the inbox is
            looked at every 5 ms (a directory listing costs next to nothing), so
            submissions arrive almost at once.
        inbox_busy_interval: the wait between looks at the inbox while submissions flow
            (object stores; default 0.25 s).
        inbox_retention: a producer's high-water mark is forgotten once it has submitted
            nothing for this long (default 7 days), which bounds the state.
    """

    reaper_interval: Duration = 5.0
    scheduler_interval: Duration = 1.0
    default_queue_config: QueueConfig = field(default_factory=QueueConfig)
    queue_configs: Mapping[str, QueueConfig] = field(default_factory=dict)
    clock: Callable[[], float] | None = None
    max_batch_bytes: int = 8 * 1024 * 1024
    checkpoint_min_bytes: int = 512 * 1024
    checkpoint_ratio: float = 4.0
    checkpoint_max_segments: int = 256
    segment_max_bytes: int = 8 * 1024 * 1024
    storage_retries: int = 6
    storage_retry_delay: Duration = 0.05
    background_threads: bool = True
    storage_retry_budget: Duration = 10.0
    fence_check_interval: Duration | None = 30.0
    inbox_interval: Duration | None = 10.0
    inbox_busy_interval: Duration = 0.25
    inbox_retention: Duration = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.inbox_interval is not None:
            set_(
                self,
                "inbox_interval",
                to_seconds(
                    self.inbox_interval,
                    "OpenOptions.inbox_interval",
                    allow_zero=False,
                    error=ConfigError,
                ),
            )
        set_(
            self,
            "inbox_busy_interval",
            to_seconds(
                self.inbox_busy_interval,
                "OpenOptions.inbox_busy_interval",
                allow_zero=False,
                error=ConfigError,
            ),
        )
        set_(
            self,
            "inbox_retention",
            to_seconds(
                self.inbox_retention,
                "OpenOptions.inbox_retention",
                allow_zero=False,
                error=ConfigError,
            ),
        )
        set_(
            self,
            "reaper_interval",
            to_seconds(
                self.reaper_interval,
                "OpenOptions.reaper_interval",
                allow_zero=False,
                error=ConfigError,
            ),
        )
        set_(
            self,
            "scheduler_interval",
            to_seconds(
                self.scheduler_interval,
                "OpenOptions.scheduler_interval",
                allow_zero=False,
                error=ConfigError,
            ),
        )
        if not isinstance(self.default_queue_config, QueueConfig):
            raise ConfigError(
                f"OpenOptions.default_queue_config must be a QueueConfig, got {self.default_queue_config!r}"
            )
        if not isinstance(self.queue_configs, Mapping):
            raise ConfigError(
                f"OpenOptions.queue_configs must be a mapping, got {self.queue_configs!r}"
            )
        for name, cfg in self.queue_configs.items():
            try:
                check_queue_name(name)
            except InvalidArgument as exc:
                raise ConfigError(f"OpenOptions.queue_configs: {exc}") from None
            if not isinstance(cfg, QueueConfig):
                raise ConfigError(
                    f"OpenOptions.queue_configs[{name!r}] must be a QueueConfig, got {cfg!r}"
                )
        set_(self, "queue_configs", dict(self.queue_configs))
        if self.clock is not None and not callable(self.clock):
            raise ConfigError(
                f"OpenOptions.clock must be a zero-argument callable, got {self.clock!r}"
            )
        for name in ("max_batch_bytes", "checkpoint_min_bytes", "checkpoint_max_segments"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"OpenOptions.{name} must be a positive int, got {_show(v)}")
        v = self.segment_max_bytes
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"OpenOptions.segment_max_bytes must be an int >= 0, got {_show(v)}")
        r = self.checkpoint_ratio
        if (
            not isinstance(r, (int, float))
            or isinstance(r, bool)
            or _finite_float(r) is None
            or r <= 0
        ):
            raise ConfigError(
                f"OpenOptions.checkpoint_ratio must be a positive finite number, got {_show(r)}"
            )
        v = self.storage_retries
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"OpenOptions.storage_retries must be an int >= 0, got {_show(v)}")
        set_(
            self,
            "storage_retry_delay",
            to_seconds(
                self.storage_retry_delay, "OpenOptions.storage_retry_delay", error=ConfigError
            ),
        )
        set_(
            self,
            "storage_retry_budget",
            to_seconds(
                self.storage_retry_budget,
                "OpenOptions.storage_retry_budget",
                allow_zero=False,
                error=ConfigError,
            ),
        )
        if self.fence_check_interval is not None:
            set_(
                self,
                "fence_check_interval",
                to_seconds(
                    self.fence_check_interval,
                    "OpenOptions.fence_check_interval",
                    allow_zero=False,
                    error=ConfigError,
                ),
            )
        if not isinstance(self.background_threads, bool):
            raise ConfigError(
                f"OpenOptions.background_threads must be a bool, got {self.background_threads!r}"
            )

    def config_for(self, queue: str) -> QueueConfig:
        """The :class:`QueueConfig` of ``queue``: its entry in ``queue_configs``, or
        ``default_queue_config``."""
        return self.queue_configs.get(queue, self.default_queue_config)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueOptions:
    """Per-call options of an enqueue (:meth:`taquba.Queue.enqueue_with`; ``enqueue`` takes
    the same fields as keywords, :class:`EnqueueKwargs`). ``None`` inherits the queue's
    :class:`QueueConfig`. A bad value raises :class:`~taquba.errors.InvalidArgument`.

    Attributes:
        priority: 0..2**32-1, lower runs first (``PRIORITY_HIGH``, ``PRIORITY_NORMAL``,
            ``PRIORITY_LOW``); jobs of one priority run in enqueue order.
        run_at: when the job becomes pending: epoch seconds or an aware ``datetime``
            (stored as epoch seconds). A time not in the future makes it pending at once.
        delay: seconds (or a ``timedelta``) from now until the job becomes pending; not
            together with ``run_at``.
        dedup_key: a non-empty str of at most 1024 UTF-8 bytes. While a pending or
            scheduled job of the queue holds the key, an enqueue with it creates nothing and
            returns that job's id; the key is released when its job is first claimed or is
            cancelled.
        max_attempts: overrides ``QueueConfig.max_attempts`` for this job (1..2**31).
        headers: str to str metadata stored with the job (at most 64 KiB in all), handed
            to the worker as ``claim.headers``.
        job_id: the job's id instead of a generated one: 1-128 characters of
            ``[A-Za-z0-9_-]``; an id already in use raises ``InvalidArgument``.
    """

    priority: int | None = None
    run_at: PointInTime | None = None
    delay: Duration | None = None
    dedup_key: str | None = None
    max_attempts: int | None = None
    headers: Mapping[str, str] | None = None
    job_id: str | None = None

    def is_plain(self) -> bool:
        """Whether these options ask for nothing beyond the queue's defaults and a
        caller-given priority or attempt limit: no schedule, dedup key, headers or id."""
        return (
            self.run_at is None
            and not self.delay
            and self.dedup_key is None
            and not self.headers
            and self.job_id is None
        )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.priority is not None:
            check_priority(self.priority, "EnqueueOptions.priority")
        if self.run_at is not None and self.delay is not None:
            raise InvalidArgument("EnqueueOptions: run_at and delay are mutually exclusive")
        if self.run_at is not None:
            set_(self, "run_at", to_epoch(self.run_at, "EnqueueOptions.run_at"))
        if self.delay is not None:
            set_(self, "delay", to_seconds(self.delay, "EnqueueOptions.delay"))
        if self.dedup_key is not None:
            if not isinstance(self.dedup_key, str) or not self.dedup_key:
                raise InvalidArgument(
                    f"EnqueueOptions.dedup_key must be a non-empty str, got {self.dedup_key!r}"
                )
            if len(self.dedup_key.encode("utf-8", "surrogatepass")) > 1024:
                raise InvalidArgument("EnqueueOptions.dedup_key is longer than 1024 bytes")
        if self.max_attempts is not None:
            check_max_attempts(self.max_attempts, "EnqueueOptions.max_attempts")
        if self.headers is not None:
            set_(self, "headers", check_headers(self.headers))
        if self.job_id is not None:
            check_job_id(self.job_id, "EnqueueOptions.job_id")
