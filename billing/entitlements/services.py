"""Entitlements: what a customer may use, and how much of it is left right now.

The value check is on a gateway's hot path. It reads two things:

- the **context** of a (customer, feature) pair: the billing account, the customers
  billed on it, the feature and its meter, the account's override, its subscriptions
  (with their plan version's template for the feature) and its grants. It changes only
  when an operator changes something, so ``entitlement_context`` keeps it in Redis
  (``billing.entitlements.cache``) under a generation that every such change moves;
- the **usage** of the usage period so far, which changes with every event. It is never
  cached as an answer: metering reads it, exact and fresh (events accepted a moment ago
  count, rolled up or not), with ``metering.usage.feature_quantities``: the same
  answers as ``feature_usage``, which rates the invoice, through a faster statement.

Everything else (which spec applies at ``at``, the usage period, what grants are left)
is computed in Python from the context. Money is not involved; quantities are
``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.catalog.periods import Period, period_containing
from billing.models import EntitlementOverride, Grant, Subscription
from customers.models import Customer
from customers.selectors import billed_customer_ids, billing_account_ids
from metering.models import Feature
from metering.usage import ConsumerTerm, consumer_terms, feature_quantities, feature_usage

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


@dataclass(frozen=True)
class SubscriptionTerm:
    """One subscription of the account, reduced to what a check needs."""

    start: datetime
    end: datetime | None
    anchor: datetime
    template: dict | None  # its plan version's template for the feature, if any

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass(frozen=True)
class GrantTerm:
    """One grant that is not voided."""

    pk: int
    amount: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    rollover: bool


@dataclass(frozen=True)
class EntitlementContext:
    """Everything a value check reads except usage, for one account and feature.

    Depends only on rows of customers, consumer mappings, meters, features, plan
    versions, subscriptions, overrides and grants: ``billing.entitlements.cache`` moves
    its generation whenever one of those changes, which is what makes caching it safe.
    """

    account_pk: int
    account_key: str
    timezone: str
    feature: Feature  # with its meter
    customer_ids: tuple[int, ...]  # the account and every subsidiary billed on it
    consumers: tuple[ConsumerTerm, ...]  # the gateway consumers mapped to them
    override: EntitlementSpec | None
    subscriptions: tuple[SubscriptionTerm, ...]  # by start
    grants: tuple[GrantTerm, ...]


class EntitlementNotFound(LookupError):
    """No customer or no feature with the key asked for."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"No {what} {key!r}.")
        self.what, self.key = what, key


# -- the context: built from the database --------------------------------------------


def _spec_from_template(template: dict) -> EntitlementSpec:
    limit = template.get("limit")
    return EntitlementSpec(
        feature_key=template["feature"],
        type=template.get("type", "metered"),
        limit=None if limit is None else Decimal(str(limit)),
        period=template.get("period", "monthly"),
        hard=bool(template.get("hard", False)),
        enabled=bool(template.get("enabled", True)),
        config=template.get("config") or {},
        thresholds=tuple(template.get("thresholds") or ()),
        source="plan",
    )


def _spec_from_override(override: EntitlementOverride, feature_key: str) -> EntitlementSpec:
    return EntitlementSpec(
        feature_key=feature_key,
        type=override.type,
        limit=override.limit,
        period=override.period,
        hard=override.hard,
        enabled=override.enabled,
        config=override.config,
        thresholds=tuple(override.thresholds or ()),
        source="override",
    )


def _template_for(entitlements: list | None, feature_key: str) -> dict | None:
    for template in entitlements or []:
        if template.get("feature") == feature_key:
            return template
    return None


