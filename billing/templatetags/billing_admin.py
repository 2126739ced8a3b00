"""Filters for billing's admin templates: numbers written as the rest of the admin (and
the invoice PDF) writes them, from ``billing.admin_invoices.forms``.

    {% load billing_admin %}
    {{ invoice.total|money:invoice.currency }}   → 1,234.50 USD
    {{ line.quantity|quantity }}                 → 13,897,825
"""

from __future__ import annotations

from django import template

from billing.admin_invoices import forms

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    return forms.money(amount, currency)


@register.filter
def quantity(value) -> str:
    return forms.quantity(value)
