"""Billing periods: anchored on the subscription start, in the customer's timezone."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.catalog.periods import (
    Period,
    calendar_month,
    period_at,
    period_containing,
    period_iter,
)

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
MICROSECOND = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def starts(*, anchor, cadence, timezone, until):
    periods = list(period_iter(anchor=anchor, cadence=cadence, timezone=timezone, until=until))
    return [period.start for period in periods]


def test_monthly_periods_anchored_on_the_31st_end_on_each_shorter_months_last_day_through_a_leap_year():
    anchor = utc(2024, 1, 31)

    result = starts(anchor=anchor, cadence="monthly", timezone="UTC", until=utc(2025, 3, 1))

    assert [start.date().isoformat() for start in result] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
        "2024-06-30",
        "2024-07-31",
        "2024-08-31",
        "2024-09-30",
        "2024-10-31",
        "2024-11-30",
        "2024-12-31",
        "2025-01-31",
        "2025-02-28",
    ]


def test_a_clamped_day_never_sticks_to_later_periods():
    anchor = utc(2023, 1, 30, 9, 15)

    february = period_at(anchor=anchor, cadence="monthly", timezone="UTC", index=1)

    assert february == Period(utc(2023, 2, 28, 9, 15), utc(2023, 3, 30, 9, 15))


def test_yearly_periods_anchored_on_february_29_fall_on_february_28_until_the_next_leap_year():
    anchor = utc(2024, 2, 29, 12)

    result = starts(anchor=anchor, cadence="yearly", timezone="UTC", until=utc(2028, 12, 31))

    assert result == [
        utc(2024, 2, 29, 12),
        utc(2025, 2, 28, 12),
        utc(2026, 2, 28, 12),
        utc(2027, 2, 28, 12),
        utc(2028, 2, 29, 12),
    ]


def test_new_york_periods_anchored_at_local_midnight_stay_at_local_midnight_across_dst():
    anchor = datetime(2026, 1, 1, tzinfo=NEW_YORK)

    result = starts(
        anchor=anchor, cadence="monthly", timezone="America/New_York", until=utc(2027, 1, 2)
    )

    assert [start.astimezone(NEW_YORK).replace(tzinfo=None) for start in result] == [
        datetime(2026, month, 1) for month in range(1, 13)
    ] + [datetime(2027, 1, 1)]
    assert result[2] == utc(2026, 3, 1, 5)  # EST
    assert result[3] == utc(2026, 4, 1, 4)  # EDT
    assert result[10] == utc(2026, 11, 1, 4)  # EDT
    assert result[11] == utc(2026, 12, 1, 5)  # EST


def test_a_period_spanning_spring_forward_is_an_hour_short_and_one_spanning_fall_back_an_hour_long():
    anchor = datetime(2026, 1, 1, tzinfo=NEW_YORK)

    march = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=2)
    november = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=10)

    assert march.duration == timedelta(days=31, hours=-1)
    assert november.duration == timedelta(days=30, hours=1)


def test_berlin_periods_keep_the_local_wall_clock_time_across_dst():
    anchor = datetime(2026, 1, 15, 12, tzinfo=BERLIN)

    result = starts(
        anchor=anchor, cadence="monthly", timezone="Europe/Berlin", until=utc(2026, 12, 1)
    )

    assert all(start.astimezone(BERLIN).hour == 12 for start in result)
    assert result[2] == utc(2026, 3, 15, 11)  # CET, before the March 29 change
    assert result[3] == utc(2026, 4, 15, 10)  # CEST
    assert result[9] == utc(2026, 10, 15, 10)  # CEST, before the October 25 change
    assert result[10] == utc(2026, 11, 15, 11)  # CET


def test_a_skipped_new_york_local_time_moves_forward_by_the_gap():
    anchor = datetime(2026, 2, 8, 2, 30, tzinfo=NEW_YORK)  # March 8 skips 02:00-03:00

    march = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=1)

    assert march.start == utc(2026, 3, 8, 7, 30)
    assert march.start.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)
    assert march.end == utc(2026, 4, 8, 6, 30)  # back to 02:30, now EDT


def test_a_skipped_berlin_local_time_moves_forward_by_the_gap():
    anchor = datetime(2026, 1, 29, 2, 30, tzinfo=BERLIN)  # March 29 skips 02:00-03:00

    march = period_at(anchor=anchor, cadence="monthly", timezone="Europe/Berlin", index=2)

    assert march.start.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)
    assert march.end.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 4, 29, 2, 30)


def test_a_repeated_local_time_takes_its_first_pass():
    anchor = datetime(2026, 10, 1, 1, 30, tzinfo=NEW_YORK)  # November 1 repeats 01:00-02:00

    november = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=1)

    assert november.start == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first pass
    assert november.end == utc(2026, 12, 1, 6, 30)  # 01:30 EST


def test_an_anchor_in_the_second_pass_of_a_repeated_hour_starts_the_first_period():
    anchor = utc(2026, 11, 1, 6, 30)  # 01:30 EST, the second 01:30 that night

    first = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=0)

    assert first == Period(anchor, utc(2026, 12, 1, 6, 30))


def test_periods_are_computed_in_the_given_timezone_whatever_the_anchors_own_zone():
    anchor = datetime(2026, 1, 31, 23, 30, tzinfo=NEW_YORK)  # Feb 1 04:30 UTC, Feb 1 in UTC

    in_new_york = period_at(anchor=anchor, cadence="monthly", timezone="America/New_York", index=1)
    in_utc = period_at(anchor=anchor.astimezone(UTC), cadence="monthly", timezone="UTC", index=1)

    assert in_new_york.start == utc(2026, 3, 1, 4, 30)  # Feb 28 23:30 in New York
    assert in_utc.start == utc(2026, 3, 1, 4, 30)  # Mar 1 04:30 in UTC
    assert in_new_york.end == utc(2026, 4, 1, 3, 30)  # Mar 31 23:30 EDT
    assert in_utc.end == utc(2026, 4, 1, 4, 30)


def test_the_anchors_seconds_and_microseconds_are_kept():
    anchor = utc(2026, 5, 17, 13, 45, 10, 500_000)

    period = period_at(anchor=anchor, cadence="monthly", timezone="UTC", index=3)

    assert period.start == utc(2026, 8, 17, 13, 45, 10, 500_000)


def test_period_containing_the_exact_start_instant_is_the_period_that_starts_there():
    anchor = datetime(2026, 1, 1, tzinfo=NEW_YORK)
    april_start = utc(2026, 4, 1, 4)

    period = period_containing(
        anchor=anchor, cadence="monthly", timezone="America/New_York", instant=april_start
    )

    assert period == Period(april_start, utc(2026, 5, 1, 4))


def test_period_containing_the_exact_end_instant_is_the_next_period():
    anchor = utc(2024, 1, 31)
    february = period_at(anchor=anchor, cadence="monthly", timezone="UTC", index=1)

    at_end = period_containing(
        anchor=anchor, cadence="monthly", timezone="UTC", instant=february.end
    )
    just_before = period_containing(
        anchor=anchor, cadence="monthly", timezone="UTC", instant=february.end - MICROSECOND
    )

    assert at_end.start == february.end == utc(2024, 3, 31)
    assert just_before == february


def test_period_containing_the_anchor_is_the_first_period():
    anchor = utc(2026, 10, 1)

    period = period_containing(anchor=anchor, cadence="yearly", timezone="UTC", instant=anchor)

    assert period == Period(utc(2026, 10, 1), utc(2027, 10, 1))


def test_period_containing_accepts_an_instant_in_any_timezone():
    anchor = datetime(2026, 1, 1, tzinfo=NEW_YORK)
    instant = datetime(2026, 3, 1, 5, 30, tzinfo=BERLIN)  # Feb 28 23:30 in New York

    period = period_containing(
        anchor=anchor, cadence="monthly", timezone="America/New_York", instant=instant
    )

    assert period.start.astimezone(NEW_YORK).date().isoformat() == "2026-02-01"


def test_no_period_contains_an_instant_before_the_anchor():
    with pytest.raises(ValueError, match="before the anchor"):
        period_containing(
            anchor=utc(2026, 1, 1),
            cadence="monthly",
            timezone="UTC",
            instant=utc(2026, 1, 1) - MICROSECOND,
        )


def test_period_iter_yields_every_period_overlapping_the_range():
    anchor = utc(2026, 1, 15)

    periods = list(
        period_iter(
            anchor=anchor,
            cadence="monthly",
            timezone="UTC",
            start=utc(2026, 3, 1),
            until=utc(2026, 5, 15),
        )
    )

    assert [period.start for period in periods] == [
        utc(2026, 2, 15),
        utc(2026, 3, 15),
        utc(2026, 4, 15),
    ]


def test_period_iter_counts_from_the_anchor_when_start_is_earlier():
    anchor = utc(2026, 1, 15)

    periods = list(
        period_iter(
            anchor=anchor,
            cadence="monthly",
            timezone="UTC",
            start=utc(2025, 1, 1),
            until=utc(2026, 2, 16),
        )
    )

    assert [period.start for period in periods] == [utc(2026, 1, 15), utc(2026, 2, 15)]


def test_period_iter_yields_nothing_for_an_empty_range():
    anchor = utc(2026, 1, 15)

    assert list(period_iter(anchor=anchor, cadence="monthly", timezone="UTC", until=anchor)) == []


def test_period_iter_checks_its_arguments_when_called():
    with pytest.raises(ValueError, match="timezone-aware"):
        period_iter(
            anchor=datetime(2026, 1, 1), cadence="monthly", timezone="UTC", until=utc(2027, 1, 1)
        )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cadence": "weekly"}, "monthly or yearly"),
        ({"timezone": "Mars/Olympus_Mons"}, "not an IANA timezone"),
        ({"anchor": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"index": -1}, "must not be negative"),
    ],
)
def test_period_at_refuses_bad_arguments(arguments, message):
    call = {"anchor": utc(2026, 1, 1), "cadence": "monthly", "timezone": "UTC", "index": 0}

    with pytest.raises(ValueError, match=message):
        period_at(**(call | arguments))


def test_a_period_is_stored_in_utc_and_is_half_open():
    start = datetime(2026, 1, 1, tzinfo=NEW_YORK)
    end = datetime(2026, 2, 1, tzinfo=NEW_YORK)

    period = Period(start, end)

    assert period.start.tzinfo is UTC and period.start == start
    assert period.contains(start)
    assert period.contains(end - MICROSECOND)
    assert not period.contains(end)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (utc(2026, 2, 1), utc(2026, 2, 1), "must end after it starts"),
        (utc(2026, 2, 1), utc(2026, 1, 1), "must end after it starts"),
        (datetime(2026, 1, 1), utc(2026, 2, 1), "timezone-aware"),
    ],
)
def test_a_period_refuses_empty_inverted_and_naive_intervals(start, end, message):
    with pytest.raises(ValueError, match=message):
        Period(start, end)


# -------------------------------------------------------------------------- laws

TIMEZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # half-hour DST shifts
    "America/Sao_Paulo",  # DST that began at midnight, until 2019
    "Asia/Kolkata",
    "Pacific/Chatham",
]
anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
schedules = st.fixed_dictionaries(
    {
        "anchor": anchors,
        "cadence": st.sampled_from(["monthly", "yearly"]),
        "timezone": st.sampled_from(TIMEZONES),
    }
)


def clamped_local_date(anchor_local: datetime, months: int):
    month_index = anchor_local.month - 1 + months
    year, month = anchor_local.year + month_index // 12, month_index % 12 + 1
    return anchor_local.date().replace(
        year=year, month=month, day=min(anchor_local.day, calendar.monthrange(year, month)[1])
    )


@given(schedule=schedules, count=st.integers(min_value=1, max_value=30))
def test_periods_follow_each_other_without_gaps_or_overlaps(schedule, count):
    periods = [period_at(**schedule, index=index) for index in range(count)]

    assert periods[0].start == schedule["anchor"]
    for earlier, later in zip(periods, periods[1:], strict=False):
        assert earlier.end == later.start


@given(schedule=schedules, index=st.integers(min_value=0, max_value=200))
def test_each_period_starts_on_the_anchors_day_clamped_to_the_month(schedule, index):
    zone = ZoneInfo(schedule["timezone"])
    anchor_local = schedule["anchor"].astimezone(zone)
    months = index * (1 if schedule["cadence"] == "monthly" else 12)

    start_local = period_at(**schedule, index=index).start.astimezone(zone)

    expected_date = clamped_local_date(anchor_local, months)
    wall = datetime.combine(expected_date, anchor_local.time())
    if start_local.replace(tzinfo=None) != wall:
        # Only a skipped local time may move, and only forward, by at most the gap.
        assert timedelta(0) < start_local.replace(tzinfo=None) - wall <= timedelta(hours=1)
    else:
        assert start_local.date() == expected_date


@given(
    schedule=schedules, offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000))
)
def test_period_containing_returns_the_period_that_holds_the_instant(schedule, offset):
    instant = schedule["anchor"] + offset

    period = period_containing(**schedule, instant=instant)

    assert period.contains(instant)
    assert period_containing(**schedule, instant=period.start) == period
    assert period_containing(**schedule, instant=period.end - MICROSECOND) == period
    assert period_containing(**schedule, instant=period.end).start == period.end


@given(
    instant=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]),
)
def test_a_calendar_month_runs_from_the_first_to_the_next_first_in_its_time_zone(instant, zone):
    month = calendar_month(instant=instant, timezone=zone)
    local = instant.astimezone(ZoneInfo(zone))
    start, end = month.start.astimezone(ZoneInfo(zone)), month.end.astimezone(ZoneInfo(zone))
    assert month.start <= instant < month.end
    assert (start.year, start.month, start.day, start.hour) == (local.year, local.month, 1, 0)
    assert (end.day, end.hour) == (1, 0) and end.month == local.month % 12 + 1
