"""The dashboard's HTML: server-rendered pages, no JavaScript.

Every value that comes from the queue (names, ids, payloads, errors, headers) goes through
:func:`esc` (``html.escape`` with quotes) or, inside a URL, :func:`quote` first: a payload
holding ``<script>`` shows as text and never becomes markup.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from ..records import Attempt, JobRecord, JobStatus, QueueStats, Schedule

PREVIEW_BYTES = 4096

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h1 a{color:inherit;text-decoration:none}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;word-break:break-all;max-width:60em}
.msg{background:#eef6ee;border:1px solid #9c9;padding:.4em .7em;display:inline-block}
.err{color:#a00}form.inline{display:inline}button{cursor:pointer}
"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def quote(value: str) -> str:
    """``value`` as one URL path segment or query value."""
    return urllib.parse.quote(value, safe="")


def when(t: float | None) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC`` (``-`` for None)."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """A duration as ``3s``, ``4m 05s``, ``2h 03m`` or ``1d 02h`` (``-`` for None)."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def page(title: str, body: str, *, refresh: float | None = None, message: str | None = None) -> str:
    """A whole HTML document."""
    meta = "" if refresh is None else f'<meta http-equiv="refresh" content="{refresh:g}">'
    note = "" if not message else f'<p class="msg">{esc(message)}</p>'
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{esc(title)} - taquba</title><style>{_STYLE}</style></head><body>"
        f'<h1><a href="/">taquba</a> &middot; {esc(title)}</h1>{note}{body}</body></html>'
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; ``rows`` hold HTML already escaped; columns in ``numeric`` align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def action_button(job_id: str, action: str, label: str, csrf: str) -> str:
    """A POST form with one button, carrying the CSRF token."""
    return (
        f'<form class="inline" method="post" action="/jobs/{quote(job_id)}/{action}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<button type="submit" name="action" value="{action}">{esc(label)}</button></form>'
    )


def overview(
    location: str,
    rows: Sequence[tuple[QueueStats, float | None, float | None]],
    refresh: float,
    schedules: Sequence[Schedule] = (),
) -> str:
    """The queues with their counts, oldest pending age and throughput (acks a minute),
    and the cron schedules."""
    cells = []
    for s, oldest, rate in rows:
        name = quote(s.queue)
        dead = f'<a href="/queues/{name}/dead">{s.dead}</a>' if s.dead else "0"
        cells.append(
            (
                esc(s.queue),
                str(s.pending),
                str(s.scheduled),
                str(s.claimed),
                str(s.done),
                dead,
                age(oldest),
                "-" if rate is None else f"{rate:.1f}",
            )
        )
    body = f"<p>Location: <code>{esc(location)}</code> &middot; refreshed every {refresh:g}s</p>"
    if cells:
        body += table(
            (
                "queue",
                "pending",
                "scheduled",
                "claimed",
                "done",
                "dead",
                "oldest pending",
                "done/min",
            ),
            cells,
            numeric=(1, 2, 3, 4, 5, 6, 7),
        )
    else:
        body += "<p>No queues yet.</p>"
    if schedules:
        body += "<h2>Schedules</h2>" + table(
            ("schedule", "cron", "time zone", "queue", "next run", "last run"),
            [
                (
                    esc(s.name),
                    esc(s.cron),
                    esc(s.timezone),
                    esc(s.queue),
                    esc(when(s.next_run_at)),
                    esc(when(s.last_run_at)),
                )
                for s in schedules
            ],
        )
    body += (
        '<h2>Find a job</h2><form method="get" action="/jobs">'
        '<input name="id" placeholder="job id" size="32"> <button>Show</button></form>'
    )
    return page("queues", body, refresh=refresh)


def dead_page(
    queue: str, jobs: Sequence[JobRecord], after: str | None, limit: int, csrf: str
) -> str:
    """One page of a queue's dead jobs with their errors, with a link to the next page."""
    rows = [
        (
            f'<a href="/jobs/{quote(j.id)}">{esc(j.id)}</a>',
            str(j.attempts),
            esc(when(j.failed_at)),
            f'<span class="err">{esc(_clip(j.last_error, 300))}</span>',
            action_button(j.id, "requeue", "Requeue", csrf),
        )
        for j in jobs
    ]
    body = f"<p>{'From the start' if after is None else 'After ' + esc(after)}</p>"
    body += (
        table(("job", "attempts", "failed at", "last error", ""), rows, numeric=(1,))
        if rows
        else "<p>No dead jobs here.</p>"
    )
    if len(jobs) == limit:
        body += (
            f'<p><a href="/queues/{quote(queue)}/dead?after={quote(jobs[-1].id)}">'
            "Next page &rarr;</a></p>"
        )
    return page(f"dead jobs of {queue}", body)


def job_page(record: JobRecord, history: Sequence[Attempt], csrf: str, message: str | None) -> str:
    """A job: its fields, headers, a payload preview, its attempt history and actions."""
    fields = [
        ("queue", esc(record.queue)),
        ("status", esc(record.status.value)),
        ("attempts", f"{record.attempts} of {record.max_attempts}"),
        ("priority", str(record.priority)),
        ("enqueued at", esc(when(record.enqueued_at))),
    ]
    for label, value in (
        ("run at", record.run_at),
        ("claimed at", record.claimed_at),
        ("lease expires at", record.lease_expires_at),
        ("completed at", record.completed_at),
        ("failed at", record.failed_at),
    ):
        if value is not None:
            fields.append((label, esc(when(value))))
    if record.last_error is not None:
        fields.append(("last error", f'<span class="err">{esc(record.last_error)}</span>'))
    if record.dedup_key is not None:
        fields.append(("dedup key", esc(record.dedup_key)))
    if record.cancel_requested:
        fields.append(("cancel requested", "yes"))
    body = table(("field", "value"), fields)
    actions = []
    if record.status is JobStatus.DEAD:
        actions.append(action_button(record.id, "requeue", "Requeue", csrf))
    if record.status in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.CLAIMED):
        actions.append(action_button(record.id, "cancel", "Cancel", csrf))
    if actions:
        body += "<p>" + " ".join(actions) + "</p>"
    body += "<h2>Headers</h2>" + (
        table(("name", "value"), [(esc(k), esc(v)) for k, v in sorted(record.headers.items())])
        if record.headers
        else "<p>None.</p>"
    )
    body += f"<h2>Payload ({len(record.payload)} bytes)</h2>{payload_preview(record.payload)}"
    body += "<h2>Attempt history</h2>" + (
        table(
            ("attempt", "claimed at", "finished at", "outcome", "error"),
            [
                (
                    str(a.attempt),
                    esc(when(a.claimed_at)),
                    esc(when(a.finished_at)),
                    esc(a.outcome or "running"),
                    f'<span class="err">{esc(a.error or "")}</span>',
                )
                for a in history
            ],
            numeric=(0,),
        )
        if history
        else "<p>Never delivered.</p>"
    )
    return page(f"job {record.id}", body, message=message)


def payload_preview(payload: bytes) -> str:
    """The payload's first ``PREVIEW_BYTES``: as text when UTF-8, else as hex."""
    head = payload[:PREVIEW_BYTES]
    more = "" if len(payload) <= PREVIEW_BYTES else f"<p>(first {PREVIEW_BYTES} bytes)</p>"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"<p>Binary, in hex:</p><pre>{esc(head.hex(' '))}</pre>{more}"
    return f"<pre>{esc(text)}</pre>{more}"


def not_found(what: str) -> str:
    """A page saying what was not found."""
    return page("not found", f"<p>{esc(what)}</p>")


def _clip(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters (empty for None)."""
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
