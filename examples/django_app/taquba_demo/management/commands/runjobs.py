"""``python manage.py runjobs``: the one process that owns the queue and runs its jobs.

SIGTERM or SIGINT stops it after the running jobs finish. If another process takes the
queue over, it exits with status 1 so that a supervisor restarts it.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from taquba import FencedError, OpenOptions, Queue, QueueConfig
from taquba.worker import run_worker_concurrent

from ...jobs import build_report, queue_name


class Command(BaseCommand):
    help = "Own the taquba queue and run its jobs until SIGTERM."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("-c", "--concurrency", type=int,
                            default=getattr(settings, "TAQUBA_CONCURRENCY", 4))

    def handle(self, *args: Any, **options: Any) -> None:
        shutdown = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: shutdown.set())
        queue = Queue.open(settings.TAQUBA_LOCATION, options=OpenOptions(
            default_queue_config=QueueConfig(keep_done=3600)))
        self.stdout.write(f"runjobs: owning {queue.store.description}")
        self.stdout.flush()
        try:
            run_worker_concurrent(queue, queue_name(), build_report,
                                  concurrency=options["concurrency"], shutdown=shutdown,
                                  poll_interval=0.5)
        except FencedError as exc:
            self.stderr.write(f"runjobs: another process took the queue over: {exc}")
            sys.exit(1)
        finally:
            try:
                queue.close()
            except FencedError:
                pass
        self.stdout.write("runjobs: stopped")
