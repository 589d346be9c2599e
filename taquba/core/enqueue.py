"""The ENQUEUE event: new jobs of one queue, the record the log holds most of.

Its layout is described in events.py, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from . import ids
from .codec import (
    Corrupt,
    Reader,
    id_text,
    put_blob,
    put_headers,
    put_str,
    put_time,
    put_uvarint,
    tag,
    text_id,
)

ENQUEUE = 1

# What an enqueued job gets when its record leaves the field out. These belong to the
# format, not to any configuration: changing a QueueConfig never changes a replay.
DEFAULT_PRIORITY = 1000
DEFAULT_MAX_ATTEMPTS = 3

# ENQUEUE job flags
_ID_VALUE = 0
_ID_NEXT = 1
_ID_TEXT = 2
_ID_FORM = 0x03
J_PRIORITY = 0x04
J_MAX_ATTEMPTS = 0x08
J_RUN_AT = 0x10
J_DEDUP = 0x20
J_HEADERS = 0x40
_J_KNOWN = 0x7F

_MAX_ID_VALUE = (1 << 128) - 1
_DEFAULTS = (DEFAULT_PRIORITY, DEFAULT_MAX_ATTEMPTS)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The options of one enqueued job that the event's common values do not cover."""

    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    run_at: float | None = None  # scheduled: not claimable before
    dedup_key: str | None = None
    headers: Mapping[str, str] | None = None  # None or non-empty


