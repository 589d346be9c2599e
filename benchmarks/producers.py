"""8. Many processes, one queue: producers submitting to an owner through the inbox.

Four measurements, each in processes of its own:

- ``throughput``: P producer processes x T threads on local disk, each thread calling
  ``Producer.enqueue`` (64 B, durable on return) while one owner process (``Queue.open``
  with default options: intake every 5 ms on local disk) takes the jobs in. Against huey's
  ``SqliteStorage`` (the storage of ``SqliteHuey``, WAL + ``synchronous=FULL``) enqueued
  from P processes x T threads on one database file, with no consumer running (kinder to
  huey: no reader contends for the file). The processes open their queue, say they are
  ready, and start together at one wall-clock time. Reported: the *submission* rate (jobs
  over the time until the last producer's last call returned) and, for taquba, the
  *intake* rate (jobs over the time until the owner held every job; a huey job is in its
  queue when its enqueue returns). taquba and huey take turns, repetition by repetition;
  medians are reported.
- ``latency``: one owner process with W claimer threads blocked in ``claim(wait=...)``,
  and one producer process sending at a steady rate, open loop (8 sender threads take
  turns, as in scenario 2). Latency of a job = the owner's ``claim`` returning minus the
  producer's ``enqueue`` returning, both read from ``time.time()`` on one machine (the
  producer reports its return times, the owner its claim times, matched by job index).
  The first 5 % of jobs are warm-up. Median over windows.
- ``objectstore``: one process, an in-memory filesystem behind two counting
  :class:`~benchmarks.latencyfs.LatencyFileSystem` wrappers (20 ms per request), one for
  the owner and one for the producer, so each side's requests are counted apart. The owner
  has default options (intake paced between 0.25 s and 10 s); one ``Producer`` shared by
  C threads submits M jobs. Counted: every request of both from before the first
  submission until the owner holds every job and the inbox is empty, divided by M.
- ``idle``: an owner with default options on the counting wrapper (20 ms per request),
  after some work (jobs submitted, taken in, claimed, acked, 10 held under a long lease);
  after a settling time long enough for the intake to back off to its ceiling, every
  request over a window, scaled to an hour.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from .common import (
    QUEUE,
    REPO_DIR,
    RESULT_MARKER,
    BenchError,
    cpu_times,
    fresh_dir,
    make_payload,
    median,
    percentile,
    remove_dir,
    run_child,
    split,
    steal_note,
    steal_pct,
)
from .systems import queue_class, request_counts

_HEAD = struct.Struct("<Qd")  # job index, scheduled send time (epoch seconds)
READY_TIMEOUT = 120.0
KINDS = ("put", "get", "list", "delete", "head")


# -- processes that start together -----------------------------------------------------------


def _spawn(scenario: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "benchmarks", "child", scenario, json.dumps(args)]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        cmd, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _collect(proc: subprocess.Popen[str], what: str, timeout: float = 600.0) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BenchError(f"{what} timed out after {timeout:.0f} s") from exc
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARKER) and proc.returncode == 0:
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    raise BenchError(
        f"{what} exited {proc.returncode} without a result:\n{out[-2000:]}\n{err[-4000:]}"
    )


def _kill_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _touch(path: str, text: str = "") -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _wait_files(paths: list[str], procs: list[subprocess.Popen[str]], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(os.path.exists(p) for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                _collect(proc, what)  # raises with the child's output
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not ready after {READY_TIMEOUT:.0f} s")
        time.sleep(0.01)


def _wait_go(sync: str) -> float:
    """Wait for the parent's go file; return the wall-clock time at which to start."""
    path = os.path.join(sync, "go")
    deadline = time.monotonic() + READY_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise BenchError("no go signal")
        time.sleep(0.001)
    with open(path) as f:
        return float(f.read())


def _cpu() -> float:
    """CPU seconds (user + system) this process has used so far."""
    t = os.times()
    return t.user + t.system


# -- 8a. throughput: children ----------------------------------------------------------------


