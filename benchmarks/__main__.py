"""``python -m benchmarks run`` — see ``python -m benchmarks run --help`` and BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .common import REPO_DIR, RESULTS_DIR, SOURCE_ENV, BenchError, emit
from .config import SCENARIOS, make_config
from .systems import ALL_SYSTEMS, available

CHILDREN = {
    "fsync": ("local", "child_fsync"),
    "throughput": ("local", "child_throughput"),
    "batch": ("local", "child_batch"),
    "latency": ("latency", "child_latency"),
    "history_build": ("history", "child_history_build"),
    "pending_build": ("history", "child_pending_build"),
    "reopen": ("history", "child_reopen"),
    "rss": ("memory", "child_rss"),
    "rss_reopen": ("memory", "child_rss_reopen"),
    "index_bytes": ("memory", "child_index_bytes"),
    "objectstore": ("objectstore", "child_objectstore"),
    "idle": ("idle", "child_idle"),
    "producers_submit": ("producers", "child_submit"),
    "producers_owner": ("producers", "child_owner"),
    "producers_latency_owner": ("producers", "child_latency_owner"),
    "producers_latency_producer": ("producers", "child_latency_producer"),
    "producers_objectstore": ("producers", "child_objectstore"),
    "producers_idle": ("producers", "child_idle"),
    "tasks_raw": ("tasks", "child_raw"),
    "tasks_tasks": ("tasks", "child_tasks"),
    "tasks_huey": ("tasks", "child_huey"),
}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in _csv(value))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the benchmarks, print the table, write JSON")
    r.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of seconds)")
    r.add_argument(
        "--systems",
        type=_csv,
        default=list(ALL_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)} (default: all installed)",
    )
    r.add_argument(
        "--only",
        type=_csv,
        default=list(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    r.add_argument("--n", type=int, help="jobs per local throughput run (default 20000)")
    r.add_argument("--reps", type=int, help="repetitions of each local throughput run (default 3)")
    r.add_argument("--payloads", type=_ints, help="payload sizes in bytes (default 64,1024)")
    r.add_argument("--threads", type=_ints, help="thread counts (default 1,8)")
    r.add_argument("--latency-duration", type=float, help="seconds of steady load (default 10)")
    r.add_argument("--latency-rate", type=float, help="jobs/s of steady load (default 500)")
    r.add_argument(
        "--latency-reps",
        type=int,
        help="latency windows per system, taking turns; medians reported (default 5)",
    )
    r.add_argument(
        "--history-finished", type=int, help="finished jobs in the history store (100000)"
    )
    r.add_argument("--history-pending", type=int, help="pending jobs in the history store (1000)")
    r.add_argument("--big-pending", type=int, help="pending jobs of the big reopen store (1000000)")
    r.add_argument("--rss-pending", type=int, help="pending jobs for the RSS scenario (1000000)")
    r.add_argument("--obj-latency", type=float, help="injected seconds per request (0.020)")
    r.add_argument("--obj-concurrency", type=_ints, help="concurrency levels (default 1,10,100)")
    r.add_argument("--idle-window", type=float, help="seconds to watch an idle queue (20)")
    r.add_argument(
        "--producer-jobs",
        type=int,
        help="jobs per producers throughput run, over all processes (20000)",
    )
    r.add_argument(
        "--producer-reps",
        type=int,
        help="repetitions of the producers throughput run per system (3)",
    )
    r.add_argument(
        "--producer-idle-window",
        type=float,
        help="seconds to watch an idle owner on an object store (120)",
    )
    r.add_argument("--tasks-jobs", type=int, help="jobs per tasks run (20000)")
    r.add_argument("--no-moto", action="store_true", help="skip the moto server backend")
    r.add_argument("--workdir", help="where stores are created (default benchmarks/results/work)")
    r.add_argument(
        "--json",
        dest="json_path",
        help="write the JSON here instead of benchmarks/results/{full,quick}-STAMP.json "
        "and benchmarks/results/latest.json",
    )
    r.add_argument(
        "--check-targets", action="store_true", help="exit with status 3 when a target is missed"
    )

    ab = sub.add_parser("ab", help="A/B: taquba from two source trees, interleaved")
    ab.add_argument("a", help="tree A (the baseline), e.g. a worktree of main")
    ab.add_argument(
        "b", nargs="?", default=REPO_DIR, help="tree B (default: the tree of this harness)"
    )
    ab.add_argument("--reps", type=int, default=5, help="interleaved repetitions (5)")
    ab.add_argument("--n", type=int, default=20_000, help="jobs per throughput run (20000)")
    ab.add_argument("--payloads", type=_ints, default=(64, 1024))
    ab.add_argument("--threads", type=_ints, default=(1, 8))
    ab.add_argument("--latency-rate", type=float, default=500.0)
    ab.add_argument("--latency-duration", type=float, default=10.0)
    ab.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_batch (1000)")
    ab.add_argument("--batches", type=int, default=20)
    ab.add_argument("--workdir", help="where stores are created (default benchmarks/results/work)")
    ab.add_argument(
        "--memory-jobs",
        type=int,
        default=200_000,
        help="pending jobs for the index memory case (200000)",
    )
    ab.add_argument(
        "--only",
        type=_csv,
        default=["throughput", "batch", "latency", "memory"],
        help="comma-separated subset of throughput,batch,latency,memory,tasks",
    )
    ab.add_argument("--json", dest="json_path", help="also write the result here")

    rep = sub.add_parser("report", help="print the table of a results JSON file")
    rep.add_argument("path", nargs="?", default=os.path.join(RESULTS_DIR, "latest.json"))
    rep.add_argument(
        "--retarget",
        action="store_true",
        help="judge the targets again by this version's rules (the file keeps "
        "the verdict of the run that wrote it)",
    )

    c = sub.add_parser("child", help=argparse.SUPPRESS)
    c.add_argument("scenario", choices=sorted(CHILDREN))
    c.add_argument("args")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_run(ns: argparse.Namespace) -> int:
    from . import history, idle, latency, local, memory, objectstore, producers, report, tasks

    overrides: dict[str, Any] = {
        "n": ns.n,
        "reps": ns.reps,
        "payloads": ns.payloads,
        "threads": ns.threads,
        "latency_duration": ns.latency_duration,
        "latency_rate": ns.latency_rate,
        "latency_reps": ns.latency_reps,
        "history_finished": ns.history_finished,
        "history_pending": ns.history_pending,
        "rss_pending": ns.rss_pending,
        "big_pending": ns.big_pending,
        "obj_latency": ns.obj_latency,
        "obj_concurrency": ns.obj_concurrency,
        "idle_window": ns.idle_window,
        "prod_jobs": ns.producer_jobs,
        "prod_reps": ns.producer_reps,
        "prod_idle_window": ns.producer_idle_window,
        "tasks_jobs": ns.tasks_jobs,
        "workdir": os.path.abspath(ns.workdir) if ns.workdir else None,
        "moto": False if ns.no_moto else None,
    }
    cfg = make_config(ns.quick, **overrides)
    if cfg.history_claims > cfg.history_finished:
        cfg = make_config(ns.quick, **overrides, history_claims=max(1, cfg.history_finished // 2))
    for s in ns.systems:
        if s not in ALL_SYSTEMS:
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(ALL_SYSTEMS)}")
    for s in ns.only:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    skipped = {
        s: "not installed (pip install -e '.[bench]')" for s in ns.systems if not available(s)
    }
    if "taquba" in skipped:
        raise SystemExit("taquba is not importable")
    systems = [s for s in ns.systems if s not in skipped]
    for s, why in skipped.items():
        _log(f"skipping {s}: {why}")
    os.makedirs(cfg.workdir, exist_ok=True)

    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "machine": report.machine(cfg.workdir),
        "config": cfg.to_json(),
        "systems": systems,
        "skipped": skipped,
    }
    load1 = results["machine"]["loadavg_start"][0]
    if load1 > 0.5:
        _log(
            f"warning: load average is {load1:.2f}: other work on this machine will distort "
            "the numbers"
        )
    t0 = time.perf_counter()
    steps = [
        ("local", "1. local disk, durable: throughput", lambda: local.run(cfg, systems, _log)),
        ("latency", "2. latency at a steady rate", lambda: latency.run(cfg, systems, _log)),
        (
            "history",
            "3 + 6. reopen and claim after history",
            lambda: history.run(cfg, systems, _log),
        ),
        ("memory", "4. peak RSS", lambda: memory.run(cfg, systems, _log)),
        ("objectstore", "5. object storage", lambda: objectstore.run(cfg, _log)),
        ("idle", "7. idle queue", lambda: idle.run(cfg, _log)),
        (
            "producers",
            "8. many processes: producers and one owner",
            lambda: producers.run(cfg, systems, _log),
        ),
        (
            "tasks",
            "9. tasks: dispatch overhead and huey's tasks",
            lambda: tasks.run(cfg, systems, _log),
        ),
    ]
    for key, title, fn in steps:
        if key not in ns.only:
            continue
        _log(f"== {title}")
        t = time.perf_counter()
        results[key] = fn()
        results.setdefault("durations_s", {})[key] = time.perf_counter() - t
        results.setdefault("loadavg_after", {})[key] = list(os.getloadavg())
    results["duration_s"] = time.perf_counter() - t0
    results["loadavg_end"] = list(os.getloadavg())
    results["targets"] = report.targets(results)

    if ns.json_path:
        paths = [ns.json_path]
    else:
        os.makedirs(RESULTS_DIR, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = [
            os.path.join(RESULTS_DIR, f"{'quick' if cfg.quick else 'full'}-{stamp}.json"),
            os.path.join(RESULTS_DIR, "latest.json"),
        ]
    for path in paths:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print(report.render(results))
    _log(f"results: {paths[0]} ({results['duration_s']:.0f} s)")
    if ns.check_targets and any(t["met"] is False for t in results["targets"]):
        return 3
    return 0


def cmd_ab(ns: argparse.Namespace) -> int:
    from . import ab

    workdir = os.path.abspath(ns.workdir or os.path.join(RESULTS_DIR, "work"))
    os.makedirs(workdir, exist_ok=True)
    result = ab.run(
        ns.a,
        ns.b,
        reps=ns.reps,
        n=ns.n,
        payloads=ns.payloads,
        threads=ns.threads,
        latency_rate=ns.latency_rate,
        latency_duration=ns.latency_duration,
        batch=ns.batch,
        batches=ns.batches,
        workdir=workdir,
        log=_log,
        only=tuple(ns.only),
        memory_jobs=ns.memory_jobs,
    )
    if ns.json_path:
        ab.save(result, ns.json_path)
    print(ab.render(result))
    return 0


def cmd_child(ns: argparse.Namespace) -> int:
    import importlib

    source = os.environ.get(SOURCE_ENV)
    if source:  # an A/B run: taquba from another tree (see ab.py)
        sys.path.insert(0, source)

    module, fn = CHILDREN[ns.scenario]
    mod = importlib.import_module(f"benchmarks.{module}")
    emit(getattr(mod, fn)(json.loads(ns.args)))
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from .report import render, targets

    with open(ns.path) as f:
        results = json.load(f)
    if ns.retarget:
        results["targets"] = targets(results)
    print(render(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    try:
        if ns.command == "run":
            return cmd_run(ns)
        if ns.command == "child":
            return cmd_child(ns)
        if ns.command == "ab":
            return cmd_ab(ns)
        return cmd_report(ns)
    except BenchError as exc:
        _log(f"benchmark failed: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
