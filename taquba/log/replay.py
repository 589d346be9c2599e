"""Replaying a root's segments for an opener: in order, each judged where it stands.

A whole segment (one object per commit) holds exactly the records its header counts. An
appended segment (local disk) holds blocks: where the manifest records its end, exactly the
blocks up to there; otherwise whatever follows its complete blocks is judged only once read
under the append lock (its writer may be appending while it is read), or once a later
segment shows that nothing may follow them: a segment that ends mid-block may be followed
only by openers' empty fences (or, in roots written before ends were recorded, by anything
after such a fence). Segments a manifest version records as void are not read at all, and
every segment up to the last one it says was written must be there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import CorruptionError
from ..storage import Store
from .format import MAGIC_SEGMENT, decode_blocks, decode_blocks_exact, decode_frames, decode_header
from .manifest import SEGMENT_DIR, Manifest, parse_seq, segment_key, seq_name


@dataclass
class Tail:
    """How far replay has read one segment."""

    seq: int
    end: int  # bytes consumed (for blocks: the end of the last complete block)
    torn: bool  # something other than zeros followed the complete blocks, when read
    blocks: bool  # an appended segment
    nonce: str  # its writer
    settled: bool  # it cannot grow: whole, or its end is recorded in the manifest


def parse_segment(
    name: str, seq: int, data: bytes, recorded: int | None
) -> tuple[list[bytes], Tail]:
    """The records of segment ``seq`` (object ``name``, its bytes ``data``); ``recorded`` is
    where the manifest says its blocks end, if it does."""
    fields, pos = decode_header(name, MAGIC_SEGMENT, data)
    nonce = str(fields.get("nonce"))
    if not fields.get("blocks"):
        frames = decode_frames(name, memoryview(data), pos, len(data))
        if fields.get("count") != len(frames):
            raise CorruptionError(
                f"{name}: header says {fields.get('count')} frames, found {len(frames)}"
            )
        return frames, Tail(seq, len(data), False, False, nonce, True)
    if recorded is not None:
        records = decode_blocks_exact(name, data, pos, recorded)
        torn = False
        end = recorded
    else:
        # Its writer may be appending right now: what follows the complete blocks is judged
        # once read under the append lock, or once a later segment shows that nothing may
        # follow them.
        records, end, torn = decode_blocks(name, data, pos, judge=False)
    if not records:
        # The first block is published with the header, whole or not at all.
        raise CorruptionError(f"{name}: the first block is missing or truncated")
    return records, Tail(seq, end, torn, True, nonce, recorded is not None)


class Replay:
    """One opener's pass over the segments its manifest version names, and what it learnt:
    where appended segments end, which segments hold nothing, how much was read."""

    def __init__(
        self, store: Store, manifest: Manifest, on_record: Callable[[bytes], None]
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.on_record = on_record
        self.tail: Tail | None = None  # the last segment applied
        self.torn: Tail | None = None  # a segment ending mid-block, followed by fences only
        self.ends: dict[int, int] = {}  # where each appended segment's blocks end
        self.empty: set[int] = set()  # segments known to hold nothing
        self.records = 0
        self.bytes = 0
        self.segments = 0
        self.next_seq = manifest.replay_from

    def run(self) -> list[int]:
        """Replay every segment from ``replay_from`` on; return the ones listed that are
        garbage (below it, or void)."""
        first, void = self.manifest.replay_from, self.manifest
        seqs = sorted(
            s for s in (parse_seq(n) for n in self.store.list_dir(SEGMENT_DIR)) if s is not None
        )
        garbage = [s for s in seqs if s < first or void.is_void(s)]
        present = {s for s in seqs if s >= first}
        top = max([first - 1, *present, *(last for _, last in void.void), void.through])
        for s in range(first, top + 1):
            if s not in present and not void.is_void(s):
                later = min([p for p in present if p > s] or [top])
                raise CorruptionError(
                    f"{self.store.description}/{SEGMENT_DIR}: segment "
                    f"{seq_name(s)} is missing but {seq_name(later)} "
                    f"{'exists' if later in present else 'was written'}"
                )
        live = [s for s in range(first, top + 1) if not void.is_void(s)]
        pool = None
        fetched: Iterator[bytes] = map(self._get, live)
        if len(live) > 1 and self.store.remote:
            # Object stores: fetch ahead in parallel, apply strictly in order.
            pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="taquba-replay")
            fetched = pool.map(self._get, live)
        try:
            for s in range(first, top + 1):
                if void.is_void(s):  # recorded as holding nothing: not read
                    self._follow(Tail(s, 0, False, False, "", True), [])
                else:
                    self.apply(s, next(fetched))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.next_seq = top + 1
        return garbage

    def _get(self, seq: int) -> bytes:
        end = (self.manifest.ends or {}).get(seq)
        if end is not None:
            return self.store.get_range(segment_key(seq), 0, end)
        return self.store.get(segment_key(seq))

    def apply(self, seq: int, data: bytes, *, recheck: bool = False) -> None:
        """Apply segment ``seq`` (its bytes as read), after the one before it.

        The segment before may have grown since it was read unless ``seq`` was already listed
        when it was read and was started by its writer: a writer starts a segment only after
        its last append. Otherwise (``recheck``, or ``seq`` is an opener's empty fence) its
        rest is read under the append lock, which the fence makes final.
        """
        records, tail = parse_segment(
            f"{self.store.description}/{segment_key(seq)}",
            seq,
            data,
            (self.manifest.ends or {}).get(seq),
        )
        self._follow(tail, records, recheck=recheck)

    def fenced(self, seq: int, size: int) -> None:
        """The opener's fence, ``size`` bytes, now holds segment ``seq``: what the displaced
        writer appended until now is all it ever will."""
        self.bytes += size
        self.empty.add(seq)
        self._read_rest_of_tail()
        self.tail = None
        self.next_seq = seq + 1

    def _read_rest_of_tail(self) -> None:
        prev = self.tail
        if prev is None or not prev.blocks or prev.settled:
            return
        key = segment_key(prev.seq)
        rest = (
            self.store.read_from_locked(key, prev.end)
            if self.store.appendable
            else self.store.get_range(key, prev.end, 2**62)
        )
        records, end, torn = decode_blocks(
            f"{self.store.description}/{key}", rest, 0, base=prev.end
        )
        self.bytes += end
        prev.end += end
        prev.torn = torn
        self.ends[prev.seq] = prev.end
        self.records += len(records)
        for r in records:
            self.on_record(r)

    def _follow(self, tail: Tail, records: list[bytes], *, recheck: bool = False) -> None:
        """Apply the records of segment ``tail.seq``, which follows ``self.tail``."""
        seq = tail.seq
        prev = self.tail
        name = f"{self.store.description}/{SEGMENT_DIR}"
        if recheck or not records:
            self._read_rest_of_tail()
        if prev is not None and prev.torn:
            # Only an opener's fence may follow a segment that ends mid-block: its writer
            # starts a new segment only after its last append succeeded.
            if records or tail.nonce == prev.nonce:
                raise CorruptionError(
                    f"{name}/{seq_name(prev.seq)}: ends in an incomplete block at byte "
                    f"{prev.end}, yet segment {seq_name(seq)} follows it"
                )
            self.torn = prev
        torn = self.torn
        if records and torn is not None and torn.torn and self.manifest.ends is not None:
            raise CorruptionError(
                f"{name}/{seq_name(torn.seq)}: ends in an incomplete block at byte "
                f"{torn.end}, yet segment {seq_name(seq)} holds records written after it"
            )
        self.bytes += tail.end
        self.segments += 1
        self.records += len(records)
        if tail.blocks:
            self.ends[seq] = tail.end
        elif not records:
            self.empty.add(seq)
        for r in records:
            self.on_record(r)
        self.tail = tail
