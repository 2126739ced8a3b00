"""Entitlements: what a customer may use, and how much of it is left right now.

The value check is on a gateway's hot path: one resolution of the entitlement (an
override, else the template of the plan version the account is subscribed to), one
exact usage query that also counts events not yet rolled up, and the grants. Money is
not involved; quantities are ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Q

from billing.models import EntitlementOverride, Grant, Subscription
from billing.periods import Period, period_containing
from customers.models import Customer
from customers.selectors import billed_customer_ids, customer_billing_account
from metering.models import Feature
from metering.usage import feature_usage

ZERO = Decimal(0)
MAX_ROLLOVER_PERIODS = 36


@dataclass(frozen=True)
class EntitlementSpec:
    feature_key: str
    type: str
    limit: Decimal | None = None
    period: str = "monthly"
    hard: bool = False
    enabled: bool = True
    config: dict = field(default_factory=dict)
    thresholds: tuple = ()
    source: str = "plan"


@dataclass(frozen=True)
class EntitlementValue:
    has_access: bool
    balance: Decimal | None
    usage: Decimal
    overage: Decimal
    type: str
    limit: Decimal | None = None
    granted: Decimal = ZERO
    period: Period | None = None
    config: dict | None = None
    hard: bool = False

    def as_openmeter(self) -> dict:
        """OpenMeter's shape: hasAccess, balance, usage, overage (and config for static)."""
        body: dict = {"hasAccess": self.has_access}
        if self.type == "metered":
            body.update(balance=self.balance, usage=self.usage, overage=self.overage)
        if self.type == "static":
            body["config"] = self.config
        return body


def _subscription_at(account: Customer, at: datetime) -> Subscription | None:
    return (
        Subscription.objects.select_related("plan_version")
        .filter(customer=account, start__lte=at)
        .filter(Q(end__isnull=True) | Q(end__gt=at))
        .first()
    )


def _spec_from_template(template: dict) -> EntitlementSpec:
    limit = template.get("limit")
    return EntitlementSpec(
        feature_key=template["feature"], type=template.get("type", "metered"),
        limit=None if limit is None else Decimal(str(limit)), period=template.get("period", "monthly"),
        hard=bool(template.get("hard", False)), enabled=bool(template.get("enabled", True)),
        config=template.get("config") or {}, thresholds=tuple(template.get("thresholds") or ()), source="plan",
    )


def entitlement_resolve(*, account: Customer, feature: Feature, at: datetime) -> EntitlementSpec | None:
    """The account's entitlement to ``feature`` at ``at``: its override, else its plan's template."""
    override = EntitlementOverride.objects.filter(customer=account, feature=feature).first()
    if override is not None:
        return EntitlementSpec(
            feature_key=feature.key, type=override.type, limit=override.limit, period=override.period,
            hard=override.hard, enabled=override.enabled, config=override.config,
            thresholds=tuple(override.thresholds or ()), source="override",
        )
    sub = _subscription_at(account, at)
    if sub is None:
        return None
    for template in sub.plan_version.entitlements or []:
        if template.get("feature") == feature.key:
            return _spec_from_template(template)
    return None


def entitlements_of(*, account: Customer, at: datetime) -> list[tuple[Feature, EntitlementSpec]]:
    """Every entitlement the account has at ``at`` (templates and overrides)."""
    specs: dict[str, EntitlementSpec] = {}
    sub = _subscription_at(account, at)
    for template in (sub.plan_version.entitlements or []) if sub else []:
        specs[template["feature"]] = _spec_from_template(template)
    features = {f.key: f for f in Feature.objects.filter(key__in=list(specs))}
    for override in EntitlementOverride.objects.filter(customer=account).select_related("feature"):
        features[override.feature.key] = override.feature
        specs[override.feature.key] = entitlement_resolve(account=account, feature=override.feature, at=at)
    return [(features[key], spec) for key, spec in sorted(specs.items()) if key in features]


