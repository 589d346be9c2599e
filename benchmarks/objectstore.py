"""5. Object storage: group commit, requests and bytes per job, reopen round trips.

Backends:

- ``latency``: :class:`~benchmarks.latencyfs.LatencyFileSystem` over an in-memory filesystem,
  adding a fixed latency (default 20 ms, like S3 Standard) to every request;
- ``moto``: a moto S3 server on 127.0.0.1 through s3fs (real HTTP, real conditional PUTs).

For each backend, concurrency C (producers, then workers) and payload size, one child
process opens a fresh queue and runs two phases:

1. C producer threads enqueue M jobs (each ``enqueue`` returns once durable);
2. C worker threads claim+ack until the queue is empty.

Reported: throughput of each phase; commits per PUT (records committed / segment PUTs,
from the committer's counters); PUTs, all requests and bytes written per completed job
(enqueue + claim + ack, checkpoints and deletes included, from the store's counters, from
after the open to after the drain; ``*_with_close`` adds what ``close`` writes); and the
requests and time a fresh ``Queue.open`` of the finished store needs.
"""

from __future__ import annotations

import time
from typing import Any

from .common import BenchError, make_payload, run_child, run_threads, split
from .systems import commit_stats, counts_delta, queue_class, request_counts


def _open_fs(args: dict[str, Any], inner: Any = None) -> tuple[Any, str, Any]:
    """(filesystem, root path, inner fs to reuse at reopen)."""
    if args["backend"] == "latency":
        from fsspec.implementations.memory import MemoryFileSystem

        from .latencyfs import LatencyFileSystem

        if inner is None:
            inner = MemoryFileSystem(skip_instance_cache=True)
        return LatencyFileSystem(inner, latency=args["latency"]), "/bench/q", inner
    from .motoserver import new_bucket, s3_filesystem

    if inner is None:
        inner = new_bucket(args["endpoint"]) + "/q"
    return s3_filesystem(args["endpoint"]), inner, inner


