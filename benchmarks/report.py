"""The machine description, the results table (Markdown), and the targets of the issue."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import sys
from typing import Any

from .common import fs_type, median
from .latency import round_ratio, rounds_won
from .systems import ALL_SYSTEMS, version_of


def machine(workdir: str) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    versions = {name: version_of(name) for name in ALL_SYSTEMS}
    for dist in ("fsspec", "s3fs", "moto", "orjson", "psutil"):
        versions[dist] = version_of(dist)
    versions["sqlite"] = sqlite3.sqlite_version
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "workdir": workdir,
        "workdir_fs": fs_type(workdir),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
        "git": _git_state(),
    }


def _git_state() -> dict[str, Any] | None:
    """The commit measured, and whether taquba/ had uncommitted changes."""
    import subprocess

    from .common import REPO_DIR

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "taquba"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "taquba_dirty": bool(dirty)}


# -- formatting ------------------------------------------------------------------------------


def _f(v: Any, digits: int = 0, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (float, int)):
        if digits == 0:
            return f"{v:,.0f}{unit}"
        return f"{v:,.{digits}f}{unit}"
    return str(v)


def _loads(v: Any) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "?"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    return out


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def steal_summary(results: dict[str, Any]) -> str | None:
    """One line on the hypervisor's steal during the timed runs (local and latency)."""
    seen: list[tuple[float, str]] = []
    for key, r in ((results.get("local") or {}).get("throughput") or {}).items():
        for i, run in enumerate(r.get("runs", [])):
            if run.get("steal_pct") is not None:
                seen.append((run["steal_pct"], f"{key} rep {i + 1}"))
    for system, r in (results.get("latency") or {}).items():
        for i, w in enumerate(r.get("windows", [])):
            if w.get("steal_pct") is not None:
                seen.append((w["steal_pct"], f"latency {system} window {i + 1}"))
    if not seen:
        return None
    worst = max(seen)
    noisy = sum(1 for pct, _ in seen if pct >= 1.0)
    return (
        f"CPU steal (time the hypervisor gave to other guests) per timed child process: "
        f"median {median([pct for pct, _ in seen]):.1f}%, max {worst[0]:.1f}% ({worst[1]}); "
        f"{noisy} of {len(seen)} at 1% or more"
    )


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    m = results.get("machine", {})
    cfg = results.get("config", {})
    systems = [s for s in results.get("systems", []) if s in ALL_SYSTEMS]
    lines.append(
        f"Machine: {m.get('cpu')} x{m.get('cores')} cores, "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB RAM, {m.get('platform')}, "
        f"Python {m.get('python')}, SQLite {m.get('versions', {}).get('sqlite')}; "
        f"work dir on {m.get('workdir_fs')}"
    )
    git = m.get("git") or {}
    if git:
        lines.append(
            f"taquba at commit {git.get('commit')}"
            + (" with uncommitted changes under taquba/" if git.get("taquba_dirty") else "")
        )
    lines.append(
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    )
    if m.get("loadavg_start"):
        lines.append(
            f"Load average (1/5/15 min) at start {_loads(m['loadavg_start'])}, at end "
            f"{_loads(results.get('loadavg_end'))}; run took "
            f"{results.get('duration_s', 0):.0f} s"
        )
    steal = steal_summary(results)
    if steal:
        lines.append(steal)
    if results.get("skipped"):
        lines.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items()))
    lines.append("")

    local = results.get("local")
    if local:
        fs = local["fsync"]
        lines.append(
            f"### 1. Local disk, durable (N={cfg.get('n')}, median of {cfg.get('reps')} "
            f"runs, each in its own process)"
        )
        lines.append("")
        lines.append(
            f"Physical reference: 4 KiB append + fsync median "
            f"{_f(fs.get('write_fsync_4k_ms'), 3)} ms -> serial fsync limit "
            f"**{_f(fs.get('serial_fsync_limit_ops'))} ops/s**; publishing a 4 KiB "
            f"file whole (temp + fsync + link + dir fsync) "
            f"{_f(fs.get('publish_4k_ms'), 3)} ms."
        )
        lines.append("")
        header = ["operation (ops/s)", *systems]
        if "taquba" in systems and "huey" in systems:
            header.append("taquba / huey")
        rows = []
        tp = local["throughput"]
        for op, label in (("enqueue", "enqueue"), ("drain", "claim+ack")):
            for size in cfg.get("payloads", []):
                for t in cfg.get("threads", []):
                    row = [f"{label}, {t} thread{'s' if t > 1 else ''}, {size} B"]
                    vals = {}
                    for s in systems:
                        r = tp.get(f"{s}/{size}/{t}")
                        vals[s] = r[f"{op}_ops"] if r else None
                        row.append(_f(vals[s]))
                    if len(header) > len(systems) + 1:
                        row.append(_f(_ratio(vals.get("taquba"), vals.get("huey")), 2, "x"))
                    rows.append(row)
        lines += _table(header, rows)
        rss = []
        for size in cfg.get("payloads", []):
            t = max(cfg.get("threads", [1]))
            vals = {sys_: (tp.get(f"{sys_}/{size}/{t}") or {}).get("peak_rss") for sys_ in systems}
            if any(v for v in vals.values()):
                ratio = _ratio(vals.get("taquba"), vals.get("huey"))
                rss.append(
                    f"{size} B: "
                    + ", ".join(f"{sys_} {v / 2**20:.1f} MiB" for sys_, v in vals.items() if v)
                    + (f" (taquba / huey {ratio:.2f}x)" if ratio else "")
                )
        if rss:
            lines.append("")
            lines.append(
                f"Peak RSS of the {max(cfg.get('threads', [1]))}-thread runs (whole "
                "process): " + "; ".join(rss) + "."
            )
        if local.get("batch"):
            lines.append("")
            for size, b in local["batch"].items():
                lines.append(
                    f"taquba `enqueue_batch` of {b['batch']} x {size} B: "
                    f"**{b['jobs_per_s']:,.0f} jobs/s** (median batch "
                    f"{b['median_batch_ms']:.2f} ms; 4 threads of batches "
                    f"{b['threads4_jobs_per_s']:,.0f} jobs/s)"
                )
        lines.append("")

    lat = results.get("latency")
    if lat:
        reps = cfg.get("latency_reps", 1)
        windows = f", median of {reps} windows taking turns" if reps > 1 else ""
        lines.append(
            f"### 2. End-to-end latency, open loop at {cfg.get('latency_rate'):.0f} jobs/s, "
            f"{cfg.get('latency_workers')} workers, 64 B, {cfg.get('latency_duration')} s"
            f"{windows}"
        )
        lines.append("")
        rows = []
        for s in systems:
            r = lat.get(s)
            if r:
                each = "; ".join(_f(w["done_p99_ms"], 2) for w in r.get("windows", []))
                rows.append(
                    [
                        s,
                        _f(r["achieved_rate"]),
                        _f(r["pickup_p50_ms"], 2),
                        _f(r["pickup_p99_ms"], 2),
                        _f(r["done_p50_ms"], 2),
                        _f(r["done_p99_ms"], 2),
                        _f(r["done_max_ms"], 1),
                        each or "-",
                    ]
                )
        lines += _table(
            [
                "system",
                "sent/s",
                "pickup p50 ms",
                "pickup p99 ms",
                "done p50 ms",
                "done p99 ms",
                "done max ms",
                "done p99 of each window ms",
            ],
            rows,
        )
        for peer in systems:
            won = rounds_won(lat, "taquba", peer)
            if peer != "taquba" and won is not None and won[1] > 1:
                lines.append("")
                lines.append(
                    f"Round by round, taquba's done p99 was lower than {peer}'s in "
                    f"{won[0]} of {won[1]} rounds."
                )
        lines.append("")

    hist = results.get("history")
    if hist:
        lines.append("### 3 + 6. Open -> first claim; claim latency after history")
        lines.append("")
        lines.append(
            f"Store built as an app builds it: 8 producer threads of single enqueues "
            f"and 8 claim+ack workers, {cfg.get('history_finished'):,} jobs done, then "
            f"{cfg.get('history_pending'):,} pending; ended by a clean close or by "
            f"SIGKILL of the process. The {cfg.get('big_pending', 0):,} pending store: "
            f"64 B jobs in batches, closed cleanly. Median of "
            f"{cfg.get('reopen_reps')} reopens, each a fresh process on a copy."
        )
        lines.append("")
        rows = []
        base = hist.get("huey") or {}
        for s in systems:
            r = hist.get(s)
            if r:
                b = r["build"]
                killed = r.get("killed") or {}
                big = r.get("big") or {}
                req = r["reopens"][0].get("requests_at_open") if r["reopens"] else None

                def cell(v: float | None, ref: float | None, nd: int = 1, s: str = s) -> str:
                    if v is None:
                        return "-"
                    ratio = _ratio(v, ref) if s != "huey" else None
                    return _f(v, nd) + (f" ({ratio:.1f}x)" if ratio else "")

                rows.append(
                    [
                        s,
                        cell(r.get("total_ms"), base.get("total_ms")),
                        cell(killed.get("total_ms"), (base.get("killed") or {}).get("total_ms")),
                        cell(big.get("total_ms"), (base.get("big") or {}).get("total_ms"), 0),
                        _f(sum(req[k] for k in ("puts", "gets", "lists", "deletes")))
                        if req
                        else "-",
                        _f(b["store_bytes"] / 1e6, 1),
                        _f(b["fresh_claim"]["p99_us"], 0),
                        _f(b["history_claim"]["p99_us"], 0),
                        _f(r["claim_p99_ratio"], 2, "x"),
                    ]
                )
        lines += _table(
            [
                "system",
                "after close ms (x huey)",
                "after SIGKILL ms (x huey)",
                f"{cfg.get('big_pending', 0):,} pending ms (x huey)",
                "requests at reopen",
                "store MB",
                "claim p99 fresh µs",
                "claim p99 after history µs",
                "ratio",
            ],
            rows,
        )
        lines.append("")

    mem = results.get("memory")
    if mem:
        lines.append(f"### 4. Peak RSS with {cfg.get('rss_pending'):,} pending 64 B jobs")
        lines.append("")
        rows = []
        for s in systems:
            r = mem.get(s)
            if r:
                rows.append(
                    [
                        s,
                        _f(r["base_rss"] / 2**20, 1),
                        _f(r["peak_rss"] / 2**20, 1),
                        _f(r["bytes_per_job"]),
                        _f(r["reopen"]["peak_rss"] / 2**20, 1),
                    ]
                )
        lines += _table(
            ["system", "baseline MiB", "peak MiB", "bytes/job", "reopen peak MiB"], rows
        )
        ib = mem.get("index_bytes")
        if ib:
            lines.append("")
            parts = [f"{ib['enqueued_bytes_per_job']:.0f} B after enqueue (payload shared)"]
            if "reopened_bytes_per_job" in ib:  # results of older versions lack these two
                parts.append(
                    f"{ib['enqueued_distinct_bytes_per_job']:.0f} B after enqueue with a "
                    "payload object per job (minus those objects)"
                )
                parts.append(
                    f"{ib['reopened_bytes_per_job']:.0f} B after a reopen (minus each "
                    "payload object)"
                )
            parts.append(
                f"{ib['reopened_bytes_per_job_beyond_payload']:.0f} B after a reopen "
                "minus the 64 B of each payload only"
            )
            lines.append(
                f"taquba's in-memory index per pending job ({ib['n']:,} jobs of 64 B, "
                f"tracemalloc): {'; '.join(parts)}."
            )
        lines.append("")

    obj = results.get("objectstore")
    if obj:
        lines.append(
            "### 5. Object storage (per completed job = enqueue + claim + ack, "
            "checkpoints included)"
        )
        lines.append("")
        rows = []
        for backend in ("latency", "moto"):
            for r in obj.get(backend, []):
                name = f"{r['latency_ms']:.0f} ms/request" if backend == "latency" else "moto"
                rows.append(
                    [
                        name,
                        _f(r["payload"]),
                        _f(r["concurrency"]),
                        _f(r["enqueue_ops"]),
                        _f(r["drain_ops"]),
                        _f(r.get("commits_per_put_enqueue"), 1),
                        _f(r.get("commits_per_put"), 1),
                        _f(r.get("puts_per_job"), 3),
                        _f(r.get("requests_per_job"), 3),
                        _f(r.get("bytes_per_job")),
                        _f(r.get("bytes_ratio"), 2, "x"),
                        _f(r.get("reopen_requests")),
                        _f(r["reopen_ms"]),
                    ]
                )
        lines += _table(
            [
                "backend",
                "payload B",
                "C",
                "enqueue/s",
                "claim+ack/s",
                "commits/PUT (enqueue)",
                "commits/PUT (all)",
                "PUTs/job",
                "requests/job",
                "bytes/job",
                "x payload",
                "reopen requests",
                "reopen ms",
            ],
            rows,
        )
        if obj.get("moto_skipped"):
            lines.append(f"moto: skipped ({obj['moto_skipped']})")
        lines.append("")

    idle = results.get("idle")
    if idle:
        lines.append(f"### 7. Idle open queue ({idle['window_s']:.0f} s window)")
        lines.append("")
        lines.append(
            f"Storage requests per minute: local {idle['local_per_minute']:.1f}, "
            f"object-store-like fs {idle['memory_fs_per_minute']:.1f}"
        )
        lines.append("")

    prod = results.get("producers")
    if prod:
        lines += _render_producers(prod, cfg)
    if results.get("tasks"):
        lines += _render_tasks(results["tasks"], cfg)

    targets = results.get("targets")
    if targets:
        lines.append("### Targets")
        lines.append("")
        rows = [
            [
                t["name"],
                t["measured"],
                t["target"],
                "met" if t["met"] else ("MISSED" if t["met"] is False else "n/a"),
            ]
            for t in targets
        ]
        lines += _table(["target", "measured", "required", "result"], rows)
        lines.append("")
    return "\n".join(lines)


