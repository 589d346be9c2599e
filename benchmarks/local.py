"""1. Local disk, durable: enqueue and claim+ack throughput, enqueue_batch, the fsync reference.

One child process per (system, payload size, thread count, repetition): it enqueues N jobs
with T producer threads (timed), then drains them with T workers doing claim+ack (timed),
and checks that exactly N jobs came out. The parent takes the median of the repetitions.

The physical reference is the median cost of appending 4 KiB to a file and fsyncing it,
measured in the same run: ``1 / that`` is the serial fsync limit, the rate a design that
fsyncs once per operation cannot beat with one thread.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from .common import (
    BenchError,
    fresh_dir,
    make_payload,
    median,
    peak_rss_bytes,
    remove_dir,
    run_child,
    run_threads,
    split,
    steal_note,
)
from .systems import open_system

# -- children --------------------------------------------------------------------------------


def child_fsync(args: dict[str, Any]) -> dict[str, Any]:
    """Median cost of a 4 KiB append + fsync, and of publishing a 4 KiB file whole."""
    d = fresh_dir(args["workdir"], "fsync")
    samples = int(args.get("samples", 500))
    buf = make_payload(4096, 7)
    try:
        fd = os.open(os.path.join(d, "append"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        append = []
        try:
            for _ in range(samples):
                t0 = time.perf_counter()
                os.write(fd, buf)
                os.fsync(fd)
                append.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        # temp file + write + fsync + link + directory fsync (an immutable object published whole)
        publish = []
        dfd = os.open(d, os.O_RDONLY)
        try:
            for i in range(max(1, samples // 2)):
                t0 = time.perf_counter()
                tmp = os.path.join(d, f".tmp-{i}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, buf)
                os.fsync(fd)
                os.close(fd)
                os.link(tmp, os.path.join(d, f"obj-{i:08d}"))
                os.unlink(tmp)
                os.fsync(dfd)
                publish.append(time.perf_counter() - t0)
        finally:
            os.close(dfd)
    finally:
        remove_dir(d)
    m = statistics.median(append)
    return {
        "write_fsync_4k_ms": m * 1e3,
        "write_fsync_4k_p90_ms": sorted(append)[int(len(append) * 0.9)] * 1e3,
        "serial_fsync_limit_ops": 1.0 / m,
        "publish_4k_ms": statistics.median(publish) * 1e3,
        "samples": samples,
    }


def child_throughput(args: dict[str, Any]) -> dict[str, Any]:
    """Enqueue N with T threads, then drain with T workers; both timed."""
    system, size, threads, n = args["system"], args["payload"], args["threads"], args["n"]
    payload = make_payload(size)
    d = fresh_dir(args["workdir"], f"tp-{system}")
    try:
        s = open_system(system, d, durable=True)
        try:
            shares = split(n, threads)

            def produce(i: int) -> None:
                enqueue = s.enqueue
                for _ in range(shares[i]):
                    enqueue(payload)

            cpu = time.process_time()
            enq_s, _ = run_threads(threads, produce, "producer")
            enq_cpu = time.process_time() - cpu

            counts = [0] * threads

            def drain(i: int) -> None:
                claim, ack = s.claim, s.ack
                got = 0
                while True:
                    h = claim()
                    if h is None:
                        break
                    ack(h)
                    got += 1
                counts[i] = got

            cpu = time.process_time()
            drain_s, _ = run_threads(threads, drain, "worker")
            drain_cpu = time.process_time() - cpu
            drained = sum(counts)
            left = s.claim()
        finally:
            s.close()
    finally:
        remove_dir(d)
    if drained != n or left is not None:
        raise BenchError(f"{system}: enqueued {n}, drained {drained}, left over {left is not None}")
    return {
        "system": system,
        "payload": size,
        "threads": threads,
        "n": n,
        "enqueue_s": enq_s,
        "drain_s": drain_s,
        "enqueue_ops": n / enq_s,
        "drain_ops": n / drain_s,
        # CPU of the whole process (all threads, kernel included) per job: less
        # sensitive than the rates to how long the disk takes to fsync.
        "enqueue_cpu_us": 1e6 * enq_cpu / n,
        "drain_cpu_us": 1e6 * drain_cpu / n,
        # the whole process: interpreter, imports, threads, the system's own state
        "peak_rss": peak_rss_bytes(),
    }


def child_batch(args: dict[str, Any]) -> dict[str, Any]:
    """taquba enqueue_batch of ``batch`` jobs, ``batches`` times per payload size."""
    from .common import QUEUE
    from .systems import TaqubaSystem

    out: dict[str, Any] = {}
    for size in args["payloads"]:
        payloads = [make_payload(size)] * args["batch"]
        d = fresh_dir(args["workdir"], "batch")
        try:
            s = TaqubaSystem(d)
            try:
                times = []
                for _ in range(args["batches"]):
                    t0 = time.perf_counter()
                    ids = s.q.enqueue_batch(QUEUE, payloads)
                    times.append(time.perf_counter() - t0)
                    if len(ids) != len(payloads):
                        raise BenchError("enqueue_batch returned the wrong number of ids")
                # concurrent batches: 4 threads, to show group commit of batches
                per = max(1, args["batches"] // 2)

                def batches(
                    _i: int, s: TaqubaSystem = s, payloads: list[bytes] = payloads, per: int = per
                ) -> None:
                    for _ in range(per):
                        s.q.enqueue_batch(QUEUE, payloads)

                el, _ = run_threads(4, batches)
            finally:
                s.close()
        finally:
            remove_dir(d)
        m = statistics.median(times)
        out[str(size)] = {
            "batch": args["batch"],
            "batches": args["batches"],
            "median_batch_ms": m * 1e3,
            "jobs_per_s": args["batch"] / m,
            "best_jobs_per_s": args["batch"] / min(times),
            "threads4_jobs_per_s": 4 * per * args["batch"] / el,
        }
    return out


# -- parent ----------------------------------------------------------------------------------


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    log("fsync reference: 4 KiB append + fsync")
    res["fsync"] = run_child("fsync", {"workdir": cfg.workdir, "samples": cfg.fsync_samples})
    log(
        f"  median {res['fsync']['write_fsync_4k_ms']:.3f} ms -> serial limit "
        f"{res['fsync']['serial_fsync_limit_ops']:.0f} ops/s"
    )

    # Systems take turns within each configuration (rep 1 of each, then rep 2 of each...):
    # a machine whose speed drifts over minutes then shifts every system alike, and the
    # ratios between them stay fair.
    table: dict[str, Any] = {}
    for size in cfg.payloads:
        for threads in cfg.threads:
            runs: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
            for rep in range(cfg.reps):
                for system in systems:
                    r = run_child(
                        "throughput",
                        {
                            "system": system,
                            "payload": size,
                            "threads": threads,
                            "n": cfg.n,
                            "workdir": cfg.workdir,
                        },
                        steal=True,
                    )
                    runs[system].append(r)
                    log(
                        f"  {system:13s} {size:5d} B x{threads} rep {rep + 1}: enqueue "
                        f"{r['enqueue_ops']:8.0f}/s  drain {r['drain_ops']:8.0f}/s"
                        f"{steal_note(r)}"
                    )
            for system in systems:
                table[f"{system}/{size}/{threads}"] = {
                    "system": system,
                    "payload": size,
                    "threads": threads,
                    "n": cfg.n,
                    "enqueue_ops": median([r["enqueue_ops"] for r in runs[system]]),
                    "drain_ops": median([r["drain_ops"] for r in runs[system]]),
                    "peak_rss": median([r["peak_rss"] for r in runs[system]]),
                    "runs": runs[system],
                }
    res["throughput"] = table

    if "taquba" in systems:
        log("taquba enqueue_batch")
        res["batch"] = run_child(
            "batch",
            {
                "workdir": cfg.workdir,
                "payloads": list(cfg.payloads),
                "batch": cfg.batch_size,
                "batches": cfg.batches,
            },
        )
        for size, r in res["batch"].items():
            log(
                f"  {size} B: {r['jobs_per_s']:.0f} jobs/s (median of {r['batches']} batches of "
                f"{r['batch']})"
            )
    return res
