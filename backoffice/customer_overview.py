"""The customer overview: everything about one customer on one admin page.

``/admin/customers/customer/<id>/overview/`` (``admin:customers_customer_overview``): its
place in the company tree and billing accounts, its consumer keys on a timeline, the
subscription and plan version, usage per feature this period, the upcoming invoice,
invoices with their settlements, credit balance and entitlements.

It lives in backoffice, above the domain apps, because it reads every one of them
(customers ← metering ← billing ← rails) and the customers app may import none of them;
the customer page links here by URL name, and ``backoffice.sites`` routes it.
Each section asks for the view permission of what it shows.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from backoffice.consumer_timeline import consumer_timeline
from billing.catalog.periods import Period, calendar_month
from billing.catalog.prices import price_describe, unit_nouns
from billing.catalog.rating import account_period
from billing.catalog.upcoming import NoSubscription, upcoming_invoice
from billing.credits.services import credit_balances
from billing.entitlements.specs import entitlements_of
from billing.entitlements.value import entitlement_value
from billing.models import Invoice, InvoiceLine, Subscription
from core.money import format_money, format_quantity
from customers.models import Customer
from customers.selectors import billed_customer_ids, billing_account_ids, customer_tree
from metering.admin.charts import Bar, bar_chart_svg
from metering.models import Aggregation, Feature
from metering.usage import usage_series
from rails.states import settlement_state_text

MAX_CHARTS = 12
MAX_CHART_CUSTOMERS = 25  # an account's chart adds up at most this many customers' usage
MAX_INVOICES = 24
ADDITIVE = {Aggregation.COUNT, Aggregation.SUM}


def _url(name: str, *args, query: str = "") -> str | None:
    try:
        return reverse(name, args=args) + (f"?{query}" if query else "")
    except NoReverseMatch:  # no admin page for it (an app not installed, a model without admin)
        return None


# ----------------------------------------------------------------------------- tree


def tree_rows(*, customer: Customer) -> list[dict]:
    """The customer's place in its tree (``customer_tree``: depth first, each customer
    under its parent, with its billing account), each row linking to its overview."""
    return [
        {
            **vars(row),
            "current": row.customer.pk == customer.pk,
            "url": reverse("admin:customers_customer_overview", args=[row.customer.pk]),
        }
        for row in customer_tree(customer=customer)
    ]


# ----------------------------------------------------------------------------- usage


def usage_period_of(*, account: Customer, now: datetime) -> Period:
    """The account's billing period holding ``now``; without a subscription, the
    calendar month in the account's time zone."""
    period = account_period(account=account, at=now)
    if period is not None:
        return period
    return calendar_month(instant=now, timezone=account.timezone)


def usage_charts(
    *, customer: Customer, account: Customer, features: list[Feature], period: Period, now: datetime
) -> list[dict]:
    """A daily chart per feature over the period so far: the customer's own usage, or, for
    a billing account, the usage of every customer billed on it (COUNT and SUM meters,
    whose daily values add up; other aggregations show the customer's own)."""
    group = [customer]
    if customer.pk == account.pk:
        ids = billed_customer_ids(account=account)[:MAX_CHART_CUSTOMERS]
        group = list(Customer.objects.filter(pk__in=ids))
    end = min(now, period.end)
    if end <= period.start:
        return []
    charts = []
    for feature in features[:MAX_CHARTS]:
        meter = feature.meter
        members = group if meter.aggregation in ADDITIVE else [customer]
        totals: dict[datetime, Decimal | None] = {}
        for member in members:
            for point in usage_series(
                meter=meter,
                feature=feature,
                customer=member,
                start=period.start,
                end=end,
                window="day",
                timezone=customer.timezone,
            ):
                if point.value is not None:
                    totals[point.window_start] = (totals.get(point.window_start) or 0) + point.value
                else:
                    totals.setdefault(point.window_start, None)
        zone = zoneinfo.ZoneInfo(customer.timezone)
        bars = [
            Bar(
                label=f"{w.astimezone(zone):%b} {w.astimezone(zone).day}",
                title=f"{w.astimezone(zone):%a %Y-%m-%d} ({customer.timezone})",
                value=v,
            )
            for w, v in sorted(totals.items())
        ]
        scope = (
            customer.key
            if len(members) == 1
            else f"{customer.key} and {len(members) - 1} billed on it"
        )
        total = sum((v for v in totals.values() if v is not None), Decimal(0))
        charts.append(
            {
                "feature": feature,
                "scope": scope,
                "total": total if meter.aggregation in ADDITIVE else None,
                "svg": bar_chart_svg(bars=bars, y_label=f"{feature.key} per day, {scope}"),
                "url": _url(
                    "admin:metering_feature_usage", feature.pk, query=f"customer={customer.key}"
                ),
            }
        )
    return charts


# ----------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class Section:
    """A section the user may not see says so instead of hiding silently."""

    allowed: bool
    data: object = None


def _features_for(
    *, subscription, entitlements, customer: Customer, period: Period
) -> list[Feature]:
    ids: dict[int, None] = {}
    if subscription is not None:
        for card in subscription.plan_version.rate_cards.filter(feature__isnull=False):
            ids[card.feature_id] = None
    for feature, _spec in entitlements:
        ids[feature.pk] = None
    if not ids:  # no plan: whatever the customer used this period
        ids = dict.fromkeys(
            Feature.objects.filter(
                meter__buckets__customer=customer, meter__buckets__hour__gte=period.start
            )
            .values_list("pk", flat=True)
            .distinct()
        )
    by_id = Feature.objects.select_related("meter").in_bulk(list(ids))
    return [by_id[i] for i in ids if i in by_id]