def entitlement_context_build(*, account: Customer, feature: Feature) -> EntitlementContext:
    """The context of ``account`` (taken as the billing account) and ``feature``, read
    from the database: five queries."""
    customer_ids = tuple(billed_customer_ids(account=account))
    consumers = consumer_terms(customer_ids=customer_ids)
    override = EntitlementOverride.objects.filter(customer=account, feature=feature).first()
    subscriptions = tuple(
        SubscriptionTerm(
            start=sub.start,
            end=sub.end,
            anchor=sub.anchor,
            template=_template_for(sub.plan_version.entitlements, feature.key),
        )
        for sub in Subscription.objects.filter(customer=account)
        .select_related("plan_version")
        .only("start", "end", "anchor", "plan_version__entitlements")
        .order_by("start")
    )
    grants = tuple(
        GrantTerm(
            pk=g.pk,
            amount=g.amount,
            priority=g.priority,
            effective_at=g.effective_at,
            expires_at=g.expires_at,
            rollover=g.rollover,
        )
        for g in Grant.objects.filter(customer=account, feature=feature, voided_at__isnull=True)
    )
    return EntitlementContext(
        account_pk=account.pk,
        account_key=account.key,
        timezone=account.timezone,
        feature=feature,
        customer_ids=customer_ids,
        consumers=consumers,
        override=None if override is None else _spec_from_override(override, feature.key),
        subscriptions=subscriptions,
        grants=grants,
    )


def entitlement_context_build_for_keys(
    *, customer_key: str, feature_key: str
) -> EntitlementContext:
    """The context for a check by keys: a subsidiary billed to its parent is checked on
    its billing account. Eight queries (nine for a subsidiary). Raises
    ``EntitlementNotFound``."""
    customer = Customer.objects.filter(key=customer_key).first()
    if customer is None:
        raise EntitlementNotFound("customer", customer_key)
    feature = Feature.objects.select_related("meter").filter(key=feature_key).first()
    if feature is None:
        raise EntitlementNotFound("feature", feature_key)
    account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
    account = customer if account_id == customer.pk else Customer.objects.get(pk=account_id)
    return entitlement_context_build(account=account, feature=feature)


def entitlement_context(*, customer_key: str, feature_key: str) -> EntitlementContext:
    """The context for a check by keys, from the cache when it holds a current one.
    Raises ``EntitlementNotFound`` (also remembered, until the next change)."""
    from billing.entitlements.cache import context_cached

    return context_cached(
        customer_key=customer_key,
        feature_key=feature_key,
        build=entitlement_context_build_for_keys,
    )


# -- pure: which spec, which period, which grants ----------------------------------


def _term_at(context: EntitlementContext, at: datetime) -> SubscriptionTerm | None:
    for term in context.subscriptions:
        if term.covers(at):
            return term
    return None


def _spec_at(context: EntitlementContext, at: datetime) -> EntitlementSpec | None:
    if context.override is not None:
        return context.override
    term = _term_at(context, at)
    if term is None or term.template is None:
        return None
    return _spec_from_template(term.template)


