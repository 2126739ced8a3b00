"""Writes to the catalog (plans, versions, rate cards, tax) and to subscriptions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from djmoney.money import Money

from billing.catalog.periods import period_containing
from billing.catalog.prices import PriceFormatError, price_dump, price_parse
from billing.models import Plan, PlanVersion, RateCard, Subscription
from customers.models import Customer
from customers.selectors import customer_billing_account
from metering.models import Feature


@dataclass(frozen=True)
class RateCardSpec:
    """A rate card as configured: a key, an optional feature, a price object."""

    key: str
    price: dict
    feature: Feature | None = None
    name: str = ""


@dataclass(frozen=True)
class PlanVersionSpec:
    currency: str
    cadence: str
    minimum_commitment: Decimal
    rate_cards: tuple[RateCardSpec, ...]
    entitlements: tuple = ()


def rate_cards_validate(*, currency: str, rate_cards: tuple[RateCardSpec, ...]) -> list[dict]:
    """Validate rate cards and return their canonical stored form.

    Raises ``ValidationError`` with messages that name the card and field
    (``rate_cards[2].price.tiers[0].up_to: ...``).
    """
    errors: list[str] = []
    seen_keys: set[str] = set()
    seen_features: set[int] = set()
    canonical = []
    for i, card in enumerate(rate_cards):
        where = f"rate_cards[{i}]"
        if card.key in seen_keys:
            errors.append(f"{where}.key: '{card.key}' appears twice in the plan.")
        seen_keys.add(card.key)
        try:
            price = price_parse(card.price)
        except PriceFormatError as exc:
            errors += [f"{where}.price.{e.path}: {e.message}" for e in exc.errors]
            continue
        is_flat = card.price.get("model") == "flat"
        if is_flat and card.feature is not None:
            errors.append(f"{where}.feature: a flat fee is not priced on a feature.")
        if not is_flat and card.feature is None:
            errors.append(f"{where}.feature: a {card.price.get('model')} price needs a feature.")
        if card.feature is not None:
            if card.feature.pk in seen_features:
                errors.append(
                    f"{where}.feature: '{card.feature.key}' is priced twice; a feature is priced at most once per plan."
                )
            seen_features.add(card.feature.pk)
        canonical.append(
            {
                "key": card.key,
                "name": card.name,
                "feature": card.feature,
                "price": price_dump(price),
            }
        )
    if errors:
        raise ValidationError(errors)
    return canonical


def _version_create(
    *,
    plan: Plan,
    spec: PlanVersionSpec,
    customer: Customer | None = None,
    derived_from: PlanVersion | None = None,
) -> PlanVersion:
    cards = rate_cards_validate(currency=spec.currency, rate_cards=spec.rate_cards)
    if spec.minimum_commitment < 0:
        raise ValidationError({"minimum_commitment": "must not be negative."})
    last = plan.versions.order_by("-version").values_list("version", flat=True).first() or 0
    version = PlanVersion(
        plan=plan,
        version=last + 1,
        currency=spec.currency.upper(),
        cadence=spec.cadence,
        minimum_commitment=Money(spec.minimum_commitment, spec.currency.upper()),
        customer=customer,
        derived_from=derived_from,
        entitlements=list(spec.entitlements),
    )
    version.full_clean(exclude=["plan"])
    version.save()
    RateCard.objects.bulk_create(
        RateCard(
            plan_version=version,
            position=i,
            key=c["key"],
            name=c["name"],
            feature=c["feature"],
            price=c["price"],
        )
        for i, c in enumerate(cards)
    )
    return version


def plan_version_spec(*, version: PlanVersion) -> PlanVersionSpec:
    """The spec a stored version was made from (to compare with or to derive from)."""
    return PlanVersionSpec(
        currency=version.currency,
        cadence=version.cadence,
        minimum_commitment=version.minimum_commitment.amount.normalize(),
        rate_cards=tuple(
            RateCardSpec(key=c.key, name=c.name, feature=c.feature, price=c.price)
            for c in version.rate_cards.select_related("feature").order_by("position", "pk")
        ),
        entitlements=tuple(version.entitlements),
    )


def _same(a: PlanVersionSpec, b: PlanVersionSpec) -> bool:
    def norm(spec: PlanVersionSpec):
        cards = rate_cards_validate(currency=spec.currency, rate_cards=spec.rate_cards)
        return (
            spec.currency.upper(),
            spec.cadence,
            Decimal(spec.minimum_commitment).normalize(),
            [
                (c["key"], c["name"], c["feature"].pk if c["feature"] else None, c["price"])
                for c in cards
            ],
            list(spec.entitlements),
        )

    return norm(a) == norm(b)


def plan_latest_version(*, plan: Plan) -> PlanVersion | None:
    """The newest public version (custom contracts excluded)."""
    return plan.versions.filter(customer__isnull=True).order_by("-version").first()


@transaction.atomic
def plan_save(
    *, key: str, name: str, spec: PlanVersionSpec, description: str = ""
) -> tuple[Plan, PlanVersion, str]:
    """Create a plan, or change it. Returns (plan, current version, what happened).

    What happened is ``created``, ``unchanged``, ``updated`` (the latest version had no
    subscribers, so it changed in place) or ``new_version`` (it had subscribers; they
    stay on their version).
    """
    plan = Plan.objects.select_for_update().filter(key=key).first()
    if plan is None:
        plan = Plan(key=key, name=name, description=description)
        plan.full_clean()
        plan.save()
        return plan, _version_create(plan=plan, spec=spec), "created"
    if (plan.name, plan.description) != (name, description):
        plan.name, plan.description = name, description
        plan.save(update_fields=["name", "description"])
    latest = plan_latest_version(plan=plan)
    if latest is not None and _same(plan_version_spec(version=latest), spec):
        return plan, latest, "unchanged"
    if (
        latest is not None
        and not latest.subscriptions.exists()
        and not latest.derived_versions.exists()
    ):
        cards = rate_cards_validate(currency=spec.currency, rate_cards=spec.rate_cards)
        latest.currency = spec.currency.upper()
        latest.cadence = spec.cadence
        latest.minimum_commitment = Money(spec.minimum_commitment, latest.currency)
        latest.entitlements = list(spec.entitlements)
        latest.full_clean(exclude=["plan"])
        latest.save()
        latest.rate_cards.all().delete()
        RateCard.objects.bulk_create(
            RateCard(
                plan_version=latest,
                position=i,
                key=c["key"],
                name=c["name"],
                feature=c["feature"],
                price=c["price"],
            )
            for i, c in enumerate(cards)
        )
        return plan, latest, "updated"
    return plan, _version_create(plan=plan, spec=spec), "new_version"


@transaction.atomic
def custom_contract_create(
    *, base: PlanVersion, customer: Customer, changes: dict[str, Any]
) -> PlanVersion:
    """A customer-specific version derived from ``base``: ``changes`` may replace
    ``minimum_commitment``, ``entitlements`` or individual rate card prices
    (``{"prices": {"rate card key": {price}}}``). Every other subscriber is untouched."""
    spec = plan_version_spec(version=base)
    prices = changes.get("prices", {})
    unknown = set(prices) - {c.key for c in spec.rate_cards}
    if unknown:
        raise ValidationError({"prices": f"No rate card {', '.join(sorted(unknown))} in {base}."})
    cards = tuple(
        RateCardSpec(key=c.key, name=c.name, feature=c.feature, price=prices.get(c.key, c.price))
        for c in spec.rate_cards
    )
    new_spec = PlanVersionSpec(
        currency=spec.currency,
        cadence=spec.cadence,
        minimum_commitment=Decimal(changes.get("minimum_commitment", spec.minimum_commitment)),
        rate_cards=cards,
        entitlements=tuple(changes.get("entitlements", spec.entitlements)),
    )
    return _version_create(plan=base.plan, spec=new_spec, customer=customer, derived_from=base)


def _account_check(customer: Customer, version: PlanVersion) -> None:
    account = customer_billing_account(customer=customer)
    if account.pk != customer.pk:
        raise ValidationError(
            {
                "customer": f"{customer.key} is billed on {account.key}; subscribe the billing account instead."
            }
        )
    if version.customer_id and version.customer_id != customer.pk:
        raise ValidationError(
            {"plan_version": f"{version} is a custom contract of another customer."}
        )
    if version.currency != customer.currency:
        raise ValidationError(
            {
                "plan_version": f"{version} is priced in {version.currency}; {customer.key} is billed in {customer.currency}."
            }
        )


def _subscription_save(subscription: Subscription) -> Subscription:
    try:
        with transaction.atomic():
            subscription.full_clean(validate_constraints=False)
            subscription.save()
    except IntegrityError as exc:
        if "subscription_no_overlap" in str(exc):
            raise ValidationError(
                {
                    "start": f"{subscription.customer.key} already has a subscription for part of that time."
                }
            ) from exc
        raise
    return subscription


def subscription_create(
    *, customer: Customer, plan_version: PlanVersion, start: datetime, end: datetime | None = None
) -> Subscription:
    """Subscribe a billing account to a plan version from ``start``; periods anchor on it.

    Raises ``ValidationError`` when ``end`` is not after ``start``, the customer is not a
    billing account, the version is another customer's or in another currency, or the
    account has a subscription for part of that time.
    """
    if end is not None and end <= start:
        raise ValidationError({"end": "A subscription must end after it starts."})
    _account_check(customer, plan_version)
    return _subscription_save(
        Subscription(
            customer=customer, plan_version=plan_version, start=start, end=end, anchor=start
        )
    )


def subscription_at(*, customer: Customer, at: datetime) -> Subscription | None:
    return (
        Subscription.objects.select_related("plan_version__plan")
        .filter(customer=customer, start__lte=at)
        .exclude(end__lte=at)
        .first()
    )


def _not_before_anchor(subscription: Subscription, at: datetime, what: str) -> None:
    """No billing period holds an instant before the anchor, so nothing can be dated there."""
    if at < subscription.anchor:
        raise ValidationError(
            {
                "at": f"The {what} is dated {at.isoformat()}, before the subscription's billing "
                f"periods begin ({subscription.anchor.isoformat()})."
            }
        )


@transaction.atomic
def subscription_change_plan(
    *,
    subscription: Subscription,
    plan_version: PlanVersion,
    at: datetime,
    timing: str = "immediately",
) -> Subscription:
    """Move a subscription to another plan version.

    ``immediately``: the period splits at ``at`` (flat fees prorated by the second, usage
    priced on each side by its own plan). ``next_period``: from the end of the period
    containing ``at``. Periods keep their anchor either way.
    """
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    customer = subscription.customer
    _account_check(customer, plan_version)
    _not_before_anchor(subscription, at, "change")
    if timing == "next_period":
        at = period_containing(
            anchor=subscription.anchor,
            cadence=subscription.plan_version.cadence,
            timezone=customer.timezone,
            instant=at,
        ).end
    elif timing != "immediately":
        raise ValidationError({"timing": "Use immediately or next_period."})
    if not (subscription.start < at and (subscription.end is None or at < subscription.end)):
        raise ValidationError({"at": "The change must fall inside the subscription."})
    old_end = subscription.end
    subscription.end = at
    subscription.save(update_fields=["end"])
    return _subscription_save(
        Subscription(
            customer=customer,
            plan_version=plan_version,
            start=at,
            end=old_end,
            anchor=subscription.anchor,
        )
    )


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, at: datetime, timing: str = "period_end"
) -> Subscription:
    """End a subscription ``immediately`` at ``at``, or at the end of the period containing it."""
    subscription = (
        Subscription.objects.select_for_update()
        .select_related("customer", "plan_version")
        .get(pk=subscription.pk)
    )
    _not_before_anchor(subscription, at, "cancellation")
    if timing == "period_end":
        at = period_containing(
            anchor=subscription.anchor,
            cadence=subscription.plan_version.cadence,
            timezone=subscription.customer.timezone,
            instant=at,
        ).end
    elif timing != "immediately":
        raise ValidationError({"timing": "Use immediately or period_end."})
    if at <= subscription.start:
        raise ValidationError({"at": "A subscription cannot end before it starts."})
    if subscription.end is not None and subscription.end <= at:
        return subscription
    subscription.end = at
    subscription.save(update_fields=["end"])
    return subscription