def _credit_balances(account: Customer, now: datetime) -> list[str]:
    return [
        format_money(b, c, code=True) for c, b in credit_balances(account=account, at=now).items()
    ]


def _units_of(feature: Feature | None) -> dict[str, str]:
    if feature is None:
        return {}
    unit, units = unit_nouns(feature.name or feature.key)
    return {"unit": unit, "units": units}  # "API call", "API calls"


def _section(allowed: bool, compute) -> Section:
    return Section(allowed, compute() if allowed else None)


def customer_overview_context(*, request, customer: Customer, now: datetime) -> dict:
    can = request.user.has_perm
    account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
    account = customer if account_id == customer.pk else Customer.objects.get(pk=account_id)
    subscriptions = list(
        Subscription.objects.filter(customer=account)
        .select_related("plan_version__plan", "plan_version__customer")
        .order_by("-start")[:10]
    )
    current = next(
        (s for s in subscriptions if s.start <= now and (s.end is None or s.end > now)), None
    )
    entitlements = entitlements_of(account=account, at=now)
    period = usage_period_of(account=account, now=now)
    tree = tree_rows(customer=customer)
    subtree_ids = [r["customer"].pk for r in tree if r["in_subtree"]]
    can_invoices = can("billing.view_invoice")

    def rate_cards():
        if current is None:
            return []
        currency = current.plan_version.currency
        return [
            {
                "card": c,
                "price": price_describe(c.price, currency=currency, **_units_of(c.feature)),
                "units_label": _units_of(c.feature).get("units", ""),
            }
            for c in current.plan_version.rate_cards.select_related("feature")
        ]

    def usage():
        features = _features_for(
            subscription=current, entitlements=entitlements, customer=customer, period=period
        )
        return usage_charts(
            customer=customer, account=account, features=features, period=period, now=now
        )

    return {
        "customer": customer,
        "account": account,
        "now": now,
        "period": period,
        "tree": tree,
        "timeline": _section(
            can("customers.view_consumermapping"),
            lambda: consumer_timeline(customer_ids=subtree_ids, current_id=customer.pk, now=now),
        ),
        "subscriptions": _section(
            can("billing.view_subscription"),
            lambda: {"current": current, "all": subscriptions, "rate_cards": rate_cards()},
        ),
        "entitlements": _section(
            can("billing.view_plan") or can("billing.view_subscription"),
            lambda: [
                {
                    "feature": f,
                    "spec": spec,
                    "value": entitlement_value(account=account, feature=f, at=now),
                }
                for f, spec in entitlements
            ],
        ),
        "usage": _section(can("metering.view_feature"), usage),
        "upcoming": _section(can_invoices, lambda: _upcoming(customer, now)),
        "invoices": _section(can_invoices, lambda: _invoices(customer, can, now)),
        "credits": _section(can_invoices, lambda: _credit_balances(account, now)),
        "links": {
            "change": reverse("admin:customers_customer_change", args=[customer.pk]),
            "history": _url("admin:audit_history", "customers", "customer", customer.pk),
            "upcoming": _url("admin:billing_upcoming_invoice", customer.key),
            "invoices": _url("admin:billing_invoice_changelist", query=f"customer={account.pk}"),
            "mappings": _url(
                "admin:customers_consumermapping_changelist", query=f"q={customer.key}"
            ),
            "subscribe": _url("admin:billing_subscription_add"),
        },
    }


def _upcoming(customer: Customer, now: datetime) -> dict:
    try:
        upcoming = upcoming_invoice(customer=customer, now=now)
    except NoSubscription as exc:
        return {"problem": str(exc)}
    lines = sorted(upcoming.rated.lines, key=lambda line: line.amount, reverse=True)
    currency = upcoming.rated.currency
    return {
        "upcoming": upcoming,
        "total": format_money(upcoming.rated.total, currency, code=True),
        "subtotal": format_money(upcoming.rated.subtotal, currency, code=True),
        "top_lines": [
            {
                "line": line,
                "quantity": format_quantity(line.quantity),
                "amount": format_money(line.amount, currency, code=True),
            }
            for line in lines[:8]
        ],
        "more": max(len(lines) - 8, 0),
    }


def _invoices(customer: Customer, can, now: datetime) -> list[dict]:
    """The invoices of the customer, or (for a subsidiary) with its lines on them."""
    invoices = (
        Invoice.objects.filter(
            Q(customer=customer)
            | Q(pk__in=InvoiceLine.objects.filter(customer=customer).values("invoice_id"))
        )
        .select_related("customer", "settlement")
        .order_by("-created_at")[:MAX_INVOICES]
    )
    rows = []
    for invoice in invoices:
        settlement = getattr(invoice, "settlement", None)
        rows.append(
            {
                "invoice": invoice,
                "url": reverse("admin:billing_invoice_change", args=[invoice.pk]),
                "total": format_money(invoice.total, invoice.currency, code=True),
                "amount_due": format_money(invoice.amount_due, invoice.currency, code=True),
                "settlement": settlement,
                "settlement_state": settlement_state_text(settlement, now=now)
                if settlement is not None
                else "",
                "settlement_url": _url("admin:rails_settlement_change", settlement.pk)
                if settlement is not None and can("rails.view_settlement")
                else None,
            }
        )
    return rows


def customer_overview_view(request, pk: int):
    if not request.user.has_perm("customers.view_customer"):
        raise PermissionDenied
    customer = get_object_or_404(Customer.objects.select_related("parent"), pk=pk)
    context = {
        **admin.site.each_context(request),
        "title": f"{customer.name} ({customer.key})",
        "opts": Customer._meta,
        "original": customer,
        **customer_overview_context(request=request, customer=customer, now=timezone.now()),
    }
    return TemplateResponse(request, "admin/backoffice/customer_overview.html", context)
