"""Smoke test of ``benchmarks/`` at tiny sizes, so the harness cannot rot.

It runs ``python -m benchmarks run --quick`` for real (child processes, JSON output, the
table) and checks that every taquba scenario produced sane numbers. No number is compared
with a target here: the benchmarks are not timed tests. The peers (huey, persist-queue) are
bench-only dependencies: their test is skipped when they are not installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from benchmarks import report
from benchmarks.latencyfs import LatencyFileSystem

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, *args: str, timeout: float = 240) -> tuple[dict, str]:
    out = tmp_path / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "run",
        "--quick",
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(out),
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, (
        f"benchmark run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return json.loads(out.read_text()), proc.stdout


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_taquba_scenarios_quick(tmp_path):
    res, table = _run(tmp_path, "--systems", "taquba")
    assert res["systems"] == ["taquba"]
    cfg = res["config"]

    local = res["local"]
    assert _positive(local["fsync"]["write_fsync_4k_ms"])
    for size in cfg["payloads"]:
        for threads in cfg["threads"]:
            r = local["throughput"][f"taquba/{size}/{threads}"]
            assert _positive(r["enqueue_ops"]) and _positive(r["drain_ops"])
            assert all(run["n"] == cfg["n"] for run in r["runs"])
    for b in local["batch"].values():
        assert _positive(b["jobs_per_s"])

    steal = [run["steal_pct"] for r in local["throughput"].values() for run in r["runs"]]
    if sys.platform.startswith("linux"):
        assert all(isinstance(x, float) and 0.0 <= x <= 100.0 for x in steal)
        assert "CPU steal" in table

    lat = res["latency"]["taquba"]
    assert lat["jobs"] > 0 and lat["pickup_p50_ms"] <= lat["pickup_p99_ms"]
    assert 0 <= lat["pickup_p99_ms"] <= lat["done_p99_ms"] + 1e-6

    hist = res["history"]["taquba"]
    assert _positive(hist["open_ms"]) and _positive(hist["first_claim_ms"])
    assert all(r["pending_after_open"] == cfg["history_pending"] for r in hist["reopens"])
    assert hist["reopens"][0]["requests_at_open"]["gets"] >= 1
    killed, big = hist["killed"], hist["big"]
    assert killed["build"]["end"] == "kill" and _positive(killed["total_ms"])
    assert all(r["pending_after_open"] == cfg["history_pending"] for r in killed["reopens"])
    assert all(r["pending_after_open"] == cfg["big_pending"] for r in big["reopens"])

    mem = res["memory"]["taquba"]
    assert mem["peak_rss"] >= mem["base_rss"] > 0
    ib = res["memory"]["index_bytes"]
    assert ib["enqueued_bytes_per_job"] > 0 and ib["enqueued_distinct_bytes_per_job"] > 0
    # The reopened store holds one 64 B payload object per job: the old way subtracts 64 B
    # of it, the new one its whole object.
    assert ib["payload_object_bytes"] > 64
    assert ib["reopened_bytes_per_job"] > 0
    assert ib["reopened_bytes_per_job_beyond_payload"] == pytest.approx(
        ib["reopened_bytes_per_job"] + ib["payload_object_bytes"] - 64
    )

    obj = res["objectstore"]
    assert [r["concurrency"] for r in obj["latency"] if r["payload"] == cfg["payloads"][0]] == list(
        cfg["obj_concurrency"]
    )
    for r in obj["latency"] + obj["moto"]:
        assert r["jobs"] > 0 and _positive(r["enqueue_ops"]) and _positive(r["drain_ops"])
        assert _positive(r["commits_per_put_enqueue"]) and _positive(r["bytes_per_job"])
        # every job costs at least its payload, and the counting wrapper saw every PUT
        assert r["bytes_per_job"] >= r["payload"]
        if "fs_requests_run" in r:
            assert r["fs_requests_run"]["put"] == r["requests_run"]["puts"]

    assert res["idle"]["window_s"] > 0 and res["idle"]["per_minute"] >= 0

    prod = res["producers"]
    tq = prod["throughput"]["taquba"]
    assert set(prod["throughput"]) == {"taquba"}
    assert len(tq["runs"]) == cfg["prod_reps"]
    for r in tq["runs"]:
        assert r["jobs"] == cfg["prod_jobs"]
        assert _positive(r["submit_ops"]) and _positive(r["intake_ops"])
        # the owner took every job in, and read at least one inbox object per PUT it saw
        assert r["owner_requests"]["lists"] >= 1 and r["owner_requests"]["gets"] >= 1
    lat = prod["latency"]
    assert all(w["jobs"] > 0 for w in lat["windows"])
    assert lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    obj = prod["objectstore"]
    # every submission is one producer PUT that the owner GETs once (its other GETs read its
    # own manifest back after a write); the owner LISTs the inbox, writes its intake records
    # and deletes what it took in
    assert obj["objects"] >= 1 and obj["jobs_per_object"] >= 1
    assert obj["producer_requests"]["put"] == obj["objects"] <= obj["owner_requests"]["get"]
    assert obj["owner_requests"]["get"] <= obj["objects"] + obj["owner_requests"]["put"]
    assert obj["owner_requests"]["list"] >= 1 and obj["owner_requests"]["put"] >= 1
    assert obj["owner_requests"]["delete"] >= 1
    assert obj["requests_per_job"] == obj["requests"] / obj["jobs"] > 0
    assert prod["idle"]["per_hour"] >= 0 and prod["idle"]["inbox_interval_s"] > 0

    tasks = res["tasks"]
    assert set(tasks["runs"]) == {"raw", "tasks", "tasks_with_result"}  # huey not selected
    for runs in tasks["runs"].values():
        assert all(r["n"] == cfg["tasks_jobs"] and _positive(r["jobs_per_s"]) for r in runs)
    assert any(
        t["name"].endswith("no-op task vs raw claim+ack") and t["met"] is not None
        for t in res["targets"]
    )

    out = tmp_path / "result.json"
    stored = json.loads(out.read_text())
    stored["targets"] = [{"name": "made up", "measured": "1", "target": "2", "met": False}]
    out.write_text(json.dumps(stored))
    for flags, retargeted in (([], False), (["--retarget"], True)):
        printed = subprocess.run(
            [sys.executable, "-m", "benchmarks", "report", str(out), *flags],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        assert printed.returncode == 0, printed.stderr
        targets_table = printed.stdout[printed.stdout.index("### Targets") :]
        assert ("made up" in targets_table) is not retargeted
        assert ("| claim p99 after history vs fresh" in targets_table) is retargeted

    names = [t["name"] for t in res["targets"]]
    assert any("open -> first claim" in n for n in names) and any(
        "commits per PUT" in n for n in names
    )
    assert "### Targets" in table and "taquba" in table


def test_peers_quick(tmp_path):
    pytest.importorskip("huey")
    pytest.importorskip("persistqueue")
    res, table = _run(
        tmp_path,
        "--systems",
        "taquba,huey,persist-queue",
        "--only",
        "local,latency,producers,tasks",
        "--payloads",
        "64",
        "--threads",
        "1,2",
    )
    for system in ("huey", "persist-queue"):
        for threads in (1, 2):
            r = res["local"]["throughput"][f"{system}/64/{threads}"]
            assert _positive(r["enqueue_ops"]) and _positive(r["drain_ops"])
        assert res["latency"][system]["jobs"] > 0
    assert "taquba / huey" in table
    assert all(_positive(r["jobs_per_s"]) for r in res["tasks"]["runs"]["huey"])
    assert any(
        t["name"].endswith("no-op task vs huey tasks") and t["met"] is not None
        for t in res["targets"]
    )
    assert any(
        t["name"].startswith("enqueue 2 threads vs huey") and t["met"] is not None
        for t in res["targets"]
    )
    tp = res["producers"]["throughput"]
    assert _positive(tp["huey"]["submit_ops"]) and _positive(tp["taquba"]["submit_ops"])
    assert "submitted vs huey" in table
    assert any(
        t["name"].endswith("submitted vs huey") and t["met"] is not None for t in res["targets"]
    )


_HIDE_PEERS = """
import sys
class _HidePeers:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("huey", "persistqueue"):
            raise ImportError(f"{name} hidden by the smoke test")
        return None
