"""Per-rail validation of a customer's ``rail_settings`` (the customers app calls this
through the ``CUSTOMER_RAIL_SETTINGS_HOOK`` setting)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from rails.registry import rail_get


def rail_settings_clean(*, rail: str, rail_settings: dict, previous: dict | None = None) -> dict:
    """Validate and normalise settings for ``rail``: adapters that define
    ``clean_settings(rail_settings) -> dict`` check them; others take them as they are.
    When the adapter's ``settings_match(previous, given)`` says the given settings name
    the same thing as the stored ``previous`` ones (an account number given in clear that
    is already stored encrypted), the stored form is kept, so nothing changes.
    An unknown rail is left to the customer's own ``rail`` field validation."""
    if not isinstance(rail_settings, dict):
        raise ValidationError("rail_settings must be an object.")
    if rail not in settings.BILLING_RAILS:
        return rail_settings
    adapter = rail_get(rail)
    match = getattr(adapter, "settings_match", None)
    if previous and match and match(previous, rail_settings):
        return previous
    clean = getattr(adapter, "clean_settings", None)
    return clean(rail_settings) if clean else rail_settings
