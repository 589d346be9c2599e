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

    Three ways, each the memory the queue holds afterwards beyond what it held before,
    divided by ``n``:

    - ``enqueued_bytes_per_job``: ``n`` jobs of 64 B enqueued through ``enqueue_batch``
      (1,000 a call) with one shared payload object, as the RSS scenario does; nothing is
      subtracted (the payload is one object for all);
    - ``reopened_bytes_per_job``: that store reopened in the same process (replay reads
      each payload into a bytes object of its own), minus each payload's whole object
      (``sys.getsizeof``: 97 B for 64 B). ``reopened_bytes_per_job_beyond_payload`` is the
      same run minus the 64 B of content only (the figure before 2026-12-03);
    - ``enqueued_distinct_bytes_per_job``: ``n`` jobs enqueued the same way into a second
      store (``dir`` + ``-distinct``, removed after), each with a payload object of its
      own made just before its batch (as an app that builds one bytes object per job
      holds), minus each payload object's ``sys.getsizeof``.
    """
    import gc
    import shutil
    import sys
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
    payload_objects = sum(map(sys.getsizeof, _payloads(q, n)))
    q.close()
    del q
    gc.collect()
    distinct_dir = args["dir"].rstrip("/") + "-distinct"
    try:
        q = queue.open(distinct_dir)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        head = payload[:-1]
        made = 0
        for left in range(n, 0, -1000):
            k = min(1000, left)
            batch = [head + bytes((i & 0xFF,)) for i in range(made, made + k)]
            made += k
            q.enqueue_batch("bench", batch)
            del batch
        gc.collect()
        distinct = tracemalloc.get_traced_memory()[0] - base
        distinct_objects = sum(map(sys.getsizeof, _payloads(q, n)))
        q.close()
    finally:
        shutil.rmtree(distinct_dir, ignore_errors=True)
    tracemalloc.stop()
    return {
        "n": n,
        "enqueued_bytes_per_job": enqueued / n,
        "reopened_bytes_per_job": (reopened - payload_objects) / n,
        "reopened_bytes_per_job_beyond_payload": reopened / n - 64,
        "enqueued_distinct_bytes_per_job": (distinct - distinct_objects) / n,
        "payload_object_bytes": payload_objects / n,
    }


def _payloads(q: Any, n: int) -> list[bytes]:
    """The distinct payload objects held by the ``n`` pending jobs of ``q``, read from its
    state (a claim would change the state, and a record copies nothing but is not the
    queue's own reference)."""
    out: list[bytes] = []
    seen: set[int] = set()
    with q._lock:
        for job in q._state.jobs.values():
            if id(job.payload) not in seen:
                seen.add(id(job.payload))
                out.append(job.payload)
    if len(out) != n:
        raise BenchError(f"expected {n} payload objects, found {len(out)}")
    return out


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
