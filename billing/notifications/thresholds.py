"""Thresholds: ``thresholds_check`` finds the accounts whose usage changed since it last
looked (usage touched above a stored transaction horizon) and notifies every threshold
crossed in the current usage period, once per threshold per period by construction of
the dedupe key.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db.models import F
from django.db.models.functions import Greatest

from billing.catalog.rating import current_period_rate
from billing.entitlements.specs import entitlements_of
from billing.entitlements.value import entitlement_value
from billing.models import (
    NotificationCursor,
    NotificationEvent,
    NotificationRule,
)
from billing.notifications.models import EventType, RuleKind
from billing.notifications.services import notify
from core.money import money_text, plain_decimal, quantize
from customers.models import Customer
from customers.selectors import billing_account_ids
from metering.usage import current_xmin, customers_with_usage_changed_since

logger = logging.getLogger(__name__)

THRESHOLDS_CURSOR = "thresholds"


# ---------------------------------------------------------------- thresholds


def thresholds_validate(*, kind: str, thresholds) -> list[dict]:
    """Check a rule's thresholds and return them normalised; raises ``ValidationError``.

    Entitlement rules take ``{"percent": n}`` (of the allowance) or ``{"usage": n}``;
    spend rules take ``{"amount": "500.00"}``. Every value is positive.
    """
    allowed = ("percent", "usage") if kind == RuleKind.ENTITLEMENT_THRESHOLD else ("amount",)
    example = (
        '[{"percent": 80}, {"usage": 1000}]'
        if allowed[0] == "percent"
        else '[{"amount": "500.00"}]'
    )
    if not isinstance(thresholds, list) or not thresholds:
        raise ValidationError(f"A list of thresholds, e.g. {example}.")
    out = []
    for i, item in enumerate(thresholds):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in allowed:
            raise ValidationError(f"thresholds[{i}]: one of {', '.join(allowed)}, e.g. {example}.")
        name, raw = next(iter(item.items()))
        try:
            value = Decimal(str(raw)) if not isinstance(raw, bool | float) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value <= 0:
            raise ValidationError(
                f"thresholds[{i}].{name}: a positive number (money as a string), not {raw!r}."
            )
        out.append({name: str(raw) if name == "amount" else raw})
    return out


def _threshold_level(threshold: dict, allowance: Decimal | None) -> tuple[str, Decimal] | None:
    """(identity, usage level) of an entitlement threshold; None when it cannot apply."""
    if "percent" in threshold:
        if allowance is None or allowance <= 0:
            return None
        percent = Decimal(str(threshold["percent"]))
        return f"percent:{plain_decimal(percent)}", allowance * percent / 100
    usage = Decimal(str(threshold["usage"]))
    return f"usage:{plain_decimal(usage)}", usage


def _entitlement_checks(account: Customer, rules: list[NotificationRule], now: datetime) -> int:
    notified = 0
    for feature, spec in entitlements_of(account=account, at=now):
        if spec is None or spec.type != "metered":
            continue
        wanted: list[tuple[dict, list[int]]] = [({"percent": p}, []) for p in spec.thresholds]
        for rule in rules:
            if rule.feature_id in (None, feature.pk):
                ids = [e.pk for e in rule.endpoints.all()]
                wanted += [(t, ids) for t in rule.thresholds if isinstance(t, dict)]
        if not wanted:
            continue
        value = entitlement_value(account=account, feature=feature, at=now)
        if value is None or value.period is None or value.usage <= 0:
            continue
        allowance = None if value.limit is None else value.limit + value.granted
        crossed: dict[str, tuple[dict, Decimal, set[int]]] = {}
        for threshold, endpoint_ids in wanted:
            try:
                level = _threshold_level(threshold, allowance)
            except (KeyError, InvalidOperation):
                logger.warning("Skipping malformed threshold %r on %s", threshold, feature.key)
                continue
            if level is not None and value.usage >= level[1]:
                crossed.setdefault(level[0], (threshold, level[1], set()))[2].update(endpoint_ids)
        prefix = (
            f"entitlement.threshold:{account.pk}:{feature.pk}:{value.period.start.isoformat()}:"
        )
        done = set(
            NotificationEvent.objects.filter(
                dedupe_key__in=[prefix + k for k in crossed]
            ).values_list("dedupe_key", flat=True)
        )
        for identity, (threshold, level, endpoint_ids) in sorted(crossed.items()):
            if prefix + identity in done:
                continue
            name, raw = next(iter(threshold.items()))
            data = {
                "customer": account.key,
                "feature": feature.key,
                "threshold": {name: plain_decimal(Decimal(str(raw)))},
                "threshold_usage": plain_decimal(level),
                "usage": plain_decimal(value.usage),
                "limit": plain_decimal(value.limit),
                "granted": plain_decimal(value.granted),
                "balance": plain_decimal(value.balance),
                "overage": plain_decimal(value.overage),
                "hard": value.hard,
                "hasAccess": value.has_access,
                "period": {
                    "start": value.period.start.isoformat(),
                    "end": value.period.end.isoformat(),
                },
            }
            event = notify(
                type=EventType.ENTITLEMENT_THRESHOLD,
                payload=data,
                dedupe_key=prefix + identity,
                now=now,
                customer=account,
                endpoints=endpoint_ids,
            )
            notified += event is not None
    return notified


def _spend_checks(account: Customer, rules: list[NotificationRule], now: datetime) -> int:
    current = current_period_rate(account=account, now=now) if rules else None
    if current is None:
        return 0
    spend, period = current.rated.total, current.period
    notified = 0
    for rule in rules:
        ids = [e.pk for e in rule.endpoints.all()]
        for threshold in rule.thresholds:
            amount = quantize(Decimal(str(threshold.get("amount", 0))), account.currency)
            if amount <= 0 or spend < amount:
                continue
            data = {
                "customer": account.key,
                "currency": account.currency,
                "threshold": {"amount": money_text(amount, account.currency)},
                "amount": money_text(spend, account.currency),
                "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
            }
            event = notify(
                type=EventType.SPEND_THRESHOLD,
                payload=data,
                now=now,
                customer=account,
                endpoints=ids,
                dedupe_key=f"spend.threshold:{account.pk}:{period.start.isoformat()}:{amount}",
            )
            notified += event is not None
    return notified


def account_thresholds_check(
    *, account: Customer, now: datetime, rules: list[NotificationRule] | None = None
) -> int:
    """Notify every entitlement and spend threshold of a billing account crossed in its
    current period; returns the number of new events (each threshold once per period)."""
    if rules is None:
        rules = list(NotificationRule.objects.filter(enabled=True).prefetch_related("endpoints"))
    mine = [r for r in rules if r.customer_id in (None, account.pk)]
    return _entitlement_checks(
        account, [r for r in mine if r.kind == RuleKind.ENTITLEMENT_THRESHOLD], now
    ) + _spend_checks(account, [r for r in mine if r.kind == RuleKind.SPEND_THRESHOLD], now)


def thresholds_check(*, now: datetime) -> dict:
    """Check the thresholds of every billing account whose rolled-up usage changed since
    the last check. Safe to run concurrently and to repeat: the cursor only moves
    forward, and an event's dedupe key makes each crossing notify once.
    """
    cursor, _ = NotificationCursor.objects.get_or_create(name=THRESHOLDS_CURSOR)
    # Every transaction below the horizon has finished, so each touch it wrote is
    # visible to the read below; touches at or above it are read again next time.
    horizon = current_xmin()
    touched = customers_with_usage_changed_since(xid=cursor.xid)
    account_ids = sorted(set(billing_account_ids(customer_ids=touched).values()))
    rules = list(NotificationRule.objects.filter(enabled=True).prefetch_related("endpoints"))
    notified = 0
    for account in Customer.objects.filter(pk__in=account_ids).order_by("pk"):
        notified += account_thresholds_check(account=account, now=now, rules=rules)
    NotificationCursor.objects.filter(pk=cursor.pk).update(
        xid=Greatest(F("xid"), horizon), checked_at=now
    )
    return {"accounts": len(account_ids), "notified": notified}
