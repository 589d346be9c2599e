"""2. End-to-end latency at a steady rate (open loop), 4 workers, durable local disk.

Job i is sent at its scheduled time ``t0 + i / rate`` regardless of how the workers are
doing (open loop): 8 sender threads take turns (job i goes to sender ``i % 8``), so one slow
durable enqueue does not hold back the next arrival. Latency is measured from the scheduled
send time, so a sender or queue that falls behind shows up in the numbers instead of hiding
(no coordinated omission):

- ``pickup``: scheduled time -> a worker holds the job (claim returned);
- ``done``:   scheduled time -> the worker's ack returned (the job is settled durably).

Workers block in ``claim(wait=...)`` (taquba: woken by enqueues; persist-queue: woken by
its put event; huey's storage has no blocking dequeue, so it polls every 1 ms). The first
5 % of jobs are warm-up and are not counted.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

from .common import BenchError, fresh_dir, median, percentile, remove_dir, run_child, steal_note
from .systems import open_system

_HEAD = struct.Struct("<Q")


def child_latency(args: dict[str, Any]) -> dict[str, Any]:
    system, rate, duration = args["system"], float(args["rate"]), float(args["duration"])
    workers, size = int(args["workers"]), int(args["payload"])
    total = max(1, int(rate * duration))
    pad = b"\0" * max(0, size - _HEAD.size)
    d = fresh_dir(args["workdir"], f"lat-{system}")
    pickup = [float("nan")] * total
    done = [float("nan")] * total
    stop = threading.Event()
    errors: list[BaseException] = []
    try:
        s = open_system(system, d, durable=True)
        try:
            t0 = time.perf_counter() + 0.2

            def worker() -> None:
                try:
                    while not stop.is_set():
                        h = s.claim(wait=0.05)
                        if h is None:
                            continue
                        now = time.perf_counter()
                        (i,) = _HEAD.unpack_from(s.payload(h))
                        sched = t0 + i / rate
                        pickup[i] = now - sched
                        s.ack(h)
                        done[i] = time.perf_counter() - sched
                except BaseException as exc:
                    errors.append(exc)

            threads = [
                threading.Thread(target=worker, name=f"worker-{k}", daemon=True)
                for k in range(workers)
            ]
            for t in threads:
                t.start()
            senders = int(args.get("senders", 8))
            late = [0] * senders

            def send(k: int) -> None:
                try:
                    for i in range(k, total, senders):
                        delay = t0 + i / rate - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        elif delay < -0.001:
                            late[k] += 1
                        s.enqueue(_HEAD.pack(i) + pad)
                except BaseException as exc:
                    errors.append(exc)

            sender_threads = [
                threading.Thread(target=send, args=(k,), name=f"sender-{k}", daemon=True)
                for k in range(senders)
            ]
            for t in sender_threads:
                t.start()
            for t in sender_threads:
                t.join()
            send_end = time.perf_counter()
            deadline = time.monotonic() + 30.0
            while any(x != x for x in done) and time.monotonic() < deadline and not errors:
                time.sleep(0.01)
            stop.set()
            for t in threads:
                t.join(timeout=10)
        finally:
            s.close()
    finally:
        remove_dir(d)
    if errors:
        raise errors[0]
    missing = sum(1 for x in done if x != x)
    if missing:
        raise BenchError(f"{system}: {missing} of {total} jobs never completed")
    skip = total // 20
    pk, dn = pickup[skip:], done[skip:]
    return {
        "system": system,
        "rate": rate,
        "jobs": total,
        "workers": workers,
        "payload": size,
        "achieved_rate": total / (send_end - t0),
        "late_sends": sum(late),
        "senders": len(late),
        "pickup_p50_ms": percentile(pk, 50) * 1e3,
        "pickup_p99_ms": percentile(pk, 99) * 1e3,
        "pickup_max_ms": max(pk) * 1e3,
        "done_p50_ms": percentile(dn, 50) * 1e3,
        "done_p99_ms": percentile(dn, 99) * 1e3,
        "done_max_ms": max(dn) * 1e3,
    }


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    # Systems take turns, window by window, and each figure is the median over the windows:
    # a stall of the machine (tens to hundreds of ms, seen here) then decides one window of
    # one system, not the comparison. The order rotates from one round to the next, so no
    # system always follows the same one.
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    reps = getattr(cfg, "latency_reps", 1)
    for rep in range(reps):
        for k in range(len(systems)):
            system = systems[(rep + k) % len(systems)]
            r = run_child(
                "latency",
                {
                    "system": system,
                    "rate": cfg.latency_rate,
                    "duration": cfg.latency_duration,
                    "workers": cfg.latency_workers,
                    "payload": 64,
                    "workdir": cfg.workdir,
                },
                steal=True,
            )
            r["round"] = rep + 1
            runs[system].append(r)
            log(
                f"  {system:13s} window {rep + 1}: {r['jobs']} jobs at "
                f"{r['achieved_rate']:.0f}/s: pickup p50 {r['pickup_p50_ms']:.2f} ms p99 "
                f"{r['pickup_p99_ms']:.2f} ms; done p50 {r['done_p50_ms']:.2f} ms p99 "
                f"{r['done_p99_ms']:.2f} ms max {r['done_max_ms']:.1f} ms{steal_note(r)}"
            )
    res: dict[str, Any] = {}
    for system, rs in runs.items():
        out = dict(rs[0])
        out.pop("round", None)
        for key in (
            "achieved_rate",
            "late_sends",
            "pickup_p50_ms",
            "pickup_p99_ms",
            "pickup_max_ms",
            "done_p50_ms",
            "done_p99_ms",
            "done_max_ms",
        ):
            out[key] = median([r[key] for r in rs])
        out["windows"] = rs
        res[system] = out
    return res


def round_pairs(
    res: dict[str, Any], system: str, peer: str, key: str = "done_p99_ms"
) -> list[tuple[float, float]]:
    """(``system``'s ``key``, ``peer``'s ``key``) for each round both ran a window in.

    The windows of one round ran back to back, so they saw much the same machine.
    """
    a, b = res.get(system), res.get(peer)
    if not a or not b:
        return []
    # Windows of files written before rounds were recorded took turns too: the k-th window
    # of every system ran in round k.
    theirs = {w.get("round", k + 1): w[key] for k, w in enumerate(b.get("windows", []))}
    ours = {w.get("round", k + 1): w[key] for k, w in enumerate(a.get("windows", []))}
    return [(x, theirs[r]) for r, x in sorted(ours.items()) if r in theirs]


def rounds_won(
    res: dict[str, Any], system: str, peer: str, key: str = "done_p99_ms"
) -> tuple[int, int] | None:
    """(rounds in which ``system``'s ``key`` was lower than ``peer``'s, rounds compared).

    Shows whether a median was decided by one noisy stretch of the machine.
    """
    pairs = round_pairs(res, system, peer, key)
    if not pairs:
        return None
    return sum(1 for x, y in pairs if x < y), len(pairs)


def round_ratio(
    res: dict[str, Any], system: str, peer: str, key: str = "done_p99_ms"
) -> float | None:
    """The median, over rounds, of ``system``'s ``key`` divided by ``peer``'s.

    A stall of the machine inflates the windows it hits; compared within rounds, it
    decides the ratio of one round, where a ratio of medians can swing on which system's
    windows the stalls happened to hit.
    """
    ratios = [x / y for x, y in round_pairs(res, system, peer, key) if y > 0]
    return median(ratios) if ratios else None
