"""Pure pricing: rate-card prices and quantities in, priced lines out.

No ORM, no clock, no floats: frozen dataclasses of ``Decimal`` in, frozen results out,
each keeping its exact amount beside the amount rounded once by ``core.money.quantize``.
Sums and products run in an exact context, so an unrounded amount always equals the sum
of its lines; the only divisions (proration, tax inside an inclusive price) run at 50
significant digits, far below any minor unit, before the one rounding.
"""

from __future__ import annotations

import contextlib
import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from core.money import currency_validate, quantize

PriceModel = Literal["unit", "graduated", "volume", "package"]
FlatTiming = Literal["in_advance", "in_arrears"]
PRICE_MODELS: tuple[str, ...] = ("unit", "graduated", "volume", "package")
FLAT_TIMINGS: tuple[str, ...] = ("in_advance", "in_arrears")
_MODEL_FIELDS = {
    "unit": {"unit_price"},
    "graduated": {"tiers"},
    "volume": {"tiers"},
    "package": {"package_size", "package_price"},
}

ZERO = Decimal(0)
ONE = Decimal(1)

# Sums, differences and products are exact here (largest precision and exponent range);
# Inexact is trapped so nothing can round silently. Never divide in it: a repeating
# quotient would try to fill MAX_PREC digits.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_DIVISION = decimal.Context(prec=50, traps=[decimal.InvalidOperation, decimal.DivisionByZero])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _coerce_fields(obj: object, *names: str) -> None:
    """Turn ints and decimal strings (as config files carry them) into ``Decimal``.

    Anything else, floats included, is left for ``price_validate`` to refuse.
    """
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, int | str) and not isinstance(value, bool):
            with contextlib.suppress(decimal.InvalidOperation):
                value = Decimal(value.strip() if isinstance(value, str) else value)
        object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier of a graduated or volume price.

    Bounds are inclusive: ``up_to=1000`` holds the quantities ``q`` with
    ``previous up_to < q <= 1000`` (units 1 to 1000 for whole units). Only the last
    tier is open-ended (``up_to=None``).
    """

    up_to: Decimal | None
    unit_price: Decimal
    flat_price: Decimal = ZERO

    def __post_init__(self) -> None:
        _coerce_fields(self, "up_to", "unit_price", "flat_price")


@dataclass(frozen=True, slots=True)
class UsagePrice:
    """A usage price on a feature: the model, its parameters, included units and limits.

    ``included`` units are free each period and come off the quantity before the model
    applies; ``minimum`` and ``maximum`` bound the spend per period.
    """

    model: PriceModel
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    included: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def __post_init__(self) -> None:
        _coerce_fields(
            self, "unit_price", "package_size", "package_price", "included", "minimum", "maximum"
        )
        if isinstance(self.tiers, list):
            object.__setattr__(self, "tiers", tuple(self.tiers))


@dataclass(frozen=True, slots=True)
class FlatPrice:
    """A flat fee per period, billed at the start (in advance) or end (in arrears)."""

    amount: Decimal
    timing: FlatTiming

    def __post_init__(self) -> None:
        _coerce_fields(self, "amount")


@dataclass(frozen=True, slots=True)
class PriceError:
    """One problem with a price: where it is (``tiers[0].up_to``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidPrice(ValueError):
    """Raised when a price that fails ``price_validate`` is used; carries the errors."""

    def __init__(self, errors: Iterable[PriceError]) -> None:
        self.errors: tuple[PriceError, ...] = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))


def _check_decimal(
    errors: list[PriceError],
    path: str,
    value: object,
    *,
    required: str = "",
    positive: bool = False,
) -> bool:
    """Append an error unless ``value`` is a finite, non-negative (or positive) Decimal.

    ``None`` is an error only when ``required`` (why it is) is given. True when usable.
    """
    if value is None:
        problem = f"is required {required}." if required else ""
    elif not isinstance(value, Decimal):
        hint = ' (write it as a string, e.g. "0.002")' if isinstance(value, float) else ""
        problem = f"must be a decimal number, not {value!r}{hint}."
    elif not value.is_finite():
        problem = f"must be a finite number, not {value}."
    elif positive and value <= 0:
        problem = f"must be greater than zero, not {value}."
    elif value < 0:
        problem = f"must not be negative, not {value}."
    else:
        return True
    if problem:
        errors.append(PriceError(path, problem))
    return False


