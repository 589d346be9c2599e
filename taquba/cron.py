"""Cron expressions in a time zone: when a schedule's occurrences fall.

A :class:`CronSpec` is a standard 5-field expression (minute, hour, day of month, month,
day of week; names such as ``MON`` and ``JAN`` allowed) or one of the macros ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``, read in an
IANA time zone (``zoneinfo``; the ``tzdata`` package supplies the database where the system
has none). The arithmetic is cronsim's, which follows Debian cron across daylight-saving
changes:

- an expression with a fixed minute and hour whose local time is skipped when clocks go
  forward (``30 2 * * *`` on the night Europe/Paris skips 02:00-03:00) fires once, at the
  first valid time after the gap (03:00);
- one whose local time happens twice when clocks go back fires once, at the first of them;
- an expression with ``*`` in the minute or hour field counts real elapsed time: ``0 * * * *``
  fires every hour, 25 times on a day with 25 hours.

Occurrences are epoch seconds (whole seconds). Bad input raises ``InvalidArgument`` naming
it.
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime

from cronsim import CronSim, CronSimError

from .errors import InvalidArgument

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CRON_CHARS = 256


def zone(name: object) -> zoneinfo.ZoneInfo:
    """The time zone called ``name`` (``InvalidArgument`` for an unknown one)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(
            f"timezone must be an IANA time zone name such as 'Europe/Paris', got {name!r}"
        )
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(
            f"unknown time zone {name[:80]!r} (an IANA name such as "
            "'Europe/Paris' or 'UTC'; install the tzdata package if "
            "this system has no time zone database)"
        ) from None


@dataclass(frozen=True)
class CronSpec:
    """A checked cron expression in a time zone (see the module docstring).

    Raises ``InvalidArgument`` for an expression that is not 5 fields (or a macro), a bad
    field, one that never occurs, or an unknown time zone.
    """

    cron: str
    timezone: str
    _fields: str = field(init=False, repr=False, compare=False)
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cron = self.cron
        if not isinstance(cron, str) or not cron.strip() or len(cron) > MAX_CRON_CHARS:
            raise InvalidArgument(
                f"cron must be a 5-field cron expression or a macro such as "
                f"'@daily', got {cron!r:.80}"
            )
        text = cron.strip()
        if text.startswith("@"):
            fields = MACROS.get(text.lower())
            if fields is None:
                raise InvalidArgument(
                    f"unknown cron macro {text!r:.80} (known: {', '.join(MACROS)})"
                )
        else:
            fields = " ".join(text.split())
            if len(fields.split(" ")) != 5:
                raise InvalidArgument(
                    f"cron expression {cron!r:.80} has "
                    f"{len(fields.split(' '))} fields; a standard one has 5 "
                    "(minute hour day-of-month month day-of-week)"
                )
        tz = zone(self.timezone)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_zone", tz)
        try:
            CronSim(fields, datetime(2000, 1, 1, tzinfo=tz))
        except (CronSimError, ValueError) as exc:
            raise InvalidArgument(f"bad cron expression {cron!r:.80}: {exc}") from None

    def next_after(self, t: float) -> float:
        """The first occurrence strictly after ``t`` (``InvalidArgument`` if there is none
        within 50 years)."""
        start = datetime.fromtimestamp(math.floor(t), self._zone)
        try:
            return next(CronSim(self._fields, start)).timestamp()
        except StopIteration:
            raise InvalidArgument(
                f"cron expression {self.cron!r:.80} has no occurrence within 50 years"
            ) from None

    def last_at_or_before(self, t: float) -> float | None:
        """The latest occurrence at or before ``t`` (None if none within 50 years)."""
        start = datetime.fromtimestamp(math.floor(t) + 1, self._zone)
        try:
            return next(CronSim(self._fields, start, reverse=True)).timestamp()
        except StopIteration:
            return None
