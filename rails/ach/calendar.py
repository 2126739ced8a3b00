"""US banking days for ACH settlement: weekends and Federal Reserve holidays.

Pure: no clock, no Django. Holidays are computed by rule for any year, the way the
Federal Reserve Banks observe them (schedule K.8):

- a holiday that falls on a Sunday is observed on the following Monday;
- a holiday that falls on a Saturday is NOT moved: the Reserve Banks (and so FedACH)
  are open the Friday before, even though other federal offices close that Friday.

Juneteenth is a Reserve Bank holiday from 2022 on (the Banks did not close for it in
2021, the year it was enacted).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType

_MONDAY, _THURSDAY, _SATURDAY, _SUNDAY = 0, 3, 5, 6
_JUNETEENTH_FIRST_YEAR = 2022


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) `weekday` of the month."""
    first = date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + timedelta(days=offset + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    """The last `weekday` of the month."""
    next_month = date(year + month // 12, month % 12 + 1, 1)
    last = next_month - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _fixed(year: int, month: int, day: int) -> date | None:
    """A fixed-date holiday as the Reserve Banks observe it, or None when it is not
    observed on a weekday (it falls on a Saturday)."""
    nominal = date(year, month, day)
    if nominal.weekday() == _SUNDAY:
        return nominal + timedelta(days=1)
    if nominal.weekday() == _SATURDAY:
        return None
    return nominal


@lru_cache(maxsize=64)
def _holidays(year: int) -> Mapping[date, str]:
    candidates: list[tuple[date | None, str]] = [
        (_fixed(year, 1, 1), "New Year's Day"),
        (_nth_weekday(year, 1, _MONDAY, 3), "Birthday of Martin Luther King, Jr."),
        (_nth_weekday(year, 2, _MONDAY, 3), "Washington's Birthday"),
        (_last_weekday(year, 5, _MONDAY), "Memorial Day"),
        (
            _fixed(year, 6, 19) if year >= _JUNETEENTH_FIRST_YEAR else None,
            "Juneteenth National Independence Day",
        ),
        (_fixed(year, 7, 4), "Independence Day"),
        (_nth_weekday(year, 9, _MONDAY, 1), "Labor Day"),
        (_nth_weekday(year, 10, _MONDAY, 2), "Columbus Day"),
        (_fixed(year, 11, 11), "Veterans Day"),
        (_nth_weekday(year, 11, _THURSDAY, 4), "Thanksgiving Day"),
        (_fixed(year, 12, 25), "Christmas Day"),
    ]
    return MappingProxyType({day: name for day, name in candidates if day is not None})


def federal_reserve_holidays(year: int) -> Mapping[date, str]:
    """The weekdays of `year` on which the Reserve Banks are closed, with the name of
    the holiday observed. New Year's Day of the next year is never observed in this
    year (it is never moved back to December 31)."""
    return _holidays(year)


def holiday_name(d: date) -> str | None:
    """The name of the Federal Reserve holiday observed on `d`, or None."""
    return _holidays(d.year).get(d)


def is_banking_day(d: date) -> bool:
    """True when FedACH settles on `d`: a Monday to Friday that is not an observed
    Federal Reserve holiday.

    Raises TypeError for a datetime: which day an instant falls on depends on a time
    zone, so the caller picks the date.
    """
    if isinstance(d, datetime):
        raise TypeError(f"expected a date, got the datetime {d.isoformat()}")
    return d.weekday() < _SATURDAY and d not in _holidays(d.year)


def next_banking_day(d: date) -> date:
    """The first banking day strictly after `d`."""
    candidate = d + timedelta(days=1)
    while not is_banking_day(candidate):
        candidate += timedelta(days=1)
    return candidate


def add_banking_days(d: date, days: int) -> date:
    """The `days`-th banking day after `d` (`days` >= 0; 0 answers `d` itself, banking
    day or not). Used for return windows, e.g. an R01 must come back within two
    banking days of settlement.

    Raises ValueError for a negative `days`.
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    for _ in range(days):
        d = next_banking_day(d)
    return d
