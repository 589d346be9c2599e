"""Django integration: tasks configured by a ``TAQUBA`` setting, found in every app.

In ``settings.py``::

    INSTALLED_APPS = [..., "taquba.contrib.django"]
    TAQUBA = {"LOCATION": "s3://bucket/queue", "CONCURRENCY": 8}

In any installed app's ``tasks.py`` (imported when Django starts)::

    from taquba.contrib.django import tasks

    @tasks.task(queue="email")
    def send(address: str) -> None: ...

Views call ``send.delay(...)``; web processes never own the queue, they submit through a
``Producer`` (and ``TaskResult.get`` reads through a ``QueueReader``). ``@tasks.periodic``
works the same way: the worker keeps the schedules. One process runs ``python manage.py taquba_worker``: it owns the queue, runs
every task, and stops on SIGTERM or SIGINT once the jobs in flight are finished.

The ``TAQUBA`` keys (only ``LOCATION`` is required, unless ``IMMEDIATE`` is true):

- ``LOCATION``: the queue's root, a path or an fsspec URL.
- ``STORAGE_OPTIONS``: a dict passed to fsspec.
- ``OPTIONS``: the :class:`~taquba.OpenOptions` the worker opens the queue with.
- ``IMMEDIATE``: run ``delay`` inline (for tests), opening no queue.
- ``DEFAULT_QUEUE``: the queue of a task that names none (``"default"``).
- ``RESULT_RETENTION``: how long results are kept (seconds or a ``timedelta``; ``None``:
  until deleted).
- ``CONCURRENCY``, ``QUEUES``, ``POLL_INTERVAL``: the worker command's defaults.

A missing or malformed setting raises :class:`TaqubaSettingsError` (a ``ConfigError`` and
an ``ImproperlyConfigured``) naming the key, the first time the tasks are used.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ...config import OpenOptions, check_queue_name, to_seconds
from ...errors import ConfigError, TaqubaError
from ...tasks import DEFAULT_QUEUE, DEFAULT_RESULT_RETENTION, Tasks

__all__ = ["TaqubaSettingsError", "WorkerSettings", "get_tasks", "tasks", "worker_settings"]

_KEYS = frozenset(
    {
        "LOCATION",
        "STORAGE_OPTIONS",
        "OPTIONS",
        "IMMEDIATE",
        "DEFAULT_QUEUE",
        "RESULT_RETENTION",
        "CONCURRENCY",
        "QUEUES",
        "POLL_INTERVAL",
    }
)

_lock = threading.Lock()
_tasks: Tasks | None = None


class TaqubaSettingsError(ConfigError, ImproperlyConfigured):  # type: ignore[misc]
    """The ``TAQUBA`` setting is missing or malformed; the message names the key."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The worker command's defaults from ``TAQUBA``."""

    concurrency: int
    queues: tuple[str, ...] | None
    poll_interval: float


def _settings() -> Mapping[str, Any]:
    from django.conf import settings

    value = getattr(settings, "TAQUBA", None)
    if value is None:
        raise TaqubaSettingsError(
            "settings.TAQUBA is not set: add TAQUBA = {'LOCATION': ...} to the settings"
        )
    if not isinstance(value, Mapping):
        raise TaqubaSettingsError(f"settings.TAQUBA must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise TaqubaSettingsError(
            f"settings.TAQUBA has unknown key(s) {unknown}; the keys are {sorted(_KEYS)}"
        )
    return value


def _build(conf: Mapping[str, Any]) -> Tasks:
    immediate = conf.get("IMMEDIATE", False)
    if not isinstance(immediate, bool):
        raise TaqubaSettingsError(f"TAQUBA['IMMEDIATE'] must be a bool, got {immediate!r}")
    location = conf.get("LOCATION")
    if location is None and not immediate:
        raise TaqubaSettingsError(
            "TAQUBA['LOCATION'] is required: where the queue lives "
            "(a path, or a URL such as s3://bucket/prefix)"
        )
    if location is not None and not isinstance(location, str):
        location = str(location)  # a pathlib.Path
    storage_options = conf.get("STORAGE_OPTIONS") or {}
    if not isinstance(storage_options, Mapping):
        raise TaqubaSettingsError(
            f"TAQUBA['STORAGE_OPTIONS'] must be a dict, got {type(storage_options).__name__}"
        )
    options = conf.get("OPTIONS")
    if options is not None and not isinstance(options, OpenOptions):
        raise TaqubaSettingsError(
            f"TAQUBA['OPTIONS'] must be a taquba.OpenOptions, got {type(options).__name__}"
        )
    try:
        return Tasks(
            location,
            storage_options=storage_options,
            options=options,
            immediate=immediate,
            default_queue=conf.get("DEFAULT_QUEUE", DEFAULT_QUEUE),
            result_retention=conf.get("RESULT_RETENTION", DEFAULT_RESULT_RETENTION),
        )
    except TaqubaError as exc:
        raise TaqubaSettingsError(f"settings.TAQUBA: {exc}") from None


def get_tasks() -> Tasks:
    """The project's :class:`~taquba.tasks.Tasks`, made from ``settings.TAQUBA`` on first use.

    Raises:
        TaqubaSettingsError: the setting is missing or malformed.
    """
    global _tasks
    with _lock:
        if _tasks is None:
            _tasks = _build(_settings())
        return _tasks


def worker_settings() -> WorkerSettings:
    """``CONCURRENCY``, ``QUEUES`` and ``POLL_INTERVAL`` from ``settings.TAQUBA``, checked."""
    conf = _settings()
    concurrency = conf.get("CONCURRENCY", 4)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise TaqubaSettingsError(f"TAQUBA['CONCURRENCY'] must be an int >= 1, got {concurrency!r}")
    queues = conf.get("QUEUES")
    if queues is not None:
        if isinstance(queues, str) or not all(isinstance(q, str) for q in queues):
            raise TaqubaSettingsError(
                f"TAQUBA['QUEUES'] must be a list of queue names, got {queues!r}"
            )
        try:
            queues = tuple(check_queue_name(q) for q in queues)
        except TaqubaError as exc:
            raise TaqubaSettingsError(f"TAQUBA['QUEUES']: {exc}") from None
    try:
        poll = to_seconds(
            conf.get("POLL_INTERVAL", 1.0),
            "TAQUBA['POLL_INTERVAL']",
            allow_zero=False,
            error=TaqubaSettingsError,
        )
    except TaqubaError as exc:
        raise TaqubaSettingsError(str(exc)) from None
    return WorkerSettings(concurrency, queues, poll)


class _LazyTasks:
    """``tasks``: the project's ``Tasks``, made from the settings when first touched (so
    importing this module needs no configured settings)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(get_tasks(), name)

    def __repr__(self) -> str:
        return f"<lazy {get_tasks()!r}>" if _tasks is not None else "<lazy Tasks from TAQUBA>"


tasks: Tasks = _LazyTasks()  # type: ignore[assignment]
