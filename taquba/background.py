"""The reaper, the scheduler, the fence check and the intake: daemon threads around public ticks.

Each loop is ``while not stop.wait(interval): tick()``. The ticks themselves live on the
queue (``reap_now``, ``promote_scheduled_now``, ``check_fence_now`` and ``intake_now``), so tests call them
directly with a manual clock instead of sleeping. A tick that fails is logged and retried at
the next interval; a closed, broken or fenced queue ends the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import QueueBroken, QueueClosed

logger = logging.getLogger("taquba.background")


class Loop:
    """One daemon thread calling ``tick`` every ``interval`` seconds until stopped."""

    def __init__(
        self, name: str, interval: float, tick: Callable[[], object], *, paced: bool = False
    ) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self.paced = paced  # the tick returns the interval before the next one
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # Event.wait refuses timeouts past TIMEOUT_MAX (about 292 years on Linux).
        interval = min(self.interval, threading.TIMEOUT_MAX)
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
    """The reaper, the scheduler and (given an interval) the fence check of one queue handle."""

    def __init__(
        self,
        *,
        reap: Callable[[], object],
        reaper_interval: float,
        promote: Callable[[], object],
        scheduler_interval: float,
        check_fence: Callable[[], object] | None = None,
        fence_check_interval: float | None = None,
        intake: Callable[[], float] | None = None,
        intake_interval: float = 0.0,
    ) -> None:
        self.loops = [
            Loop("taquba-reaper", reaper_interval, reap),
            Loop("taquba-scheduler", scheduler_interval, promote),
        ]
        if check_fence is not None and fence_check_interval is not None:
            self.loops.append(Loop("taquba-fence-check", fence_check_interval, check_fence))
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
