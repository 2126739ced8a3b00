"""``{% operator_dashboard %}``: the operator's dashboard on the admin home
(``admin/backoffice/index.html``), from the reads in ``backoffice.dashboard``.

Each part shows only to a user who may view what it counts, and every number links to
the rows behind it: a changelist filtered to exactly those rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from urllib.parse import urlencode

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from backoffice import dashboard as d
from billing.models import InvoiceStatus
from core.money import format_money, format_quantity
from customers.models import rail_label
from metering.admin.charts import Bar, bar_chart_svg
from rails.models import SettlementState

register = template.Library()


def _url(name: str, params: dict | None = None, args=()) -> str | None:
    try:
        url = reverse(name, args=args)
    except NoReverseMatch:  # that model has no admin page here
        return None
    return f"{url}?{urlencode(params)}" if params else url


def _iso(at: datetime) -> str:
    return at.isoformat()


def invoices_url(**params) -> str | None:
    return _url("admin:billing_invoice_changelist", params)


def billed_url(*, period, rail: str | None = None, currency: str | None = None) -> str | None:
    params = {
        "status__in": ",".join(d.BILLED_STATUSES),
        "issued_at__gte": _iso(period.start),
        "issued_at__lt": _iso(period.end),
    }
    if rail:
        params["customer__rail__exact"] = rail
    if currency:
        params["currency"] = currency
    return invoices_url(**params)


def drafts_url(*, rail: str | None = None, currency: str | None = None) -> str | None:
    params = {"status__exact": InvoiceStatus.DRAFT}
    if rail:
        params["customer__rail__exact"] = rail
    if currency:
        params["currency"] = currency
    return invoices_url(**params)


def _revenue(now: datetime, refresh: bool) -> dict:
    month = d.month_of(now=now)
    estimate = d.cached(
        "current_period", lambda: d.current_period_estimate(now=now), refresh=refresh
    )
    rows = d.revenue_rows(
        billed=d.billed_revenue(period=month),
        drafts=d.draft_revenue(),
        current=estimate.by_rail_currency,
    )
    by_currency: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        sums = by_currency.setdefault(row.currency, {"billed": Decimal(0), "unbilled": Decimal(0)})
        sums["billed"] += row.billed.amount
        sums["unbilled"] += row.unbilled
    return {
        "month": month,
        "estimate": estimate,
        "rows": [
            {
                "rail": row.rail,
                "rail_label": rail_label(row.rail),
                "currency": row.currency,
                "billed": format_money(row.billed.amount, row.currency, code=True),
                "billed_count": row.billed.count,
                "billed_url": billed_url(period=month, rail=row.rail, currency=row.currency),
                "drafts": format_money(row.drafts.amount, row.currency, code=True),
                "drafts_count": row.drafts.count,
                "drafts_url": drafts_url(rail=row.rail, currency=row.currency),
                "current": format_money(row.current.amount, row.currency, code=True),
                "current_count": row.current.count,
                "unbilled": format_money(row.unbilled, row.currency, code=True),
            }
            for row in rows
        ],
        "totals": [
            {
                "currency": c,
                "billed": format_money(s["billed"], c, code=True),
                "unbilled": format_money(s["unbilled"], c, code=True),
            }
            for c, s in sorted(by_currency.items())
        ],
        "billed_url": billed_url(period=month),
        "subscriptions_url": _url("admin:billing_subscription_changelist", {"status": "active"}),
    }


def _usage(now: datetime, refresh: bool) -> dict:
    trends = d.cached("usage_trends", lambda: d.usage_trends(now=now), refresh=refresh)
    charts = []
    for trend in trends.meters:
        bars = [
            Bar(label=f"{day:%b} {day.day}", title=f"{day:%a %Y-%m-%d} (UTC)", value=Decimal(n))
            for day, n in trend.days
        ]
        charts.append(
            {
                "key": trend.meter_key,
                "total": format_quantity(trend.total),
                "svg": bar_chart_svg(bars=bars, y_label=f"{trend.meter_key}: events per day (UTC)"),
                "url": _url("admin:metering_meter_change", args=[trend.meter_id]),
            }
        )
    return {
        "trends": trends,
        "charts": charts,
        "meters_url": _url("admin:metering_meter_changelist"),
    }


def _failed_detail(found: d.Attention, now: datetime) -> str:
    """What happens to the failed settlements: the settlement list's words, counted."""
    if not found.failed_settlements:
        return "Every settlement is on its way."
    stuck = found.failed_settlements_without_retry
    retrying = found.failed_settlements - stuck
    parts = []
    if stuck:
        parts.append(f"{stuck} failed for good: {'needs' if stuck == 1 else 'need'} an operator")
    if retrying and found.next_retry_at <= now:
        parts.append(f"{retrying} retrying now")
    elif retrying:
        soonest = f"{timezone.localtime(found.next_retry_at):%Y-%m-%d %H:%M %Z}"
        when = f" (the next at {soonest})" if retrying > 1 else f" at {soonest}"
        parts.append(f"{retrying} with a retry scheduled{when}")
    return "; ".join(parts) + "."