def child_submit(args: dict[str, Any]) -> dict[str, Any]:
    """One producer process: T threads submit their share once the go time comes."""
    system, root, sync, k = args["system"], args["root"], args["sync"], int(args["index"])
    shares = split(int(args["jobs"]), int(args["threads"]))
    payload = make_payload(int(args["payload"]))
    closer: Any
    if system == "taquba":
        from taquba import Producer

        producer = Producer.open(root)

        def enqueue() -> None:
            producer.enqueue(QUEUE, payload)

        closer = producer.close
    else:
        from .systems import HueySystem

        huey = HueySystem(root, durable=True)
        huey.s.conn  # noqa: B018 - connect now, not in the timed part

        def enqueue() -> None:
            huey.enqueue(payload)

        closer = huey.close
    release = threading.Event()
    errors: list[BaseException] = []

    def body(i: int) -> None:
        release.wait()
        try:
            for _ in range(shares[i]):
                enqueue()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(shares))]
    for t in threads:
        t.start()
    _touch(os.path.join(sync, f"ready-{k}"))
    start = _wait_go(sync)
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    cpu0 = _cpu()
    release.set()
    for t in threads:
        t.join()
    end = time.time()
    cpu = _cpu() - cpu0
    closer()
    if errors:
        raise errors[0]
    return {"start": start, "end": end, "jobs": sum(shares), "cpu_s": cpu}


def child_owner(args: dict[str, Any]) -> dict[str, Any]:
    """The owner of the throughput run: default options; notes when it holds every job."""
    Queue = queue_class()
    expected, sync = int(args["jobs"]), args["sync"]
    q = Queue.open(args["root"])
    try:
        c0 = request_counts(q)
        _touch(os.path.join(sync, "owner-ready"))
        start = _wait_go(sync)
        cpu0 = _cpu()
        deadline = time.monotonic() + float(args.get("timeout", 300.0))
        first = None
        while True:
            n = q.stats(QUEUE).pending
            now = time.time()
            if n and first is None:
                first = now
            if n >= expected:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"owner: {n} of {expected} jobs taken in before the deadline")
            time.sleep(0.002)
        cpu = _cpu() - cpu0
        time.sleep(0.2)  # anything taken in twice would show now
        final = q.stats(QUEUE).pending
        counts = request_counts(q)
        producers = len(q.inbox_marks())
    finally:
        q.close()
    if final != expected:
        raise BenchError(f"owner: {final} jobs for {expected} submissions")
    delta = {k: counts[k] - c0[k] for k in counts} if counts and c0 else None
    return {
        "start": start,
        "first": first,
        "done": now,
        "jobs": final,
        "cpu_s": cpu,
        "producers_seen": producers,
        "requests": delta,
    }


def _throughput_once(cfg: Any, system: str, jobs: int) -> dict[str, Any]:
    d = fresh_dir(cfg.workdir, f"prod-{system}")
    root, sync = os.path.join(d, "q"), os.path.join(d, "sync")
    os.makedirs(sync)
    procs: list[subprocess.Popen[str]] = []
    try:
        owner = None
        if system == "taquba":
            owner = _spawn("producers_owner", {"root": root, "sync": sync, "jobs": jobs})
            procs.append(owner)
            _wait_files([os.path.join(sync, "owner-ready")], procs, "owner")
        else:
            from .systems import HueySystem

            HueySystem(root, durable=True).close()  # the schema, before the processes race
        shares = split(jobs, cfg.prod_processes)
        producers = [
            _spawn(
                "producers_submit",
                {
                    "system": system,
                    "root": root,
                    "sync": sync,
                    "index": k,
                    "jobs": shares[k],
                    "threads": cfg.prod_threads,
                    "payload": cfg.prod_payload,
                },
            )
            for k in range(cfg.prod_processes)
        ]
        procs += producers
        _wait_files(
            [os.path.join(sync, f"ready-{k}") for k in range(len(producers))],
            procs,
            f"{system} producers",
        )
        start = time.time() + 0.05
        cpu0 = cpu_times()
        _touch(os.path.join(sync, "go"), repr(start))
        subs = [_collect(p, f"{system} producer {k}") for k, p in enumerate(producers)]
        own = _collect(owner, "owner") if owner is not None else None
        steal = steal_pct(cpu0, cpu_times())
        if system == "huey":
            import sqlite3

            with sqlite3.connect(os.path.join(root, "huey.db")) as conn:
                (rows,) = conn.execute("select count(*) from task").fetchone()
            if rows != jobs:
                raise BenchError(f"huey: {rows} rows for {jobs} enqueues")
    finally:
        _kill_all(procs)
        remove_dir(d)
    end = max(s["end"] for s in subs)
    out: dict[str, Any] = {
        "system": system,
        "jobs": jobs,
        "submit_s": end - start,
        "submit_ops": jobs / (end - start),
        "producer_cpu_us_per_job": sum(s["cpu_s"] for s in subs) / jobs * 1e6,
        "steal_pct": steal,
    }
    if own is not None:
        out["intake_s"] = own["done"] - start
        out["intake_ops"] = jobs / (own["done"] - start)
        out["intake_lag_ms"] = (own["done"] - end) * 1e3
        out["owner_requests"] = own["requests"]
        out["owner_cpu_us_per_job"] = own["cpu_s"] / jobs * 1e6
    else:
        out["intake_ops"] = out["submit_ops"]  # a huey job is in its queue on return
    return out