def usage_period(*, account: Customer, spec: EntitlementSpec, at: datetime) -> Period:
    """The usage period containing ``at``: monthly and yearly follow the subscription's
    anchor in the customer's time zone; daily and weekly are calendar days and ISO weeks
    there. Without a subscription, monthly and yearly are calendar months and years."""
    zone = ZoneInfo(account.timezone)
    local = at.astimezone(zone)
    if spec.period in ("monthly", "yearly"):
        sub = _subscription_at(account, at)
        if sub is not None:
            return period_containing(anchor=sub.anchor, cadence=spec.period, timezone=account.timezone, instant=at)
        start = local.replace(month=1 if spec.period == "yearly" else local.month, day=1, hour=0, minute=0,
                              second=0, microsecond=0)
        anchor = start.astimezone(UTC)
        return period_containing(anchor=anchor, cadence=spec.period, timezone=account.timezone, instant=at)
    first_day = local.date() - timedelta(days=local.weekday() if spec.period == "weekly" else 0)
    days = 7 if spec.period == "weekly" else 1
    # local midnights, converted to UTC: a day across a DST change is 23 or 25 hours
    start = datetime.combine(first_day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=days), time(0), tzinfo=zone).astimezone(UTC)
    return Period(start, end)


def _grant_balances(*, account: Customer, feature: Feature, spec: EntitlementSpec, period: Period,
                    at: datetime, customer_ids: list[int]) -> Decimal:
    """Units left in the grants available in ``period`` at ``at``, after earlier periods'
    overage consumed them (by priority, then soonest expiry)."""
    grants = list(
        Grant.objects.filter(customer=account, feature=feature, voided_at__isnull=True, effective_at__lte=at)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=period.start))
        .order_by("priority", "expires_at", "effective_at", "pk")
    )
    grants = [g for g in grants if g.rollover or g.effective_at >= period.start]
    if not grants:
        return ZERO
    remaining = {g.pk: g.amount for g in grants}
    earliest = min(g.effective_at for g in grants)
    if earliest < period.start:
        # replay the past periods in which rollover grants were consumed
        past = usage_period(account=account, spec=spec, at=earliest)
        for _ in range(MAX_ROLLOVER_PERIODS):
            if past.start >= period.start:
                break
            used = feature_usage(feature=feature, customer_ids=customer_ids, start=past.start, end=past.end).quantity
            overage = max(used - (spec.limit or ZERO), ZERO)
            for g in grants:
                if g.effective_at >= past.end or (g.expires_at and g.expires_at <= past.start):
                    continue
                take = min(remaining[g.pk], overage)
                remaining[g.pk] -= take
                overage -= take
            past = usage_period(account=account, spec=spec, at=past.end)
    return sum((remaining[g.pk] for g in grants if not g.expires_at or g.expires_at > at), ZERO)


def entitlement_value(*, account: Customer, feature: Feature, at: datetime) -> EntitlementValue | None:
    """``{hasAccess, balance, usage, overage}`` of the account's entitlement at ``at``.

    Usage is the usage period's so far (up to ``at``), over the whole subsidiary tree,
    including events not yet rolled up. None when the account has no such entitlement.
    """
    spec = entitlement_resolve(account=account, feature=feature, at=at)
    if spec is None:
        return None
    if spec.type == "boolean":
        return EntitlementValue(has_access=spec.enabled, balance=None, usage=ZERO, overage=ZERO, type="boolean")
    if spec.type == "static":
        return EntitlementValue(has_access=True, balance=None, usage=ZERO, overage=ZERO, type="static",
                                config=spec.config)
    period = usage_period(account=account, spec=spec, at=at)
    ids = billed_customer_ids(account=account)
    end = min(at, period.end)
    usage = feature_usage(feature=feature, customer_ids=ids, start=period.start, end=end).quantity if end > period.start else ZERO
    if spec.limit is None:
        return EntitlementValue(has_access=True, balance=None, usage=usage, overage=ZERO, type="metered",
                                period=period, hard=spec.hard)
    granted = _grant_balances(account=account, feature=feature, spec=spec, period=period, at=at, customer_ids=ids)
    allowance = spec.limit + granted
    balance = max(allowance - usage, ZERO)
    overage = max(usage - allowance, ZERO)
    return EntitlementValue(
        has_access=balance > 0 or not spec.hard, balance=balance, usage=usage, overage=overage, type="metered",
        limit=spec.limit, granted=granted, period=period, hard=spec.hard,
    )


def entitlement_value_for_key(*, customer_key: str, feature_key: str, at: datetime) -> EntitlementValue | None:
    """The value check by keys; a subsidiary billed to its parent checks the parent's."""
    customer = Customer.objects.get(key=customer_key)
    feature = Feature.objects.select_related("meter").get(key=feature_key)
    return entitlement_value(account=customer_billing_account(customer=customer), feature=feature, at=at)
