"""``python -m benchmarks ab``: taquba against taquba, two source trees in one run.

Every measurement runs in a fresh child process that imports taquba from tree A or tree B
(``TAQUBA_BENCH_SOURCE``; the harness is this tree's). A and B take turns within each
repetition, and the turn order alternates between repetitions, so drift and the load of
other processes on the machine hit both alike. Each figure is the median over the
repetitions, and ``B/A`` is the ratio of the medians (for latencies lower is better, so a
ratio above 1 is a slowdown there and a speed-up elsewhere).

Cases: the local throughput child (enqueue and claim+ack drain, per payload and thread
count), ``enqueue_batch`` (one thread, jobs/s), latency at a steady rate, and the memory of
the in-memory index per pending job (tracemalloc; once per tree), and (only when asked
for, ``--only tasks``) scenario 9's ``raw`` and no-op ``tasks`` children, with their ratio
within each repetition.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .common import SOURCE_ENV, fresh_dir, median, remove_dir, run_child

CASES = ("throughput", "batch", "latency", "memory", "tasks")
THROUGHPUT_KEYS = ("enqueue_ops", "drain_ops")
LATENCY_KEYS = ("pickup_p50_ms", "done_p50_ms", "done_p99_ms")


def _child(scenario: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    return run_child(scenario, args, env={SOURCE_ENV: source}, steal=True)


def run(
    a: str,
    b: str,
    *,
    reps: int,
    n: int,
    payloads: tuple[int, ...],
    threads: tuple[int, ...],
    latency_rate: float,
    latency_duration: float,
    batch: int,
    batches: int,
    workdir: str,
    log: Any,
    only: tuple[str, ...] = CASES,
    memory_jobs: int = 200_000,
) -> dict[str, Any]:
    trees = {"A": os.path.abspath(a), "B": os.path.abspath(b)}
    samples: dict[str, dict[str, list[float]]] = {}

    def add(case: str, side: str, value: float) -> None:
        samples.setdefault(case, {"A": [], "B": []})[side].append(value)

    for rep in range(reps):
        order = ("A", "B") if rep % 2 == 0 else ("B", "A")
        for size in payloads if "throughput" in only else ():
            for t in threads:
                for side in order:
                    r = _child(
                        "throughput",
                        {
                            "system": "taquba",
                            "payload": size,
                            "threads": t,
                            "n": n,
                            "workdir": workdir,
                        },
                        trees[side],
                    )
                    for key in THROUGHPUT_KEYS:
                        add(f"{key.split('_')[0]} {size} B x{t} (ops/s)", side, r[key])
                    for key in ("enqueue_cpu_us", "drain_cpu_us"):
                        if key in r:  # (a harness that did not measure it)
                            add(f"{key.split('_')[0]} {size} B x{t} (CPU us/job)", side, r[key])
                    log(
                        f"  rep {rep + 1} {side} {size:5d} B x{t}: enqueue "
                        f"{r['enqueue_ops']:8.0f}/s drain {r['drain_ops']:8.0f}/s"
                    )
        for side in order if "batch" in only else ():
            r = _child(
                "batch",
                {
                    "workdir": workdir,
                    "payloads": list(payloads),
                    "batch": batch,
                    "batches": batches,
                },
                trees[side],
            )
            r = {size: v for size, v in r.items() if isinstance(v, dict)}  # not steal_pct
            for size, v in r.items():
                add(f"enqueue_batch {size} B (jobs/s)", side, v["jobs_per_s"])
            log(
                f"  rep {rep + 1} {side} enqueue_batch: "
                + ", ".join(f"{s} B {v['jobs_per_s']:.0f}/s" for s, v in r.items())
            )
        for side in order if "latency" in only else ():
            r = _child(
                "latency",
                {
                    "system": "taquba",
                    "rate": latency_rate,
                    "duration": latency_duration,
                    "workers": 4,
                    "payload": 64,
                    "workdir": workdir,
                },
                trees[side],
            )
            for key in LATENCY_KEYS:
                add(f"latency {key[:-3]} at {latency_rate:.0f}/s (ms)", side, r[key])
            log(
                f"  rep {rep + 1} {side} latency: done p50 {r['done_p50_ms']:.2f} ms "
                f"p99 {r['done_p99_ms']:.2f} ms"
            )
        for side in order if "tasks" in only else ():
            args = {"n": n, "workdir": workdir}
            raw = _child("tasks_raw", args, trees[side])["jobs_per_s"]
            tasks = _child("tasks_tasks", {**args, "store_result": False}, trees[side])[
                "jobs_per_s"
            ]
            add("tasks: raw claim+ack x8 (jobs/s)", side, raw)
            add("tasks: no-op task x8 (jobs/s)", side, tasks)
            add("tasks: no-op task / raw (same rep)", side, tasks / raw)
            log(
                f"  rep {rep + 1} {side} tasks: raw {raw:8.0f}/s tasks {tasks:8.0f}/s "
                f"({tasks / raw:.2f}x)"
            )
    if "memory" in only:  # deterministic enough that one measurement each will do
        for side in ("A", "B"):
            d = fresh_dir(workdir, "index")
            try:
                r = _child("index_bytes", {"n": memory_jobs, "dir": d}, trees[side])
            finally:
                remove_dir(d)
            for key, label in (
                ("enqueued_bytes_per_job", "enqueued, one shared payload"),
                ("enqueued_distinct_bytes_per_job", "enqueued, minus each payload object"),
                ("reopened_bytes_per_job", "reopened, minus each payload object"),
                ("reopened_bytes_per_job_beyond_payload", "reopened, minus 64 B (old way)"),
            ):
                add(f"index bytes per pending job, {memory_jobs} {label}", side, r[key])
            log(
                f"  {side} index: {r['enqueued_bytes_per_job']:.0f} B/job enqueued, "
                f"{r['enqueued_distinct_bytes_per_job']:.0f} B/job enqueued (distinct "
                f"payloads), {r['reopened_bytes_per_job']:.0f} B/job reopened "
                f"({r['reopened_bytes_per_job_beyond_payload']:.0f} B the old way)"
            )
    table = {
        case: {"A": median(v["A"]), "B": median(v["B"]), "A_runs": v["A"], "B_runs": v["B"]}
        for case, v in samples.items()
    }
    for row in table.values():
        row["B/A"] = row["B"] / row["A"] if row["A"] else float("nan")
    return {"trees": trees, "reps": reps, "table": table}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"A = {result['trees']['A']}",
        f"B = {result['trees']['B']}",
        f"medians of {result['reps']} interleaved repetitions",
        "",
        "| case | A | B | B/A |",
        "|---|---:|---:|---:|",
    ]
    for case, row in result["table"].items():
        lines.append(f"| {case} | {row['A']:.2f} | {row['B']:.2f} | {row['B/A']:.3f} |")
    return "\n".join(lines)


def save(result: dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
