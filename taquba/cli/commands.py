"""The commands of ``taquba`` that never own the queue: they read through ``QueueReader``
and write through ``Producer`` (see the package docstring for exit codes and formats)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from ..producer import Producer
from ..reader import QueueReader, holds_queue
from ..records import Attempt, JobRecord, JobStatus, Schedule
from . import EXIT_OK, CommandError, UsageError

Options = Mapping[str, Any] | None


# -- formatting --------------------------------------------------------------------------


def when(t: float | None) -> str:
    """An epoch time as ISO 8601 UTC to the second (``-`` for None)."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def attempt_json(a: Attempt) -> dict[str, Any]:
    """An :class:`Attempt` as a JSON object (its fields)."""
    return {f.name: getattr(a, f.name) for f in fields(a)}


def job_json(record: JobRecord, history: Sequence[Attempt] | None = None) -> dict[str, Any]:
    """A job as a JSON object: the ``JobRecord`` fields with ``payload`` replaced by
    ``payload_b64``, and ``attempt_history`` when ``history`` is given."""
    out: dict[str, Any] = {}
    for f in fields(record):
        if f.name == "payload":
            out["payload_b64"] = base64.b64encode(record.payload).decode("ascii")
        else:
            out[f.name] = getattr(record, f.name)
    out["status"] = record.status.value
    out["headers"] = dict(record.headers)
    if history is not None:
        out["attempt_history"] = [attempt_json(a) for a in history]
    return out


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """A schedule as a JSON object: the ``Schedule`` fields with ``payload`` replaced by
    ``payload_b64``."""
    out: dict[str, Any] = {}
    for f in fields(schedule):
        if f.name == "payload":
            out["payload_b64"] = base64.b64encode(schedule.payload).decode("ascii")
        else:
            out[f.name] = getattr(schedule, f.name)
    out["headers"] = dict(schedule.headers)
    return out


def payload_preview(payload: bytes, limit: int = 200) -> str:
    """A one-line preview of a payload: its text when it is UTF-8, else hex."""
    head = payload[:limit]
    try:
        text = repr(head.decode("utf-8"))
    except UnicodeDecodeError:
        text = head.hex()
    more = f" ... ({len(payload)} bytes)" if len(payload) > limit else f" ({len(payload)} bytes)"
    return text + more


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as left-aligned columns under ``header``."""
    lines = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _print_json(doc: object) -> None:
    """Print ``doc`` as one indented JSON document."""
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _reader(args: argparse.Namespace, options: Options) -> QueueReader:
    """A reader on the command's location (``QueueNotFound`` when it holds no queue)."""
    return QueueReader.open(args.location, storage_options=options)


def _one_line(text: str | None, limit: int = 100) -> str:
    """``text`` on one line, cut to ``limit`` characters (``-`` for None)."""
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- reading -----------------------------------------------------------------------------


def stats_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba stats LOCATION [--queue Q] [--json]``."""
    with _reader(args, options) as r:
        names = r.list_queues()
        if args.queue is not None:
            if args.queue not in names:
                raise CommandError(f"queue {args.queue!r} not found at {args.location}")
            names = [args.queue]
        rows = [r.stats(name) for name in names]
    if args.json:
        _print_json([{f.name: getattr(s, f.name) for f in fields(s)} for s in rows])
    else:
        print(
            table(
                ("QUEUE", "PENDING", "SCHEDULED", "CLAIMED", "DONE", "DEAD"),
                [(s.queue, s.pending, s.scheduled, s.claimed, s.done, s.dead) for s in rows],
            )
        )
    return EXIT_OK


def queues_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba queues LOCATION [--json]``."""
    with _reader(args, options) as r:
        names = r.list_queues()
    if args.json:
        _print_json(names)
    else:
        for name in names:
            print(name)
    return EXIT_OK


def job_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba job LOCATION JOB_ID [--json]``."""
    with _reader(args, options) as r:
        record = r.get_job(args.job_id)
        if record is None:
            raise CommandError(f"job {args.job_id!r} not found at {args.location}")
        history = r.attempt_history(args.job_id)
    if args.json:
        _print_json(job_json(record, history))
        return EXIT_OK
    rows: list[tuple[str, object]] = [
        ("id", record.id),
        ("queue", record.queue),
        ("status", record.status.value),
        ("attempts", f"{record.attempts} of {record.max_attempts}"),
        ("priority", record.priority),
        ("enqueued_at", when(record.enqueued_at)),
    ]
    for name in ("run_at", "claimed_at", "lease_expires_at", "completed_at", "failed_at"):
        value = getattr(record, name)
        if value is not None:
            rows.append((name, when(value)))
    if record.last_error is not None:
        rows.append(("last_error", _one_line(record.last_error, 500)))
    if record.dedup_key is not None:
        rows.append(("dedup_key", record.dedup_key))
    if record.cancel_requested:
        rows.append(("cancel_requested", "yes"))
    for key, value in sorted(record.headers.items()):
        rows.append((f"header {key}", value))
    rows.append(("payload", payload_preview(record.payload)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print("attempt history:" if history else "attempt history: none")
    for a in history:
        print(
            f"  #{a.attempt}  {when(a.claimed_at)} -> {when(a.finished_at)}  "
            f"{a.outcome or 'running'}  {_one_line(a.error, 200) if a.error else ''}".rstrip()
        )
    return EXIT_OK


def dead_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba dead LOCATION QUEUE [--after ID] [--limit N] [--json]``."""
    with _reader(args, options) as r:
        if args.queue not in r.list_queues():
            raise CommandError(f"queue {args.queue!r} not found at {args.location}")
        page = r.dead_jobs(args.queue, after=args.after, limit=args.limit)
    if args.json:
        _print_json([job_json(record) for record in page])
    else:
        print(
            table(
                ("ID", "ATTEMPTS", "FAILED_AT", "LAST_ERROR"),
                [(j.id, j.attempts, when(j.failed_at), _one_line(j.last_error)) for j in page],
            )
        )
    return EXIT_OK


