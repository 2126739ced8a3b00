"""US banking days: weekends and Federal Reserve holidays, observed the Fed's way."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rails.ach.calendar import (
    add_banking_days,
    federal_reserve_holidays,
    holiday_name,
    is_banking_day,
    next_banking_day,
)


def test_2026_reserve_bank_holidays():
    assert sorted(federal_reserve_holidays(2026)) == [
        date(2026, 1, 1),  # Thursday
        date(2026, 1, 19),  # MLK Day
        date(2026, 2, 16),  # Washington's Birthday
        date(2026, 5, 25),  # Memorial Day
        date(2026, 6, 19),  # Juneteenth, a Friday
        # Independence Day is Saturday July 4: not observed
        date(2026, 9, 7),  # Labor Day
        date(2026, 10, 12),  # Columbus Day
        date(2026, 11, 11),  # Veterans Day, a Wednesday
        date(2026, 11, 26),  # Thanksgiving
        date(2026, 12, 25),  # Christmas, a Friday
    ]


def test_2027_reserve_bank_holidays():
    assert sorted(federal_reserve_holidays(2027)) == [
        date(2027, 1, 1),
        date(2027, 1, 18),
        date(2027, 2, 15),
        date(2027, 5, 31),
        # Juneteenth is Saturday June 19: not observed
        date(2027, 7, 5),  # Independence Day is Sunday July 4: observed Monday
        date(2027, 9, 6),
        date(2027, 10, 11),
        date(2027, 11, 11),
        date(2027, 11, 25),
        # Christmas is Saturday December 25: not observed
    ]


@pytest.mark.parametrize(
    ("day", "banking"),
    [
        (date(2026, 7, 3), True),  # Friday; July 4 2026 is a Saturday the Fed does not move
        (date(2026, 7, 4), False),  # Saturday
        (date(2026, 7, 6), True),
        (date(2026, 11, 26), False),  # Thanksgiving
        (date(2026, 11, 27), True),  # the Friday after Thanksgiving is a banking day
        (date(2026, 12, 25), False),
        (date(2026, 12, 31), True),
        (date(2027, 1, 1), False),
        (date(2027, 6, 18), True),  # Juneteenth 2027 is a Saturday
        (date(2027, 7, 5), False),  # Independence Day observed
        (date(2027, 12, 24), True),  # Friday before a Saturday Christmas
        (date(2027, 12, 31), True),  # Friday before a Saturday New Year's Day
        (date(2028, 11, 10), True),  # Friday before a Saturday Veterans Day
        (date(2022, 12, 26), False),  # Christmas 2022 was a Sunday
        (date(2023, 1, 2), False),  # New Year's Day 2023 was a Sunday
        (date(2021, 6, 18), True),  # the Reserve Banks stayed open for Juneteenth 2021
        (date(2022, 6, 20), False),  # their first Juneteenth, observed on Monday
        (date(2026, 1, 3), False),  # Saturday
        (date(2026, 1, 4), False),  # Sunday
    ],
)
def test_banking_days(day, banking):
    assert is_banking_day(day) is banking


@pytest.mark.parametrize(
    ("day", "following"),
    [
        (date(2026, 7, 2), date(2026, 7, 3)),
        (date(2026, 7, 3), date(2026, 7, 6)),
        (date(2026, 11, 25), date(2026, 11, 27)),
        (date(2026, 12, 24), date(2026, 12, 28)),
        (date(2026, 12, 31), date(2027, 1, 4)),
        (date(2027, 7, 2), date(2027, 7, 6)),  # over the weekend and the observed Monday
        (date(2027, 12, 23), date(2027, 12, 24)),
        (date(2026, 1, 16), date(2026, 1, 20)),  # over MLK Day
        (date(2026, 1, 1), date(2026, 1, 2)),  # from a holiday
    ],
)
def test_next_banking_day_is_strictly_after_and_skips_closures(day, following):
    assert next_banking_day(day) == following


def test_holidays_carry_their_names():
    assert holiday_name(date(2027, 7, 5)) == "Independence Day"
    assert holiday_name(date(2026, 11, 26)) == "Thanksgiving Day"
    assert holiday_name(date(2026, 7, 3)) is None


def test_add_banking_days_counts_only_banking_days():
    assert add_banking_days(date(2026, 11, 25), 0) == date(2026, 11, 25)
    assert add_banking_days(date(2026, 11, 25), 2) == date(2026, 11, 30)
    with pytest.raises(ValueError, match="days must be >= 0"):
        add_banking_days(date(2026, 11, 25), -1)


@given(st.integers(min_value=1990, max_value=2200))
def test_every_year_closes_on_at_most_eleven_weekdays_and_rule_holidays_keep_their_weekday(year):
    holidays = federal_reserve_holidays(year)

    assert all(day.weekday() < 5 and day.year == year for day in holidays)
    assert 7 <= len(holidays) <= 11
    named = {name: day for day, name in holidays.items()}
    assert named["Thanksgiving Day"].weekday() == 3 and 22 <= named["Thanksgiving Day"].day <= 28
    assert named["Memorial Day"].weekday() == 0 and named["Memorial Day"].day >= 25
    assert named["Labor Day"].weekday() == 0 and named["Labor Day"].day <= 7
    assert named["Birthday of Martin Luther King, Jr."].weekday() == 0
    assert 15 <= named["Birthday of Martin Luther King, Jr."].day <= 21


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2199, 12, 1)))
def test_next_banking_day_is_the_first_banking_day_after(day):
    following = next_banking_day(day)

    assert following > day and is_banking_day(following)
    assert following - day <= timedelta(days=5)
    gap = (day + timedelta(days=n) for n in range(1, (following - day).days))
    assert not any(is_banking_day(between) for between in gap)


def test_a_datetime_is_refused_because_its_day_depends_on_a_time_zone():
    with pytest.raises(TypeError, match="expected a date"):
        is_banking_day(datetime(2026, 11, 26, 12, 0))
