"""Numbers for people in templates, as ``core.money`` writes them (``—`` for none).

{% load numbers %}
{{ invoice.total|money:invoice.currency }}     → 1,234.50 USD
{{ line.unit_price|price:invoice.currency }}   → 0.00002 USD
{{ bucket.event_count|quantity }}              → 13,897,825
"""

from __future__ import annotations

from django import template

from core.money import format_money, format_price, format_quantity

register = template.Library()
NONE = "—"


@register.filter
def money(amount, currency: str) -> str:
    """An amount rounded to the currency's minor unit, with the currency's code."""
    return NONE if amount is None else format_money(amount, currency, code=True)


@register.filter
def price(amount, currency: str) -> str:
    """A unit price, every significant decimal, with the currency's code."""
    return NONE if amount is None else format_price(amount, currency, code=True)


@register.filter
def quantity(value) -> str:
    """A quantity or a count with thousands separators: ``1,234,567``, ``0.5``."""
    return NONE if value is None or value == "" else format_quantity(value)
