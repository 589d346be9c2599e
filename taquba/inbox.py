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

Inbox files (stores that append: local disk)
--------------------------------------------
There a producer appends its group commits as blocks to a file of its own instead::

    inbox/<producer-id>-<start:020d>.blocks

published whole with a header (magic ``TQIF``; fields ``producer``, ``start``, ``nonce``,
``"blocks": true``) and its first block, then grown one block per group commit, framed and
made durable as the log's appended segments are (``taquba.log.format``: ``TQBK`` blocks,
written into zeroed room, one ``fdatasync`` each). A block holds the same submission
frames as an object, and its ``seq`` is ``start`` plus its place in the file: it is
applied as the object of that ``seq`` would be, by the same rules above. Further rules:

- A producer appends only after its previous block is durable and never after a failed
  append; it then starts a new file at the next ``seq``. A crash during an append leaves a
  torn block at the end, which was never acknowledged: the owner applies whole blocks
  only, and a new process is a new producer id, so nothing is appended after it.
- A file is *settled* once its producer will not append to it again: a later file of the
  same producer exists, or it ends in the end block (one frame ``{"op":"end"}``, written
  by ``Producer.close``; it has no ``seq``). Only then is an incomplete last block judged
  by the torn-tail rule (damage is ``CorruptionError``); and a settled file is deleted once
  all its blocks are at or below the mark and durable, as objects are.
- A file that is not settled (its producer may be appending right now) is read up to its
  last whole block; a block whose bytes are not all there yet is read again later. Once
  nothing has been taken in from it for a while (``taquba.intake``), the owner removes it
  under the append lock unless a whole block follows what it has read; an append after
  that writes nothing, and the producer starts a new file at the same ``seq``. The mark
  stays for the retention period, as for objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import CorruptionError
from .log.format import (
    BLOCK_HEADER,
    block_at,
    block_end,
    check_interrupted_append,
    decode,
    decode_header,
    encode,
    encode_block,
)

INBOX_DIR = "inbox"
MAGIC_INBOX = b"TQIN"
MAGIC_INBOX_FILE = b"TQIF"
FILE_SUFFIX = ".blocks"
END_FRAME = b'{"op":"end"}'
_KEY_RE = re.compile(r"([0-9a-f]{16})-([0-9]{20})")
_FILE_RE = re.compile(r"([0-9a-f]{16})-([0-9]{20})\.blocks")


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
    return producer, seq, decode_submissions(name, frames)


def decode_submissions(name: str, frames: Sequence[bytes]) -> list[Submission]:
    """The submissions carried by ``frames`` (of an object or a block of ``name``)."""
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
                payloads = tuple(frames[i : i + len(ids)])
                if len(payloads) != len(ids):
                    raise CorruptionError(f"{name}: submission lacks {len(ids)} payloads")
                i += len(ids)
                subs.append(
                    SubmitEnqueue(
                        queue=meta["queue"],
                        job_ids=ids,
                        payloads=payloads,
                        priority=meta.get("priority"),
                        run_at=meta.get("run_at"),
                        dedup_key=meta.get("dedup_key"),
                        max_attempts=meta.get("max_attempts"),
                        headers=meta.get("headers"),
                        chosen_id=bool(meta.get("chosen_id")),
                    )
                )
            elif op == "cancel":
                subs.append(SubmitCancel(meta["id"]))
            elif op == "requeue_dead":
                subs.append(SubmitRequeueDead(meta["id"]))
            else:
                raise CorruptionError(f"{name}: unknown submission {op!r} in frame {i - 1}")
        except (KeyError, TypeError) as exc:
            raise CorruptionError(f"{name}: malformed submission in frame {i - 1}") from exc
    return subs


# -- inbox files (stores that append) ------------------------------------------------------


def file_name(producer: str, start: int) -> str:
    """The name (under ``inbox/``) of producer ``producer``'s file whose first block has
    ``seq`` ``start``."""
    return f"{producer}-{start:020d}{FILE_SUFFIX}"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """``(producer, start)`` of an inbox file name, or None for anything else."""
    m = _FILE_RE.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m else None


def encode_file_head(producer: str, start: int, nonce: str, first: bytes) -> bytes:
    """The bytes an inbox file is published with: its header and its first block."""
    fields = {"producer": producer, "start": start, "nonce": nonce, "blocks": True, "count": 0}
    return encode(MAGIC_INBOX_FILE, fields) + first


def encode_submission_block(frames: Sequence[bytes]) -> bytes:
    """One block of an inbox file, holding ``frames`` (from :func:`submission_frames`)."""
    return encode_block(frames)


END_BLOCK = encode_block([END_FRAME])


def decode_file_head(name: str, data: bytes | memoryview) -> tuple[str, int, int]:
    """``(producer, start, offset of the first block)`` of an inbox file's first bytes."""
    fields, pos = decode_header(name, MAGIC_INBOX_FILE, data)
    producer, start = fields.get("producer"), fields.get("start")
    if not isinstance(producer, str) or not isinstance(start, int) or not fields.get("blocks"):
        raise CorruptionError(f"{name}: inbox file header lacks producer or start")
    return producer, start, pos


@dataclass(slots=True)
class FileScan:
    """What one read of an inbox file found, from the offset it started at."""

    blocks: list[tuple[int, list[Submission]]]  # (seq, submissions) of each whole block
    end: int  # the file offset after the last whole block (or the end block)
    seq: int  # the seq the block at ``end`` will have
    ended: bool  # the producer's end block was read: nothing follows, ever
    need: int | None  # an incomplete block at ``end`` needs the bytes up to this offset


def scan_file(
    name: str,
    data: bytes,
    pos: int,
    base: int,
    seq: int,
    *,
    at_eof: bool,
    finished: bool,
    limit: int,
    after: int = -1,
) -> FileScan:
    """The whole blocks in ``data[pos:]`` (``data[0]`` is file offset ``base``; the first
    block there has ``seq``) whose ``seq`` is above ``after``, at most ``limit`` of them.

    After the whole blocks come zeros (room not written yet) or an incomplete block: one
    being appended right now, or one torn by a crash. When more bytes would complete it and
    ``data`` stopped short of the file's end (not ``at_eof``), ``need`` says up to where to
    read. A file whose producer has moved on (``finished``) is settled, so its incomplete
    block must be what an interrupted append leaves (see ``taquba.log.format``), or
    ``CorruptionError`` is raised.
    """
    view = memoryview(data)
    blocks: list[tuple[int, list[Submission]]] = []
    while len(blocks) < limit:
        block = block_at(name, view, pos, base)
        if block is None:
            break
        frames, end = block
        if len(frames) == 1 and frames[0] == END_FRAME:
            return FileScan(blocks, base + end, seq, True, None)
        if seq > after:
            blocks.append((seq, decode_submissions(name, frames)))
        seq += 1
        pos = end
    else:
        return FileScan(blocks, base + pos, seq, False, None)
    rest = view[pos:].tobytes()
    need: int | None = None
    if rest.strip(b"\0"):
        wanted = block_end(view, pos)
        if wanted is None and len(rest) < BLOCK_HEADER:
            wanted = pos + BLOCK_HEADER
        if wanted is not None and wanted > len(view) and not at_eof:
            need = base + wanted
        elif finished:
            check_interrupted_append(name, view, pos, base)
    return FileScan(blocks, base + pos, seq, False, need)