def _check_tiers(errors: list[PriceError], tiers: object, model: str) -> None:
    if not isinstance(tiers, tuple) or not tiers:
        errors.append(PriceError("tiers", f"{model} prices need at least one tier."))
        return
    previous: Decimal | None = None
    last = len(tiers) - 1
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        if not isinstance(tier, Tier):
            errors.append(PriceError(path, f"must be a Tier, not {tier!r}."))
            previous = None
            continue
        if index == last:
            if tier.up_to is not None:
                message = "the last tier must be open-ended: leave up_to empty."
                errors.append(PriceError(f"{path}.up_to", message))
        elif tier.up_to is None:
            message = "only the last tier may be open-ended; set up_to."
            errors.append(PriceError(f"{path}.up_to", message))
            previous = None
        elif not _check_decimal(errors, f"{path}.up_to", tier.up_to, positive=True):
            previous = None
        else:
            if previous is not None and tier.up_to <= previous:
                message = f"must be greater than the previous tier's up_to ({previous})."
                errors.append(PriceError(f"{path}.up_to", message))
            previous = tier.up_to
        _check_decimal(errors, f"{path}.unit_price", tier.unit_price, required="on every tier")
        _check_decimal(errors, f"{path}.flat_price", tier.flat_price, required="on every tier")


def price_validate(price: UsagePrice | FlatPrice) -> list[PriceError]:
    """Every problem with ``price``, in field order; an empty list means it is usable.

    Checks the model and timing names, that each model has exactly the fields it uses,
    that amounts are finite non-negative Decimals, that tiers exist, ascend strictly and
    only the last is open-ended, that package sizes are positive, and that the minimum
    does not exceed the maximum. Raises ``TypeError`` for anything but a price.
    """
    errors: list[PriceError] = []
    if isinstance(price, FlatPrice):
        _check_decimal(errors, "amount", price.amount, required="for a flat price")
        if price.timing not in FLAT_TIMINGS:
            errors.append(
                PriceError("timing", f"must be in_advance or in_arrears, not {price.timing!r}.")
            )
        return errors
    if not isinstance(price, UsagePrice):
        raise TypeError(f"price_validate() takes a UsagePrice or FlatPrice, not {price!r}.")

    model = price.model
    if model not in PRICE_MODELS:
        message = f"must be one of {', '.join(PRICE_MODELS)}, not {model!r}."
        return [PriceError("model", message)]
    for name in ("unit_price", "tiers", "package_size", "package_price"):
        if name not in _MODEL_FIELDS[model] and getattr(price, name) not in (None, ()):
            errors.append(PriceError(name, f"does not apply to {model} prices; leave it empty."))
    if model == "unit":
        _check_decimal(errors, "unit_price", price.unit_price, required="for unit prices")
    elif model == "package":
        required = "for package prices"
        _check_decimal(errors, "package_size", price.package_size, required=required, positive=True)
        _check_decimal(errors, "package_price", price.package_price, required=required)
    else:
        _check_tiers(errors, price.tiers, model)
    _check_decimal(errors, "included", price.included, required="(use 0 for none)")
    minimum_ok = _check_decimal(errors, "minimum", price.minimum)
    maximum_ok = _check_decimal(errors, "maximum", price.maximum)
    if minimum_ok and maximum_ok and price.minimum > price.maximum:  # type: ignore[operator]
        errors.append(PriceError("minimum", f"must not exceed the maximum ({price.maximum})."))
    return errors


def _price_require(price: UsagePrice | FlatPrice) -> None:
    errors = price_validate(price)
    if errors:
        raise InvalidPrice(errors)


