"""The context of a value check: everything it reads except usage, for one billing
account and feature, and how it is built from the database.

It changes only when an operator changes something, so the value check keeps it in the
cache (``billing.entitlements.cache``) under a generation that every such change moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.entitlements.specs import EntitlementSpec, spec_from_override
from billing.models import EntitlementOverride, Grant, Subscription
from customers.models import Customer
from customers.selectors import billed_customer_ids, billing_account_ids
from metering.models import Feature
from metering.usage import ConsumerTerm, consumer_terms


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
        override=None if override is None else spec_from_override(override, feature.key),
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