# -- 8b. latency: children -------------------------------------------------------------------


def child_latency_owner(args: dict[str, Any]) -> dict[str, Any]:
    """An owner whose claimers block in ``claim(wait=...)``; claim time of every job."""
    Queue = queue_class()
    total, workers, sync = int(args["total"]), int(args["workers"]), args["sync"]
    claimed = [float("nan")] * total
    got = [0]
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    q = Queue.open(args["root"])
    try:

        def work() -> None:
            try:
                while not stop.is_set():
                    c = q.claim(QUEUE, wait=0.05)
                    if c is None:
                        continue
                    now = time.time()
                    (i, _) = _HEAD.unpack_from(c.payload)
                    claimed[i] = now
                    q.ack(c)
                    with lock:
                        got[0] += 1
                        if got[0] >= total:
                            stop.set()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        _touch(os.path.join(sync, "owner-ready"))
        stop.wait(float(args.get("timeout", 120.0)))
        stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        q.close()
    if errors:
        raise errors[0]
    return {"claimed": claimed, "got": got[0]}


def child_latency_producer(args: dict[str, Any]) -> dict[str, Any]:
    """Open loop: job i is sent at ``t0 + i / rate`` by sender ``i % senders``."""
    from taquba import Producer

    rate, total, senders = float(args["rate"]), int(args["total"]), int(args["senders"])
    pad = b"\0" * max(0, int(args["payload"]) - _HEAD.size)
    returned = [float("nan")] * total
    errors: list[BaseException] = []
    late = [0] * senders
    producer = Producer.open(args["root"])
    t0 = time.time() + 0.2

    def send(k: int) -> None:
        try:
            for i in range(k, total, senders):
                sched = t0 + i / rate
                delay = sched - time.time()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.001:
                    late[k] += 1
                producer.enqueue(QUEUE, _HEAD.pack(i, sched) + pad)
                returned[i] = time.time()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    producer.close()
    if errors:
        raise errors[0]
    return {
        "t0": t0,
        "returned": returned,
        "late_sends": sum(late),
        "achieved_rate": total / (max(returned) - t0),
    }


def _latency_window(cfg: Any) -> dict[str, Any]:
    total = max(1, int(cfg.prod_lat_rate * cfg.prod_lat_duration))
    d = fresh_dir(cfg.workdir, "prod-lat")
    root, sync = os.path.join(d, "q"), os.path.join(d, "sync")
    os.makedirs(sync)
    procs: list[subprocess.Popen[str]] = []
    try:
        owner = _spawn(
            "producers_latency_owner",
            {
                "root": root,
                "sync": sync,
                "total": total,
                "workers": cfg.prod_lat_workers,
                "timeout": cfg.prod_lat_duration + 60.0,
            },
        )
        procs.append(owner)
        _wait_files([os.path.join(sync, "owner-ready")], procs, "latency owner")
        producer = _spawn(
            "producers_latency_producer",
            {
                "root": root,
                "rate": cfg.prod_lat_rate,
                "total": total,
                "senders": 8,
                "payload": cfg.prod_payload,
            },
        )
        procs.append(producer)
        cpu0 = cpu_times()
        prod = _collect(producer, "latency producer")
        own = _collect(owner, "latency owner")
        steal = steal_pct(cpu0, cpu_times())
    finally:
        _kill_all(procs)
        remove_dir(d)
    if own["got"] != total or any(x != x for x in own["claimed"]):
        raise BenchError(f"latency: {own['got']} of {total} jobs claimed")
    skip = total // 20
    t0, rate = prod["t0"], cfg.prod_lat_rate
    after_return = [c - r for c, r in zip(own["claimed"][skip:], prod["returned"][skip:])]
    after_send = [c - (t0 + i / rate) for i, c in enumerate(own["claimed"]) if i >= skip]
    call = [r - (t0 + i / rate) for i, r in enumerate(prod["returned"]) if i >= skip]
    return {
        "jobs": total,
        "achieved_rate": prod["achieved_rate"],
        "late_sends": prod["late_sends"],
        "p50_ms": percentile(after_return, 50) * 1e3,
        "p99_ms": percentile(after_return, 99) * 1e3,
        "max_ms": max(after_return) * 1e3,
        "min_ms": min(after_return) * 1e3,
        "from_send_p50_ms": percentile(after_send, 50) * 1e3,
        "from_send_p99_ms": percentile(after_send, 99) * 1e3,
        "enqueue_p50_ms": percentile(call, 50) * 1e3,
        "enqueue_p99_ms": percentile(call, 99) * 1e3,
        "steal_pct": steal,
    }


