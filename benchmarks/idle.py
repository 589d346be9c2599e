"""7. Storage requests per minute of an idle open queue.

One child opens two queues with default options (reaper every 5 s, scheduler every 1 s):
one on local disk (counted by the store) and one on an in-memory filesystem behind the
counting :class:`~benchmarks.latencyfs.LatencyFileSystem` (latency 0; counted at the
filesystem, so nothing the store forgets to count can hide). Each gets some work first
(100 enqueued, 50 claimed and acked, 10 claimed and held with a long lease), then both
sit idle for the window while every request is counted. Requests per minute are scaled
from the window.

The inbox intake and the fence check are turned off here: this measures the reaper and the
scheduler, which must cost nothing. What an idle owner costs at the defaults, intake and
fence check included, is scenario 8's idle figure (``benchmarks/producers.py``).
"""

from __future__ import annotations

import time
from typing import Any

from .common import QUEUE, fresh_dir, make_payload, remove_dir, run_child
from .systems import counts_delta, queue_class, request_counts


def _warm(q: Any) -> list[Any]:
    payload = make_payload(64)
    for _ in range(100):
        q.enqueue(QUEUE, payload)
    for _ in range(50):
        q.ack(q.claim(QUEUE))
    return [q.claim(QUEUE, lease=3600.0) for _ in range(10)]


def child_idle(args: dict[str, Any]) -> dict[str, Any]:
    from .latencyfs import LatencyFileSystem

    Queue = queue_class()
    window = float(args["window"])
    d = fresh_dir(args["workdir"], "idle")
    fs = LatencyFileSystem(latency=0.0)
    from taquba import OpenOptions

    quiet = OpenOptions(inbox_interval=None, fence_check_interval=None)
    local = Queue.open(d, options=quiet)
    mem = Queue.open(fs, "/idle/q", quiet)
    try:
        held = _warm(local) + _warm(mem)
        time.sleep(float(args.get("settle", 1.5)))
        l0, f0 = request_counts(local), fs.snapshot()
        time.sleep(window)
        l1, f1 = request_counts(local), fs.snapshot()
        for c in held:
            assert c is not None
    finally:
        local.close()
        mem.close()
        remove_dir(d)
    ld = counts_delta(l1, l0) or {}
    fd = {k: f1.get(k, 0) - f0.get(k, 0) for k in f1 if k != "bytes_written"}
    per_min = 60.0 / window
    local_reqs = sum(ld.get(k, 0) for k in ("puts", "gets", "lists", "deletes"))
    mem_reqs = sum(fd.values())
    return {
        "window_s": window,
        "local_requests": ld,
        "memory_fs_requests": fd,
        "local_per_minute": local_reqs * per_min,
        "memory_fs_per_minute": mem_reqs * per_min,
        "per_minute": max(local_reqs, mem_reqs) * per_min,
    }


def run(cfg: Any, log: Any) -> dict[str, Any]:
    r = run_child(
        "idle", {"window": cfg.idle_window, "workdir": cfg.workdir, "settle": cfg.idle_settle}
    )
    log(
        f"  idle {cfg.idle_window:.0f} s: local {r['local_per_minute']:.1f}/min, "
        f"object-store-like fs {r['memory_fs_per_minute']:.1f}/min"
    )
    return r
