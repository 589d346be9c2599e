"""Shared helpers: timing, percentiles, memory, child processes, the work directory."""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
RESULT_MARKER = "@@BENCH-RESULT@@ "
QUEUE = "bench"
SOURCE_ENV = "TAQUBA_BENCH_SOURCE"  # a child imports taquba from this tree (A/B runs)


class BenchError(RuntimeError):
    """A measurement went wrong (a lost job, a child that failed): the run must not pass."""


# -- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def make_payload(size: int, seed: int = 0) -> bytes:
    """Incompressible-looking but deterministic bytes of ``size``."""
    import random

    return random.Random(seed).randbytes(size)


def split(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# -- memory ----------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- threads ---------------------------------------------------------------------------------


def run_threads(
    count: int, target: Callable[[int], Any], name: str = "bench"
) -> tuple[float, list[Any]]:
    """Start ``count`` threads running ``target(i)`` together; return (wall seconds, results).

    The clock starts when every thread has been created and released by a barrier and stops
    when the last one finishes. An exception in any thread is re-raised here.
    """
    barrier = threading.Barrier(count + 1)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=body, args=(i,), name=f"{name}-{i}", daemon=True)
        for i in range(count)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed, results


# -- work directory --------------------------------------------------------------------------


def fs_type(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), or '?'."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                inside = len(parts) >= 3 and (
                    path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")
                )
                if inside and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def fresh_dir(workdir: str, prefix: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix + "-", dir=workdir)


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def dir_size(path: str) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.path.getsize(os.path.join(root, n))
                files += 1
            except OSError:
                pass
    return total, files


# -- child processes -------------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """Print a child's result where the parent will find it."""
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``, all CPUs), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    return [int(x) for x in first[1:]]


def steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time (%) the hypervisor gave to others between two ``cpu_times()``.

    Steal is the 8th counter of ``/proc/stat``; guest time is already counted in user time,
    so the 9th and 10th counters are left out of the total.
    """
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    total = sum(after[:8]) - sum(before[:8])
    return 100.0 * (after[7] - before[7]) / total if total > 0 else None


def steal_note(result: dict[str, Any]) -> str:
    """``"  steal 3.1%"`` for a log line, or nothing when none was measured."""
    pct = result.get("steal_pct")
    return f"  steal {pct:.1f}%" if pct else ""


def run_child(
    scenario: str,
    args: dict[str, Any],
    *,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    steal: bool = False,
) -> dict[str, Any]:
    """Run ``python -m benchmarks child SCENARIO JSON`` and return its result dict.

    With ``steal``, the result gets ``steal_pct``: the share of CPU time the hypervisor gave
    to other guests while the child ran (None where the machine does not say), a sign of a
    noisy run.
    """
    cmd = [sys.executable, "-m", "benchmarks", "child", scenario, json.dumps(args)]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO_DIR + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    before = cpu_times()
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_DIR,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{scenario} {args} timed out after {timeout:.0f} s") from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            if proc.returncode != 0:
                raise BenchError(f"{scenario} exited {proc.returncode}: {proc.stderr[-2000:]}")
            if steal:
                result["steal_pct"] = steal_pct(before, cpu_times())
            return result
    raise BenchError(
        f"{scenario} {args} exited {proc.returncode} without a result:\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def run_child_killed(
    scenario: str, args: dict[str, Any], *, timeout: float = 600.0
) -> dict[str, Any]:
    """Run a child that reports its result and then waits; SIGKILL it once it has reported.

    The child is killed while running (its threads, files and locks as they are), the way
    a crash or an OOM kill ends a process; its result is returned.
    """
    import signal

    cmd = [sys.executable, "-m", "benchmarks", "child", scenario, json.dumps(args)]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO_DIR + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_DIR,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_MARKER):
                result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if proc.returncode != -signal.SIGKILL:
                    raise BenchError(f"{scenario} ended with {proc.returncode} before the kill")
                return result
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise BenchError(f"{scenario} {args} exited {proc.returncode} without a result")


def module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
