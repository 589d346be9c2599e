"""9. Tasks: the cost of ``taquba.tasks`` over raw claim/ack, and huey's task throughput.

Three children per repetition, taking turns, each on a fresh local-disk store holding N
jobs put in untimed (one transaction or batch), then timed until every job is finished:

- ``raw``: taquba, 8 threads each looping ``claim`` + ``ack`` (the drain of scenario 1), on
  payloads as large as a task call's.
- ``tasks``: ``Tasks(q).run_worker(concurrency=8)`` running a no-op task (it only counts
  its calls under a lock, as huey's does) declared with the defaults: the worker loop,
  decoding the call, dispatching by name, and the ack. The clock stops when the last
  job's settlement is durable: once the task has run N times, ``q.stats`` (which returns
  only once the state it reports is durable) is polled every millisecond until N jobs are
  done. (Until 2026-12-03 the harness called ``wait_for_completion`` on every id in order
  instead; that thread took about as much of the GIL as the 8 workers together, see
  NOTES.md.)
- ``tasks_with_result``: the same with ``store_result=True``: the ack also writes the
  result and makes the job that deletes it after the retention.
- ``huey``: ``SqliteHuey`` (``fsync=True``, as in scenario 1) with the same no-op task and
  an in-process consumer of 8 worker threads (first poll delay 1 ms); the clock stops when
  the last task has returned.

The figures are jobs per second (median of the repetitions); the targets are
tasks/raw >= 0.8x and tasks/huey >= 3x (huey's no-op task stores no result either: huey
does not store ``None``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .common import QUEUE, BenchError, fresh_dir, median, remove_dir, run_child, steal_note

WORKERS = 8


def _noop() -> None:
    return None


def child_raw(args: dict[str, Any]) -> dict[str, Any]:
    """N jobs drained by 8 threads of claim + ack."""
    from taquba import Queue
    from taquba.tasks.codec import encode_call

    from .common import run_threads

    n = int(args["n"])
    d = fresh_dir(args["workdir"], "tasks-raw")
    try:
        with Queue.open(d) as q:
            payload = encode_call("noop", [], {})
            for start in range(0, n, 1000):
                q.enqueue_batch(QUEUE, [payload] * min(1000, n - start))
            counts = [0] * WORKERS

            def drain(i: int) -> None:
                claim, ack = q.claim, q.ack
                got = 0
                while (c := claim(QUEUE)) is not None:
                    ack(c)
                    got += 1
                counts[i] = got

            elapsed, _ = run_threads(WORKERS, drain, "worker")
    finally:
        remove_dir(d)
    if sum(counts) != n:
        raise BenchError(f"raw: {n} enqueued, {sum(counts)} drained")
    return {"mode": "raw", "n": n, "seconds": elapsed, "jobs_per_s": n / elapsed}


def child_tasks(args: dict[str, Any]) -> dict[str, Any]:
    """N no-op task jobs run by ``Tasks.run_worker(concurrency=8)``."""
    from taquba import Queue
    from taquba.tasks import Tasks
    from taquba.tasks.codec import encode_call

    n = int(args["n"])
    store_result = bool(args.get("store_result", False))
    d = fresh_dir(args["workdir"], "tasks-tasks")
    try:
        with Queue.open(d) as q:
            tasks = Tasks(q)
            ran = threading.Event()
            lock = threading.Lock()
            count = [0]

            def noop() -> None:
                with lock:
                    count[0] += 1
                    if count[0] == n:
                        ran.set()

            tasks.task(name="noop", queue=QUEUE, store_result=store_result)(noop)
            payload = encode_call("noop", [], {})
            for start in range(0, n, 1000):
                q.enqueue_batch(QUEUE, [payload] * min(1000, n - start))
            shutdown = threading.Event()
            errors: list[BaseException] = []

            def work() -> None:
                try:
                    tasks.run_worker(shutdown=shutdown, concurrency=WORKERS, poll_interval=0.2)
                except BaseException as exc:
                    errors.append(exc)
                    ran.set()

            worker = threading.Thread(target=work, name="tasks-worker")
            t0 = time.perf_counter()
            worker.start()
            if not ran.wait(600.0) or errors:
                raise BenchError(f"tasks: {count[0]} of {n} tasks ran ({errors!r})")
            while q.stats(QUEUE).done < n:  # every ack durable (stats waits for that)
                if time.perf_counter() - t0 > 600.0:
                    raise BenchError("tasks: the jobs did not all finish")
                time.sleep(0.001)
            elapsed = time.perf_counter() - t0
            shutdown.set()
            worker.join()
            stats = q.stats(QUEUE)
    finally:
        remove_dir(d)
    if errors:
        raise BenchError(f"tasks: the worker failed: {errors[0]!r}")
    if stats.done != n or stats.dead or stats.pending:
        raise BenchError(f"tasks: {n} enqueued, {stats}")
    return {
        "mode": "tasks",
        "n": n,
        "store_result": store_result,
        "seconds": elapsed,
        "jobs_per_s": n / elapsed,
    }


def child_huey(args: dict[str, Any]) -> dict[str, Any]:
    """N no-op huey tasks run by an in-process consumer of 8 worker threads."""
    import logging

    from huey import SqliteHuey

    logging.getLogger("huey").setLevel(logging.WARNING)
    n = int(args["n"])
    d = fresh_dir(args["workdir"], "tasks-huey")
    try:
        huey = SqliteHuey(name=QUEUE, filename=os.path.join(d, "huey.db"), fsync=True)
        done = threading.Event()
        lock = threading.Lock()
        count = [0]

        @huey.task()
        def noop() -> None:
            with lock:
                count[0] += 1
                if count[0] == n:
                    done.set()

        # Put the N tasks in with one transaction (setup, untimed).
        messages = [huey.serialize_task(noop.s()) for _ in range(n)]
        with huey.storage.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [(QUEUE, m, 0) for m in messages],
            )
        consumer = huey.create_consumer(
            workers=WORKERS,
            worker_type="thread",
            periodic=False,
            initial_delay=0.001,
            backoff=1.15,
            max_delay=0.01,
            check_worker_health=False,
        )
        t0 = time.perf_counter()
        consumer.start()
        finished = done.wait(600.0)
        elapsed = time.perf_counter() - t0
        consumer.stop(graceful=True)
        huey.storage.close()
    finally:
        remove_dir(d)
    if not finished:
        raise BenchError(f"huey: {count[0]} of {n} tasks ran")
    return {"mode": "huey", "n": n, "seconds": elapsed, "jobs_per_s": n / elapsed}


def run(cfg: Any, systems: list[str], log: Any) -> dict[str, Any]:
    # name -> (child scenario, extra arguments)
    modes: dict[str, tuple[str, dict[str, Any]]] = {
        "raw": ("tasks_raw", {}),
        "tasks": ("tasks_tasks", {"store_result": False}),
        "tasks_with_result": ("tasks_tasks", {"store_result": True}),
    }
    if "huey" in systems:
        modes["huey"] = ("tasks_huey", {})
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(cfg.tasks_reps):
        for mode, (child, extra) in modes.items():
            r = run_child(child, {"n": cfg.tasks_jobs, "workdir": cfg.workdir, **extra}, steal=True)
            runs[mode].append(r)
            log(f"  {mode:15s} rep {rep + 1}: {r['jobs_per_s']:8.0f} jobs/s{steal_note(r)}")
    out: dict[str, Any] = {"workers": WORKERS, "n": cfg.tasks_jobs, "runs": runs}
    for mode, rs in runs.items():
        out[f"{mode}_jobs_per_s"] = median([r["jobs_per_s"] for r in rs])
    return out
