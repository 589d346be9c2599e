"""``taquba.metrics.PrometheusCollector``: values after known operations, counters since
this process opened the queue, and ``taquba worker --metrics-port``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.cli import ENV
from support.clock import T0, ManualClock

from taquba import InvalidArgument, OpenOptions, Producer, Queue, QueueConfig, QueueReader
from taquba.metrics import PrometheusCollector


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _collect(q: Queue) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(q))
    return _scrape(generate_latest(registry).decode())


def _job(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, queue: str
) -> float:
    return values[(name, (("queue", queue),))]


def test_values_after_known_operations(tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = QueueConfig(retry_backoff_base=0, lease=10.0, max_attempts=5)
    root = str(tmp_path / "q")
    with Queue.open(
        root, options=OpenOptions(clock=clock, default_queue_config=cfg, background_threads=False)
    ) as q:
        for n in range(5):
            q.enqueue("work", b"%d" % n)
        q.enqueue("work", b"dup", dedup_key="k")
        q.enqueue("work", b"dup again", dedup_key="k")  # a dedup hit: no job
        q.enqueue_batch("other", [b"a", b"b", b"c"])
        q.enqueue("work", b"later", delay=3600)
        clock.advance(30)
        claims = [q.claim("work") for _ in range(4)]
        assert all(c is not None for c in claims)
        q.ack(claims[0])  # type: ignore[arg-type]
        q.nack(claims[1], "retry")  # type: ignore[arg-type]
        q.dead_letter(claims[2], "bad")  # type: ignore[arg-type]
        clock.advance(11)  # claims[3]'s lease ran out
        assert q.reap_now() == 1
        values = _collect(q)
        expected = {
            "taquba_jobs_enqueued_total": 7,
            "taquba_jobs_claimed_total": 4,
            "taquba_jobs_completed_total": 1,
            "taquba_jobs_nacked_total": 1,
            "taquba_jobs_dead_lettered_total": 1,
            "taquba_jobs_reaped_total": 1,
            "taquba_pending_jobs": 4,
            "taquba_scheduled_jobs": 1,
            "taquba_claimed_jobs": 0,
            "taquba_dead_jobs": 1,
        }
        assert {name: _job(values, name, "work") for name in expected} == expected
        assert _job(values, "taquba_jobs_enqueued_total", "other") == 3
        assert _job(values, "taquba_pending_jobs", "other") == 3
        # The oldest pending job of each queue was enqueued at T0; the clock is at T0 + 41.
        assert _job(values, "taquba_oldest_pending_age_seconds", "work") == 41.0
        assert _job(values, "taquba_oldest_pending_age_seconds", "other") == 41.0
        stats = q.committer.stats
        assert values[("taquba_commits_total", ())] == stats.segments_written > 0
        assert values[("taquba_records_committed_total", ())] == stats.records_committed
        counts = q.store.counts
        for op in ("put", "get", "list", "delete"):
            assert values[("taquba_storage_requests_total", (("op", op),))] <= getattr(
                counts, op + "s"
            )
        assert values[("taquba_storage_requests_total", (("op", "put"),))] > 0
        # Claim every pending job: the oldest pending age drops to 0.
        while q.claim("other") is not None:
            pass
        assert _job(_collect(q), "taquba_oldest_pending_age_seconds", "other") == 0.0
    # Counters count since this process opened the queue; gauges are the state.
    with Queue.open(
        root, options=OpenOptions(clock=clock, default_queue_config=cfg, background_threads=False)
    ) as q:
        values = _collect(q)
        assert _job(values, "taquba_jobs_enqueued_total", "work") == 0
        assert _job(values, "taquba_jobs_claimed_total", "work") == 0
        assert _job(values, "taquba_dead_jobs", "work") == 1
        assert _job(values, "taquba_pending_jobs", "work") == 4
        # Jobs taken in from a producer count as enqueued, when the owner takes them.
        with Producer.open(root) as p:
            p.enqueue("work", b"from elsewhere")
        assert q.intake_now() == 1
        assert _job(_collect(q), "taquba_jobs_enqueued_total", "work") == 1


def test_the_collector_needs_a_queue(tmp_path: Path) -> None:
    with Queue.open(str(tmp_path / "q"), options=OpenOptions(background_threads=False)) as q:
        q.enqueue("work", b"")
    with QueueReader.open(str(tmp_path / "q")) as r, pytest.raises(InvalidArgument, match="Queue"):
        PrometheusCollector(r)  # type: ignore[arg-type]


def test_registering_reads_nothing(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Queue.open(
        str(tmp_path / "q"), options=OpenOptions(clock=clock, background_threads=False)
    ) as q:
        calls = clock.calls
        CollectorRegistry().register(PrometheusCollector(q))
        assert clock.calls == calls


HANDLER = textwrap.dedent("""
    import contextlib, os

    from taquba import Queue
    from taquba.worker import run_worker_concurrent


    def handle(claim):
        pass


    class OwningTasks:
        \"\"\"Like taquba.tasks.Tasks: own() yields the queue, run_worker runs on it.\"\"\"

        q = None

        @contextlib.contextmanager
        def own(self):
            self.q = Queue.open(os.environ["TAQUBA_TEST_LOCATION"])
            try:
                yield self.q
            finally:
                self.q.close()

        def run_worker(self, *, shutdown, concurrency):
            run_worker_concurrent(self.q, "work", handle, concurrency=concurrency,
                                  shutdown=shutdown)


    tasks = OwningTasks()
""")


@pytest.mark.parametrize("target", ["handle", "tasks"])
def test_the_worker_serves_metrics(tmp_path: Path, target: str) -> None:
    root = str(tmp_path / "q")
    with Queue.open(root, options=OpenOptions(background_threads=False)) as q:
        q.enqueue("work", b"x")
    (tmp_path / "metrics_handler.py").write_text(HANDLER)
    where = ["--location", root, "--queue", "work"] if target == "handle" else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taquba",
            "worker",
            f"metrics_handler:{target}",
            *where,
            "--metrics-port",
            "0",
        ],
        cwd=tmp_path,
        env={**ENV, "TAQUBA_TEST_LOCATION": root},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = proc.stderr.readline()
            assert line, f"the worker exited ({proc.wait()})"
            found = re.search(r"metrics at (http://\S+)", line)
            url = found.group(1) if found else None
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while values.get(("taquba_jobs_completed_total", (("queue", "work"),))) != 1:
            with urllib.request.urlopen(url, timeout=30) as response:
                values = _scrape(response.read().decode())
        assert values[("taquba_jobs_claimed_total", (("queue", "work"),))] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
