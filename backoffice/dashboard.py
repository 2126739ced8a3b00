"""Reads for the operator's dashboard (the admin home): revenue this month by rail and
currency, usage trends, and what needs attention.

Lives in backoffice, above the domain apps, because it reads all of them. Cheap reads (sums and
counts over indexed columns) run on every page load; the expensive ones (rating every
active account's current period, counting unattributed events in the raw event store,
30 days of buckets) are cached for ``CACHE_SECONDS`` and carry the instant they were
computed, which the page shows ("as of 14:05").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Min, Q, Sum

from billing.catalog.periods import Period, calendar_month
from billing.catalog.upcoming import NoSubscription, upcoming_invoice
from billing.invoicing.receivables import invoices_overdue
from billing.models import Invoice, InvoiceStatus, Subscription
from metering.models import Meter
from metering.selectors import MeterRollupProblem, rollup_problems, unattributed_usage
from metering.usage import meter_events_per_day
from rails.models import Settlement, SettlementState

logger = logging.getLogger(__name__)

CACHE_SECONDS = 300
TREND_DAYS = 30
UNATTRIBUTED_DAYS = 30
MAX_TREND_METERS = 6
# Rating an account's current period takes a few queries; past this many active
# accounts the estimate covers the first ones (by key) and says so.
MAX_ESTIMATED_ACCOUNTS = getattr(settings, "RAILS_DASHBOARD_MAX_ESTIMATED_ACCOUNTS", 500)

# Billed revenue: invoices issued this month that are still owed or paid (a void
# invoice was never revenue; an uncollectible one was billed).
BILLED_STATUSES = (
    InvoiceStatus.ISSUED,
    InvoiceStatus.PAID,
    InvoiceStatus.PAYMENT_FAILED,
    InvoiceStatus.UNCOLLECTIBLE,
)
ZERO = Decimal(0)
T = TypeVar("T")


def month_of(*, now: datetime) -> Period:
    """The UTC calendar month holding ``now``."""
    return calendar_month(instant=now)


# ------------------------------------------------------------------------------ revenue


@dataclass(frozen=True)
class Amount:
    amount: Decimal = ZERO
    count: int = 0  # invoices, or accounts for the current-period estimate


@dataclass(frozen=True)
class RevenueRow:
    rail: str
    currency: str
    billed: Amount
    drafts: Amount
    current: Amount

    @property
    def unbilled(self) -> Decimal:
        return self.drafts.amount + self.current.amount


@dataclass(frozen=True)
class CurrentPeriodEstimate:
    """The current periods of active accounts, rated with usage so far."""

    as_of: datetime
    by_rail_currency: dict[tuple[str, str], Amount]
    accounts_active: int
    accounts_rated: int
    failed: tuple[str, ...] = ()  # accounts whose rating raised (their keys)


def _by_rail_currency(invoices) -> dict[tuple[str, str], Amount]:
    rows = invoices.values("customer__rail", "currency").annotate(s=Sum("total"), n=Count("id"))
    return {
        (r["customer__rail"], r["currency"]): Amount(r["s"] or ZERO, r["n"])
        for r in rows.order_by()
    }


def billed_revenue(*, period: Period) -> dict[tuple[str, str], Amount]:
    """Totals of the invoices issued in ``period`` (not void), by the billing account's
    rail and the invoice's currency."""
    return _by_rail_currency(
        Invoice.objects.filter(
            status__in=BILLED_STATUSES, issued_at__gte=period.start, issued_at__lt=period.end
        )
    )


def draft_revenue() -> dict[tuple[str, str], Amount]:
    """Totals of the drafts (ended periods not issued yet), by rail and currency."""
    return _by_rail_currency(Invoice.objects.filter(status=InvoiceStatus.DRAFT))


def current_period_estimate(
    *, now: datetime, max_accounts: int = MAX_ESTIMATED_ACCOUNTS
) -> CurrentPeriodEstimate:
    """Each active account's upcoming invoice (its current period, usage up to ``now``)
    added up by rail and currency. Expensive: a rating per account; see the cache."""
    subscriptions = (
        Subscription.objects.filter(start__lte=now)
        .filter(Q(end__isnull=True) | Q(end__gt=now))
        .select_related("customer")
        .order_by("customer__key")
    )
    accounts = list({s.customer_id: s.customer for s in subscriptions}.values())
    sums: dict[tuple[str, str], Amount] = {}
    failed = []
    for account in accounts[:max_accounts]:
        try:
            rated = upcoming_invoice(customer=account, now=now).rated
        except NoSubscription:
            continue
        except (ValidationError, ArithmeticError, LookupError):
            logger.exception("Could not rate the current period of %s", account.key)
            failed.append(account.key)
            continue
        key = (account.rail, rated.currency)
        had = sums.get(key, Amount())
        sums[key] = Amount(had.amount + rated.total, had.count + 1)
    return CurrentPeriodEstimate(
        as_of=now,
        by_rail_currency=sums,
        accounts_active=len(accounts),
        accounts_rated=min(len(accounts), max_accounts) - len(failed),
        failed=tuple(failed),
    )


def revenue_rows(
    *, billed: dict, drafts: dict, current: dict[tuple[str, str], Amount]
) -> list[RevenueRow]:
    keys = sorted(set(billed) | set(drafts) | set(current))
    return [
        RevenueRow(
            rail=rail,
            currency=currency,
            billed=billed.get((rail, currency), Amount()),
            drafts=drafts.get((rail, currency), Amount()),
            current=current.get((rail, currency), Amount()),
        )
        for rail, currency in keys
    ]