def schedules_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba schedules LOCATION [--json]``."""
    with _reader(args, options) as r:
        schedules = r.list_schedules()
    if args.json:
        _print_json([schedule_json(s) for s in schedules])
    else:
        print(
            table(
                ("NAME", "CRON", "TIMEZONE", "QUEUE", "NEXT_RUN", "LAST_RUN"),
                [
                    (s.name, s.cron, s.timezone, s.queue, when(s.next_run_at), when(s.last_run_at))
                    for s in schedules
                ],
            )
        )
    return EXIT_OK


# -- writing (through the inbox) -----------------------------------------------------------


def _check_queue_exists(args: argparse.Namespace, options: Options) -> None:
    """Refuse to submit to a location that holds no queue (a mistyped location would
    otherwise keep the submission where no owner ever looks)."""
    if not holds_queue(args.location, storage_options=options):
        raise CommandError(
            f"no queue at {args.location} (a queue is created when its "
            "first owner opens it, e.g. 'taquba worker')"
        )


def enqueue_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba enqueue LOCATION QUEUE [PAYLOAD | -] [--delay S] [--priority P]
    [--dedup-key K]``: prints the new job's id once the submission is durable."""
    payload = sys.stdin.buffer.read() if args.payload == "-" else args.payload.encode("utf-8")
    opts: dict[str, Any] = {}
    if args.delay is not None:
        opts["delay"] = args.delay
    if args.priority is not None:
        opts["priority"] = args.priority
    if args.dedup_key is not None:
        opts["dedup_key"] = args.dedup_key
    _check_queue_exists(args, options)
    with Producer.open(args.location, storage_options=options) as p:
        job_id = p.enqueue(args.queue, payload, **opts)
    print(job_id)
    return EXIT_OK


def cancel_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba cancel LOCATION JOB_ID``: submit a cancel for a job that is not finished."""
    with _reader(args, options) as r:
        record = r.get_job(args.job_id)
    if record is None:
        raise CommandError(f"job {args.job_id!r} not found at {args.location}")
    if record.status in (JobStatus.DONE, JobStatus.DEAD):
        raise CommandError(f"job {args.job_id!r} is {record.status.value}: nothing to cancel")
    with Producer.open(args.location, storage_options=options) as p:
        p.cancel(args.job_id)
    what = "stop" if record.status is JobStatus.CLAIMED else "removal"
    print(f"cancel of job {args.job_id} submitted ({what}; the owner applies it)")
    return EXIT_OK


def requeue_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba requeue LOCATION JOB_ID``: submit the requeue of a dead job."""
    with _reader(args, options) as r:
        record = r.get_job(args.job_id)
    if record is None:
        raise CommandError(f"job {args.job_id!r} not found at {args.location}")
    if record.status is not JobStatus.DEAD:
        raise CommandError(f"job {args.job_id!r} is not dead (it is {record.status.value})")
    with Producer.open(args.location, storage_options=options) as p:
        p.requeue_dead_job(args.job_id)
    print(f"requeue of job {args.job_id} submitted (the owner applies it)")
    return EXIT_OK


# -- the dashboard ---------------------------------------------------------------------------


def dashboard_command(args: argparse.Namespace, options: Options) -> int:
    """``taquba dashboard LOCATION [--host H] [--port P] [--token T]``: serve until
    interrupted (SIGINT or SIGTERM)."""
    from ..dashboard import Dashboard, is_loopback

    if not is_loopback(args.host) and not args.token:
        raise UsageError(f"binding {args.host} (not a loopback address) needs --token")
    if args.refresh <= 0:
        raise UsageError(f"--refresh must be a positive number of seconds, got {args.refresh}")
    dashboard = Dashboard.open(
        args.location,
        storage_options=options,
        host=args.host,
        port=args.port,
        token=args.token,
        refresh=args.refresh,
    )
    print(f"taquba dashboard on {dashboard.url} (Ctrl-C to stop)", flush=True)
    try:
        dashboard.serve_until_signalled()
    finally:
        dashboard.close()
    return EXIT_OK


__all__ = ["job_json", "payload_preview", "schedule_json", "table", "when"]
