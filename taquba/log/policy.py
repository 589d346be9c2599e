"""When to write a checkpoint: the bound that keeps a reopen O(live state).

A checkpoint is due once what a reopen would read (the last snapshot and the segments since)
holds more than ``max(min_bytes, ratio * live state)`` superseded bytes, given the caller's
estimate of its live state (otherwise: once the segments since exceed ``max(min_bytes,
ratio * size of the last snapshot)``): reopening reads O(live state) bytes, and checkpoints
never cost more than a constant factor of the log itself.

At a clean close the bar is lower (:func:`checkpoint_due_at_close`): a checkpoint is due once
the log since the last one outweighs the live state and ``CLOSE_MIN_BYTES`` (or
``min_bytes``, if smaller), so that the next open reads about the live state and not the
history that led to it. A close is a moment when nobody waits for the write; the floor
spares a queue that is opened and closed often (a command-line tool) a checkpoint each
time for a log that replays in a few milliseconds.
"""

from __future__ import annotations

from typing import Protocol

CLOSE_MIN_BYTES = 64 * 1024


class _Counters(Protocol):
    checkpoint_min_bytes: int
    checkpoint_ratio: float
    checkpoint_max_segments: int
    segments_since_checkpoint: int
    bytes_since_checkpoint: int
    last_snapshot_size: int
    live_at_checkpoint: int


def _calibrated(log: _Counters, live_bytes: int) -> float:
    """``live_bytes`` scaled by what the last snapshot really took against its estimate."""
    if log.live_at_checkpoint > 0:
        return live_bytes * log.last_snapshot_size / log.live_at_checkpoint
    return live_bytes


def checkpoint_due_at_close(log: _Counters, live_bytes: int | None = None) -> bool:
    """Whether a clean close should write a checkpoint: the log since the last one holds
    more bytes than the live state (``live_bytes``, the caller's estimate; without it, the
    last snapshot) and than ``min(CLOSE_MIN_BYTES, checkpoint_min_bytes)``, so a snapshot
    now makes the next open read less."""
    if log.bytes_since_checkpoint <= min(CLOSE_MIN_BYTES, log.checkpoint_min_bytes):
        return False
    live = log.last_snapshot_size if live_bytes is None else _calibrated(log, live_bytes)
    return log.bytes_since_checkpoint > live


def checkpoint_due(log: _Counters, live_bytes: int | None = None) -> bool:
    """Whether the next batch should carry a checkpoint.

    Given ``live_bytes``, the caller's estimate of what a snapshot would hold now: once
    what a reopen would read (the last snapshot plus the log since) exceeds it by more
    than ``max(checkpoint_min_bytes, checkpoint_ratio * live)`` of superseded bytes. A
    backlog that is still live is not copied again, and a reopen reads at most about
    ``(1 + ratio)`` times the live state plus the floor. Without it: once the log since
    the last checkpoint outgrows ``max(floor, ratio * the last snapshot)``. Either way,
    past ``checkpoint_max_segments`` segments only the log outgrowing the last snapshot
    is required, which bounds the objects a reopen reads.
    """
    if (
        log.segments_since_checkpoint >= log.checkpoint_max_segments
        and log.bytes_since_checkpoint > log.last_snapshot_size
    ):
        return True
    if live_bytes is not None:
        live = _calibrated(log, live_bytes)
        superseded = log.last_snapshot_size + log.bytes_since_checkpoint - live
        return superseded > max(log.checkpoint_min_bytes, log.checkpoint_ratio * live)
    proportional = int(log.checkpoint_ratio * log.last_snapshot_size)
    if log.segments_since_checkpoint >= log.checkpoint_max_segments:
        # Many small segments: reopening costs a request each, so compact as soon as
        # the log outgrows the live state even below the byte floor.
        return log.bytes_since_checkpoint > proportional
    return log.bytes_since_checkpoint > max(log.checkpoint_min_bytes, proportional)
