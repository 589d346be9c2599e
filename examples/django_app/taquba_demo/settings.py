"""Settings of the demo project. Every taquba setting can be overridden by the environment
(or by ``settings.configure(...)`` in tests)."""

import os
from pathlib import Path

from taquba import OpenOptions, QueueConfig

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["taquba.contrib.django", "taquba_demo.apps.TaqubaDemoConfig"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "taquba_demo.urls"
DATABASES: dict[str, dict[str, str]] = {}  # the queue is the only storage this app needs
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "taquba": {"handlers": ["console"], "level": "INFO"},
        "taquba_demo": {"handlers": ["console"], "level": "INFO"},
    },
}

TAQUBA = {
    # Where the queue lives: a local path, or a URL such as s3://bucket/prefix.
    "LOCATION": os.environ.get("TAQUBA_LOCATION", str(BASE_DIR / "data" / "queue")),
    # The worker keeps finished jobs' records for an hour, for the status view.
    "OPTIONS": OpenOptions(default_queue_config=QueueConfig(keep_done=3600)),
    "CONCURRENCY": int(os.environ.get("TAQUBA_CONCURRENCY", "4")),
    "POLL_INTERVAL": 0.5,
}
