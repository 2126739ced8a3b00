"""The value check: what a customer may use of a feature, and how much of it is left now.

The check is on a gateway's hot path. It reads two things:

- the **context** of a (customer, feature) pair (``billing.entitlements.context``): the
  billing account, the customers billed on it, the feature and its meter, the account's
  override, its subscriptions (with their plan version's template for the feature) and
  its grants. It changes only when an operator changes something, so
  ``entitlement_context`` keeps it in Redis (``billing.entitlements.cache``) under a
  generation that every such change moves;
- the **usage** of the usage period so far, which changes with every event. It is never
  cached as an answer: metering reads it, exact and fresh (events accepted a moment ago
  count, rolled up or not), with ``metering.usage.feature_quantities``: the same
  answers as ``feature_usage``, which rates the invoice, through a faster statement.

Everything else (which spec applies at ``at``, the usage period, what grants are left)
is computed in Python from the context. Money is not involved; quantities are
``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.catalog.periods import Period, period_containing
from billing.entitlements.cache import context_cached
from billing.entitlements.context import (
    EntitlementContext,
    GrantTerm,
    SubscriptionTerm,
    entitlement_context_build,
    entitlement_context_build_for_keys,
)
from billing.entitlements.specs import EntitlementSpec, spec_from_template
from customers.models import Customer
from metering.models import Feature
from metering.usage import feature_quantities, feature_usage

ZERO = Decimal(0)
MAX_ROLLOVER_PERIODS = 36


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


def entitlement_context(*, customer_key: str, feature_key: str) -> EntitlementContext:
    """The context for a check by keys, from the cache when it holds a current one.
    Raises ``EntitlementNotFound`` (also remembered, until the next change)."""
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
    return spec_from_template(term.template)


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