# -- 8c + 8d. object store: children ---------------------------------------------------------


def _fs_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in KINDS}


def _listed(fs: Any, path: str) -> list[str]:
    """Keys under ``path`` of an in-memory filesystem, read from its dict (``ls`` races
    with the owner's deletes); counts no request."""
    prefix = path.rstrip("/") + "/"
    return [k for k in list(fs.store) if k.startswith(prefix)]


def child_objectstore(args: dict[str, Any]) -> dict[str, Any]:
    from fsspec.implementations.memory import MemoryFileSystem

    from taquba import Producer

    from .latencyfs import LatencyFileSystem

    Queue = queue_class()
    conc, jobs, latency = int(args["threads"]), int(args["jobs"]), float(args["latency"])
    payload = make_payload(int(args["payload"]))
    inner = MemoryFileSystem(skip_instance_cache=True)
    owner_fs = LatencyFileSystem(inner, latency=latency)
    producer_fs = LatencyFileSystem(inner, latency=latency)
    root = "/bench/q"
    q = Queue.open(owner_fs, root)
    producer = Producer.open(producer_fs, root)
    try:
        o0, p0 = owner_fs.snapshot(), producer_fs.snapshot()
        shares = split(jobs, conc)
        release = threading.Event()
        errors: list[BaseException] = []

        def body(i: int) -> None:
            release.wait()
            try:
                for _ in range(shares[i]):
                    producer.enqueue(QUEUE, payload)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(conc)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        release.set()
        for t in threads:
            t.join()
        submit_s = time.perf_counter() - t0
        if errors:
            raise errors[0]
        p1 = producer_fs.snapshot()
        deadline = time.monotonic() + 120.0
        # Until the owner holds every job and has deleted every inbox object (looked at on
        # the inner filesystem, which counts nothing).
        while q.stats(QUEUE).pending < jobs or _listed(inner, f"{root}/inbox"):
            if time.monotonic() > deadline:
                raise BenchError(f"objectstore: {q.stats(QUEUE).pending} of {jobs} taken in")
            time.sleep(0.005)
        intake_s = time.perf_counter() - t0
        o1 = owner_fs.snapshot()
        time.sleep(0.3)
        if q.stats(QUEUE).pending != jobs:
            raise BenchError(f"objectstore: {q.stats(QUEUE).pending} jobs for {jobs} submissions")
    finally:
        producer.close()
        q.close()
    own, prod = _fs_delta(o1, o0), _fs_delta(p1, p0)
    total = sum(own.values()) + sum(prod.values())
    return {
        "threads": conc,
        "jobs": jobs,
        "latency_ms": latency * 1e3,
        "payload": len(payload),
        "submit_s": submit_s,
        "intake_s": intake_s,
        "submit_ops": jobs / submit_s,
        "intake_ops": jobs / intake_s,
        "owner_requests": own,
        "producer_requests": prod,
        "objects": prod["put"],
        "jobs_per_object": jobs / prod["put"] if prod["put"] else None,
        "requests": total,
        "requests_per_job": total / jobs,
        "puts_lists_gets_deletes_per_job": sum(
            own[k] + prod[k] for k in ("put", "get", "list", "delete")
        )
        / jobs,
    }