# ------------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class MeterTrend:
    meter_id: int
    meter_key: str
    days: tuple[tuple[datetime, int], ...]  # (UTC day start, events rolled up that day)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.days)


@dataclass(frozen=True)
class UsageTrends:
    as_of: datetime
    start: datetime
    meters: tuple[MeterTrend, ...]  # the busiest first, at most MAX_TREND_METERS
    meters_without_usage: int = 0


def usage_trends(*, now: datetime, days: int = TREND_DAYS) -> UsageTrends:
    """Events per meter per UTC day (by event time) over the last ``days`` days, from the
    hourly buckets (each meter counts its own events, so one event counted by two meters
    shows in both); usage not rolled up yet is not included."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    end = today + timedelta(days=1)
    meters = dict(Meter.objects.values_list("pk", "key"))
    found = meter_events_per_day(meter_ids=meters, start=start, end=end)
    series = [
        MeterTrend(
            meter_id=pk,
            meter_key=key,
            days=tuple(
                (start + timedelta(days=i), found.get((pk, start + timedelta(days=i)), 0))
                for i in range(days)
            ),
        )
        for pk, key in meters.items()
    ]
    used = sorted((t for t in series if t.total), key=lambda t: (-t.total, t.meter_key))
    return UsageTrends(
        as_of=now,
        start=start,
        meters=tuple(used[:MAX_TREND_METERS]),
        meters_without_usage=len(series) - len(used),
    )


# --------------------------------------------------------------------------- attention


@dataclass(frozen=True)
class Unattributed:
    as_of: datetime
    since: datetime
    subjects: int
    events: int


@dataclass(frozen=True)
class Attention:
    drafts_in_grace: int
    next_issue_at: datetime | None  # the soonest grace end among them
    drafts_past_grace: int  # should have been issued: the billing run did not
    failed_settlements: int
    failed_settlements_without_retry: int  # no next attempt scheduled: an operator must act
    webhook_failures: int | None  # None: webhook deliveries are not installed
    webhooks_given_up: int | None
    unattributed: Unattributed | None = None
    next_retry_at: datetime | None = None  # the soonest retry of a failed settlement
    # meters whose rollup fails, refused events or failed re-attributions: halted first
    meter_problems: tuple[MeterRollupProblem, ...] = ()


def unattributed_summary(*, now: datetime, days: int = UNATTRIBUTED_DAYS) -> Unattributed:
    """Subjects and events of the last ``days`` days that no consumer mapping covered."""
    since = now - timedelta(days=days)
    subjects = unattributed_usage(since=since)
    return Unattributed(
        as_of=now, since=since, subjects=len(subjects), events=sum(s.events for s in subjects)
    )


def webhook_delivery_model():
    """billing's WebhookDelivery, where installed (it came after this dashboard)."""
    try:
        return apps.get_model("billing", "WebhookDelivery")
    except LookupError:
        return None


def attention(*, now: datetime, unattributed: Unattributed | None = None) -> Attention:
    drafts = Invoice.objects.filter(status=InvoiceStatus.DRAFT)
    in_grace = drafts.filter(grace_until__gt=now).aggregate(n=Count("id"), next=Min("grace_until"))
    failed_counts = Settlement.objects.filter(state=SettlementState.FAILED).aggregate(
        n=Count("id"),
        without_retry=Count("id", filter=Q(next_action_at__isnull=True)),
        next_retry=Min("next_action_at"),
    )
    webhook_failures = given_up = None
    delivery = webhook_delivery_model()
    if delivery is not None:
        counts = delivery.objects.aggregate(
            failed=Count("id", filter=Q(state__in=["failed", "given_up"])),
            given_up=Count("id", filter=Q(state="given_up")),
        )
        webhook_failures, given_up = counts["failed"], counts["given_up"]
    return Attention(
        drafts_in_grace=in_grace["n"],
        next_issue_at=in_grace["next"],
        drafts_past_grace=drafts.filter(grace_until__lte=now).count(),
        failed_settlements=failed_counts["n"],
        failed_settlements_without_retry=failed_counts["without_retry"],
        next_retry_at=failed_counts["next_retry"],
        webhook_failures=webhook_failures,
        webhooks_given_up=given_up,
        unattributed=unattributed,
        meter_problems=tuple(rollup_problems()),
    )


def overdue_by_currency(*, now: datetime) -> dict[str, Amount]:
    """Balances left on overdue invoices (``billing.invoicing.receivables``'s rule), and
    how many, by currency."""
    sums: dict[str, Amount] = {}
    for currency, balance in invoices_overdue(now=now).values_list("currency", "open_balance"):
        had = sums.get(currency, Amount())
        sums[currency] = Amount(had.amount + balance, had.count + 1)
    return dict(sorted(sums.items()))


# ------------------------------------------------------------------------------- cache


def cached(name: str, compute: Callable[[], T], *, refresh: bool = False) -> T:
    """``compute()``, kept ``CACHE_SECONDS`` under a key of this database (a test
    database and the dev one may share a Redis)."""
    key = f"rails:dashboard:{connection.settings_dict['NAME']}:{name}"
    if not refresh:
        hit = cache.get(key)
        if hit is not None:
            return hit
    value = compute()
    cache.set(key, value, CACHE_SECONDS)
    return value


def cache_clear() -> None:
    """Forget the cached parts (the next page load computes them again)."""
    for name in ("current_period", "usage_trends", "unattributed"):
        cache.delete(f"rails:dashboard:{connection.settings_dict['NAME']}:{name}")