def _decimal_require(name: str, value: object) -> Decimal:
    """``value`` as a finite Decimal (ints accepted); floats and the like are refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {value!r}.")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, not {value}.")
    return value


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
    _price_require(price)
    currency = currency_validate(currency)
    quantity = _decimal_require("quantity", quantity)
    if quantity < 0:
        raise ValueError(f"quantity must not be negative, not {quantity}.")

    with decimal.localcontext(_EXACT):
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


@dataclass(frozen=True, slots=True)
class FlatCharge:
    """A flat fee for one period, or ``fraction`` of it for a partial period."""

    timing: FlatTiming
    currency: str
    full_amount: Decimal
    fraction: Decimal
    unrounded_amount: Decimal
    amount: Decimal


def flat_charge(*, price: FlatPrice, currency: str, fraction: Decimal = ONE) -> FlatCharge:
    """Charge ``price`` for ``fraction`` of a period (1 for a whole one).

    ``fraction`` is typically ``prorate_fraction(...)``. The exact amount is
    ``amount x fraction``, rounded once. Raises ``InvalidPrice`` for an invalid price,
    ``TypeError`` for a non-Decimal fraction, ``ValueError`` for one outside [0, 1],
    ``UnknownCurrency`` for a bad currency code.
    """
    _price_require(price)
    currency = currency_validate(currency)
    fraction = _decimal_require("fraction", fraction)
    if not ZERO <= fraction <= ONE:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}.")
    with decimal.localcontext(_EXACT):
        unrounded = price.amount * fraction
    return FlatCharge(
        timing=price.timing,
        currency=currency,
        full_amount=price.amount,
        fraction=fraction,
        unrounded_amount=unrounded,
        amount=quantize(unrounded, currency),
    )


def _whole_seconds(name: str, instant: datetime) -> int:
    if not isinstance(instant, datetime):
        raise TypeError(f"{name} must be a datetime, not {instant!r}.")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, not naive ({instant.isoformat()}).")
    return (instant - _EPOCH) // _SECOND  # floor: 12:00:00.7 counts from 12:00:00


def prorate_fraction(
    *, period_start: datetime, period_end: datetime, start: datetime, end: datetime
) -> Decimal:
    """The share of the period ``[period_start, period_end)`` that ``[start, end)`` covers.

    Counted in whole seconds (each instant floored to its second), between 0 and 1;
    ``[start, end)`` is clipped to the period, so one outside it gives 0. The result is
    exact whenever the ratio has a finite decimal expansion (a half, a tenth) and
    otherwise correct to 50 significant digits. Exactly 1 for the whole period.

    Raises ``ValueError`` for naive datetimes, an empty or inverted period, or
    ``end`` before ``start``; ``TypeError`` for anything but datetimes.
    """
    p_start = _whole_seconds("period_start", period_start)
    p_end = _whole_seconds("period_end", period_end)
    s, e = _whole_seconds("start", start), _whole_seconds("end", end)
    if p_end <= p_start:
        raise ValueError("period_end must be after period_start (at least one second).")
    if e < s:
        raise ValueError("end must not be before start.")
    covered = max(0, min(e, p_end) - max(s, p_start))
    if covered == p_end - p_start:
        return ONE
    return _DIVISION.divide(Decimal(covered), Decimal(p_end - p_start))


def minimum_commitment_true_up(*, charges: Decimal, commitment: Decimal, currency: str) -> Decimal:
    """The true-up that brings a period's ``charges`` up to its ``commitment``.

    ``charges`` are the subscription's flat and usage charges for the period, before
    credits and tax. Returns ``commitment - charges`` rounded to the currency, or zero
    when charges meet the commitment. Raises ``ValueError`` for a negative commitment,
    ``TypeError`` for non-Decimal amounts, ``UnknownCurrency`` for a bad currency code.
    """
    currency = currency_validate(currency)
    charges = _decimal_require("charges", charges)
    commitment = _decimal_require("commitment", commitment)
    if commitment < 0:
        raise ValueError(f"commitment must not be negative, not {commitment}.")
    with decimal.localcontext(_EXACT):
        shortfall = max(commitment - charges, ZERO)
    return quantize(shortfall, currency)


@dataclass(frozen=True, slots=True)
class TaxRate:
    """A named tax rate; ``inclusive`` rates are already contained in the amounts."""

    name: str
    percentage: Decimal
    inclusive: bool = False

    def __post_init__(self) -> None:
        _coerce_fields(self, "percentage")


@dataclass(frozen=True, slots=True)
class TaxLine:
    """The tax of one rate on the sum (``base``) of the amounts it applies to."""

    rate: TaxRate
    base: Decimal
    unrounded_amount: Decimal
    amount: Decimal


def tax_compute(
    *, amounts_by_rate: Mapping[TaxRate, Iterable[Decimal]], currency: str
) -> tuple[TaxLine, ...]:
    """One tax line per rate, in the mapping's order, rounded once on each rate's sum.

    Exclusive rates add ``base x percentage / 100``; inclusive rates report the tax
    already contained in the base: ``base - base / (1 + percentage / 100)``.
    Raises ``ValueError`` for a negative or non-finite percentage, ``TypeError`` for
    amounts that are not Decimals, ``UnknownCurrency`` for a bad currency code.
    """
    currency = currency_validate(currency)
    lines: list[TaxLine] = []
    for rate, amounts in amounts_by_rate.items():
        percentage = _decimal_require(f"{rate.name} percentage", rate.percentage)
        if percentage < 0:
            raise ValueError(f"{rate.name} percentage must not be negative, not {percentage}.")
        values = [_decimal_require(f"{rate.name} amount", amount) for amount in amounts]
        with decimal.localcontext(_EXACT):
            base = sum(values, ZERO)
            share = percentage.scaleb(-2)  # percentage / 100, exactly
            # Inclusive: the one division that cannot be exact, the net inside the base.
            tax = base - _DIVISION.divide(base, ONE + share) if rate.inclusive else base * share
        lines.append(TaxLine(rate, base, tax, quantize(tax, currency)))
    return tuple(lines)
