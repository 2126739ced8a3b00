"""Rating a billing account's period: usage and fees priced into lines, nothing stored.

The account's usage is gathered across its whole subsidiary tree (each consumer key
counted for the customer it mapped to at each event's time), priced on the account's
plan over the combined quantity, so tiers and minimums see the whole group, and each
usage charge is allocated to the subsidiaries it came from in proportion to their own
quantities (largest remainder on minor units, so the shares add up to the charge).
A plan change inside the period splits it: each side is priced by its own plan, flat fees
prorated by the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from billing.catalog.periods import Period, period_containing
from billing.catalog.prices import price_parse
from billing.catalog.pricing.definitions import FlatPrice
from billing.catalog.pricing.flat import flat_charge, minimum_commitment_true_up, prorate_fraction
from billing.catalog.pricing.tax import TaxRate, tax_compute
from billing.catalog.pricing.usage import usage_price
from billing.catalog.rating_context import RatingContext
from billing.models import BillingProfile, LineKind, PlanVersion, RateCard, Subscription
from core.money import allocate, format_money, quantize, zero
from customers.models import Customer


@dataclass(frozen=True)
class RatedLine:
    kind: str
    description: str
    customer_id: int
    period_start: datetime
    period_end: datetime
    amount: Decimal
    unrounded_amount: Decimal
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    feature_id: int | None = None
    rate_card_id: int | None = None
    plan_version_id: int | None = None
    group_quantity: Decimal | None = None  # the combined quantity the tiers saw
    group_amount: Decimal | None = None  # the whole charge this line is a share of
    breakdown: tuple[dict, ...] = ()


@dataclass(frozen=True)
class RatedTax:
    name: str
    percentage: Decimal
    inclusive: bool
    base: Decimal
    amount: Decimal


@dataclass(frozen=True)
class RatedPeriod:
    account_id: int
    currency: str
    period: Period
    lines: tuple[RatedLine, ...]
    taxes: tuple[RatedTax, ...] = ()
    tax_exempt_reason: str = ""
    subtotal: Decimal = Decimal(0)
    total: Decimal = Decimal(0)
    plan_versions: tuple[int, ...] = field(default_factory=tuple)


def account_period(*, account: Customer, at: datetime) -> Period | None:
    """The billing period of ``account`` that contains ``at`` (None without a subscription)."""
    sub = (
        Subscription.objects.select_related("plan_version")
        .filter(customer=account, start__lte=at)
        .filter(Q(end__isnull=True) | Q(end__gt=at))
        .first()
    )
    if sub is None:
        return None
    return period_containing(
        anchor=sub.anchor, cadence=sub.plan_version.cadence, timezone=account.timezone, instant=at
    )


def _breakdown(charge) -> tuple[dict, ...]:
    return tuple(
        {
            "tier": line.tier,
            "from": str(line.from_quantity),
            "to": str(line.to_quantity),
            "quantity": str(line.quantity),
            "unit_price": str(line.unit_price),
            "flat_price": str(line.flat_price),
            "amount": str(line.amount),
            **(
                {"packages": str(line.packages), "package_size": str(line.package_size)}
                if line.packages is not None
                else {}
            ),
        }
        for line in charge.breakdown
    )


def _usage_lines(
    *,
    card: RateCard,
    version: PlanVersion,
    account: Customer,
    customer_ids: list[int],
    start: datetime,
    end: datetime,
    usage_until: datetime,
    context: RatingContext,
) -> list[RatedLine]:
    currency = version.currency
    price = price_parse(card.price)
    usage = (
        context.feature_usage(
            feature=card.feature, customer_ids=customer_ids, start=start, end=min(end, usage_until)
        )
        if usage_until > start
        else None
    )
    quantity = usage.quantity if usage else Decimal(0)
    charge = usage_price(price=price, quantity=quantity, currency=currency)
    label = card.name or card.feature.name or card.feature.key
    common = dict(
        kind=LineKind.USAGE,
        period_start=start,
        period_end=end,
        feature_id=card.feature_id,
        rate_card_id=card.pk,
        plan_version_id=version.pk,
        group_quantity=quantity,
        group_amount=charge.amount,
        breakdown=_breakdown(charge),
        unit_price=price.unit_price if price.model == "unit" else None,
    )
    weights = {cid: q for cid, q in (usage.by_customer.items() if usage else []) if q}
    if len(weights) <= 1:
        owner = next(iter(weights), account.pk)
        return [
            RatedLine(
                description=label,
                customer_id=owner,
                quantity=quantity,
                amount=charge.amount,
                unrounded_amount=charge.unrounded_amount,
                **common,
            )
        ]
    owners = sorted(weights, key=lambda cid: (cid != account.pk, cid))
    shares = allocate(charge.amount, [weights[c] for c in owners], currency)
    total_weight = sum(weights.values())
    return [
        RatedLine(
            description=label,
            customer_id=cid,
            quantity=weights[cid],
            amount=share,
            unrounded_amount=charge.unrounded_amount * weights[cid] / total_weight,
            **common,
        )
        for cid, share in zip(owners, shares, strict=True)
    ]


def _flat_fee_line(
    *,
    card: RateCard,
    price: FlatPrice,
    version: PlanVersion,
    account: Customer,
    start: datetime,
    end: datetime,
    fraction: Decimal,
) -> RatedLine:
    """A flat fee for ``[start, end)``: ``fraction`` of the period's fee, and a note of
    the dates when it is prorated."""
    charge = flat_charge(price=price, currency=account.currency, fraction=fraction)
    note = "" if fraction == 1 else f" (prorated {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M})"
    return RatedLine(
        kind=LineKind.FLAT_FEE,
        description=(card.name or card.key) + note,
        customer_id=account.pk,
        period_start=start,
        period_end=end,
        amount=charge.amount,
        unrounded_amount=charge.unrounded_amount,
        quantity=fraction,
        unit_price=price.amount,
        rate_card_id=card.pk,
        plan_version_id=version.pk,
    )


def _minimum_true_up_line(
    *,
    charged: list[RatedLine],
    version: PlanVersion,
    account: Customer,
    start: datetime,
    end: datetime,
    fraction: Decimal,
) -> RatedLine | None:
    """The line that brings ``charged`` (a plan version's lines for ``[start, end)``) up
    to ``fraction`` of its minimum commitment; None when they meet it."""
    currency = account.currency
    commitment = version.minimum_commitment.amount * fraction
    if commitment <= 0:
        return None
    charges = sum((line.amount for line in charged), Decimal(0))
    true_up = minimum_commitment_true_up(charges=charges, commitment=commitment, currency=currency)
    if true_up <= 0:
        return None
    return RatedLine(
        kind=LineKind.MINIMUM_TRUE_UP,
        description=(
            "Minimum commitment true-up ("
            f"{format_money(commitment, currency, code=True)} committed, "
            f"{format_money(charges, currency, code=True)} charged)"
        ),
        customer_id=account.pk,
        period_start=start,
        period_end=end,
        amount=true_up,
        unrounded_amount=true_up,
        plan_version_id=version.pk,
    )


def _subscription_lines(
    *,
    sub: Subscription,
    account: Customer,
    period: Period,
    usage_until: datetime,
    context: RatingContext,
) -> list[RatedLine]:
    """The lines of the part of ``period`` that ``sub`` covers, priced on its plan
    version: flat fees (prorated to that part), usage, then the minimum-commitment
    true-up."""
    version = sub.plan_version
    start, end = max(sub.start, period.start), min(sub.end or period.end, period.end)
    fraction = prorate_fraction(
        period_start=period.start, period_end=period.end, start=start, end=end
    )
    lines: list[RatedLine] = []
    for card in context.cards.get(version.pk, []):
        price = price_parse(card.price)
        if isinstance(price, FlatPrice):
            lines.append(
                _flat_fee_line(
                    card=card,
                    price=price,
                    version=version,
                    account=account,
                    start=start,
                    end=end,
                    fraction=fraction,
                )
            )
        else:
            lines += _usage_lines(
                card=card,
                version=version,
                account=account,
                customer_ids=context.billed[account.pk],
                start=start,
                end=end,
                usage_until=usage_until,
                context=context,
            )
    true_up = _minimum_true_up_line(
        charged=lines, version=version, account=account, start=start, end=end, fraction=fraction
    )
    return lines + ([true_up] if true_up is not None else [])


def rate_period(
    *,
    account: Customer,
    period: Period,
    usage_until: datetime | None = None,
    context: RatingContext | None = None,
) -> RatedPeriod:
    """Price ``period`` for a billing account: flat fees, usage per feature and
    subsidiary, the minimum-commitment true-up and tax. ``usage_until`` caps the usage
    taken into account (the upcoming invoice counts usage so far); fees are the period's.
    ``context`` (which must cover the account) saves loading what rating reads.
    """
    context = context or RatingContext.load([account.pk])
    usage_until = usage_until or period.end
    lines: list[RatedLine] = []
    versions: list[int] = []
    for sub in context.subscriptions_in(account.pk, period):
        versions.append(sub.plan_version.pk)
        lines += _subscription_lines(
            sub=sub, account=account, period=period, usage_until=usage_until, context=context
        )
    return _with_tax(
        account=account, period=period, lines=lines, versions=versions, context=context
    )


def taxes_for(
    *,
    account: Customer,
    plan_version_ids: list[int],
    subtotal: Decimal,
    context: RatingContext | None = None,
) -> tuple[tuple[RatedTax, ...], str]:
    """The taxes on ``subtotal`` for the account (its own rates, else its plan's), each
    rounded once on the sum, and the exemption reason when the account is exempt."""
    if context is not None:
        profile = context.profiles.get(account.pk)
    else:
        profile = BillingProfile.objects.filter(customer=account).first()
    if profile is not None and profile.tax_exempt:
        return (), profile.tax_exempt_reason
    rates = list(profile.tax_rates.all()) if profile is not None else []
    if not rates and plan_version_ids:
        if context is not None and plan_version_ids[-1] in context.version_taxes:
            rates = context.version_taxes[plan_version_ids[-1]]
        else:
            rates = list(PlanVersion.objects.get(pk=plan_version_ids[-1]).tax_rates.all())
    computed = tax_compute(
        amounts_by_rate={TaxRate(r.name, r.percentage, r.inclusive): [subtotal] for r in rates},
        currency=account.currency,
    )
    return tuple(
        RatedTax(t.rate.name, t.rate.percentage, t.rate.inclusive, t.base, t.amount)
        for t in computed
    ), ""


@dataclass(frozen=True)
class Totals:
    """An invoice's totals from its line amounts: the one place they are computed."""

    subtotal: Decimal
    taxes: tuple[RatedTax, ...]
    tax_exempt_reason: str
    tax_total: Decimal  # the exclusive taxes, added on top of the subtotal
    total: Decimal


def totals_compute(
    *,
    account: Customer,
    currency: str,
    amounts: Iterable[Decimal],
    plan_version_ids: list[int],
    context: RatingContext | None = None,
) -> Totals:
    """Subtotal, taxes and total of lines worth ``amounts``. Inclusive taxes are inside the
    subtotal already; exclusive ones are added."""
    subtotal = sum(amounts, zero(currency))
    taxes, exempt = taxes_for(
        account=account, plan_version_ids=plan_version_ids, subtotal=subtotal, context=context
    )
    tax_total = sum((t.amount for t in taxes if not t.inclusive), zero(currency))
    return Totals(
        subtotal=subtotal,
        taxes=taxes,
        tax_exempt_reason=exempt,
        tax_total=tax_total,
        total=quantize(subtotal + tax_total, currency),
    )


def amount_due(*, total: Decimal, credits_applied: Decimal, currency: str) -> Decimal:
    """What is left to pay once credits are applied (never below zero)."""
    return max(total - credits_applied, zero(currency))


def _with_tax(
    *,
    account: Customer,
    period: Period,
    lines: list[RatedLine],
    versions: list[int],
    context: RatingContext,
) -> RatedPeriod:
    totals = totals_compute(
        account=account,
        currency=account.currency,
        amounts=[line.amount for line in lines],
        plan_version_ids=versions,
        context=context,
    )
    return RatedPeriod(
        account_id=account.pk,
        currency=account.currency,
        period=period,
        lines=tuple(lines),
        taxes=totals.taxes,
        tax_exempt_reason=totals.tax_exempt_reason,
        subtotal=totals.subtotal,
        total=totals.total,
        plan_versions=tuple(versions),
    )


@dataclass(frozen=True)
class CurrentPeriod:
    period: Period
    rated: RatedPeriod


def current_period_rate(*, account: Customer, now: datetime) -> CurrentPeriod | None:
    """``account``'s billing period holding ``now``, rated with usage up to ``now`` (fees are
    the whole period's): its next invoice so far. The upcoming invoice, the portal and the
    spend notifications all read it here. None without a subscription at ``now``."""
    period = account_period(account=account, at=now)
    if period is None:
        return None
    return CurrentPeriod(
        period=period, rated=rate_period(account=account, period=period, usage_until=now)
    )
