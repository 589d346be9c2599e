"""3. Reopen and first claim of a store with history; 6. claim latency after history.

``history_build`` (one child per system):

1. a fresh store with ``claims`` pending jobs, kept open;
2. a second store: enqueue ``finished - claims`` jobs and drain them with 8 workers
   (claim+ack), then enqueue ``claims`` more;
3. time each ``claim`` (acking in between, untimed) on the two stores in alternating rounds
   of ``claims / 10`` -> claim latency on a fresh store and after ``finished`` jobs, measured
   at the same moments; finally enqueue ``pending`` jobs into the second store and close it.
   That store (``finished`` done + ``pending`` pending) is kept.

``reopen`` (one fresh child per repetition, each on its own copy of the store as built):
open the store and claim once; the open time, the first-claim time and the storage requests
made by the open are recorded. Modules (taquba, fsspec) are imported before the clock
starts; their import time is recorded separately.

Peers build their stores with ``synchronous=OFF`` (setup only, it changes nothing about
the result) and measure claims with ``synchronous=FULL``.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from .common import (
    QUEUE,
    BenchError,
    dir_size,
    fresh_dir,
    make_payload,
    median,
    peak_rss_bytes,
    percentile,
    remove_dir,
    run_child,
    run_threads,
)
from .systems import System, commit_stats, open_system, request_counts

CLAIM_ROUNDS = 10  # claims are timed on the fresh and the history store in turn


def _timed_claims(s: System, count: int) -> list[float]:
    lat = []
    for _ in range(count):
        t0 = time.perf_counter()
        h = s.claim()
        lat.append(time.perf_counter() - t0)
        if h is None:
            raise BenchError(f"{s.name}: claim found nothing with jobs pending")
        s.ack(h)
    return lat


def _drain(s: System, workers: int) -> int:
    counts = [0] * workers

    def body(i: int) -> None:
        while True:
            h = s.claim()
            if h is None:
                return
            s.ack(h)
            counts[i] += 1

    run_threads(workers, body, "worker")
    return sum(counts)


def _summary(lat: list[float]) -> dict[str, float]:
    return {"p50_us": percentile(lat, 50) * 1e6, "p99_us": percentile(lat, 99) * 1e6,
            "max_us": max(lat) * 1e6 if lat else float("nan")}


def child_history_build(args: dict[str, Any]) -> dict[str, Any]:
    system, finished, pending, claims = args["system"], args["finished"], args["pending"], args["claims"]
    payload = make_payload(64)
    out: dict[str, Any] = {"system": system, "finished": finished, "pending": pending}

    # The fresh store stays open while the history is built; then claims are timed on the
    # two stores in alternating rounds, so that both are measured at the same moments (the
    # machine's speed drifts over the minute the history takes to build).
    fresh = fresh_dir(args["workdir"], f"fresh-{system}")
    f = open_system(system, fresh, durable=False)
    try:
        f.enqueue_many([payload] * claims)
        f.set_durable(True)
        d = args["dir"]
        s = open_system(system, d, durable=False)
        try:
            t0 = time.perf_counter()
            chunk = 10_000
            left = finished - claims
            while left > 0:
                k = min(chunk, left)
                s.enqueue_many([payload] * k)
                left -= k
            t1 = time.perf_counter()
            drained = _drain(s, 8)
            t2 = time.perf_counter()
            if drained != finished - claims:
                raise BenchError(f"{system}: drained {drained} of {finished - claims}")
            out["build_enqueue_s"] = t1 - t0
            out["build_drain_s"] = t2 - t1
            out["build_drain_ops"] = drained / (t2 - t1) if t2 > t1 else None
            s.enqueue_many([payload] * claims)
            s.set_durable(True)
            fresh_lat: list[float] = []
            history_lat: list[float] = []
            rounds = min(CLAIM_ROUNDS, claims)
            for r in range(rounds):
                n = claims // rounds + (r < claims % rounds)
                fresh_lat += _timed_claims(f, n)
                history_lat += _timed_claims(s, n)
            out["fresh_claim"] = _summary(fresh_lat)
            out["history_claim"] = _summary(history_lat)
            s.enqueue_many([payload] * pending)
            if system == "taquba":
                q = s.q  # type: ignore[attr-defined]
                out["requests"] = request_counts(q)
                out["commit_stats"] = commit_stats(q)
        finally:
            s.close()
    finally:
        f.close()
        remove_dir(fresh)
    out["store_bytes"], out["store_files"] = dir_size(d)
    out["peak_rss"] = peak_rss_bytes()
    return out


def child_reopen(args: dict[str, Any]) -> dict[str, Any]:
    system, d = args["system"], args["dir"]
    imports: dict[str, float] = {}
    if system == "taquba":
        # Modules are imported before the clock starts (a process pays that once, not per
        # open); what importing costs is reported on the side.
        for mod in ("taquba", "fsspec"):
            t = time.perf_counter()
            __import__(mod)
            imports[mod] = (time.perf_counter() - t) * 1e3
    elif system == "huey":
        import huey.storage  # noqa: F401
    else:
        import persistqueue  # noqa: F401
    rss0 = peak_rss_bytes()
    t0 = time.perf_counter()
    s = open_system(system, d, durable=True)
    t1 = time.perf_counter()
    try:
        h = s.claim()
        t2 = time.perf_counter()
        if h is None:
            raise BenchError(f"{system}: nothing to claim after reopen")
        out: dict[str, Any] = {"system": system, "open_ms": (t1 - t0) * 1e3,
                               "first_claim_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3,
                               "import_ms": imports}
        if system == "taquba":
            q = s.q  # type: ignore[attr-defined]
            out["requests_at_open"] = request_counts(q)
            st = q.stats(QUEUE)
            out["pending_after_open"] = st.pending + 1  # plus the one just claimed
        out["peak_rss"] = peak_rss_bytes()
        out["rss_growth"] = out["peak_rss"] - rss0
    finally:
        s.close()
    return out


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for system in systems:
        d = fresh_dir(cfg.workdir, f"history-{system}")
        try:
            b = run_child("history_build", {"system": system, "dir": d, "workdir": cfg.workdir,
                                            "finished": cfg.history_finished,
                                            "pending": cfg.history_pending,
                                            "claims": cfg.history_claims}, timeout=900)
            log(f"  {system:13s} built {cfg.history_finished} finished + {cfg.history_pending} "
                f"pending ({b['store_bytes'] / 1e6:.1f} MB in {b['store_files']} files); claim p99 "
                f"fresh {b['fresh_claim']['p99_us']:.0f} us, after history "
                f"{b['history_claim']['p99_us']:.0f} us")
            reopens = []
            for rep in range(cfg.reopen_reps):
                # Every repetition reopens an identical copy of the store as built (a reopen
                # changes the store: it may checkpoint, and it claims an epoch).
                copy = f"{d}-reopen{rep}"
                shutil.copytree(d, copy)
                try:
                    r = run_child("reopen", {"system": system, "dir": copy})
                finally:
                    remove_dir(copy)
                reopens.append(r)
                log(f"  {system:13s} reopen {r['open_ms']:.1f} ms, first claim "
                    f"{r['first_claim_ms']:.2f} ms"
                    + (f", requests {r['requests_at_open']}" if r.get("requests_at_open") else ""))
            if system == "taquba":
                for r in reopens:
                    if r.get("pending_after_open") != cfg.history_pending:
                        raise BenchError(f"taquba reopened with {r.get('pending_after_open')} "
                                         f"pending, expected {cfg.history_pending}")
            res[system] = {
                "build": b, "reopens": reopens,
                "open_ms": median([r["open_ms"] for r in reopens]),
                "first_claim_ms": median([r["first_claim_ms"] for r in reopens]),
                "total_ms": median([r["total_ms"] for r in reopens]),
                "fresh_claim_p99_us": b["fresh_claim"]["p99_us"],
                "history_claim_p99_us": b["history_claim"]["p99_us"],
                "claim_p99_ratio": b["history_claim"]["p99_us"] / b["fresh_claim"]["p99_us"],
            }
        finally:
            remove_dir(d)
    return res

