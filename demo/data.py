"""The demo's data set: the example catalog moved to the days before the load, and about
a million usage events of an API and AI business, generated inside PostgreSQL for speed."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from django.conf import settings
from django.db import transaction

from billing.catalog.periods import period_at
from metering.partitions import month_start, partitions_ensure
from metering.synthetic import event_statistics_refresh, synthetic_events_insert

CATALOG = Path(settings.BASE_DIR) / "examples" / "catalog.yaml"
# The example file tells its story as of one day: two monthly periods billed, the third
# under way. The demo moves every date of the file by whole days so that the day it is
# loaded is that day, and so shows the same states whatever day it is loaded on: each
# period end lies days (not hours) away from the load, on any month's length, so no
# invoice of the catalog's customers is ever caught in its grace period.
EXAMPLE_TODAY = date(2026, 12, 20)
EXAMPLE_START = date(2026, 10, 1)  # the file's first subscriptions start on this day
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(T.*)?$")

# consumer key -> (share of traffic, share of LLM calls among its events)
SUBJECTS = {
    "globex-hq-gw": (0.22, 0.35),
    "globex-eu-gw": (0.16, 0.25),
    "shared-gw": (0.10, 0.50),
    "globex-apac-gw": (0.08, 0.20),
    "initech-prod": (0.20, 0.30),
    "initech-staging": (0.04, 0.10),
    "hooli-app-1": (0.125, 0.60),
    "vandelay-api": (0.02, 0.40),
    "kramerica-app": (0.01, 0.50),
    "pendant-web": (0.008, 0.30),
    "bluth-dev": (0.0015, 0.0),
    "pp-laptop": (0.0012, 0.0),
    "unknown-gw-7f3a": (0.0243, 0.0),  # a gateway consumer nobody mapped yet
}
# The Free account that goes over its hard limit (1,000 API calls a period) in the
# period under way: its burst falls in the last two days before the load, and its
# current period began at least six days before.
OVER_LIMIT_SUBJECT = "prestige-app"
OVER_LIMIT_EVENTS = 2_000  # about 1,400 successful calls: 7 in 10 requests answer 200 or 201
OVER_LIMIT_BURST = timedelta(days=2)


def months_add(day: date, months: int) -> date:
    """``day`` moved by ``months`` (either way), clamped to the month's last day, as
    billing periods clamp (Jan 31 + 1 month is Feb 28)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def demo_days_shift(now: datetime) -> int:
    """How many days the example file moves so that ``now``'s day (UTC) is its day."""
    return (now.astimezone(UTC).date() - EXAMPLE_TODAY).days


def demo_start(now: datetime) -> date:
    """The demo's first day: where the example's first subscriptions start, moved."""
    return EXAMPLE_START + timedelta(days=demo_days_shift(now))


def local_midnight(day: date, timezone: str) -> datetime:
    """Midnight starting ``day`` in ``timezone``, as an aware datetime."""
    return datetime.combine(day, time(), ZoneInfo(timezone))


def last_local_midnight(now: datetime, timezone: str) -> datetime:
    """The latest midnight in ``timezone`` at or before ``now``."""
    return local_midnight(now.astimezone(ZoneInfo(timezone)).date(), timezone)


def anchor_ending_at(end: datetime, timezone: str) -> datetime:
    """A monthly subscription's start, two or three months before ``end``, one of whose
    periods ends exactly at ``end`` (midnight in ``timezone``). Two months back is not
    always one: a Nov 30 anchor's periods end on Jan 30, not Jan 31, so a Jan 31 end
    takes an Oct 31 start."""
    for months in (2, 3):
        anchor = local_midnight(months_add(end.date(), -months), timezone)
        if (
            period_at(anchor=anchor, cadence="monthly", timezone=timezone, index=months).start
            == end
        ):
            return anchor
    raise ValueError(f"No monthly anchor has a period ending at {end.isoformat()}.")


def _shift(value: str, days: int) -> str:
    match = _DATE.match(value)
    if not match:
        return value
    day = date(int(match[1]), int(match[2]), int(match[3])) + timedelta(days=days)
    return f"{day:%Y-%m-%d}{match[4] or ''}"


