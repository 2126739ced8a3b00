"""Billing periods in templates, as ``billing.display`` writes them everywhere.

{% load billing_format %}
{{ invoice|period }}                          → Oct 15 – Nov 14, 2026 (account's zone)
{{ line|period }}                             → the line's service period, same zone
{{ upcoming.rated.period|period:account.timezone }}
"""

from __future__ import annotations

from django import template

from billing.display import period_text

register = template.Library()


@register.filter
def period(obj, timezone: str | None = None) -> str:
    """The days a billing period covers, in the billing account's time zone (or
    ``timezone``), last day inclusive; ``""`` for a one-off invoice."""
    return period_text(obj, timezone)
