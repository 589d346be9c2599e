"""``python manage.py taquba_worker``: own the queue and run every task until SIGTERM.

SIGTERM or SIGINT stops claiming; the jobs in flight finish and are settled, then the
command exits 0. If another process takes the queue over (or the queue breaks), the
command exits 1 so that a supervisor restarts it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from taquba.contrib.django import get_tasks, worker_settings
from taquba.errors import ConfigError, FencedError, InvalidArgument, QueueBroken


class Command(BaseCommand):  # type: ignore[misc]  # django is untyped here
    help = "Own the taquba queue and run its tasks until SIGTERM or SIGINT."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "-c",
            "--concurrency",
            type=int,
            default=None,
            help="jobs in flight per queue (default: TAQUBA['CONCURRENCY'], 4)",
        )
        parser.add_argument(
            "-q",
            "--queue",
            action="append",
            dest="queues",
            default=None,
            help="a queue to run (repeatable; default: every task's queue)",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="seconds between checks for shutdown (default 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            defaults = worker_settings()
            tasks = get_tasks()
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        concurrency = options["concurrency"] or defaults.concurrency
        queues = options["queues"] or defaults.queues
        poll = options["poll_interval"] or defaults.poll_interval
        shutdown = threading.Event()

        def stop(signum: int, frame: object) -> None:
            self.stdout.write(
                f"taquba_worker: {signal.Signals(signum).name}, finishing the jobs in flight"
            )
            self.stdout.flush()
            shutdown.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        names = list(queues) if queues else tasks.queues
        if not names:
            raise CommandError(
                "no task is registered: define tasks in an installed app's "
                "tasks.py with taquba.contrib.django.tasks"
            )
        try:
            with tasks.own() as q:
                self.stdout.write(
                    f"taquba_worker: owning {q.store.description}; running "
                    f"{len(tasks.registered)} task(s) on {', '.join(names)}"
                )
                self.stdout.flush()
                tasks.run_worker(
                    shutdown=shutdown, concurrency=concurrency, queues=queues, poll_interval=poll
                )
        except FencedError as exc:
            raise CommandError(
                f"another process took the queue over: {exc}", returncode=1
            ) from None
        except QueueBroken as exc:
            raise CommandError(f"the queue can no longer be used: {exc}", returncode=1) from None
        except (ConfigError, InvalidArgument) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("taquba_worker: stopped")
