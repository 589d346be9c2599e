"""A queue-owning process whose scheduler thread fires a cron schedule, for
tests/test_schedules.py.

    python tests/support/schedules_child.py ROOT START

The queue's clock reads ``START`` until the queue is open, and from then on runs ``SPEED``
times faster than real time: the every-minute schedule ``NAME`` comes due every 60 / SPEED
real seconds (10 ms). The parent may start a run at a time before the previous run was
killed, as a quick restart would see it. On a fresh root the schedule is added. Prints
``S <ref>`` once open (``ref``: the real time at which the clock started to run), then
idles until the parent SIGKILLs it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from taquba import OpenOptions, Queue

NAME = "every-minute"
CRON = "* * * * *"
QUEUE = "cron"
BASE = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the first run's start
SPEED = 6000.0


def clock(start: float, ref: float) -> Callable[[], float]:
    """The test's fast clock: ``start`` at the real time ``ref``."""
    return lambda: start + max(0.0, time.time() - ref) * SPEED


def options(now: Callable[[], float], *, background_threads: bool = True) -> OpenOptions:
    """The options of every handle on the root (the parent uses them too)."""
    return OpenOptions(
        clock=now,
        scheduler_interval=0.005,
        reaper_interval=3600.0,
        checkpoint_min_bytes=2048,
        checkpoint_ratio=0.5,
        background_threads=background_threads,
    )


def main() -> None:
    start = float(sys.argv[2])
    running: list[Callable[[], float]] = []
    q = Queue.open(sys.argv[1], options=options(lambda: running[0]() if running else start))
    if not q.list_schedules():
        q.add_schedule(NAME, CRON, QUEUE, b"tick")
    ref = time.time()
    running.append(clock(start, ref))
    os.write(1, f"S {ref!r}\n".encode())
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