def child_idle(args: dict[str, Any]) -> dict[str, Any]:
    from taquba import Producer

    from .latencyfs import LatencyFileSystem

    Queue = queue_class()
    window, settle = float(args["window"]), float(args["settle"])
    fs = LatencyFileSystem(latency=float(args["latency"]))
    root = "/idle/q"
    q = Queue.open(fs, root)
    try:
        with Producer.open(fs, root) as producer:
            for _ in range(10):
                producer.enqueue_batch(QUEUE, [make_payload(64)] * 10)
        while q.stats(QUEUE).pending < 100:
            q.intake_now()  # not waiting out the pace: the idle backoff starts from here
        for _ in range(50):
            c = q.claim(QUEUE)
            assert c is not None
            q.ack(c)
        held = [q.claim(QUEUE, lease=3600.0) for _ in range(10)]
        time.sleep(settle)
        f0 = fs.snapshot()
        time.sleep(window)
        f1 = fs.snapshot()
        assert all(c is not None for c in held)
        options = q.options
    finally:
        q.close()
    counts = _fs_delta(f1, f0)
    per_hour = sum(counts.values()) * 3600.0 / window
    return {
        "window_s": window,
        "settle_s": settle,
        "requests": counts,
        "per_hour": per_hour,
        "inbox_interval_s": float(options.inbox_interval),
        "inbox_busy_interval_s": float(options.inbox_busy_interval),
        "reaper_interval_s": float(options.reaper_interval),
        "scheduler_interval_s": float(options.scheduler_interval),
    }


# -- the parent ------------------------------------------------------------------------------


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "processes": cfg.prod_processes,
        "threads": cfg.prod_threads,
        "payload": cfg.prod_payload,
    }
    order = ["taquba"] + (["huey"] if "huey" in systems else [])
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in order}
    for rep in range(cfg.prod_reps):
        for k in range(len(order)):
            system = order[(rep + k) % len(order)]
            r = _throughput_once(cfg, system, cfg.prod_jobs)
            r["round"] = rep + 1
            runs[system].append(r)
            extra = (
                f", owner held all {r['intake_lag_ms']:.0f} ms later: {r['intake_ops']:.0f}/s"
                if system == "taquba"
                else ""
            )
            log(
                f"  {cfg.prod_processes} x {cfg.prod_threads} {system:6s} rep {rep + 1}: "
                f"{r['jobs']} jobs submitted at {r['submit_ops']:.0f}/s{extra}{steal_note(r)}"
            )
    res["throughput"] = {
        s: {
            **{
                k: median([r[k] for r in rs])
                for k in rs[0]
                if k
                in ("submit_ops", "intake_ops", "producer_cpu_us_per_job", "owner_cpu_us_per_job")
            },
            "runs": rs,
        }
        for s, rs in runs.items()
    }

    windows = []
    for w in range(cfg.prod_lat_reps):
        r = _latency_window(cfg)
        windows.append(r)
        log(
            f"  latency window {w + 1}: {r['jobs']} jobs at {r['achieved_rate']:.0f}/s: "
            f"enqueue return -> claim p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
            f"max {r['max_ms']:.1f} ms (enqueue call p99 {r['enqueue_p99_ms']:.2f} ms)"
            f"{steal_note(r)}"
        )
    res["latency"] = {
        k: median([w[k] for w in windows])
        for k in (
            "achieved_rate",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "from_send_p50_ms",
            "from_send_p99_ms",
            "enqueue_p50_ms",
            "enqueue_p99_ms",
        )
    }
    res["latency"]["windows"] = windows

    r = run_child(
        "producers_objectstore",
        {
            "threads": cfg.prod_obj_threads,
            "jobs": cfg.prod_obj_jobs,
            "latency": cfg.obj_latency,
            "payload": cfg.prod_payload,
        },
        timeout=900,
    )
    res["objectstore"] = r
    log(
        f"  object store {r['latency_ms']:.0f} ms/request, {r['threads']} threads: "
        f"{r['jobs']} jobs submitted at {r['submit_ops']:.0f}/s in {r['objects']} objects; "
        f"{r['requests_per_job']:.3f} requests/job (owner {r['owner_requests']}, producer "
        f"{r['producer_requests']})"
    )

    r = run_child(
        "producers_idle",
        {
            "window": cfg.prod_idle_window,
            "settle": cfg.prod_idle_settle,
            "latency": cfg.obj_latency,
        },
        timeout=cfg.prod_idle_window + cfg.prod_idle_settle + 300,
    )
    res["idle"] = r
    log(
        f"  idle owner on an object store, {r['window_s']:.0f} s window: "
        f"{r['per_hour']:.0f} requests/hour ({r['requests']})"
    )
    return res
