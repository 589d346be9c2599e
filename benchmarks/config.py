"""Run sizes: the full run (the numbers in BENCHMARKS.md) and ``--quick`` (the smoke test)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from .common import RESULTS_DIR

SCENARIOS = ("local", "latency", "history", "memory", "objectstore", "idle", "producers", "tasks")


@dataclass(frozen=True)
class Config:
    quick: bool = False
    workdir: str = os.path.join(RESULTS_DIR, "work")
    # 1. local throughput
    n: int = 20_000
    reps: int = 3
    payloads: tuple[int, ...] = (64, 1024)
    threads: tuple[int, ...] = (1, 8)
    fsync_samples: int = 500
    batch_size: int = 1000
    batches: int = 20
    # 2. latency
    latency_rate: float = 500.0
    latency_duration: float = 10.0
    latency_workers: int = 4
    latency_reps: int = 5
    # 3 + 6. history
    history_finished: int = 100_000
    history_pending: int = 1_000
    history_claims: int = 1_000
    reopen_reps: int = 3
    big_pending: int = 1_000_000
    big_reopen_reps: int = 3
    # 4. memory
    rss_pending: int = 1_000_000
    index_jobs: int = 200_000
    # 5. object storage
    obj_latency: float = 0.020
    obj_concurrency: tuple[int, ...] = (1, 10, 100)
    obj_jobs: dict[int, int] = field(default_factory=lambda: {1: 200, 10: 1_000, 100: 10_000})
    moto: bool = True
    # 7. idle
    idle_window: float = 20.0
    idle_settle: float = 1.5
    # 8. producers (many processes, one owner)
    prod_processes: int = 4
    prod_threads: int = 8
    prod_payload: int = 64
    prod_jobs: int = 20_000
    prod_reps: int = 3
    prod_lat_rate: float = 200.0
    prod_lat_duration: float = 10.0
    prod_lat_workers: int = 4
    prod_lat_reps: int = 5
    prod_obj_threads: int = 100
    prod_obj_jobs: int = 10_000
    prod_idle_settle: float = 30.0
    prod_idle_window: float = 120.0
    # 9. tasks
    tasks_jobs: int = 20_000
    tasks_reps: int = 3

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["obj_jobs"] = {str(k): v for k, v in self.obj_jobs.items()}
        return d


QUICK = dict(
    quick=True,
    n=300,
    reps=1,
    fsync_samples=50,
    batch_size=200,
    batches=3,
    latency_duration=0.6,
    latency_reps=1,
    history_finished=1_500,
    history_pending=50,
    history_claims=50,
    reopen_reps=1,
    big_pending=2_000,
    big_reopen_reps=1,
    rss_pending=1_000,
    index_jobs=2_000,
    obj_latency=0.002,
    obj_concurrency=(1, 10),
    obj_jobs={1: 10, 10: 60, 100: 200},
    idle_window=1.0,
    idle_settle=0.3,
    prod_processes=2,
    prod_threads=4,
    prod_jobs=400,
    prod_reps=1,
    prod_lat_duration=0.5,
    prod_lat_reps=1,
    prod_obj_threads=10,
    prod_obj_jobs=200,
    prod_idle_settle=0.3,
    prod_idle_window=1.0,
    tasks_jobs=300,
    tasks_reps=1,
)


def make_config(quick: bool, **overrides: Any) -> Config:
    cfg = Config()
    if quick:
        cfg = replace(cfg, **QUICK)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **clean)
