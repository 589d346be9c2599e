"""4. Peak RSS with many pending 64 B jobs.

``rss`` (one child per system): import, open a fresh store, note the peak RSS so far (the
baseline), enqueue ``n`` jobs of 64 B in batches of 1,000 (taquba ``enqueue_batch``; the
peers in one transaction per batch), then report the peak RSS. ``rss_reopen`` (a fresh
child): reopen that store and claim one job, and report the peak RSS — for taquba this is
the cost of replaying ``n`` pending jobs into the in-memory index.
"""

from __future__ import annotations

from typing import Any

from .common import (
    BenchError,
    current_rss_bytes,
    fresh_dir,
    make_payload,
    peak_rss_bytes,
    remove_dir,
    run_child,
)
from .systems import open_system


def _import(system: str) -> None:
    if system == "taquba":
        import taquba  # noqa: F401
    elif system == "huey":
        import huey.storage  # noqa: F401
    else:
        import persistqueue  # noqa: F401


def child_rss(args: dict[str, Any]) -> dict[str, Any]:
    system, n = args["system"], args["n"]
    payload = make_payload(64)
    _import(system)
    s = open_system(system, args["dir"], durable=(system == "taquba"))
    try:
        base = max(peak_rss_bytes(), current_rss_bytes())
        left = n
        while left > 0:
            k = min(1000, left)
            s.enqueue_many([payload] * k)
            left -= k
        peak = peak_rss_bytes()
        now = current_rss_bytes()
    finally:
        s.close()
    return {
        "system": system,
        "n": n,
        "base_rss": base,
        "peak_rss": peak,
        "rss_after": now,
        "growth": peak - base,
        "bytes_per_job": (peak - base) / n,
    }


def child_rss_reopen(args: dict[str, Any]) -> dict[str, Any]:
    system = args["system"]
    _import(system)
    base = max(peak_rss_bytes(), current_rss_bytes())
    s = open_system(system, args["dir"], durable=True)
    try:
        if s.claim() is None:
            raise BenchError(f"{system}: nothing to claim after reopen")
        peak = peak_rss_bytes()
    finally:
        s.close()
    return {"system": system, "base_rss": base, "peak_rss": peak, "growth": peak - base}


def child_index_bytes(args: dict[str, Any]) -> dict[str, Any]:
    """taquba's in-memory index per pending job, by tracemalloc (not RSS: no allocator noise).

    Enqueues ``n`` jobs of 64 B through ``enqueue_batch`` (1,000 a call, one shared payload
    object, as the RSS scenario does), and measures the memory the queue holds afterwards
    beyond what it held before; then reopens the store in the same process and measures the
    memory of the replayed state, minus the 64 B of each payload (which replay reads into
    an object of its own).
    """
    import gc
    import tracemalloc

    from .systems import queue_class

    n = int(args["n"])
    payload = make_payload(64)
    queue = queue_class()
    q = queue.open(args["dir"])
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for left in range(n, 0, -1000):
        q.enqueue_batch("bench", [payload] * min(1000, left))
    gc.collect()
    enqueued = tracemalloc.get_traced_memory()[0] - base
    q.close()
    del q
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    q = queue.open(args["dir"])
    gc.collect()
    reopened = tracemalloc.get_traced_memory()[0] - base
    q.close()
    tracemalloc.stop()
    return {
        "n": n,
        "enqueued_bytes_per_job": enqueued / n,
        "reopened_bytes_per_job_beyond_payload": reopened / n - 64,
    }


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for system in systems:
        d = fresh_dir(cfg.workdir, f"rss-{system}")
        try:
            r = run_child("rss", {"system": system, "n": cfg.rss_pending, "dir": d})
            r2 = run_child("rss_reopen", {"system": system, "dir": d})
        finally:
            remove_dir(d)
        res[system] = {**r, "reopen": r2}
        log(
            f"  {system:13s} {cfg.rss_pending} pending: peak RSS {r['peak_rss'] / 2**20:.1f} MiB "
            f"(+{r['growth'] / 2**20:.1f} MiB, {r['bytes_per_job']:.0f} B/job); reopen peak "
            f"{r2['peak_rss'] / 2**20:.1f} MiB"
        )
    if "taquba" in systems:
        d = fresh_dir(cfg.workdir, "index-bytes")
        try:
            res["index_bytes"] = run_child("index_bytes", {"n": cfg.index_jobs, "dir": d})
        finally:
            remove_dir(d)
        r = res["index_bytes"]
        log(
            f"  taquba index per pending job ({cfg.index_jobs} jobs, tracemalloc): "
            f"{r['enqueued_bytes_per_job']:.0f} B enqueued, "
            f"{r['reopened_bytes_per_job_beyond_payload']:.0f} B beyond the payload reopened"
        )
    return res
