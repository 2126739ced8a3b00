"""A usage price applied to one period's quantity: included units, the model's lines
(unit, graduated, volume, package), then the minimum and maximum spend.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from billing.catalog.pricing.definitions import PriceModel, UsagePrice, price_require
from billing.catalog.pricing.exact import EXACT, ONE, ZERO, decimal_require
from core.money import currency_validate, quantize


@dataclass(frozen=True, slots=True)
class TierLine:
    """One priced slice of usage.

    The slice is the quantity in ``(from_quantity, to_quantity]``: for whole units,
    units ``from_quantity + 1`` to ``to_quantity``. ``tier`` is the tier's index (None
    for unit and package prices). Graduated prices give one line per tier touched;
    volume, unit and package prices one line from zero to the billable quantity. At
    zero billable usage a graduated or volume price whose first tier has a flat price
    gives one empty slice of tier 0 (``quantity`` 0) charging that flat price.
    ``amount`` is exact: ``quantity * unit_price + flat_price``, or for package prices
    ``packages * unit_price`` (``unit_price`` is then the price of one package).
    """

    tier: int | None
    from_quantity: Decimal
    to_quantity: Decimal
    quantity: Decimal
    unit_price: Decimal
    flat_price: Decimal
    amount: Decimal
    packages: Decimal | None = None
    package_size: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SpendAdjustment:
    """What a per-period minimum or maximum spend changed: a signed, exact delta."""

    kind: Literal["minimum", "maximum"]
    limit: Decimal
    amount: Decimal
    note: str


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """A usage price applied to one period's quantity.

    ``unrounded_amount == sum(line.amount for line in breakdown) + adjustment.amount``
    (no adjustment: just the lines), and ``amount`` is ``unrounded_amount`` rounded once.
    ``rated_amount`` is what the lines came to before a minimum or maximum applied.
    """

    model: PriceModel
    currency: str
    quantity: Decimal
    included: Decimal
    billable_quantity: Decimal
    breakdown: tuple[TierLine, ...]
    rated_amount: Decimal
    adjustment: SpendAdjustment | None
    unrounded_amount: Decimal
    amount: Decimal


def _unit_lines(price: UsagePrice, billable: Decimal) -> list[TierLine]:
    unit_price = price.unit_price
    assert unit_price is not None  # guaranteed by price_validate
    return [TierLine(None, ZERO, billable, billable, unit_price, ZERO, billable * unit_price)]


def _graduated_lines(price: UsagePrice, billable: Decimal) -> list[TierLine]:
    lines: list[TierLine] = []
    floor = ZERO
    for index, tier in enumerate(price.tiers):
        if billable <= floor:
            break
        top = billable if tier.up_to is None else min(billable, tier.up_to)
        quantity = top - floor
        amount = quantity * tier.unit_price + tier.flat_price
        lines.append(
            TierLine(index, floor, top, quantity, tier.unit_price, tier.flat_price, amount)
        )
        if tier.up_to is None:
            break
        floor = tier.up_to
    return lines


def _volume_lines(price: UsagePrice, billable: Decimal) -> list[TierLine]:
    for index, tier in enumerate(price.tiers):
        if tier.up_to is None or billable <= tier.up_to:
            amount = billable * tier.unit_price + tier.flat_price
            return [
                TierLine(index, ZERO, billable, billable, tier.unit_price, tier.flat_price, amount)
            ]
    raise AssertionError("the last tier is open-ended")  # guaranteed by price_validate


def _package_lines(price: UsagePrice, billable: Decimal) -> list[TierLine]:
    size, package_price = price.package_size, price.package_price
    assert size is not None and package_price is not None  # guaranteed by price_validate
    # A started package is a whole package: the ceiling, from exact integer division.
    packages = billable // size + (ONE if billable % size else ZERO)
    amount = packages * package_price
    return [TierLine(None, ZERO, billable, billable, package_price, ZERO, amount, packages, size)]


def _first_tier_flat_lines(price: UsagePrice) -> list[TierLine]:
    """A tiered price at zero billable usage: the first tier's flat price, if it has one.

    Stripe, OpenMeter and Lago all bill the first tier's flat price when the quantity is
    zero, for graduated and volume prices alike: it is a fee for having the price, not
    for a unit. The line is the empty slice ``(0, 0]`` of the first tier.
    """
    first = price.tiers[0]
    if not first.flat_price:
        return []
    return [TierLine(0, ZERO, ZERO, ZERO, first.unit_price, first.flat_price, first.flat_price)]


_RATERS = {
    "unit": _unit_lines,
    "graduated": _graduated_lines,
    "volume": _volume_lines,
    "package": _package_lines,
}


def usage_price(*, price: UsagePrice, quantity: Decimal, currency: str) -> UsageCharge:
    """Price one period's ``quantity`` (whole or fractional units) under ``price``.

    Included units come off first (never below zero); the model prices what is left:
    unit = quantity x unit price; graduated = each unit at the tier it falls in, plus
    the flat price of every tier touched; volume = every unit at the tier the quantity
    falls in, plus that tier's flat price; package = ceil(quantity / size) packages.
    A billable quantity of zero (no usage, or all of it included) is no units: unit and
    package prices charge nothing, and graduated and volume prices charge the first
    tier's flat price (one line, the empty slice of tier 0), as Stripe, OpenMeter and
    Lago do; a first tier without a flat price charges nothing (no lines).

    Then the minimum and maximum spend clamp the amount. The minimum applies even to
    a period with no usage at all: it is a spend the customer committed to for every
    period the price is billed, used or not. Whether a rate card is billed for a period
    (and at what share of its minimum, if the period is split) is the caller's call.

    Raises ``InvalidPrice`` for a price ``price_validate`` rejects, ``TypeError`` for a
    quantity that is not a Decimal or int, ``ValueError`` for a negative or non-finite
    quantity and ``UnknownCurrency`` for a bad currency code.
    """
    price_require(price)
    currency = currency_validate(currency)
    quantity = decimal_require("quantity", quantity)
    if quantity < 0:
        raise ValueError(f"quantity must not be negative, not {quantity}.")

    with decimal.localcontext(EXACT):
        billable = max(quantity - price.included, ZERO)
        if billable > 0:
            lines = _RATERS[price.model](price, billable)
        elif price.model in ("graduated", "volume"):
            lines = _first_tier_flat_lines(price)
        else:
            lines = []
        rated = sum((line.amount for line in lines), ZERO)
        total: Decimal = rated
        kind: Literal["minimum", "maximum"] | None = None
        limit: Decimal | None = None
        if price.minimum is not None and rated < price.minimum:
            total, kind, limit = price.minimum, "minimum", price.minimum
        elif price.maximum is not None and rated > price.maximum:
            total, kind, limit = price.maximum, "maximum", price.maximum
        delta = total - rated

    adjustment = None
    if kind is not None:
        assert limit is not None
        spend = f"{kind.capitalize()} spend of {quantize(limit, currency)} {currency} per period"
        usage = f"usage came to {quantize(rated, currency)} {currency}"
        effect = f"{quantize(delta, currency)} {currency} added" if delta > 0 else "capped"
        adjustment = SpendAdjustment(kind, limit, delta, f"{spend}: {usage}, {effect}.")
    return UsageCharge(
        model=price.model,
        currency=currency,
        quantity=quantity,
        included=price.included,
        billable_quantity=billable,
        breakdown=tuple(lines),
        rated_amount=rated,
        adjustment=adjustment,
        unrounded_amount=total,
        amount=quantize(total, currency),
    )
