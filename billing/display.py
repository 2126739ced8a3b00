"""How billing writes dates and billing periods for people: one rendering on every surface.

A billing period is half-open, ``[start, end)``, and cut in the billing account's time
zone, so a person reads it as the days it covers, in that zone, the last day inclusive:
``Oct 15 – Nov 14, 2026``. The admin, the PDF, the hosted page and the portal all show
it so (templates through the ``period`` filter of ``billing_format``, Python through
``period_text``); numbers are ``core.money``'s.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo

from django.utils.html import format_html
from django.utils.safestring import SafeString

from customers.models import Customer

NBSP = "\u00a0"  # a date's parts stay together: never "Dec" at a line's end, "2" below


def zone_of(timezone: str | None) -> tzinfo:
    """The IANA zone named ``timezone``; UTC for an empty or unknown name."""
    try:
        return zoneinfo.ZoneInfo(timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def customer_zone(customer: Customer) -> tzinfo:
    """The customer's billing time zone (UTC when unset or unknown)."""
    return zone_of(customer.timezone)


def format_date(instant: datetime | None, zone: tzinfo) -> str:
    """``Nov 2, 2026``: the day ``instant`` falls on in ``zone``; ``""`` for none."""
    if instant is None:
        return ""
    day = instant.astimezone(zone)
    return f"{day:%b}{NBSP}{day.day},{NBSP}{day.year}"


def format_period(start: datetime | None, end: datetime | None, zone: tzinfo) -> str:
    """A half-open period as the days it covers in ``zone``, the last one inclusive:
    ``Oct 15 – Nov 14, 2026``; ``Dec 15, 2026 – Jan 14, 2027`` across a new year;
    ``Oct 15, 2026`` for a single day. ``""`` when either end is missing."""
    if start is None or end is None:
        return ""
    first = start.astimezone(zone)
    last = (end - timedelta(microseconds=1)).astimezone(zone)
    if first.date() >= last.date():
        return format_date(first, zone)
    head = f"{first:%b}{NBSP}{first.day}" + ("" if first.year == last.year else f", {first.year}")
    return f"{head} – {last:%b}{NBSP}{last.day},{NBSP}{last.year}"


def _account_timezone(obj) -> str | None:
    """The billing time zone behind an invoice line or a credit note (their invoice's
    customer: the billing account, not the subsidiary a line is for) or an invoice."""
    for path in (("invoice", "customer"), ("customer",)):
        target = obj
        for name in path:
            target = getattr(target, name, None)
        if isinstance(target, Customer):
            return target.timezone
    return None


def _bounds(obj) -> tuple[datetime | None, datetime | None]:
    if hasattr(obj, "period_start"):
        return obj.period_start, obj.period_end
    return getattr(obj, "start", None), getattr(obj, "end", None)


def period_text(obj, timezone: str | None = None) -> str:
    """The billing period of ``obj`` as ``format_period`` writes it: an invoice, an
    invoice line or a credit note's invoice (``period_start``, ``period_end``), or a
    ``Period`` (``start``, ``end``). The zone is ``timezone`` when given, else the billing
    account's. ``""`` for an object without a period (a one-off invoice)."""
    if obj is None:
        return ""
    start, end = _bounds(obj)
    zone = zone_of(timezone if timezone is not None else _account_timezone(obj))
    return format_period(start, end, zone)


def period_html(obj, timezone: str | None = None, *, none: str = "—") -> SafeString | str:
    """``period_text`` for the admin, with the exact half-open bounds in UTC as its
    tooltip (an operator checking a proration or a time zone wants the instants, not only
    the days); ``none`` for an object without a period."""
    text = period_text(obj, timezone)
    if not text:
        return none
    start, end = (instant.astimezone(UTC) for instant in _bounds(obj))
    bounds = f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC"
    return format_html('<span class="billing-period" title="{}">{}</span>', bounds, text)
