"""Prometheus metrics of an open queue (needs ``prometheus_client``: ``taquba[prometheus]``).

::

    from prometheus_client import REGISTRY, start_http_server
    from taquba.metrics import PrometheusCollector

    REGISTRY.register(PrometheusCollector(q))
    start_http_server(9100)

What holds:

- Everything is read at scrape time, under the queue's lock, from what the queue keeps
  anyway: the state's per-queue tallies (one integer increment per event applied, the only
  cost on the hot path), its counts and lanes, the store's request counts and the
  committer's statistics. Nothing is registered or started by the queue itself.
- Counters count since this process opened the queue (the tallies are reset after the
  log is replayed at open); gauges are the current values. Every job metric has a
  ``queue`` label; a queue shows once it has had jobs (in this process or before).

Names (the contract; ``_total`` is the counter suffix):

- ``taquba_jobs_enqueued_total``: jobs created (dedup hits create none);
- ``taquba_jobs_claimed_total``: deliveries;
- ``taquba_jobs_completed_total``: acks;
- ``taquba_jobs_nacked_total``: failed attempts sent back for a retry (nack, release);
- ``taquba_jobs_dead_lettered_total``: jobs that went dead, in any way;
- ``taquba_jobs_reaped_total``: leases that expired (retried or dead);
- ``taquba_pending_jobs``, ``taquba_scheduled_jobs``, ``taquba_claimed_jobs``,
  ``taquba_dead_jobs``: current counts;
- ``taquba_oldest_pending_age_seconds``: now minus the enqueue time of the oldest pending
  job (0 when none is pending);
- ``taquba_storage_requests_total`` (label ``op``: put, get, list, delete): requests sent
  to the storage, retries included;
- ``taquba_commits_total``: group commits (segment writes); ``taquba_records_committed_total``:
  records they held.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core.index import T_CLAIMED, T_COMPLETED, T_DEAD, T_ENQUEUED, T_NACKED, T_REAPED
from .errors import InvalidArgument
from .queue import Queue
from .records import JobStatus
from .views import oldest_pending_at

_COUNTERS = (
    ("taquba_jobs_enqueued", "Jobs enqueued since this process opened the queue.", T_ENQUEUED),
    ("taquba_jobs_claimed", "Job deliveries (claims).", T_CLAIMED),
    ("taquba_jobs_completed", "Jobs acked.", T_COMPLETED),
    ("taquba_jobs_nacked", "Failed attempts sent back for a retry.", T_NACKED),
    ("taquba_jobs_dead_lettered", "Jobs that went to the dead set.", T_DEAD),
    ("taquba_jobs_reaped", "Claims whose lease expired.", T_REAPED),
)
_GAUGES = (
    ("taquba_pending_jobs", "Jobs waiting to be claimed.", JobStatus.PENDING),
    ("taquba_scheduled_jobs", "Jobs waiting for their run time.", JobStatus.SCHEDULED),
    ("taquba_claimed_jobs", "Jobs being processed.", JobStatus.CLAIMED),
    ("taquba_dead_jobs", "Jobs in the dead set.", JobStatus.DEAD),
)
_OLDEST = (
    "taquba_oldest_pending_age_seconds",
    "Seconds since the oldest pending job was enqueued (0 when none is pending).",
)
_REQUESTS = ("taquba_storage_requests", "Requests sent to the storage, retries included.")
_COMMITS = ("taquba_commits", "Group commits (segment writes) of the log.")
_RECORDS = ("taquba_records_committed", "Records written by the group commits.")


class PrometheusCollector(Collector):
    """A ``prometheus_client`` collector of one open :class:`~taquba.Queue`'s metrics.

    Register it with a registry (``REGISTRY.register(PrometheusCollector(q))``); every
    scrape reads the queue's current values (see the module docstring for the names).

    Raises:
        InvalidArgument: ``q`` is not a ``Queue``.
    """

    def __init__(self, q: Queue) -> None:
        if not isinstance(q, Queue):
            raise InvalidArgument(
                f"PrometheusCollector needs a taquba Queue, got {type(q).__name__}"
            )
        self.q = q

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (so registering reads nothing)."""
        for name, doc, _ in _COUNTERS:
            yield CounterMetricFamily(name, doc, labels=["queue"])
        for name, doc, _ in _GAUGES:
            yield GaugeMetricFamily(name, doc, labels=["queue"])
        yield GaugeMetricFamily(*_OLDEST, labels=["queue"])
        yield CounterMetricFamily(*_REQUESTS, labels=["op"])
        yield CounterMetricFamily(*_COMMITS)
        yield CounterMetricFamily(*_RECORDS)

    def collect(self) -> Iterator[Metric]:
        """The current values, read under the queue's lock."""
        q = self.q
        counters = [CounterMetricFamily(name, doc, labels=["queue"]) for name, doc, _ in _COUNTERS]
        gauges = [GaugeMetricFamily(name, doc, labels=["queue"]) for name, doc, _ in _GAUGES]
        oldest = GaugeMetricFamily(*_OLDEST, labels=["queue"])
        with q._lock:
            now = q._clock()
            state = q._state
            for name in sorted(state.queues):
                index = state.queues[name]
                for family, (_, _, slot) in zip(counters, _COUNTERS):
                    family.add_metric([name], index.tally[slot])
                for gauge, (_, _, status) in zip(gauges, _GAUGES):
                    gauge.add_metric([name], index.counts[status])
                at = oldest_pending_at(state, name)
                oldest.add_metric([name], 0.0 if at is None else max(0.0, now - at))
            stats = q.committer.stats
            commits, records = stats.segments_written, stats.records_committed
        yield from counters
        yield from gauges
        yield oldest
        counts = q.store.counts.copy()
        requests = CounterMetricFamily(*_REQUESTS, labels=["op"])
        for op, value in (
            ("put", counts.puts),
            ("get", counts.gets),
            ("list", counts.lists),
            ("delete", counts.deletes),
        ):
            requests.add_metric([op], value)
        yield requests
        yield CounterMetricFamily(*_COMMITS, value=commits)
        yield CounterMetricFamily(*_RECORDS, value=records)


__all__ = ["PrometheusCollector"]
