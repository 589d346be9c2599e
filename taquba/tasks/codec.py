"""The task job format: what a task's job carries, and how its result is kept.

Rules this module keeps:

- A task job's payload is one JSON object (orjson): ``{"v": 1, "task": name, "args": [...],
  "kwargs": {...}}``. ``v`` is the format version; a worker refuses (dead-letters) a
  payload of a version it does not know rather than guessing.
- Arguments and results are JSON and nothing else: a value JSON cannot carry (a
  ``datetime``, a dataclass, a set, bytes, an object, a dict with non-str keys, an int
  beyond 64 bits) raises :class:`~taquba.InvalidArgument` naming the argument, before
  anything is enqueued. Tuples travel as lists.
- A result is the JSON of the returned value, stored in the queue's KV namespace under
  :func:`result_key` of the job id; it is at most ``MAX_KV_VALUE_SIZE`` bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from ..config import MAX_KV_VALUE_SIZE
from ..errors import InvalidArgument

__all__ = [
    "PAYLOAD_VERSION",
    "RESULT_KEY_PREFIX",
    "BadTaskPayload",
    "TaskCall",
    "decode_call",
    "decode_result",
    "encode_call",
    "encode_result",
    "result_key",
]

PAYLOAD_VERSION = 1
RESULT_KEY_PREFIX = b"taquba.tasks/result/"

# datetimes and dataclasses would arrive as strings and dicts: refuse them instead.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class BadTaskPayload(ValueError):
    """A job's payload is not a task call this worker can read (the message says why)."""


class TaskCall(NamedTuple):
    """A decoded task job: the task's registered name and the arguments to call it with."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]


def _json(value: object, what: str) -> bytes:
    try:
        return orjson.dumps(value, option=_STRICT)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidArgument(
            f"{what} cannot be carried as JSON ({type(value).__name__}): {exc}"
        ) from None


def encode_call(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The payload of a job that calls ``task(*args, **kwargs)``.

    Raises:
        InvalidArgument: an argument JSON cannot carry; the message names it.
    """
    try:
        return orjson.dumps(
            {"v": PAYLOAD_VERSION, "task": task, "args": list(args), "kwargs": dict(kwargs)},
            option=_STRICT,
        )
    except (orjson.JSONEncodeError, TypeError):
        pass
    # Find the culprit, so the message names it.
    for i, value in enumerate(args):
        _json(value, f"argument {i} of task {task!r}")
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise InvalidArgument(
                f"keyword argument names of task {task!r} must be str, got {key!r}"
            )
        _json(value, f"keyword argument {key!r} of task {task!r}")
    raise InvalidArgument(f"the arguments of task {task!r} cannot be carried as JSON")


def decode_call(payload: bytes) -> TaskCall:
    """The task call in ``payload``.

    Raises:
        BadTaskPayload: not JSON, not an object of this format, or an unknown version.
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadTaskPayload(f"not a task payload (not JSON: {exc})") from None
    if type(data) is not dict:
        raise BadTaskPayload(f"not a task payload (a JSON {type(data).__name__}, not an object)")
    version = data.get("v")
    if version != PAYLOAD_VERSION:
        raise BadTaskPayload(
            f"task payload version {version!r} is not supported "
            f"(this worker reads version {PAYLOAD_VERSION})"
        )
    task, args, kwargs = data.get("task"), data.get("args"), data.get("kwargs")
    if not isinstance(task, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadTaskPayload(
            "not a task payload (needs a str 'task', a list 'args' and an object 'kwargs')"
        )
    return TaskCall(task, args, kwargs)


def encode_result(task: str, value: object) -> bytes:
    """The stored form of ``value``, the return value of ``task``.

    Raises:
        InvalidArgument: the value cannot be carried as JSON, or its JSON is larger than
            ``MAX_KV_VALUE_SIZE``; the message names the task and the problem.
    """
    data = _json(value, f"the result of task {task!r}")
    if len(data) > MAX_KV_VALUE_SIZE:
        raise InvalidArgument(
            f"the result of task {task!r} is {len(data)} bytes as JSON, "
            f"more than MAX_KV_VALUE_SIZE ({MAX_KV_VALUE_SIZE}); store "
            "large results elsewhere and return a reference"
        )
    return data


def decode_result(data: bytes) -> Any:
    """The value stored by :func:`encode_result`."""
    return orjson.loads(data)


def result_key(job_id: str) -> bytes:
    """The KV key under which the result of job ``job_id`` is kept."""
    return RESULT_KEY_PREFIX + job_id.encode("ascii")