def child_objectstore(args: dict[str, Any]) -> dict[str, Any]:
    conc, jobs, size = int(args["concurrency"]), int(args["jobs"]), int(args["payload"])
    payload = make_payload(size)
    Queue = queue_class()
    fs, root, inner = _open_fs(args)
    q = Queue.open(fs, root)
    try:
        c0, s0 = request_counts(q), commit_stats(q)
        fs0 = fs.snapshot() if hasattr(fs, "snapshot") else None
        shares = split(jobs, conc)

        def produce(i: int) -> None:
            for _ in range(shares[i]):
                q.enqueue("bench", payload)

        enq_s, _ = run_threads(conc, produce, "producer")
        c1, s1 = request_counts(q), commit_stats(q)
        got = [0] * conc

        def work(i: int) -> None:
            while True:
                c = q.claim("bench")
                if c is None:
                    return
                q.ack(c)
                got[i] += 1

        drain_s, _ = run_threads(conc, work, "worker")
        c2, s2 = request_counts(q), commit_stats(q)
        fs2 = fs.snapshot() if hasattr(fs, "snapshot") else None
    finally:
        t = time.perf_counter()
        q.close()
        close_s = time.perf_counter() - t
    c3 = request_counts(q)
    if sum(got) != jobs:
        raise BenchError(f"objectstore: enqueued {jobs}, drained {sum(got)}")

    fs_r, root_r, _ = _open_fs(args, inner)
    t0 = time.perf_counter()
    q2 = Queue.open(fs_r, root_r)
    reopen_s = time.perf_counter() - t0
    try:
        reopen_counts = request_counts(q2)
        left = q2.claim("bench")
    finally:
        q2.close()
    if left is not None:
        raise BenchError("objectstore: a finished job came back after reopen")

    enq, run_, total = counts_delta(c1, c0), counts_delta(c2, c0), counts_delta(c3, c0)
    out: dict[str, Any] = {
        "backend": args["backend"],
        "latency_ms": args.get("latency", 0) * 1e3,
        "concurrency": conc,
        "jobs": jobs,
        "payload": size,
        "enqueue_s": enq_s,
        "drain_s": drain_s,
        "close_s": close_s,
        "enqueue_ops": jobs / enq_s,
        "drain_ops": jobs / drain_s,
        "reopen_ms": reopen_s * 1e3,
        "requests_at_reopen": reopen_counts,
        "requests_enqueue": enq,
        "requests_run": run_,
        "requests_with_close": total,
    }
    if s0 is not None and s1 is not None and s2 is not None:
        e_rec, e_seg = s1["records"] - s0["records"], s1["segments"] - s0["segments"]
        r_rec, r_seg = s2["records"] - s0["records"], s2["segments"] - s0["segments"]
        out["commits_per_put_enqueue"] = e_rec / e_seg if e_seg else None
        out["commits_per_put"] = r_rec / r_seg if r_seg else None
        out["committed_ops_enqueue"] = e_rec / enq_s
        out["committed_ops"] = r_rec / (enq_s + drain_s)
        out["commit_stats_source"] = "committer"
        if "checkpoints" in s2 and "checkpoints" in s0:
            out["checkpoints_enqueue"] = s1["checkpoints"] - s0["checkpoints"]
            out["checkpoints_run"] = s2["checkpoints"] - s0["checkpoints"]
    elif enq is not None and enq["puts"]:
        out["commits_per_put_enqueue"] = jobs / enq["puts"]
        out["committed_ops_enqueue"] = jobs / enq_s
        out["commit_stats_source"] = "estimated: enqueues / PUTs"
    if run_ is not None:
        out["puts_per_job"] = run_["puts"] / jobs
        out["requests_per_job"] = sum(run_[k] for k in ("puts", "gets", "lists", "deletes")) / jobs
        out["bytes_per_job"] = run_["bytes_written"] / jobs
        out["bytes_ratio"] = out["bytes_per_job"] / size
        out["bytes_per_job_with_close"] = total["bytes_written"] / jobs if total else None
        out["reopen_requests"] = (
            sum(reopen_counts[k] for k in ("puts", "gets", "lists", "deletes"))
            if reopen_counts
            else None
        )
    if fs0 is not None and fs2 is not None:
        out["fs_requests_run"] = {k: fs2.get(k, 0) - fs0.get(k, 0) for k in fs2}
    return out


def run(cfg: Any, log: Any) -> dict[str, Any]:
    from .common import module_available

    res: dict[str, Any] = {"latency": [], "moto": []}
    plans: list[tuple[str, dict[str, Any], list[int]]] = [
        ("latency", {"latency": cfg.obj_latency}, list(cfg.payloads))
    ]
    moto = None
    if cfg.moto and module_available("moto") and module_available("s3fs"):
        from .motoserver import MotoServer

        moto = MotoServer().start()
        plans.append(("moto", {"endpoint": moto.endpoint}, [1024]))
    elif cfg.moto:
        res["moto_skipped"] = "moto[server] or s3fs is not installed"
        log("  moto: skipped (moto[server] or s3fs not installed)")
    try:
        for backend, extra, payloads in plans:
            for size in payloads:
                for conc in cfg.obj_concurrency:
                    jobs = cfg.obj_jobs.get(conc, max(10, conc * 100))
                    r = run_child(
                        "objectstore",
                        {
                            "backend": backend,
                            "concurrency": conc,
                            "jobs": jobs,
                            "payload": size,
                            **extra,
                        },
                        timeout=900,
                    )
                    res[backend].append(r)
                    cpp = r.get("commits_per_put_enqueue")
                    log(
                        f"  {backend:7s} {size:5d} B C={conc:3d}: enqueue {r['enqueue_ops']:7.0f}/s "
                        f"drain {r['drain_ops']:7.0f}/s  commits/PUT "
                        f"{cpp if cpp is None else round(cpp, 1)}  PUTs/job "
                        f"{r.get('puts_per_job', float('nan')):.3f}  bytes/job "
                        f"{r.get('bytes_per_job', float('nan')):.0f}  reopen "
                        f"{r['reopen_ms']:.0f} ms / {r.get('reopen_requests')} requests"
                    )
    finally:
        if moto is not None:
            moto.stop()
    return res
