"""3. Reopen and first claim of a store built the way an app builds it; 6. claim latency after history.

``history_build`` (one child per system) builds the store the way an app does: 8 producer
threads of single enqueues and, at the same time, 8 workers doing claim+ack, until
``finished - claims`` jobs are done. Then it times each ``claim`` (acking in between,
untimed) on that store and on a fresh store with ``claims`` pending jobs, in alternating
rounds of ``claims / 10`` (claim latency on a fresh store and after history, measured at the
same moments; those ``claims`` jobs are done too), and finally the 8 producer threads
enqueue ``pending`` more jobs one by one. The store then holds ``finished`` done and
``pending`` pending jobs.

It ends in one of two ways: ``close`` (a clean close), or ``kill``: the child reports, then
waits, and the parent SIGKILLs it (no close; what the log holds is what it had written).

``reopen`` (one fresh child per repetition, each on its own copy of the store as built):
open the store and claim once; the open time, the first-claim time and the storage requests
made by the open are recorded. Modules (taquba, fsspec) are imported before the clock
starts; their import time is recorded separately.

``pending_build`` / ``reopen`` (``big``): a store of ``big_pending`` pending 64 B jobs
enqueued in batches of 1,000 and closed cleanly, reopened the same way.

Peers build their stores with ``synchronous=OFF`` (setup only, it changes nothing about
the result) and measure claims with ``synchronous=FULL``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

from .common import (
    QUEUE,
    BenchError,
    dir_size,
    emit,
    fresh_dir,
    make_payload,
    median,
    peak_rss_bytes,
    percentile,
    remove_dir,
    run_child,
    run_child_killed,
    run_threads,
    split,
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


APP_THREADS = 8  # producer threads, and as many claim+ack workers


def _produce(s: System, n: int, payload: bytes, threads: int = APP_THREADS) -> None:
    """``n`` single enqueues from ``threads`` producer threads."""
    shares = split(n, threads)

    def body(i: int) -> None:
        enqueue = s.enqueue
        for _ in range(shares[i]):
            enqueue(payload)

    run_threads(threads, body, "producer")


def app_workload(s: System, n: int, payload: bytes, threads: int = APP_THREADS) -> int:
    """``threads`` producers enqueue ``n`` jobs one by one while ``threads`` workers claim
    and ack them; returns once all ``n`` are done (the number the workers acked)."""
    shares = split(n, threads)
    done = [0] * threads
    lock = threading.Lock()
    left = [n]

    def body(i: int) -> None:
        if i < threads:  # a producer
            enqueue = s.enqueue
            for _ in range(shares[i]):
                enqueue(payload)
            return
        claim, ack = s.claim, s.ack
        k = i - threads
        while True:
            with lock:
                if left[0] <= 0:
                    return
            h = claim(0.05)
            if h is None:
                continue
            ack(h)
            done[k] += 1
            with lock:
                left[0] -= 1

    run_threads(2 * threads, body, "app")
    return sum(done)


def _summary(lat: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "max_us": max(lat) * 1e6 if lat else float("nan"),
    }


def child_history_build(args: dict[str, Any]) -> dict[str, Any]:
    system, finished, pending, claims = (
        args["system"],
        args["finished"],
        args["pending"],
        args["claims"],
    )
    payload = make_payload(64)
    out: dict[str, Any] = {
        "system": system,
        "finished": finished,
        "pending": pending,
        "end": args.get("end", "close"),
    }

    # The fresh store stays open while the history is built; then claims are timed on the
    # two stores in alternating rounds, so that both are measured at the same moments (the
    # machine's speed drifts over the minute the history takes to build).
    fresh = args["fresh"]  # the parent removes it (a killed child cannot)
    f = open_system(system, fresh, durable=False)
    try:
        f.enqueue_many([payload] * claims)
        f.set_durable(True)
        d = args["dir"]
        s = open_system(system, d, durable=False)
        t0 = time.perf_counter()
        done = app_workload(s, finished - claims, payload)
        t1 = time.perf_counter()
        if done != finished - claims:
            raise BenchError(f"{system}: {done} of {finished - claims} jobs done")
        out["build_s"] = t1 - t0
        out["build_ops"] = done / (t1 - t0) if t1 > t0 else None
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
        _produce(s, pending, payload)
        if system == "taquba":
            q = s.q  # type: ignore[attr-defined]
            out["requests"] = request_counts(q)
            out["commit_stats"] = commit_stats(q)
        if out["end"] == "kill":
            # Everything acknowledged is durable: report, then wait for the SIGKILL.
            out["store_bytes"], out["store_files"] = dir_size(d)
            out["peak_rss"] = peak_rss_bytes()
            emit(out)
            time.sleep(3600)
        s.close()
    finally:
        f.close()
    out["store_bytes"], out["store_files"] = dir_size(d)
    out["peak_rss"] = peak_rss_bytes()
    return out


def child_pending_build(args: dict[str, Any]) -> dict[str, Any]:
    """A store of ``n`` pending 64 B jobs (batches of 1,000), closed cleanly."""
    system, n, d = args["system"], args["n"], args["dir"]
    payload = make_payload(64)
    s = open_system(system, d, durable=False)
    try:
        for left in range(n, 0, -10_000):
            s.enqueue_many([payload] * min(10_000, left))
    finally:
        s.close()
    out: dict[str, Any] = {"system": system, "pending": n}
    out["store_bytes"], out["store_files"] = dir_size(d)
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
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    s = open_system(system, d, durable=True)
    t1 = time.perf_counter()
    try:
        h = s.claim()
        t2 = time.perf_counter()
        cpu = time.process_time() - cpu0
        if h is None:
            raise BenchError(f"{system}: nothing to claim after reopen")
        out: dict[str, Any] = {
            "system": system,
            "open_ms": (t1 - t0) * 1e3,
            "first_claim_ms": (t2 - t1) * 1e3,
            "total_ms": (t2 - t0) * 1e3,
            # CPU of the whole process (all threads): what the open
            # costs without the waits for the disk and other processes
            "cpu_ms": cpu * 1e3,
            "import_ms": imports,
        }
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


def _reopens(system: str, d: str, reps: int, log: Any, what: str) -> list[dict[str, Any]]:
    reopens = []
    for rep in range(reps):
        # Every repetition reopens an identical copy of the store as built (a reopen
        # changes the store: it may checkpoint, and it claims an epoch).
        copy = f"{d}-reopen{rep}"
        shutil.copytree(d, copy)
        # The copy's dirty pages go to disk now, not in the first fsync of the open being
        # measured (ext4 commits them with it), whichever system's store it is.
        os.sync()
        try:
            r = run_child("reopen", {"system": system, "dir": copy})
        finally:
            remove_dir(copy)
        reopens.append(r)
        log(
            f"  {system:13s} {what}: reopen {r['open_ms']:.1f} ms, first claim "
            f"{r['first_claim_ms']:.2f} ms"
            + (f", requests {r['requests_at_open']}" if r.get("requests_at_open") else "")
        )
    return reopens


def _summarise(reopens: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reopens": reopens,
        "open_ms": median([r["open_ms"] for r in reopens]),
        "first_claim_ms": median([r["first_claim_ms"] for r in reopens]),
        "total_ms": median([r["total_ms"] for r in reopens]),
        "cpu_ms": median([r.get("cpu_ms") for r in reopens]),
        "peak_rss": median([r["peak_rss"] for r in reopens]),
    }


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for system in systems:
        out: dict[str, Any] = {}
        for end in ("close", "kill"):
            d = fresh_dir(cfg.workdir, f"history-{system}-{end}")
            fresh = fresh_dir(cfg.workdir, f"fresh-{system}")
            try:
                args = {
                    "system": system,
                    "dir": d,
                    "fresh": fresh,
                    "end": end,
                    "finished": cfg.history_finished,
                    "pending": cfg.history_pending,
                    "claims": cfg.history_claims,
                }
                b = (
                    run_child("history_build", args, timeout=1800)
                    if end == "close"
                    else run_child_killed("history_build", args, timeout=1800)
                )
                log(
                    f"  {system:13s} built {cfg.history_finished} finished + "
                    f"{cfg.history_pending} pending by 8 producers + 8 workers in "
                    f"{b['build_s']:.1f} s, then {'closed' if end == 'close' else 'SIGKILLed'} "
                    f"({b['store_bytes'] / 1e6:.1f} MB in {b['store_files']} files); claim p99 "
                    f"fresh {b['fresh_claim']['p99_us']:.0f} us, after history "
                    f"{b['history_claim']['p99_us']:.0f} us"
                )
                reopens = _reopens(
                    system,
                    d,
                    cfg.reopen_reps,
                    log,
                    "after close" if end == "close" else "after SIGKILL",
                )
            finally:
                remove_dir(d)
                remove_dir(fresh)
            if system == "taquba":
                for r in reopens:
                    if r.get("pending_after_open") != cfg.history_pending:
                        raise BenchError(
                            f"taquba reopened with {r.get('pending_after_open')} "
                            f"pending, expected {cfg.history_pending}"
                        )
            out[end] = {"build": b, **_summarise(reopens)}
        b = out["close"]["build"]
        # The top-level figures are those after a clean close (as in earlier results files).
        res[system] = {
            **out["close"],
            "killed": out["kill"],
            "fresh_claim_p99_us": b["fresh_claim"]["p99_us"],
            "history_claim_p99_us": b["history_claim"]["p99_us"],
            "claim_p99_ratio": b["history_claim"]["p99_us"] / b["fresh_claim"]["p99_us"],
        }
        d = fresh_dir(cfg.workdir, f"pending-{system}")
        try:
            b = run_child(
                "pending_build", {"system": system, "dir": d, "n": cfg.big_pending}, timeout=1800
            )
            res[system]["big"] = {
                "build": b,
                **_summarise(
                    _reopens(system, d, cfg.big_reopen_reps, log, f"{cfg.big_pending} pending")
                ),
            }
        finally:
            remove_dir(d)
    return res
