"""Settlement effects: what an ack, a nack or a dead-letter also does, atomically.

A :class:`SettlementEffects` lists follow-up jobs (:class:`EnqueueRequest`), KV writes and
KV deletes. Handed to ``Queue.ack``, ``Queue.nack`` or ``Queue.dead_letter``, the settlement
and every effect are one log record: after a crash, replay finds all of them or none.

What holds:

- Both classes check everything they can when they are made (queue names, payload and KV
  sizes, option types), raising ``InvalidArgument`` naming the bad field. What depends on
  the queue's state (a ``job_id`` already in use) is checked by the settlement before
  anything changes: an invalid effect rejects the whole settlement, and the claim stays
  current.
- Follow-up enqueues obey dedup keys like any enqueue: one whose key is held by a pending
  or scheduled job of its queue (or by an earlier follow-up of the same settlement) is
  skipped.
- Effects are applied in order: the settlement, the enqueues, the KV writes, the KV
  deletes. A key may not be both written and deleted by one settlement.
- Both are frozen and picklable, so a handler running in another process can return them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import arguments
from .config import EnqueueOptions, check_queue_name
from .errors import InvalidArgument

MAX_EFFECTS = arguments.MAX_BATCH_JOBS  # the most enqueues, and the most KV operations


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One follow-up job of a settlement: ``payload`` into ``queue`` with ``options``.

    Args:
        queue: the queue's name (1-255 UTF-8 bytes).
        payload: the job's bytes (``bytes``, ``bytearray`` or ``memoryview``; stored as
            ``bytes``), at most ``MAX_PAYLOAD_SIZE``.
        options: :class:`~taquba.EnqueueOptions` (None: the queue's defaults). A
            ``dedup_key`` held by a pending or scheduled job skips the request; a
            ``job_id`` already in use rejects the whole settlement.

    Raises:
        InvalidArgument: a bad queue name, payload or options.
    """

    queue: str
    payload: bytes
    options: EnqueueOptions | None = None

    def __post_init__(self) -> None:
        check_queue_name(self.queue)
        object.__setattr__(
            self, "payload", arguments.payload_bytes(self.payload, "EnqueueRequest.payload")
        )
        opts = self.options
        if opts is None:
            return
        if not isinstance(opts, EnqueueOptions):
            raise InvalidArgument(
                f"EnqueueRequest.options must be an EnqueueOptions, got {type(opts).__name__}"
            )
        if opts.dedup_key is not None:
            try:
                opts.dedup_key.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(
                    f"EnqueueRequest.options.dedup_key is not valid UTF-8: {opts.dedup_key[:40]!r}"
                ) from None


@dataclass(frozen=True, slots=True)
class SettlementEffects:
    """What a settlement also does, in the same atomic record.

    Args:
        enqueue: :class:`EnqueueRequest` follow-up jobs (an iterable; kept as a tuple).
        kv_writes: a mapping of KV keys to values (None: none); kept as a ``dict`` of
            ``bytes``. Keys are non-empty and at most ``MAX_KV_KEY_SIZE``; a value larger
            than ``MAX_KV_VALUE_SIZE`` raises ``KvValueTooLarge``.
        kv_deletes: KV keys to delete (an iterable; kept as a tuple of ``bytes``); a
            missing key is fine.

    Raises:
        InvalidArgument: a field of the wrong type, a bad key or value, more than
            ``MAX_EFFECTS`` enqueues or KV operations, or a key both written and deleted.
    """

    enqueue: tuple[EnqueueRequest, ...] = ()
    kv_writes: Mapping[bytes, bytes] | None = None
    kv_deletes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "enqueue", _requests(self.enqueue))
        writes = {} if self.kv_writes is None else dict(arguments.kv_writes(self.kv_writes))
        set_(self, "kv_writes", writes)
        deletes = _keys(self.kv_deletes)
        set_(self, "kv_deletes", deletes)
        if len(writes) + len(deletes) > MAX_EFFECTS:
            raise InvalidArgument(
                f"SettlementEffects: at most {MAX_EFFECTS} KV writes and "
                f"deletes, got {len(writes) + len(deletes)}"
            )
        both = writes.keys() & set(deletes)
        if both:
            raise InvalidArgument(
                f"SettlementEffects: KV key {min(both)[:64]!r} is both written and deleted"
            )

    def __bool__(self) -> bool:
        """Whether there is any effect at all."""
        return bool(self.enqueue or self.kv_writes or self.kv_deletes)


def _requests(value: object) -> tuple[EnqueueRequest, ...]:
    if isinstance(value, EnqueueRequest):
        return (value,)
    if isinstance(value, (str, bytes, bytearray, memoryview)) or not isinstance(value, Iterable):
        raise InvalidArgument(
            "SettlementEffects.enqueue must be an iterable of "
            f"EnqueueRequest, got {type(value).__name__}"
        )
    out = tuple(value)
    if len(out) > MAX_EFFECTS:
        raise InvalidArgument(
            f"SettlementEffects.enqueue holds at most {MAX_EFFECTS} requests, got {len(out)}"
        )
    for i, item in enumerate(out):
        if not isinstance(item, EnqueueRequest):
            raise InvalidArgument(
                f"SettlementEffects.enqueue[{i}] must be an EnqueueRequest, "
                f"got {type(item).__name__}"
            )
    return out


def _keys(value: object) -> tuple[bytes, ...]:
    if isinstance(value, (bytes, bytearray, memoryview, str)) or not isinstance(value, Iterable):
        raise InvalidArgument(
            "SettlementEffects.kv_deletes must be an iterable of bytes keys, "
            f"got {type(value).__name__}"
        )
    out: list[bytes] = []
    for key in value:
        if len(out) >= MAX_EFFECTS:
            raise InvalidArgument(f"SettlementEffects.kv_deletes holds at most {MAX_EFFECTS} keys")
        out.append(arguments.kv_key(key))
    return tuple(dict.fromkeys(out))


def check(effects: object) -> SettlementEffects | None:
    """``effects`` as given to a settlement: None or empty is None, else it must be a
    ``SettlementEffects`` (``InvalidArgument`` otherwise)."""
    if effects is None:
        return None
    if not isinstance(effects, SettlementEffects):
        raise InvalidArgument(f"effects must be a SettlementEffects, got {type(effects).__name__}")
    return effects if effects else None


__all__ = ["MAX_EFFECTS", "EnqueueRequest", "SettlementEffects"]
