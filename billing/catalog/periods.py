"""Billing periods: half-open ``[start, end)`` intervals anchored on a subscription's start.

Pure: the caller hands in every instant; nothing here reads the clock.

Period ``n`` starts at the anchor's wall-clock date and time in the customer's timezone
plus ``n`` months (``12 * n`` for yearly cadences), the day clamped to the month's last
day, and ends where period ``n + 1`` starts. Every boundary is computed from the anchor,
never from the previous boundary, so a Jan 31 anchor gives Feb 28 (29), Mar 31, Apr 30:
the clamped day never sticks. Boundaries are stored as aware UTC datetimes.

Two wall-clock times need a rule when the timezone changes its offset:

- a time that does not exist (clocks spring forward over it) moves forward by the gap,
  as PEP 495 reads it: 02:30 on a New York spring-forward day becomes 03:30 EDT;
- a time that happens twice (clocks fall back) takes the same pass as the anchor: the
  first, unless the anchor itself fell in the second pass of a repeated hour.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Cadence = Literal["monthly", "yearly"]
CADENCE_MONTHS: dict[str, int] = {"monthly": 1, "yearly": 12}


def _require_aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {value!r}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, not naive ({value.isoformat()}).")
    return value


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval ``[start, end)`` of time, held as aware UTC datetimes.

    Raises ``ValueError`` for naive datetimes or an ``end`` not after ``start``.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        start = _require_aware("start", self.start).astimezone(UTC)
        end = _require_aware("end", self.end).astimezone(UTC)
        if end <= start:
            raise ValueError(f"A period must end after it starts ({start} to {end}).")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    def contains(self, instant: datetime) -> bool:
        """True when ``start <= instant < end``; raises ``ValueError`` if naive."""
        return self.start <= _require_aware("instant", instant) < self.end

    @property
    def duration(self) -> timedelta:
        """The period's length in elapsed time (an hour off a calendar month across DST)."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class _Schedule:
    """An anchor seen in the customer's timezone, and the months between boundaries."""

    local_anchor: datetime
    months: int

    def boundary(self, index: int) -> datetime:
        """The UTC start of period ``index`` (0 is the anchor itself)."""
        anchor = self.local_anchor
        month_index = anchor.month - 1 + self.months * index
        year, month = anchor.year + month_index // 12, month_index % 12 + 1
        day = min(anchor.day, calendar.monthrange(year, month)[1])
        # replace() keeps the wall-clock time, the microseconds, the zone and the fold.
        wall = anchor.replace(year=year, month=month, day=day)
        if not _wall_time_exists(wall):
            # fold=0 reads a skipped time with the offset from before the jump, which
            # lands the gap's length later on the clock (02:30 EST = 03:30 EDT).
            wall = wall.replace(fold=0)
        return wall.astimezone(UTC)

    def period(self, index: int) -> Period:
        return Period(self.boundary(index), self.boundary(index + 1))

    def index_containing(self, instant: datetime) -> int:
        """The index of the period holding ``instant`` (which is not before the anchor)."""
        local = instant.astimezone(self.local_anchor.tzinfo)
        anchor = self.local_anchor
        months_apart = (local.year - anchor.year) * 12 + local.month - anchor.month
        # A first guess from the calendar, then settle it against the real boundaries
        # (the guess is off by at most one: the day, time and offset may fall either side).
        index = max(months_apart // self.months, 0)
        while index > 0 and self.boundary(index) > instant:
            index -= 1
        while self.boundary(index + 1) <= instant:
            index += 1
        return index


def _wall_time_exists(wall: datetime) -> bool:
    """False for a local time the clocks skip (it does not survive a UTC round trip)."""
    round_trip = wall.astimezone(UTC).astimezone(wall.tzinfo)
    return round_trip.replace(tzinfo=None) == wall.replace(tzinfo=None)


def _schedule(anchor: datetime, cadence: str, timezone: str) -> _Schedule:
    _require_aware("anchor", anchor)
    if cadence not in CADENCE_MONTHS:
        raise ValueError(f"cadence must be monthly or yearly, not {cadence!r}.")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise ValueError(f"{timezone!r} is not an IANA timezone name.") from error
    return _Schedule(anchor.astimezone(zone), CADENCE_MONTHS[cadence])


def period_at(*, anchor: datetime, cadence: Cadence, timezone: str, index: int) -> Period:
    """Period number ``index`` of the schedule (0 starts at ``anchor``).

    Raises ``ValueError`` for a negative index, a naive anchor, an unknown cadence or
    timezone, or a period beyond the year 9999.
    """
    if index < 0:
        raise ValueError(f"index must not be negative, not {index}.")
    return _schedule(anchor, cadence, timezone).period(index)


def period_containing(
    *, anchor: datetime, cadence: Cadence, timezone: str, instant: datetime
) -> Period:
    """The period holding ``instant``: ``start <= instant < end``.

    An instant exactly on a boundary belongs to the period that starts there. Raises
    ``ValueError`` for an instant before the anchor (no period holds it), naive
    datetimes, or an unknown cadence or timezone.
    """
    schedule = _schedule(anchor, cadence, timezone)
    _require_aware("instant", instant)
    if instant < anchor:
        raise ValueError(f"{instant.isoformat()} is before the anchor {anchor.isoformat()}.")
    return schedule.period(schedule.index_containing(instant))


def calendar_month(*, instant: datetime, timezone: str = "UTC") -> Period:
    """The calendar month holding ``instant`` in ``timezone``: from local midnight on the
    1st to local midnight on the next month's 1st (the monthly period anchored there)."""
    zone = _schedule(instant, "monthly", timezone).local_anchor.tzinfo
    local = instant.astimezone(zone)
    first = datetime(local.year, local.month, 1, tzinfo=zone)
    return period_at(anchor=first, cadence="monthly", timezone=timezone, index=0)


def period_iter(
    *,
    anchor: datetime,
    cadence: Cadence,
    timezone: str,
    until: datetime,
    start: datetime | None = None,
) -> Iterator[Period]:
    """Every period that overlaps ``[start, until)``, in order.

    ``start`` defaults to the anchor, and an earlier one counts from the anchor: no
    period comes before it. The first period yielded is the one holding ``start`` (it
    may begin before it); the last is the one holding the instant just before ``until``
    (it may end after it). Nothing is yielded when ``until <= start``. Arguments are
    checked at the call, not at the first ``next()``: raises ``ValueError`` for naive
    datetimes or an unknown cadence or timezone.
    """
    schedule = _schedule(anchor, cadence, timezone)
    _require_aware("until", until)
    first = anchor if start is None else max(_require_aware("start", start), anchor)
    if until <= first:
        return iter(())
    return _periods_from(schedule, schedule.index_containing(first), until)


def _periods_from(schedule: _Schedule, index: int, until: datetime) -> Iterator[Period]:
    while (period := schedule.period(index)).start < until:
        yield period
        index += 1
