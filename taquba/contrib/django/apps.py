"""The Django app of taquba: add ``"taquba.contrib.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class TaqubaConfig(AppConfig):  # type: ignore[misc]  # django is untyped here
    """Imports the ``tasks`` module of every installed app once Django is ready, so that
    every task is registered before a worker runs or a view calls ``delay``. Importing
    registers tasks only: nothing opens the queue until it is used."""

    name = "taquba.contrib.django"
    label = "taquba"
    verbose_name = "taquba"

    def ready(self) -> None:
        autodiscover_modules("tasks")