def _walk(node, days: int):
    if isinstance(node, dict):
        return {k: _walk(v, days) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, days) for v in node]
    if isinstance(node, str):
        return _shift(node, days)
    if isinstance(node, date):
        return node + timedelta(days=days)
    return node


def _starts_at_local_midnight(customers: list[dict], timezone: str = "UTC") -> None:
    """Each subscription starts at midnight of its day in its customer's billing time
    zone (a subsidiary without one has its parent's), so its periods run midnight to
    midnight there, as the billing profile's help text says."""
    for customer in customers:
        zone = customer.get("timezone", timezone)
        for subscription in customer.get("subscriptions", []):
            day = date.fromisoformat(str(subscription["start"])[:10])
            subscription["start"] = local_midnight(day, zone).isoformat()
        _starts_at_local_midnight(customer.get("subsidiaries", []), zone)


def demo_catalog(*, now: datetime) -> dict:
    """The example catalog with every date moved so that ``now`` falls on its day."""
    document = _walk(yaml.safe_load(CATALOG.read_text()), demo_days_shift(now))
    _starts_at_local_midnight(document.get("customers", []))
    return document


def demo_self_service(*, now: datetime) -> list[dict]:
    """Small self-service accounts on Stripe, in the configuration file's shape.

    Pendant (UTC) and Kramerica (New York) started two (or three) months before the last
    midnight in their time zones, so a period of theirs has just ended, at most a day before
    ``now``: its draft waits in its grace period (24 hours) for an operator to review,
    or for the billing clock to issue it. ``prestige`` is on the Free plan and goes over
    its hard limit in the period under way.
    """
    first = demo_start(now)

    def just_ended(timezone: str) -> str:
        return anchor_ending_at(last_local_midnight(now, timezone), timezone).isoformat()

    def account(key, name, email, country, consumer, plan, start, timezone="UTC", **extra):
        return {
            "key": key,
            "name": name,
            "email": email,
            "currency": "USD",
            "timezone": timezone,
            "rail": "stripe",
            "rail_settings": {"stripe_customer_id": f"cus_demo{key.replace('-', '')[:10]}"},
            "country": country,
            "consumers": [{"key": consumer}],
            "subscriptions": [{"plan": plan, "start": start}],
            **extra,
        }

    since_first = local_midnight(first, "UTC").isoformat()
    return [
        account(
            "vandelay", "Vandelay Industries", "billing@vandelay.example", "US",
            "vandelay-api", "pro", since_first, city="New York", region="NY",
        ),
        account(
            "pendant", "Pendant Publishing", "accounts@pendant.example", "US",
            "pendant-web", "pro", just_ended("UTC"),
        ),
        account(
            "kramerica", "Kramerica Industries", "kramer@kramerica.example", "US",
            "kramerica-app", "pro", just_ended("America/New_York"),
            timezone="America/New_York", city="New York", region="NY",
        ),
        account(
            "bluth", "Bluth Company Labs", "dev@bluth.example", "US",
            "bluth-dev", "free", since_first,
        ),
        account(
            "prestige", "Prestige Worldwide", "hello@prestige.example", "GB",
            "prestige-app", "free", since_first,
        ),
    ]  # fmt: skip


def _months_between(start: datetime, end: datetime) -> set[date]:
    months = set()
    month = month_start(start)
    while datetime(month.year, month.month, 1, tzinfo=UTC) < end:
        months.add(month)
        month = months_add(month, 1)
    return months


@transaction.atomic
def demo_events(
    *,
    start: datetime,
    end: datetime,
    total: int,
    subjects: dict[str, tuple[float, float]] | None = None,
) -> int:
    """Generate about ``total`` events between ``start`` and ``end``, shared among
    ``subjects`` (default ``SUBJECTS``), with their deduplication keys. Event ids name
    the subject and the start, so a second call for another range adds new events."""
    partitions_ensure(_months_between(start, end))
    made = 0
    for subject, (share, llm_share) in (subjects or SUBJECTS).items():
        made += synthetic_events_insert(
            start=start,
            end=end,
            count=max(int(total * share), 1),
            subject=subject,
            llm_share=llm_share,
            prefix=f"demo-{subject}-{start:%Y%m%d%H%M}-",
        )
    # Fresh statistics, so the rollup that follows plans for a million rows, not none.
    event_statistics_refresh()
    return made
