"""A clock for ``OpenOptions(clock=...)`` that moves only when told to."""

from __future__ import annotations

T0 = 1_700_000_000.0


class ManualClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
