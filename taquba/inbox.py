"""The inbox: how processes that do not own a queue submit work to the one that does.

A :class:`~taquba.Producer` writes each group commit of submissions as ONE immutable
object, created with put-if-absent::

    inbox/<producer-id>-<seq:020d>

``producer-id`` is 16 random hex digits drawn at ``Producer.open`` (and again in a forked
child); ``seq`` counts up from 0 within it. Keys are flat so that one LIST of ``inbox/``
shows every submission, on every backend.

The object uses the log's framing (``taquba.log.format``): a header with magic ``TQIN``,
the format version, and the fields ``producer``, ``seq``, ``nonce`` and ``count``; then
``count`` frames, each CRC-checked. The frames are a sequence of submissions, each an
orjson metadata frame (an object with an ``op``) followed, for an enqueue, by one raw
payload frame per job (payloads are never base64'd).

Rules the owner keeps at intake (``Queue.intake_now``):

- The objects of one producer are applied in ``seq`` order, each as ONE event that also
  records the producer's high-water mark, so applying a submission and remembering that
  it was applied commit together.
- An object at or below the producer's mark is a leftover of an earlier intake whose
  delete did not happen: it is deleted, never applied again.
- An object is deleted only after the event that applied it is durable.
- A producer's mark is dropped once it has had no object for the retention period and
  none is listed: its objects are immutable and all deleted by then, so nothing can be
  applied twice, and a producer that submits again simply continues its ``seq``.

Together: every submission becomes its job (or its cancel / requeue) exactly once,
through owner crashes at any point, takeovers and repeated intake.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import CorruptionError
from .log.format import decode, encode

INBOX_DIR = "inbox"
MAGIC_INBOX = b"TQIN"
_KEY_RE = re.compile(r"([0-9a-f]{16})-([0-9]{20})")


def object_name(producer: str, seq: int) -> str:
    """The name (under ``inbox/``) of producer ``producer``'s object number ``seq``."""
    return f"{producer}-{seq:020d}"


def parse_name(name: str) -> tuple[str, int] | None:
    """``(producer, seq)`` of an inbox object name, or None for anything else."""
    m = _KEY_RE.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m else None


@dataclass(frozen=True, slots=True)
class SubmitEnqueue:
    """Jobs to create in ``queue``: one (a plain ``enqueue``) or many (``enqueue_batch``,
    all or nothing). ``None`` fields inherit the owner's queue config at intake."""

    queue: str
    job_ids: tuple[str, ...]
    payloads: tuple[bytes, ...]
    priority: int | None = None
    run_at: float | None = None
    dedup_key: str | None = None
    max_attempts: int | None = None
    headers: dict[str, str] | None = None
    chosen_id: bool = False  # the caller picked the id (EnqueueOptions.job_id)


@dataclass(frozen=True, slots=True)
class SubmitCancel:
    """Apply ``Queue.cancel(job_id)``."""

    job_id: str


@dataclass(frozen=True, slots=True)
class SubmitRequeueDead:
    """Apply ``Queue.requeue_dead_job(job_id)`` (a no-op unless the job is dead)."""

    job_id: str


Submission = SubmitEnqueue | SubmitCancel | SubmitRequeueDead


def submission_frames(sub: Submission) -> list[bytes]:
    """The frames that carry ``sub`` inside an inbox object."""
    if isinstance(sub, SubmitEnqueue):
        meta: dict[str, Any] = {"op": "enqueue", "queue": sub.queue, "ids": list(sub.job_ids)}
        for name in ("priority", "run_at", "dedup_key", "max_attempts", "headers"):
            value = getattr(sub, name)
            if value is not None:
                meta[name] = value
        if sub.chosen_id:
            meta["chosen_id"] = True
        return [orjson.dumps(meta), *sub.payloads]
    if isinstance(sub, SubmitCancel):
        return [orjson.dumps({"op": "cancel", "id": sub.job_id})]
    return [orjson.dumps({"op": "requeue_dead", "id": sub.job_id})]


def encode_object(producer: str, seq: int, nonce: str, frames: Sequence[bytes]) -> bytes:
    """One inbox object holding ``frames`` (from :func:`submission_frames`)."""
    fields = {"producer": producer, "seq": seq, "nonce": nonce, "count": len(frames)}
    return encode(MAGIC_INBOX, fields, frames)


def decode_object(name: str, data: bytes) -> tuple[str, int, list[Submission]]:
    """``(producer, seq, submissions)`` of an inbox object; ``CorruptionError`` if damaged."""
    fields, frames = decode(name, MAGIC_INBOX, data)
    producer, seq = fields.get("producer"), fields.get("seq")
    if not isinstance(producer, str) or not isinstance(seq, int):
        raise CorruptionError(f"{name}: inbox header lacks producer or seq")
    subs: list[Submission] = []
    i = 0
    while i < len(frames):
        try:
            meta = orjson.loads(frames[i])
        except orjson.JSONDecodeError as exc:
            raise CorruptionError(f"{name}: undecodable submission in frame {i}") from exc
        i += 1
        op = meta.get("op") if isinstance(meta, dict) else None
        try:
            if op == "enqueue":
                ids = tuple(meta["ids"])
                payloads = tuple(frames[i:i + len(ids)])
                if len(payloads) != len(ids):
                    raise CorruptionError(f"{name}: submission lacks {len(ids)} payloads")
                i += len(ids)
                subs.append(SubmitEnqueue(
                    queue=meta["queue"], job_ids=ids, payloads=payloads,
                    priority=meta.get("priority"), run_at=meta.get("run_at"),
                    dedup_key=meta.get("dedup_key"), max_attempts=meta.get("max_attempts"),
                    headers=meta.get("headers"), chosen_id=bool(meta.get("chosen_id"))))
            elif op == "cancel":
                subs.append(SubmitCancel(meta["id"]))
            elif op == "requeue_dead":
                subs.append(SubmitRequeueDead(meta["id"]))
            else:
                raise CorruptionError(f"{name}: unknown submission {op!r} in frame {i - 1}")
        except (KeyError, TypeError) as exc:
            raise CorruptionError(f"{name}: malformed submission in frame {i - 1}") from exc
    return producer, seq, subs
