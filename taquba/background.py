"""The reaper, the scheduler and the intake: daemon threads around public tick functions.

Each loop is ``while not stop.wait(interval): tick()``. The ticks themselves live on the
queue (``reap_now`` and ``promote_scheduled_now``), so tests call them directly with a
manual clock instead of sleeping. A tick that fails is logged and retried at the next
interval; a closed or broken queue ends the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import QueueBroken, QueueClosed

logger = logging.getLogger("taquba.background")


class Loop:
    """One daemon thread calling ``tick`` every ``interval`` seconds until stopped."""

    def __init__(self, name: str, interval: float, tick: Callable[[], object], *,
                 paced: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self.paced = paced  # the tick returns the interval before the next one
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        interval = self.interval
        while not self.stop_event.wait(interval):
            try:
                result = self.tick()
                if self.paced:
                    interval = float(result)  # type: ignore[arg-type]
            except (QueueClosed, QueueBroken):
                return
            except Exception:
                logger.exception("%s tick failed; retrying at the next interval", self.name)

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None) -> None:
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)


class Background:
    """The reaper and scheduler of one queue handle."""

    def __init__(self, *, reap: Callable[[], object], reaper_interval: float,
                 promote: Callable[[], object], scheduler_interval: float,
                 intake: Callable[[], float] | None = None, intake_interval: float = 0.0
                 ) -> None:
        self.loops = [Loop("taquba-reaper", reaper_interval, reap),
                      Loop("taquba-scheduler", scheduler_interval, promote)]
        if intake is not None:
            self.loops.append(Loop("taquba-intake", intake_interval, intake, paced=True))

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    def stop(self, timeout: float | None = None) -> None:
        for loop in self.loops:
            loop.stop()
        for loop in self.loops:
            loop.join(timeout)
