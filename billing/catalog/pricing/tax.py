"""Tax: one line per rate, rounded once on the sum of the amounts the rate applies to."""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.pricing.exact import (
    DIVISION,
    EXACT,
    ONE,
    ZERO,
    decimal_fields_coerce,
    decimal_require,
)
from core.money import currency_validate, quantize


@dataclass(frozen=True, slots=True)
class TaxRate:
    """A named tax rate; ``inclusive`` rates are already contained in the amounts."""

    name: str
    percentage: Decimal
    inclusive: bool = False

    def __post_init__(self) -> None:
        decimal_fields_coerce(self, "percentage")


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
        percentage = decimal_require(f"{rate.name} percentage", rate.percentage)
        if percentage < 0:
            raise ValueError(f"{rate.name} percentage must not be negative, not {percentage}.")
        values = [decimal_require(f"{rate.name} amount", amount) for amount in amounts]
        with decimal.localcontext(EXACT):
            base = sum(values, ZERO)
            share = percentage.scaleb(-2)  # percentage / 100, exactly
            # Inclusive: the one division that cannot be exact, the net inside the base.
            tax = base - DIVISION.divide(base, ONE + share) if rate.inclusive else base * share
        lines.append(TaxLine(rate, base, tax, quantize(tax, currency)))
    return tuple(lines)
