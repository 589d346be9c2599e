"""The AppConfig that opens the queue and starts its worker when Django is ready."""

import os
import sys

from django.apps import AppConfig
from django.conf import settings


def _is_autoreloader_parent() -> bool:
    """``runserver`` runs the project twice: a file watcher and the server it restarts.
    Only the server (RUN_MAIN=true) may own the queue: one process per queue."""
    return ("runserver" in sys.argv and "--noreload" not in sys.argv
            and os.environ.get("RUN_MAIN") != "true")


class TaqubaDemoConfig(AppConfig):
    name = "taquba_demo"
    verbose_name = "taquba demo"

    def ready(self) -> None:
        if not getattr(settings, "TAQUBA_AUTOSTART", True) or _is_autoreloader_parent():
            return
        from . import jobs

        jobs.start(settings.TAQUBA_LOCATION, queue=settings.TAQUBA_QUEUE,
                   concurrency=getattr(settings, "TAQUBA_CONCURRENCY", 4))
