"""The demo app. Nothing opens the queue when Django starts: web processes submit through a
``Producer`` (taquba_demo.jobs), and only ``manage.py runjobs`` owns the queue, so
``runserver``'s reloader, ``manage.py check`` and any number of web workers are harmless."""

from django.apps import AppConfig


class TaqubaDemoConfig(AppConfig):
    name = "taquba_demo"
    verbose_name = "taquba demo"
