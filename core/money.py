"""The one place that rounds money.

Amounts are ``Decimal`` with a currency code. A currency's minor unit comes from CLDR
(through Babel, which py-moneyed already depends on): 2 for USD and EUR, 0 for JPY,
3 for KWD. Rounding is always half-up and always named here; nothing else in the
product rounds money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel.numbers import get_currency_precision
from moneyed import CURRENCIES

#: Unit prices keep at least this many decimal places (per-token prices are tiny).
UNIT_PRICE_PLACES = 12


class UnknownCurrency(ValueError):
    """Raised for a currency code that ISO 4217 does not know."""


def currency_validate(currency: str) -> str:
    """Return the upper-cased ISO 4217 code, or raise ``UnknownCurrency``."""
    code = (currency or "").upper()
    if code not in CURRENCIES or code == "DEFAULT":
        raise UnknownCurrency(f"{currency!r} is not an ISO 4217 currency code.")
    return code


@lru_cache(maxsize=512)
def minor_unit_places(currency: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return get_currency_precision(currency_validate(currency))


@lru_cache(maxsize=512)
def _exponent(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_unit_places(currency))


def quantize(amount: Decimal | int | str, currency: str) -> Decimal:
    """Round ``amount`` half-up to the currency's minor unit."""
    return Decimal(amount).quantize(_exponent(currency), rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal | int | str, currency: str) -> int:
    """Convert an amount to an integer count of minor units (cents, yen, fils).

    Rails call this at their boundary. The amount is rounded half-up first; an amount
    already at the currency's precision converts exactly.
    """
    return int(quantize(amount, currency).scaleb(minor_unit_places(currency)))


def from_minor_units(units: int, currency: str) -> Decimal:
    """Convert an integer count of minor units back to a ``Decimal`` amount."""
    return quantize(Decimal(units).scaleb(-minor_unit_places(currency)), currency)


def zero(currency: str) -> Decimal:
    """Zero at the currency's precision (``Decimal('0.00')`` for USD)."""
    return quantize(Decimal(0), currency)


def allocate(total: Decimal, weights: list[Decimal], currency: str) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights`` so the parts add up exactly.

    Largest remainder on minor units: each part gets its floor share in minor units,
    and the leftover units go one by one to the parts with the largest remainders
    (ties to the earlier part). Zero weights everywhere split nothing: the whole
    total goes to the first part. Negative totals are split by their magnitude.
    """
    if not weights:
        raise ValueError("allocate() needs at least one weight.")
    if any(w < 0 for w in weights):
        raise ValueError("allocate() weights must not be negative.")
    units = to_minor_units(total, currency)
    sign = -1 if units < 0 else 1
    units = abs(units)
    weight_sum = sum(weights, Decimal(0))
    if weight_sum == 0:
        parts = [units] + [0] * (len(weights) - 1)
    else:
        exact = [Decimal(units) * w / weight_sum for w in weights]
        parts = [int(e) for e in exact]  # floor: all non-negative
        leftover = units - sum(parts)
        by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
        for i in by_remainder[:leftover]:
            parts[i] += 1
    return [from_minor_units(sign * p, currency) for p in parts]