def _meter_problems_card(problems) -> dict:
    halted = [p for p in problems if p.halted_since]
    refused = sum(p.refused for p in problems)
    parts = []
    if halted:
        parts.append(
            f"{len(halted)} halted (usage after {'its' if len(halted) == 1 else 'their'} "
            "watermark is not counted)"
        )
    if refused:
        refusing = sum(1 for p in problems if p.refused)
        parts.append(
            f"{format_quantity(refused)} event{'s' if refused != 1 else ''} refused by "
            f"{refusing} meter{'s' if refusing != 1 else ''}, not acknowledged"
        )
    reattributing = sum(1 for p in problems if p.reattributions)
    if reattributing:
        parts.append(f"{reattributing} failing to re-attribute a consumer's usage")
    return {
        "key": "meter-rollups",
        "label": "Meters with rollup problems",
        "count": len(problems),
        "detail": "; ".join(parts) + ". Each is listed below.",
        "url": _url("admin:metering_rollupfailure_changelist")
        if halted or reattributing
        else _url("admin:metering_refusedevent_changelist", {"acknowledged": "no"}),
        "alarm": True,
        "problems": problems,  # listed below the cards
    }


def _meter_problem_rows(problems) -> list[dict]:
    """One row per meter that needs an operator, with links to it and its events."""
    rows = []
    for p in problems:
        if p.halted_since:
            state = (
                f"Halted since {timezone.localtime(p.halted_since):%Y-%m-%d %H:%M} "
                f"({format_quantity(p.attempts)} attempt{'s' if p.attempts != 1 else ''})"
            )
        elif p.refused:
            state = "Rolling up, without the refused events"
        else:
            state = "Rolling up"
        notes = []
        if p.error:
            notes.append(p.error)
        if p.refused:
            notes.append(
                f"{format_quantity(p.refused)} event{'s' if p.refused != 1 else ''} refused, "
                f"not counted (the first: {p.refused_reason})"
            )
        if p.reattributions:
            notes.append(
                f"Re-attributing {', '.join(p.reattributions)} after a mapping change fails: "
                f"{p.reattribution_error}"
            )
        rows.append(
            {
                "key": p.meter_key,
                "url": _url("admin:metering_meter_change", args=[p.meter_id]),
                "state": state,
                "notes": notes,
                "events": [
                    {"id": pk, "url": _url("admin:metering_event_change", args=[pk])}
                    for pk in p.event_ids
                ],
                "refused": format_quantity(p.refused) if p.refused else "",
                "refused_url": _url(
                    "admin:metering_refusedevent_changelist",
                    {"meter__id__exact": p.meter_id, "acknowledged": "no"},
                )
                if p.refused
                else None,
            }
        )
    return rows


def _draft_cards(found, now: datetime) -> list[dict]:
    """Drafts waiting out their grace period, and (an alarm) drafts past it not issued."""
    next_at = (
        f"; the next is issued at {timezone.localtime(found.next_issue_at):%Y-%m-%d %H:%M}"
        if found.next_issue_at
        else ""
    )
    cards = [
        {
            "key": "drafts-in-grace",
            "label": "Drafts in their grace period",
            "count": found.drafts_in_grace,
            "detail": f"Review them before they are issued automatically{next_at}.",
            "url": invoices_url(status__exact=InvoiceStatus.DRAFT, grace_until__gt=_iso(now)),
            "alarm": False,
        }
    ]
    if found.drafts_past_grace:
        cards.append(
            {
                "key": "drafts-past-grace",
                "label": "Drafts past their grace period",
                "count": found.drafts_past_grace,
                "detail": "Not issued although their grace ended: the billing run refused or has not run.",
                "url": invoices_url(status__exact=InvoiceStatus.DRAFT, grace_until__lte=_iso(now)),
                "alarm": True,
            }
        )
    return cards