def _period_at(context: EntitlementContext, spec: EntitlementSpec, at: datetime) -> Period:
    """The usage period containing ``at``: monthly and yearly follow the subscription's
    anchor in the customer's time zone; daily and weekly are calendar days and ISO weeks
    there. Without a subscription, monthly and yearly are calendar months and years."""
    zone = ZoneInfo(context.timezone)
    local = at.astimezone(zone)
    if spec.period in ("monthly", "yearly"):
        term = _term_at(context, at)
        if term is not None:
            return period_containing(
                anchor=term.anchor, cadence=spec.period, timezone=context.timezone, instant=at
            )
        start = local.replace(
            month=1 if spec.period == "yearly" else local.month,
            day=1,
            hour=0,
            minute=0,
            second=0,
            microsecond=0,
        )
        return period_containing(
            anchor=start.astimezone(UTC), cadence=spec.period, timezone=context.timezone, instant=at
        )
    first_day = local.date() - timedelta(days=local.weekday() if spec.period == "weekly" else 0)
    days = 7 if spec.period == "weekly" else 1
    # local midnights, converted to UTC: a day across a DST change is 23 or 25 hours
    start = datetime.combine(first_day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(first_day + timedelta(days=days), time(0), tzinfo=zone).astimezone(UTC)
    return Period(start, end)


def _grants_in_play(context: EntitlementContext, period: Period, at: datetime) -> list[GrantTerm]:
    """Grants available in ``period`` at ``at``, in the order they are used: by priority,
    then soonest expiry (never last), then effective date."""
    grants = [
        g
        for g in context.grants
        if g.effective_at <= at
        and (g.expires_at is None or g.expires_at > period.start)
        and (g.rollover or g.effective_at >= period.start)
    ]
    return sorted(
        grants,
        key=lambda g: (
            g.priority,
            g.expires_at is None,
            g.expires_at or g.effective_at,
            g.effective_at,
            g.pk,
        ),
    )


def _replay_periods(
    context: EntitlementContext, spec: EntitlementSpec, period: Period, grants: list[GrantTerm]
) -> list[Period]:
    """The past usage periods whose overage consumed rollover grants still in play."""
    if not grants:
        return []
    earliest = min(g.effective_at for g in grants)
    periods: list[Period] = []
    if earliest < period.start:
        past = _period_at(context, spec, earliest)
        for _ in range(MAX_ROLLOVER_PERIODS):
            if past.start >= period.start:
                break
            periods.append(past)
            past = _period_at(context, spec, past.end)
    return periods


def _grants_left(
    *,
    grants: list[GrantTerm],
    replayed: list[tuple[Period, Decimal]],
    limit: Decimal | None,
    at: datetime,
) -> Decimal:
    """Units left in ``grants`` at ``at``, after the overage of each replayed past
    period (with its usage) consumed them in order."""
    remaining = {g.pk: g.amount for g in grants}
    for past, used in replayed:
        overage = max(used - (limit or ZERO), ZERO)
        for g in grants:
            if g.effective_at >= past.end or (g.expires_at and g.expires_at <= past.start):
                continue
            take = min(remaining[g.pk], overage)
            remaining[g.pk] -= take
            overage -= take
    return sum((remaining[g.pk] for g in grants if not g.expires_at or g.expires_at > at), ZERO)


# -- usage: metering's --------------------------------------------------------------


def _usages(
    *, context: EntitlementContext, ranges: list[tuple[datetime, datetime]], narrow: bool
) -> list[Decimal]:
    if narrow:
        return feature_quantities(
            feature=context.feature,
            customer_ids=context.customer_ids,
            ranges=ranges,
            consumers=context.consumers,
        )
    return [
        feature_usage(
            feature=context.feature, customer_ids=context.customer_ids, start=s, end=e
        ).quantity
        for s, e in ranges
    ]


# -- the value check ----------------------------------------------------------------


def entitlement_value_from(
    *, context: EntitlementContext, at: datetime, narrow: bool = True
) -> EntitlementValue | None:
    """``{hasAccess, balance, usage, overage}`` of the context's entitlement at ``at``.

    Usage is the usage period's so far (up to ``at``), over the whole subsidiary tree,
    including events not yet rolled up. None when there is no such entitlement.
    ``narrow=False`` reads usage with ``metering.usage.feature_usage`` (the reference
    ``feature_quantities`` is tested against).
    """
    spec = _spec_at(context, at)
    if spec is None:
        return None
    if spec.type == "boolean":
        return EntitlementValue(
            has_access=spec.enabled, balance=None, usage=ZERO, overage=ZERO, type="boolean"
        )
    if spec.type == "static":
        return EntitlementValue(
            has_access=True,
            balance=None,
            usage=ZERO,
            overage=ZERO,
            type="static",
            config=spec.config,
        )
    period = _period_at(context, spec, at)
    end = min(at, period.end)
    grants = _grants_in_play(context, period, at) if spec.limit is not None else []
    replay = _replay_periods(context, spec, period, grants)
    ranges = [(p.start, p.end) for p in replay]
    if end > period.start:
        ranges.append((period.start, end))
    quantities = _usages(context=context, ranges=ranges, narrow=narrow)
    usage = quantities[-1] if end > period.start else ZERO
    if spec.limit is None:
        return EntitlementValue(
            has_access=True,
            balance=None,
            usage=usage,
            overage=ZERO,
            type="metered",
            period=period,
            hard=spec.hard,
        )
    granted = (
        _grants_left(
            grants=grants,
            replayed=list(zip(replay, quantities[: len(replay)], strict=True)),
            limit=spec.limit,
            at=at,
        )
        if grants
        else ZERO
    )
    allowance = spec.limit + granted
    balance = max(allowance - usage, ZERO)
    overage = max(usage - allowance, ZERO)
    return EntitlementValue(
        has_access=balance > 0 or not spec.hard,
        balance=balance,
        usage=usage,
        overage=overage,
        type="metered",
        limit=spec.limit,
        granted=granted,
        period=period,
        hard=spec.hard,
    )


def entitlement_value(
    *, account: Customer, feature: Feature, at: datetime
) -> EntitlementValue | None:
    """``{hasAccess, balance, usage, overage}`` of the account's entitlement at ``at``,
    read from the database (no cache): for the admin, notifications and the portal.

    Usage is the usage period's so far (up to ``at``), over the whole subsidiary tree,
    including events not yet rolled up. None when the account has no such entitlement.
    """
    context = entitlement_context_build(account=account, feature=feature)
    return entitlement_value_from(context=context, at=at)


def entitlement_value_for_key(
    *, customer_key: str, feature_key: str, at: datetime, cached: bool = True
) -> EntitlementValue | None:
    """The value check by keys, as the API answers it; a subsidiary billed to its parent
    checks the parent's. Raises ``EntitlementNotFound``."""
    context = (
        entitlement_context(customer_key=customer_key, feature_key=feature_key)
        if cached
        else entitlement_context_build_for_keys(customer_key=customer_key, feature_key=feature_key)
    )
    return entitlement_value_from(context=context, at=at)


# -- reads for the admin, the portal and notifications -------------------------------


def entitlement_resolve(
    *, account: Customer, feature: Feature, at: datetime
) -> EntitlementSpec | None:
    """The account's entitlement to ``feature`` at ``at``: its override, else its plan's template."""
    return _spec_at(entitlement_context_build(account=account, feature=feature), at)


def usage_period(*, account: Customer, spec: EntitlementSpec, at: datetime) -> Period:
    """The usage period of ``spec`` containing ``at`` for the account (see ``_period_at``)."""
    feature = Feature.objects.select_related("meter").get(key=spec.feature_key)
    return _period_at(entitlement_context_build(account=account, feature=feature), spec, at)


def entitlements_of(*, account: Customer, at: datetime) -> list[tuple[Feature, EntitlementSpec]]:
    """Every entitlement the account has at ``at`` (templates and overrides), by feature key."""
    specs: dict[str, EntitlementSpec] = {}
    sub = (
        Subscription.objects.select_related("plan_version")
        .filter(customer=account, start__lte=at)
        .exclude(end__lte=at)
        .order_by("start")
        .first()
    )
    for template in (sub.plan_version.entitlements or []) if sub else []:
        specs.setdefault(template["feature"], _spec_from_template(template))
    features = {
        f.key: f for f in Feature.objects.select_related("meter").filter(key__in=list(specs))
    }
    for override in EntitlementOverride.objects.filter(customer=account).select_related(
        "feature__meter"
    ):
        features[override.feature.key] = override.feature
        specs[override.feature.key] = _spec_from_override(override, override.feature.key)
    return [(features[key], spec) for key, spec in sorted(specs.items()) if key in features]


def entitlement_specs_many(
    *, account_ids: Sequence[int], features: Sequence[Feature], at: datetime
) -> dict[tuple[int, str], EntitlementSpec]:
    """The entitlement of each account to each feature at ``at`` (its override, else the
    template of its subscription covering ``at``), keyed by ``(account id, feature key)``;
    pairs without one are absent. Two queries whatever the number of accounts: the rule
    of ``_spec_at``, for the bulk access query."""
    keys = {f.key for f in features}
    specs: dict[tuple[int, str], EntitlementSpec] = {}
    if not account_ids or not keys:
        return specs
    termed: set[int] = set()
    for sub in (
        Subscription.objects.select_related("plan_version")
        .filter(customer_id__in=list(account_ids), start__lte=at)
        .exclude(end__lte=at)
        .only("customer_id", "start", "plan_version__entitlements")
        .order_by("start")
    ):
        if sub.customer_id in termed:  # the first covering subscription is the term
            continue
        termed.add(sub.customer_id)
        for template in sub.plan_version.entitlements or []:
            if template.get("feature") in keys:
                specs[(sub.customer_id, template["feature"])] = _spec_from_template(template)
    for override in EntitlementOverride.objects.filter(
        customer_id__in=list(account_ids), feature__key__in=keys
    ).select_related("feature"):
        specs[(override.customer_id, override.feature.key)] = _spec_from_override(
            override, override.feature.key
        )
    return specs


# -- writes: grants -------------------------------------------------------------------


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
