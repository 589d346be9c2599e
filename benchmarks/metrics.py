"""The cost of metrics: claim+ack throughput with a ``PrometheusCollector`` registered and
scraped every second, against none, in the same run.

    python -m benchmarks.metrics [--n 20000] [--reps 5] [--threads 1,8] [--backend local]
                                 [--json PATH]

Each repetition drains ``n`` jobs (enqueued beforehand in one batch, not timed) with
``threads`` claim+ack loops on a fresh queue (local disk, or ``--backend memory`` to leave
out the disk's fsync times, which swing with other load on the machine), once without metrics and once with
the collector registered and a thread scraping it every ``--interval`` seconds (taking
turns, so both see the same machine). Reported: the median drain rate and CPU per job of
each, and their ratio (target: with metrics >= 0.97x without). The per-event tallies the
collector reads are always kept (an integer increment per event); comparing against a tree
without them is ``python -m benchmarks ab``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from taquba import OpenOptions, Queue
from taquba.metrics import PrometheusCollector

from .common import make_payload, median, run_threads

TARGET = 0.97


def drain_once(
    workdir: str, n: int, threads: int, *, metrics: bool, interval: float, backend: str = "local"
) -> dict[str, float]:
    """Enqueue ``n`` jobs, then time ``threads`` claim+ack loops draining them."""
    root = tempfile.mkdtemp(prefix="metrics-", dir=workdir)
    location = root if backend == "local" else f"memory://{os.path.basename(root)}"
    try:
        q = Queue.open(location, options=OpenOptions(background_threads=False))
        try:
            payload = make_payload(64)
            for start in range(0, n, 5000):
                q.enqueue_batch("bench", [payload] * min(5000, n - start))
            stop = threading.Event()
            scrapes = [0]
            scraper = None
            if metrics:
                registry = CollectorRegistry()
                registry.register(PrometheusCollector(q))

                def scrape() -> None:
                    while not stop.wait(interval):
                        generate_latest(registry)
                        scrapes[0] += 1

                generate_latest(registry)  # one scrape before the clock starts
                scraper = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
                scraper.start()

            def drain(_: int) -> None:
                claim, ack = q.claim, q.ack
                while True:
                    c = claim("bench")
                    if c is None:
                        return
                    ack(c)

            cpu = time.process_time()
            seconds, _ = run_threads(threads, drain, "worker")
            cpu = time.process_time() - cpu
            stop.set()
            if scraper is not None:
                scraper.join()
            left = q.stats("bench")
        finally:
            q.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if left.pending or left.claimed or left.done != n:
        raise RuntimeError(f"drained {left.done} of {n}")
    return {"ops": n / seconds, "cpu_us": 1e6 * cpu / n, "scrapes": scrapes[0]}


def run(
    n: int, reps: int, threads: list[int], interval: float, workdir: str, backend: str = "local"
) -> list[dict[str, Any]]:
    """Every thread count, ``reps`` times each way, taking turns; the medians and ratios."""
    rows = []
    for t in threads:
        without: list[dict[str, float]] = []
        with_: list[dict[str, float]] = []
        for _ in range(reps):
            without.append(
                drain_once(workdir, n, t, metrics=False, interval=interval, backend=backend)
            )
            with_.append(
                drain_once(workdir, n, t, metrics=True, interval=interval, backend=backend)
            )
        base = median([r["ops"] for r in without])
        scraped = median([r["ops"] for r in with_])
        rows.append(
            {
                "backend": backend,
                "threads": t,
                "n": n,
                "reps": reps,
                "ops_without": base,
                "ops_with": scraped,
                "ratio": scraped / base,
                "cpu_us_without": median([r["cpu_us"] for r in without]),
                "cpu_us_with": median([r["cpu_us"] for r in with_]),
                "scrapes": sum(r["scrapes"] for r in with_),
                "target": TARGET,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=20000, help="jobs per drain (default 20000)")
    p.add_argument("--reps", type=int, default=5, help="drains each way (default 5)")
    p.add_argument("--threads", default="1,8", help="thread counts (default 1,8)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (1)")
    p.add_argument(
        "--backend",
        choices=("local", "memory"),
        default="local",
        help="local disk (default) or fsspec's memory filesystem",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--workdir", help="where the queues are created (default: a temp dir)")
    p.add_argument("--json", dest="json_path", help="also write the rows as JSON here")
    args = p.parse_args()
    n, reps, interval = (500, 1, 0.05) if args.quick else (args.n, args.reps, args.interval)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    workdir = args.workdir or tempfile.gettempdir()
    os.makedirs(workdir, exist_ok=True)
    rows = run(n, reps, threads, interval, workdir, args.backend)
    print(
        f"claim+ack throughput, {args.backend}, {n} jobs x {reps} reps each way, "
        f"scraped every {interval:g}s"
    )
    print(
        f"{'threads':>7} {'without/s':>10} {'with/s':>10} {'ratio':>6} "
        f"{'cpu us/job':>14} {'scrapes':>7}"
    )
    for r in rows:
        print(
            f"{r['threads']:>7} {r['ops_without']:>10.0f} {r['ops_with']:>10.0f} "
            f"{r['ratio']:>6.3f} {r['cpu_us_without']:>6.1f}/{r['cpu_us_with']:<7.1f} "
            f"{r['scrapes']:>7}"
        )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
