"""Grants: extra units of a feature given to a billing account, and their voiding.

A grant counts in the value check from its effective date until it expires or is voided
(``billing.entitlements.value``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.models import Grant
from customers.models import Customer
from customers.selectors import billing_account_ids
from metering.models import Feature


def grant_create(
    *,
    account: Customer,
    feature: Feature,
    amount: Decimal,
    effective_at: datetime,
    reason: str,
    expires_at: datetime | None = None,
    priority: int = 1,
    rollover: bool = False,
    created_by=None,
) -> Grant:
    """Give ``account`` (a billing account) ``amount`` extra units of ``feature``.

    Raises ``ValidationError`` for a subsidiary billed to its parent (grant its billing
    account), an amount that is not positive, an expiry not after the start, or no
    reason.
    """
    errors: dict[str, str] = {}
    account_id = billing_account_ids(customer_ids=[account.pk])[account.pk]
    if account_id != account.pk:
        billing_account = Customer.objects.get(pk=account_id)
        errors["customer"] = (
            f"{account.key} is billed on {billing_account.key}: grant {billing_account.key}."
        )
    if amount is None or amount <= 0:
        errors["amount"] = "A grant adds a positive number of units."
    if expires_at is not None and expires_at <= effective_at:
        errors["expires_at"] = "A grant must expire after it takes effect."
    if not (reason or "").strip():
        errors["reason"] = "Say why the units are given."
    if errors:
        raise ValidationError(errors)
    return Grant.objects.create(
        customer=account,
        feature=feature,
        amount=amount,
        effective_at=effective_at,
        expires_at=expires_at,
        priority=priority,
        rollover=rollover,
        reason=reason.strip()[:200],
        created_by=created_by,
    )


VOID_MARK = " · voided: "


@transaction.atomic
def grant_void(*, grant: Grant, now: datetime, reason: str = "") -> Grant:
    """Void ``grant`` from ``now`` on: its units stop counting at once, for every period.
    The reason is kept at the end of the grant's ``reason`` (it has no field of its own
    yet). Voiding a voided grant changes nothing. Raises ``ValidationError`` without a
    reason when one is required (``reason`` given as blank by an operator)."""
    grant = Grant.objects.select_for_update().get(pk=grant.pk)
    if grant.voided_at is not None:
        return grant
    grant.voided_at = now
    fields = ["voided_at"]
    if reason.strip():
        grant.reason = (grant.reason + VOID_MARK + reason.strip())[:200]
        fields.append("reason")
    grant.save(update_fields=fields)
    return grant
