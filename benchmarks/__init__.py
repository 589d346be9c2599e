"""Benchmarks for taquba, side by side with the peers a Python user would pick instead.

Run ``python -m benchmarks run`` (``--quick`` for a smoke-sized run). Every measurement runs
in a child process of its own (``python -m benchmarks child SCENARIO ARGS``), so imports,
caches and memory of one measurement never leak into another. Results print as a table
and are written as JSON under ``benchmarks/results/`` (gitignored). See BENCHMARKS.md.

Modules, one per scenario family:

- ``local``       1. local-disk durable throughput (+ the fsync reference, enqueue_batch)
- ``latency``     2. end-to-end latency at a steady rate (open loop)
- ``history``     3. reopen / first claim, 6. claim latency after history
- ``memory``      4. peak RSS with many pending jobs
- ``objectstore`` 5. object storage: moto server and an injected per-request latency
- ``idle``        7. storage requests of an idle open queue
- ``producers``   8. many processes: ``Producer`` throughput against huey, enqueue-to-claim
                  latency across processes, object-store requests per job and when idle
- ``tasks``       9. ``taquba.tasks`` against raw claim/ack, and huey's task throughput
- ``systems``     the adapters (taquba, huey SqliteStorage, persist-queue SQLiteAckQueue)
- ``latencyfs``   a wrapper fsspec filesystem adding a fixed latency to every request
- ``motoserver``  a moto S3 server launcher bound to 127.0.0.1
- ``report``      the table, the targets and the JSON
"""

from __future__ import annotations