def _render_producers(prod: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    lines = [f"### 8. Many processes: producers and one owner ({prod['payload']} B jobs)", ""]
    tp = prod.get("throughput") or {}
    if tp:
        reps = len(next(iter(tp.values()))["runs"])
        lines.append(
            f"{prod['processes']} producer processes x {prod['threads']} threads, "
            f"local disk, durable, {cfg.get('prod_jobs', 0):,} jobs per run, median of "
            f"{reps} run{'s' if reps > 1 else ''} taking turns; taquba with one owner "
            "process taking the jobs in (default options), huey with no consumer:"
        )
        lines.append("")
        rows = []
        huey = tp.get("huey") or {}
        for s, r in tp.items():
            runs = "; ".join(_f(x["submit_ops"]) for x in r["runs"])
            cpu = r.get("producer_cpu_us_per_job")
            rows.append(
                [
                    s,
                    _f(r["submit_ops"]),
                    _f(r["intake_ops"]),
                    _f(_ratio(r["submit_ops"], huey.get("submit_ops")), 2, "x"),
                    _f(_ratio(r["intake_ops"], huey.get("intake_ops")), 2, "x"),
                    runs,
                    _f(cpu)
                    + (
                        f" + {_f(r['owner_cpu_us_per_job'])}"
                        if r.get("owner_cpu_us_per_job") is not None
                        else ""
                    ),
                ]
            )
        lines += _table(
            [
                "system",
                "submitted jobs/s",
                "in the queue jobs/s",
                "submitted vs huey",
                "in the queue vs huey",
                "submitted jobs/s of each run",
                "CPU µs/job (producers + owner)",
            ],
            rows,
        )
        lines.append("")
    lat = prod.get("latency")
    if lat:
        n = len(lat.get("windows", []))
        each = "; ".join(_f(w["p99_ms"], 2) for w in lat.get("windows", []))
        lines.append(
            f"Producer `enqueue` returning -> owner's `claim` returning, local disk, "
            f"{cfg.get('prod_lat_rate', 0):.0f} jobs/s open loop for "
            f"{cfg.get('prod_lat_duration')} s, {cfg.get('prod_lat_workers')} claimers"
            f"{f', median of {n} windows' if n > 1 else ''}: p50 "
            f"{_f(lat['p50_ms'], 2)} ms, **p99 {_f(lat['p99_ms'], 2)} ms** (each window "
            f"{each}), max {_f(lat['max_ms'], 1)} ms; the `enqueue` call itself p50 "
            f"{_f(lat['enqueue_p50_ms'], 2)} ms, p99 {_f(lat['enqueue_p99_ms'], 2)} ms; "
            f"scheduled send -> claim p99 {_f(lat['from_send_p99_ms'], 2)} ms."
        )
        lines.append("")
    obj = prod.get("objectstore")
    if obj:
        own, pr = obj["owner_requests"], obj["producer_requests"]
        lines.append(
            f"Object store at {obj['latency_ms']:.0f} ms per request, {obj['threads']} "
            f"producer threads, {obj['jobs']:,} jobs: submitted at "
            f"{_f(obj['submit_ops'])}/s in {obj['objects']} inbox objects "
            f"({_f(obj['jobs_per_object'], 1)} jobs each), all in the queue after "
            f"{obj['intake_s']:.1f} s; **{obj['requests_per_job']:.3f} storage requests "
            f"per job** (producer {_kinds(pr)}; owner {_kinds(own)})."
        )
        lines.append("")
    idle = prod.get("idle")
    if idle:
        lines.append(
            f"Idle owner on an object store at the defaults (intake backing off from "
            f"{idle['inbox_busy_interval_s']:g} s to {idle['inbox_interval_s']:g} s, "
            f"reaper {idle['reaper_interval_s']:g} s, scheduler "
            f"{idle['scheduler_interval_s']:g} s), {idle['window_s']:.0f} s window after "
            f"{idle['settle_s']:.0f} s: {_kinds(idle['requests'])} -> "
            f"**{_f(idle['per_hour'])} requests per hour**."
        )
        lines.append("")
    return lines


def _render_tasks(res: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    reps = len(res["runs"].get("raw", []))
    lines = [
        f"### 9. Tasks: dispatch overhead ({res['workers']} workers, a no-op task, "
        f"{res['n']:,} jobs, local disk, durable, median of {reps} run"
        f"{'s' if reps > 1 else ''} taking turns)",
        "",
    ]
    what = {
        "raw": "taquba `claim` + `ack`, 8 threads",
        "tasks": "taquba `Tasks.run_worker` (defaults: no result kept)",
        "tasks_with_result": "taquba `Tasks.run_worker`, `store_result=True`",
        "huey": "huey `SqliteHuey` (fsync), consumer with 8 threads",
    }
    raw = res.get("raw_jobs_per_s")
    rows = []
    for mode, runs in res["runs"].items():
        value = res.get(f"{mode}_jobs_per_s")
        rows.append(
            [
                what.get(mode, mode),
                _f(value),
                _f(_ratio(value, raw), 2, "x"),
                "; ".join(_f(r["jobs_per_s"]) for r in runs),
            ]
        )
    lines += _table(["runner", "jobs/s", "vs raw claim+ack", "jobs/s of each run"], rows)
    lines.append("")
    return lines


def _kinds(counts: dict[str, int]) -> str:
    shown = [f"{v} {k.upper()}" for k, v in counts.items() if v]
    return ", ".join(shown) if shown else "no requests"


# -- targets ---------------------------------------------------------------------------------


def _t(
    name: str, value: float | None, op: str, bound: float, fmt: str, target: str
) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {
            "name": name,
            "value": None,
            "measured": "not measured",
            "target": target,
            "met": None,
        }
    met = value >= bound if op == ">=" else value <= bound if op == "<=" else value < bound
    return {
        "name": name,
        "value": value,
        "measured": fmt.format(value),
        "target": target,
        "met": bool(met),
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cfg = results.get("config", {})
    local = results.get("local") or {}
    tp = local.get("throughput", {})
    limit = (local.get("fsync") or {}).get("serial_fsync_limit_ops")
    t8, t1 = max(cfg.get("threads", [8])), min(cfg.get("threads", [1]))

    def get(system: str, size: int, threads: int, op: str) -> float | None:
        r = tp.get(f"{system}/{size}/{threads}")
        return r[f"{op}_ops"] if r else None

    for size in cfg.get("payloads", []):
        # The targets are for many threads and for one: a run of only one kind (--threads)
        # checks only its own.
        if t8 > 1:
            out.append(
                _t(
                    f"enqueue {t8} threads vs huey ({size} B)",
                    _ratio(get("taquba", size, t8, "enqueue"), get("huey", size, t8, "enqueue")),
                    ">=",
                    3.0,
                    "{:.2f}x",
                    ">= 3x",
                )
            )
            out.append(
                _t(
                    f"enqueue {t8} threads vs serial fsync limit ({size} B)",
                    _ratio(get("taquba", size, t8, "enqueue"), limit),
                    ">=",
                    2.0,
                    "{:.2f}x",
                    ">= 2x",
                )
            )
        if t1 == 1:
            out.append(
                _t(
                    f"enqueue 1 thread vs serial fsync limit ({size} B)",
                    _ratio(get("taquba", size, 1, "enqueue"), limit),
                    ">=",
                    0.8,
                    "{:.2f}x",
                    ">= 0.8x",
                )
            )
        if t8 > 1:
            out.append(
                _t(
                    f"claim+ack {t8} workers vs huey ({size} B)",
                    _ratio(get("taquba", size, t8, "drain"), get("huey", size, t8, "drain")),
                    ">=",
                    3.0,
                    "{:.2f}x",
                    ">= 3x",
                )
            )
    for size, b in (local.get("batch") or {}).items():
        out.append(
            _t(
                f"enqueue_batch of {b['batch']} ({size} B)",
                b["jobs_per_s"],
                ">=",
                100_000,
                "{:,.0f} jobs/s",
                ">= 100,000 jobs/s",
            )
        )
    lat = results.get("latency") or {}
    if "taquba" in lat:
        for kind in ("pickup", "done"):
            key = f"{kind}_p99_ms"
            a = lat["taquba"][key]
            b = (lat.get("huey") or {}).get(key)
            won = rounds_won(lat, "taquba", "huey", key)
            # With several rounds, the ratio is taken within each round (see round_ratio).
            paired = won if won is not None and won[1] > 1 else None
            value = round_ratio(lat, "taquba", "huey", key) if paired else _ratio(a, b)
            t = _t(
                f"latency p99 ({kind}) at {cfg.get('latency_rate', 0):.0f}/s vs huey",
                value,
                "<=",
                1.0,
                "{:.2f}x",
                "<= 1x (no worse)",
            )
            if b is not None and t["value"] is not None:
                if paired:
                    t["measured"] += (
                        f" (median of {paired[1]} rounds' ratios; medians "
                        f"{a:.2f} vs {b:.2f} ms; lower in {paired[0]} rounds)"
                    )
                else:
                    t["measured"] += f" ({a:.2f} vs {b:.2f} ms)"
            out.append(t)
    hist = (results.get("history") or {}).get("taquba")
    if hist:
        shape = f"{cfg.get('history_finished'):,} done + {cfg.get('history_pending'):,} pending"
        out.append(
            _t(
                f"open -> first claim, {shape}, after a clean close",
                hist.get("total_ms"),
                "<=",
                20.0,
                "{:.1f} ms",
                "<= 20 ms",
            )
        )
        if hist.get("killed"):
            out.append(
                _t(
                    f"open -> first claim, {shape}, after SIGKILL",
                    hist["killed"].get("total_ms"),
                    "<=",
                    50.0,
                    "{:.1f} ms",
                    "<= 50 ms",
                )
            )
        if hist.get("big"):
            out.append(
                _t(
                    f"open -> first claim, {cfg.get('big_pending', 0):,} pending",
                    hist["big"].get("total_ms"),
                    "<=",
                    1500.0,
                    "{:,.0f} ms",
                    "<= 1,500 ms",
                )
            )
        out.append(
            _t(
                "claim p99 after history vs fresh",
                hist["claim_p99_ratio"],
                "<=",
                1.5,
                "{:.2f}x",
                "<= 1.5x",
            )
        )
    mem = results.get("memory") or {}
    if mem.get("index_bytes"):
        out.append(
            _t(
                "index per pending job beyond its payload (enqueued)",
                mem["index_bytes"]["enqueued_bytes_per_job"],
                "<=",
                200.0,
                "{:.0f} B",
                "<= 200 B",
            )
        )
        if "reopened_bytes_per_job" in mem["index_bytes"]:
            out.append(
                _t(
                    "index per pending job beyond its payload objects (reopened)",
                    mem["index_bytes"]["reopened_bytes_per_job"],
                    "<=",
                    200.0,
                    "{:.0f} B",
                    "<= 200 B",
                )
            )
    if t8 > 1:
        for size in cfg.get("payloads", []):
            a = (tp.get(f"taquba/{size}/{t8}") or {}).get("peak_rss")
            b = (tp.get(f"huey/{size}/{t8}") or {}).get("peak_rss")
            if a is None:  # results of a version that did not measure it
                continue
            t = _t(
                f"peak RSS of the {t8}-thread run vs huey ({size} B)",
                _ratio(a, b),
                "<=",
                1.5,
                "{:.2f}x",
                "<= 1.5x",
            )
            if t["value"] is not None:
                t["measured"] += f" ({a / 2**20:.1f} vs {b / 2**20:.1f} MiB)"
            out.append(t)
    if mem.get("taquba"):
        r = mem["taquba"]
        out.append(
            {
                "name": f"peak RSS, {r['n']:,} pending 64 B jobs",
                "value": r["peak_rss"],
                "measured": f"{r['peak_rss'] / 2**20:.0f} MiB",
                "target": "reported",
                "met": None,
            }
        )
    obj = results.get("objectstore") or {}
    cmax = max(cfg.get("obj_concurrency", [0]) or [0])
    for r in obj.get("latency", []):
        if r["concurrency"] != cmax:
            continue
        tag = f"{cmax} producers, {r['latency_ms']:.0f} ms/request, {r['payload']} B"
        out.append(
            _t(
                f"commits per PUT ({tag})",
                r.get("commits_per_put_enqueue"),
                ">=",
                50,
                "{:.1f}",
                ">= 50",
            )
        )
        out.append(
            _t(
                f"committed ops/s ({tag})",
                r.get("committed_ops_enqueue"),
                ">=",
                3000,
                "{:,.0f}/s",
                ">= 3,000/s",
            )
        )
        bound = 1.5 if r["payload"] >= 1024 else 5.0 if r["payload"] <= 64 else None
        if bound is not None:
            out.append(
                _t(
                    f"bytes written per job ({tag})",
                    r.get("bytes_ratio"),
                    "<=",
                    bound,
                    "{:.2f}x payload",
                    f"<= {bound}x payload",
                )
            )
    out += _producer_targets(results.get("producers") or {})
    tasks = results.get("tasks") or {}
    if tasks:
        value = tasks.get("tasks_jobs_per_s")
        for name, other, bound in (("raw claim+ack", "raw", 0.8), ("huey tasks", "huey", 3.0)):
            b = tasks.get(f"{other}_jobs_per_s")
            t = _t(
                f"tasks, {tasks['workers']} workers, no-op task vs {name}",
                _ratio(value, b),
                ">=",
                bound,
                "{:.2f}x",
                f">= {bound:g}x",
            )
            if t["value"] is not None:
                t["measured"] += f" ({value:,.0f} vs {b:,.0f} jobs/s)"
            out.append(t)
    idle = results.get("idle")
    if idle:
        out.append(
            _t(
                "storage requests per minute, idle",
                idle["per_minute"],
                "<=",
                0.0,
                "{:.1f}/min",
                "0",
            )
        )
    return out


def _producer_targets(prod: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tp = prod.get("throughput") or {}
    shape = f"{prod.get('processes')} processes x {prod.get('threads')} threads"
    if "taquba" in tp:
        for key, what in (("submit_ops", "submitted"), ("intake_ops", "in the queue")):
            a, b = tp["taquba"][key], (tp.get("huey") or {}).get(key)
            t = _t(
                f"producers, {shape}, {what} vs huey", _ratio(a, b), ">=", 2.0, "{:.2f}x", ">= 2x"
            )
            if t["value"] is not None:
                t["measured"] += f" ({a:,.0f} vs {b:,.0f} jobs/s)"
            out.append(t)
    lat = prod.get("latency")
    if lat:
        out.append(
            _t(
                "producer enqueue -> owner claim p99, local disk",
                lat["p99_ms"],
                "<=",
                20.0,
                "{:.2f} ms",
                "<= 20 ms",
            )
        )
    obj = prod.get("objectstore")
    if obj:
        out.append(
            _t(
                f"storage requests per job, {obj['threads']} producer threads, "
                f"{obj['latency_ms']:.0f} ms/request",
                obj["requests_per_job"],
                "<=",
                0.2,
                "{:.3f}",
                "<= 0.2",
            )
        )
    idle = prod.get("idle")
    if idle:
        out.append(
            {
                "name": "requests per hour, idle owner on an object store, defaults",
                "value": idle["per_hour"],
                "measured": f"{idle['per_hour']:,.0f}/hour",
                "target": "reported",
                "met": None,
            }
        )
    return out
