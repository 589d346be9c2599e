"""The demo app. Nothing opens the queue when Django starts (``taquba.contrib.django`` only
imports ``tasks.py``): web processes submit through a ``Producer``, and only ``manage.py
taquba_worker`` owns the queue, so ``runserver``'s reloader, ``manage.py check`` and any
number of web workers are harmless."""

from django.apps import AppConfig


class TaqubaDemoConfig(AppConfig):
    name = "taquba_demo"
    verbose_name = "taquba demo"