class Enqueued(NamedTuple):
    """New jobs of ``queue`` at ``at``, numbered in order by the state; then KV writes.

    Job ``i`` is ``ids[i]`` with ``payloads[i]``. With ``specs`` None every job has the
    event's ``priority`` and ``max_attempts`` and nothing else (``enqueue_batch``, and
    plain enqueues made together): the common case, encoded and applied on a fast path.
    Otherwise ``specs[i]`` gives job ``i``'s own options, or None for the common ones.
    """

    queue: str
    at: float
    ids: Sequence[str]
    payloads: Sequence[bytes]
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    specs: Sequence[JobSpec | None] | None = None
    kv: Sequence[tuple[bytes, bytes]] = ()

    def encode(self) -> bytes:
        n = len(self.ids)
        if n < 1:
            raise ValueError("an enqueue record holds at least one job")
        if len(self.payloads) != n or (self.specs is not None and len(self.specs) != n):
            raise ValueError(f"{n} ids for {len(self.payloads)} payloads")
        buf = bytearray((tag(ENQUEUE),))
        put_str(buf, self.queue)
        put_time(buf, self.at)
        put_uvarint(buf, n << 1 | bool(self.kv))
        parts: list[bytes | bytearray] = [buf]
        append = parts.append
        common = 0  # the flags and fields of a job without a spec
        extra = bytearray()
        if self.priority != DEFAULT_PRIORITY:
            common |= J_PRIORITY
            put_uvarint(extra, self.priority)
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS:
            common |= J_MAX_ATTEMPTS
            put_uvarint(extra, self.max_attempts)
        specs = self.specs
        if n == 1 and specs is None and not self.kv:
            # One plain job (a lone enqueue): no run of ids to look for.
            job_id = self.ids[0]
            payload = self.payloads[0]
            value = ids.decode(job_id)
            buf.append(common | (_ID_TEXT if value is None else _ID_VALUE))
            buf += text_id(job_id) if value is None else value.to_bytes(16, "big")
            buf += extra
            put_uvarint(buf, len(payload))
            return bytes(buf) + payload
        decode_id = ids.decode
        tails = ids.TAILS
        # Before a plain job's payload: bytes that depend only on the payload's length when
        # its id is the one after the previous job's (a generated batch), made once a length.
        next_heads: dict[int, bytes] = {}
        head = ""  # the first 24 digits of the previous id, if it is canonical
        prev = -2  # the value of the previous id, if it is canonical
        for i, (job_id, payload) in enumerate(zip(self.ids, self.payloads)):
            spec = None if specs is None else specs[i]
            low = (prev + 1) & 0xFF
            if (
                spec is None
                and low
                and head
                and job_id[24:] == tails[low]
                and job_id[:24] == head
                and len(job_id) == 26
            ):
                # The next value, recognised from the text without decoding it (ids.py).
                prev += 1
                size = len(payload)
                h = next_heads.get(size)
                if h is None:
                    b = bytearray((common | _ID_NEXT,))
                    b += extra
                    put_uvarint(b, size)
                    h = next_heads[size] = bytes(b)
                append(h)
                append(payload)  # copied once, by the join
                continue
            value = decode_id(job_id)
            if value is None:
                flags = _ID_TEXT
            elif value == prev + 1:
                flags = _ID_NEXT
            else:
                flags = _ID_VALUE
            b = bytearray()
            if spec is None:
                b.append(flags | common)
                fields = extra
            else:
                fields = bytearray()
                if spec.priority != DEFAULT_PRIORITY:
                    flags |= J_PRIORITY
                    put_uvarint(fields, spec.priority)
                if spec.max_attempts != DEFAULT_MAX_ATTEMPTS:
                    flags |= J_MAX_ATTEMPTS
                    put_uvarint(fields, spec.max_attempts)
                if spec.run_at is not None:
                    flags |= J_RUN_AT
                    put_time(fields, spec.run_at)
                if spec.dedup_key is not None:
                    flags |= J_DEDUP
                    put_str(fields, spec.dedup_key)
                if spec.headers:
                    flags |= J_HEADERS
                    put_headers(fields, spec.headers)
                b.append(flags)
            if value is None:
                b += text_id(job_id)
                prev = -2
                head = ""
            else:
                if flags & _ID_FORM == _ID_VALUE:
                    b += value.to_bytes(16, "big")
                prev = value
                head = job_id[:24]
            b += fields
            put_uvarint(b, len(payload))
            append(b)
            append(payload)
        if self.kv:
            b = bytearray()
            put_uvarint(b, len(self.kv))
            for key, val in self.kv:
                put_blob(b, key)
                put_blob(b, val)
            append(b)
        return b"".join(parts)

    @classmethod
    def read(cls, r: Reader) -> Enqueued:
        queue = r.text()
        if not queue:
            raise Corrupt("empty queue name")
        at = r.time()
        head = r.uvarint()
        count = head >> 1
        if count < 1 or count * 2 > r.end - r.pos:
            raise Corrupt(f"bad job count {count}")
        job_ids: list[str] = []
        payloads: list[bytes] = []
        specs: list[JobSpec | None] | None = None
        common: tuple[int, int] | None = None
        prev = -2
        text = ""
        successor = ids.successor
        data = r.data
        end = r.end
        add_payload = payloads.append
        i = 0
        while i < count:
            # Fast paths for jobs with the default priority and attempts and nothing else,
            # with payloads under 128 bytes: a run of them whose ids each follow the one
            # before (a batch's generated ids: payloads sliced here, ids made together),
            # or one whose id is stored as its value. They make the checks the general
            # path below makes; anything else goes there.
            pos = r.pos
            if (common is None or common == _DEFAULTS) and pos < end:
                flags = data[pos]
                if flags == _ID_NEXT and prev >= 0:
                    k = 0
                    left = count - i
                    try:
                        while k < left and data[pos] == _ID_NEXT:
                            n = data[pos + 1]
                            stop = pos + 2 + n
                            if n >= 0x80 or stop > end:
                                break
                            add_payload(data[pos + 2 : stop])
                            pos = stop
                            k += 1
                    except IndexError:  # the record ends inside a job: the general path says so
                        pass
                    if k:
                        if prev + k > _MAX_ID_VALUE:
                            raise Corrupt("job id value out of range")
                        job_ids += ids.following(text, prev, k)
                        prev += k
                        text = job_ids[-1]
                        r.pos = pos
                        i += k
                        common = _DEFAULTS
                        if specs is not None:
                            specs += [None] * k
                        continue
                elif flags == _ID_VALUE and pos + 17 < end:
                    n = data[pos + 17]
                    stop = pos + 18 + n
                    if n < 0x80 and stop <= end:
                        key = data[pos + 1 : pos + 17]
                        prev = int.from_bytes(key, "big")
                        text = id_text(key)
                        job_ids.append(text)
                        add_payload(data[pos + 18 : stop])
                        r.pos = stop
                        i += 1
                        common = _DEFAULTS
                        if specs is not None:
                            specs.append(None)
                        continue
            flags = r.flags(_J_KNOWN)
            form = flags & _ID_FORM
            if form == _ID_NEXT:
                if prev < 0:
                    raise Corrupt("an id given as 'previous + 1' follows no canonical id")
                prev += 1
                if prev > _MAX_ID_VALUE:
                    raise Corrupt("job id value out of range")
                job_id = text = successor(text, prev)
            elif form == _ID_VALUE:
                prev = r.id_value()
                job_id = text = ids.encode(prev)
            elif form == _ID_TEXT:
                job_id = r.text_id()
                prev = -2
            else:
                raise Corrupt(f"unknown job id form {form}")
            priority = r.u32("priority") if flags & J_PRIORITY else DEFAULT_PRIORITY
            max_attempts = (
                r.positive("max_attempts") if flags & J_MAX_ATTEMPTS else DEFAULT_MAX_ATTEMPTS
            )
            spec = None
            if flags & (J_RUN_AT | J_DEDUP | J_HEADERS):
                run_at = r.time() if flags & J_RUN_AT else None
                dedup_key = r.text() if flags & J_DEDUP else None
                if dedup_key == "":
                    raise Corrupt("empty dedup key")
                headers = r.headers() if flags & J_HEADERS else None
                if headers is not None and not headers:
                    raise Corrupt("empty headers present")
                spec = JobSpec(priority, max_attempts, run_at, dedup_key, headers)
            elif common is None:
                common = (priority, max_attempts)
            elif common != (priority, max_attempts):
                spec = JobSpec(priority, max_attempts)
            if spec is not None and specs is None:
                specs = [None] * i
            if specs is not None:
                specs.append(spec)
            job_ids.append(job_id)
            payloads.append(r.blob())
            i += 1
        kv: list[tuple[bytes, bytes]] = []
        if head & 1:
            n = r.count(2)
            if n < 1:
                raise Corrupt("empty KV writes present")
            for _ in range(n):
                key = r.blob()
                kv.append((key, r.blob()))
        priority, max_attempts = common or (DEFAULT_PRIORITY, DEFAULT_MAX_ATTEMPTS)
        return cls(queue, at, job_ids, payloads, priority, max_attempts, specs, kv)