sys.meta_path.insert(0, _HidePeers())
from benchmarks.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_peers_are_skipped_not_fatal(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _HIDE_PEERS,
            "run",
            "--quick",
            "--only",
            "local",
            "--payloads",
            "64",
            "--threads",
            "1,2",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["systems"] == ["taquba"]
    assert set(res["skipped"]) == {"huey", "persist-queue"}
    assert _positive(res["local"]["throughput"]["taquba/64/1"]["enqueue_ops"])
    vs_huey = [t for t in res["targets"] if "vs huey" in t["name"]]
    assert vs_huey and all(t["met"] is None for t in vs_huey)
    assert {t["name"] for t in res["targets"] if "fsync limit" in t["name"]} == {
        "enqueue 2 threads vs serial fsync limit (64 B)",
        "enqueue 1 thread vs serial fsync limit (64 B)",
    }


def test_a_run_of_one_thread_count_checks_only_its_own_targets():
    from benchmarks.report import targets

    def run(threads: list[int]) -> list[str]:
        tp = {
            f"{s}/64/{t}": {"enqueue_ops": 9000.0, "drain_ops": 9000.0}
            for s in ("taquba", "huey")
            for t in threads
        }
        results = {
            "config": {"threads": threads, "payloads": [64]},
            "local": {"throughput": tp, "fsync": {"serial_fsync_limit_ops": 3000.0}},
        }
        return [t["name"] for t in targets(results)]

    assert run([8]) == [
        "enqueue 8 threads vs huey (64 B)",
        "enqueue 8 threads vs serial fsync limit (64 B)",
        "claim+ack 8 workers vs huey (64 B)",
    ]
    assert run([1]) == ["enqueue 1 thread vs serial fsync limit (64 B)"]
    assert len(run([1, 8])) == 4


def test_targets_flag_a_miss():
    results = {
        "config": {
            "payloads": [64],
            "threads": [1, 8],
            "obj_concurrency": [100],
            "history_finished": 100_000,
            "history_pending": 1000,
        },
        "local": {
            "fsync": {"serial_fsync_limit_ops": 5000.0},
            "throughput": {
                "taquba/64/8": {"enqueue_ops": 20000.0, "drain_ops": 9000.0},
                "huey/64/8": {"enqueue_ops": 5000.0, "drain_ops": 5000.0},
                "taquba/64/1": {"enqueue_ops": 3000.0, "drain_ops": 1.0},
            },
        },
        "history": {"taquba": {"total_ms": 80.0, "claim_p99_ratio": 1.2}},
        "idle": {"per_minute": 0.0},
    }
    by_name = {t["name"]: t for t in report.targets(results)}
    assert by_name["enqueue 8 threads vs huey (64 B)"]["met"] is True
    assert by_name["enqueue 8 threads vs serial fsync limit (64 B)"]["met"] is True
    assert by_name["enqueue 1 thread vs serial fsync limit (64 B)"]["met"] is False
    assert by_name["claim+ack 8 workers vs huey (64 B)"]["met"] is False
    assert by_name["claim p99 after history vs fresh"]["met"] is True
    assert by_name["storage requests per minute, idle"]["met"] is True
    reopen = next(t for t in by_name if t.startswith("open -> first claim"))
    assert by_name[reopen]["met"] is False
    assert "MISSED" in report.render(
        {"config": results["config"], "targets": list(by_name.values())}
    )


def test_producer_targets_flag_a_miss():
    results = {
        "producers": {
            "processes": 4,
            "threads": 8,
            "throughput": {
                "taquba": {"submit_ops": 9000.0, "intake_ops": 7000.0},
                "huey": {"submit_ops": 4000.0, "intake_ops": 4000.0},
            },
            "latency": {"p99_ms": 25.0},
            "objectstore": {"threads": 100, "latency_ms": 20.0, "requests_per_job": 0.05},
            "idle": {"per_hour": 380.0},
        }
    }
    by_name = {t["name"]: t for t in report.targets(results)}
    assert by_name["producers, 4 processes x 8 threads, submitted vs huey"]["met"] is True
    assert by_name["producers, 4 processes x 8 threads, in the queue vs huey"]["met"] is False
    assert by_name["producer enqueue -> owner claim p99, local disk"]["met"] is False
    assert by_name["storage requests per job, 100 producer threads, 20 ms/request"]["met"] is True
    idle = by_name["requests per hour, idle owner on an object store, defaults"]
    assert idle["met"] is None and idle["measured"] == "380/hour"
    del results["producers"]["throughput"]["huey"]
    vs_huey = [t for t in report.targets(results) if "vs huey" in t["name"]]
    assert len(vs_huey) == 2 and all(t["met"] is None for t in vs_huey)


def test_latency_rounds_take_turns_and_are_compared_round_by_round(monkeypatch):
    from types import SimpleNamespace

    from benchmarks import latency

    order = []
    p99 = {"taquba": [1.0, 9.0, 1.0], "huey": [2.0, 2.0, 2.0]}

    def fake_child(kind, args, steal=False):
        system = args["system"]
        order.append(system)
        v = p99[system][sum(1 for s in order if s == system) - 1]
        return {
            "system": system,
            "jobs": 10,
            "achieved_rate": 500.0,
            "late_sends": 0,
            "pickup_p50_ms": v,
            "pickup_p99_ms": v,
            "pickup_max_ms": v,
            "done_p50_ms": v,
            "done_p99_ms": v,
            "done_max_ms": v,
        }

    monkeypatch.setattr(latency, "run_child", fake_child)
    cfg = SimpleNamespace(
        latency_rate=500.0,
        latency_duration=1.0,
        latency_workers=4,
        latency_reps=3,
        workdir="unused",
    )
    res = latency.run(cfg, ["taquba", "huey"], lambda msg: None)
    assert order == ["taquba", "huey", "huey", "taquba", "taquba", "huey"]
    assert res["taquba"]["done_p99_ms"] == 1.0 and res["huey"]["done_p99_ms"] == 2.0
    assert latency.rounds_won(res, "taquba", "huey") == (2, 3)
    assert latency.rounds_won(res, "huey", "taquba") == (1, 3)
    assert latency.rounds_won(res, "taquba", "persist-queue") is None
    target = next(
        t
        for t in report.targets({"config": {"latency_rate": 500.0}, "latency": res})
        if t["name"].startswith("latency p99 (done)")
    )
    assert target["met"] is True and "lower in 2 rounds" in target["measured"]
    assert target["value"] == 0.5  # rounds: 1/2, 9/2, 1/2

    # Stalls that hit taquba's and huey's windows in different rounds: the ratio of the
    # medians (5.5 vs 5.0 ms) says 1.1x, the rounds say 0.92x (5.5/6, 1/5, 6/2).
    def windows(*p99s):
        return {"windows": [{"round": i + 1, "done_p99_ms": v} for i, v in enumerate(p99s)]}

    res = {"taquba": windows(5.5, 1.0, 6.0), "huey": windows(6.0, 5.0, 2.0)}
    assert abs(latency.round_ratio(res, "taquba", "huey") - 5.5 / 6.0) < 1e-12
    assert latency.round_ratio(res, "taquba", "persist-queue") is None
    for r in res.values():  # a file from before rounds were recorded: window k is round k
        for w in r["windows"]:
            del w["round"]
    assert latency.rounds_won(res, "taquba", "huey") == (2, 3)
    assert abs(latency.round_ratio(res, "taquba", "huey") - 5.5 / 6.0) < 1e-12


def test_steal_is_the_share_of_cpu_time_given_away():
    from benchmarks.common import steal_pct
    from benchmarks.report import steal_summary

    before = [100, 0, 50, 800, 10, 0, 5, 35, 0, 0]
    after = [160, 0, 70, 1500, 20, 0, 5, 45, 0, 0]  # 800 ticks in all, 10 of them stolen
    assert steal_pct(before, after) == 100.0 * 10 / 800
    assert steal_pct(None, after) is None and steal_pct(before, before) is None

    def runs(*pcts):
        return [{"steal_pct": p} for p in pcts]

    results = {
        "local": {
            "throughput": {
                "taquba/64/8": {"runs": runs(0.1, 4.0, 0.2)},
                "huey/64/8": {"runs": runs(0.0, 0.3, 1.0)},
            }
        },
        "latency": {"taquba": {"windows": runs(0.2, None)}},
    }
    line = steal_summary(results)
    assert line is not None
    assert "median 0.2%" in line and "max 4.0% (taquba/64/8 rep 2)" in line
    assert "2 of 7 at 1% or more" in line
    assert steal_summary({"local": {"throughput": {}}}) is None


def test_latency_filesystem_delays_and_counts():
    fs = LatencyFileSystem(latency=0.01)
    t0 = time.perf_counter()
    fs.pipe_file("/a/x", b"abc", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file("/a/x", b"abc", mode="create")
    assert fs.cat_file("/a/x") == b"abc"
    assert [e["name"].rsplit("/", 1)[-1] for e in fs.ls("/a", detail=True)] == ["x"]
    fs.rm(["/a/x"])
    assert time.perf_counter() - t0 >= 0.05
    snap = fs.snapshot()
    assert snap["put"] == 2 and snap["get"] == 1 and snap["list"] == 1 and snap["delete"] == 1
    assert snap["bytes_written"] == 6
