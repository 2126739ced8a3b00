"""The demo's configuration holds the same story on whatever day it is loaded: every
billing period of it starts at midnight in its customer's time zone, and each period end
lies where the story needs it (two periods billed and paid or settling, two drafts just
made and in their grace period, none caught half-way), on every day of several years,
across month lengths, leap days and DST changes. The whole load is run at a few moved
clocks by CI (``.ci/run``, under faketime); this checks every day without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog.periods import period_containing, period_iter
from demo.data import OVER_LIMIT_BURST, demo_catalog, demo_self_service

GRACE = timedelta(hours=24)  # BILLING_GRACE_PERIOD_HOURS's default, which the demo keeps
JUST_ENDED = {"pendant", "kramerica"}  # drafts in their grace period when the demo loads

instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def subscriptions(now: datetime) -> dict[str, tuple[datetime, str]]:
    """Customer key -> (subscription start, billing time zone), as the demo applies them."""
    found: dict[str, tuple[datetime, str]] = {}

    def walk(customers: list[dict], zone: str) -> None:
        for customer in customers:
            own = customer.get("timezone", zone)
            for subscription in customer.get("subscriptions", []):
                found[customer["key"]] = (datetime.fromisoformat(subscription["start"]), own)
            walk(customer.get("subsidiaries", []), own)

    walk(demo_catalog(now=now)["customers"] + demo_self_service(now=now), "UTC")
    return found


def ended(start: datetime, zone: str, now: datetime) -> list[datetime]:
    periods = period_iter(anchor=start, cadence="monthly", timezone=zone, until=now)
    return [p.end for p in periods if p.end <= now]


@settings(max_examples=400, deadline=None)
@given(now=instants)
def test_every_period_of_the_demo_starts_at_midnight_in_its_customers_time_zone(now):
    for key, (start, zone) in subscriptions(now).items():
        local = start.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute, local.second) == (0, 0, 0), key
        for end in ended(start, zone, now + timedelta(days=400)):
            assert end.astimezone(ZoneInfo(zone)).time().isoformat() == "00:00:00", key


@settings(max_examples=400, deadline=None)
@given(now=instants)
def test_the_demo_tells_the_same_story_on_any_day(now):
    subs = subscriptions(now)
    for key, (start, zone) in subs.items():
        ends = ended(start, zone, now)
        if key in JUST_ENDED:
            # its latest period ended at the last midnight there: a draft in its grace
            assert ends and now - GRACE < ends[-1] <= now, key
        elif ends:
            # issued by the billing clock long before the load: two days clear of any
            # grace period, whatever the month's length
            assert now - ends[-1] > GRACE + timedelta(days=2), key
    start, zone = subs["hooli-dev"]
    assert len(ended(start, zone, now)) >= 2  # one invoice paid by webhook, the latest open
    start, zone = subs["globex-apac"]
    assert len(ended(start, zone, now)) >= 1  # the invoice NetSuite refuses
    start, zone = subs["initech"]
    # the first ACH debit (Net 15) fell due, was exported and came back, weeks before
    assert now - ended(start, zone, now)[0] > timedelta(days=1 + 15 + 7)
    start, zone = subs["prestige"]
    period = period_containing(anchor=start, cadence="monthly", timezone=zone, instant=now)
    assert now - period.start > OVER_LIMIT_BURST  # its burst is all in the period under way


def test_the_dates_move_by_whole_days_to_the_day_of_the_load():
    now = datetime(2027, 3, 14, 6, 59, tzinfo=UTC)  # New York springs forward at 07:00
    subs = subscriptions(now)
    assert subs["globex"][0] == datetime(2026, 12, 24, 0, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert subs["kramerica"][0].astimezone(ZoneInfo("America/New_York")).date() == date(2027, 1, 14)