def _overdue_card(now: datetime) -> dict:
    """Overdue invoices: the balance left per currency, each linking to its invoices."""
    found = d.overdue_by_currency(now=now)
    count = sum(a.count for a in found.values())
    return {
        "key": "overdue",
        "label": "Overdue invoices",
        "count": count,
        "detail": "Issued, unpaid and past their due date." if count else "Nothing is overdue.",
        "amounts": [
            {
                "currency": currency,
                "text": format_money(amount.amount, currency, code=True),
                "count": amount.count,
                "url": invoices_url(overdue="yes", currency=currency),
            }
            for currency, amount in found.items()
        ],
        "url": invoices_url(overdue="yes"),
        "aging_url": _url("admin:billing_receivables_aging"),
        "alarm": bool(count),
    }


def _failed_settlements_card(found, now: datetime) -> dict:
    """Failed settlements: an alarm only for those no retry is scheduled for."""
    return {
        "key": "failed-settlements",
        "label": "Failed settlements",
        "count": found.failed_settlements,
        "detail": _failed_detail(found, now),
        "url": _url("admin:rails_settlement_changelist", {"state__exact": SettlementState.FAILED}),
        "alarm": bool(found.failed_settlements_without_retry),  # retries need nobody
    }


def _unattributed_card(unattributed) -> dict:
    """Usage of the last 30 days from subjects no consumer mapping covers."""
    return {
        "key": "unattributed",
        "label": "Unattributed usage (30 days)",
        "count": unattributed.events,
        "detail": f"{format_quantity(unattributed.events)} event{'s' if unattributed.events != 1 else ''} from "
        f"{unattributed.subjects} subject{'s' if unattributed.subjects != 1 else ''} no consumer "
        f"mapping covers (as of {timezone.localtime(unattributed.as_of):%H:%M}).",
        "url": _url("admin:metering_unattributed_usage", {"since": "30"}),
        "alarm": bool(unattributed.events),
    }


def _webhook_failures_card(found) -> dict:
    """Webhook deliveries failing or given up."""
    return {
        "key": "webhook-failures",
        "label": "Webhook deliveries failing",
        "count": found.webhook_failures,
        "detail": f"{found.webhooks_given_up} given up."
        if found.webhook_failures
        else "All delivered or pending.",
        "url": _url("admin:billing_webhookdelivery_changelist", {"state__in": "failed,given_up"}),
        "alarm": bool(found.webhook_failures),
    }


def _attention(user, now: datetime, refresh: bool) -> list[dict]:
    """The cards of what needs an operator, each shown only to a role that may view it."""
    can = user.has_perm
    unattributed = (
        d.cached("unattributed", lambda: d.unattributed_summary(now=now), refresh=refresh)
        if can("metering.view_event")
        else None
    )
    found = d.attention(now=now, unattributed=unattributed)
    items = []
    if can("billing.view_invoice"):
        items += _draft_cards(found, now)
        items.append(_overdue_card(now))
    if can("rails.view_settlement"):
        items.append(_failed_settlements_card(found, now))
    if unattributed is not None:
        items.append(_unattributed_card(unattributed))
    if found.meter_problems and can("metering.view_meter"):
        items.append(_meter_problems_card(found.meter_problems))
    if found.webhook_failures is not None and can("billing.view_webhookdelivery"):
        items.append(_webhook_failures_card(found))
    for item in items:
        item["count_text"] = format_quantity(item["count"])  # 34,694, as the detail line writes it
    return items


@register.inclusion_tag("admin/backoffice/dashboard.html", takes_context=True)
def operator_dashboard(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {"show": False}
    now = timezone.now()
    refresh = request.GET.get("refresh") == "1"
    out: dict = {"show": True, "now": now, "refresh_url": f"{request.path}?refresh=1"}
    if user.has_perm("billing.view_invoice"):
        out["revenue"] = _revenue(now, refresh)
    if user.has_perm("metering.view_meter"):
        out["usage"] = _usage(now, refresh)
    out["attention"] = _attention(user, now, refresh)
    if user.has_perm("metering.view_meter"):
        problems = next((i["problems"] for i in out["attention"] if "problems" in i), ())
        out["meter_problems"] = _meter_problem_rows(problems)
    out["recent_changes_url"] = _url("admin:audit_recent")
    return out
