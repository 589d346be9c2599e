"""The demo's tasks, found by ``taquba.contrib.django`` when Django starts."""

from __future__ import annotations

import logging
import time

from taquba.contrib.django import tasks
from taquba.worker import PermanentFailure

log = logging.getLogger(__name__)


@tasks.task(queue="reports", max_attempts=3, store_result=True)
def build_report(kind: str) -> dict[str, str]:
    """Build a report. Returning stores the result; PermanentFailure dead-letters the job;
    any other error retries it."""
    if kind not in ("daily", "weekly"):
        raise PermanentFailure(f"unknown report kind {kind!r}")
    time.sleep(0.05)  # the actual work
    log.info("built the %s report", kind)
    return {"kind": kind, "url": f"/reports/{kind}.pdf"}
