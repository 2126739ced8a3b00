"""The one place that rounds money, and that writes decimals as text.

Amounts are ``Decimal`` with a currency code. A currency's minor unit comes from CLDR
(through Babel, which py-moneyed already depends on): 2 for USD and EUR, 0 for JPY,
3 for KWD. Rounding is always half-up and always named here; nothing else in the
product rounds money.

Decimals become text here too, two ways, never through float and never in exponent
notation:

- for machines (the API): ``plain_decimal`` writes a value exactly without padding
  (``"1500"``, ``"0.00002"``); ``money_text`` writes an amount at its currency's
  precision (``"49.00"``, ``"5000"`` for JPY).
- for people (PDF, hosted page, portal, admin): ``format_money`` (``$1,234.50`` or
  ``1,234.50 USD``) rounds to the minor unit for display; ``format_price`` keeps a unit
  price's every significant decimal (``$0.00002``) but at least the minor units;
  ``format_quantity`` writes quantities and counts with thousands separators
  (``1,234,567``). The stored values stay exact: only the text is rounded.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel.numbers import get_currency_precision, get_currency_symbol
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


# ---------------------------------------------------------------- decimals as text


def _decimal(value: Decimal | int | str) -> Decimal:
    """``value`` as a finite Decimal; a float is refused (it cannot carry a price exactly)."""
    if isinstance(value, float | bool):
        raise TypeError(f"Write decimals from Decimal, int or str, not {type(value).__name__}.")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number.")
    return number


def _fixed(number: Decimal) -> str:
    """Fixed-point digits without trailing zeros; zero (also ``-0``, ``0E-17``) is ``"0"``."""
    if number.is_zero():
        return "0"
    text = format(number, "f")  # "f" never writes an exponent: 1E+2 is "100"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def plain_decimal(value: Decimal | int | str | None) -> str | None:
    """A value exactly, without padding or exponent, for machines: ``"1500"`` for
    ``Decimal("1500.000000000000")``, ``"100"`` for ``Decimal("1E+2")``, ``"0"`` for
    ``Decimal("0E-17")`` and ``Decimal("-0")``. ``None`` stays ``None``.

    Raises ``TypeError`` for a float and ``ValueError`` for NaN or infinity.
    """
    return None if value is None else _fixed(_decimal(value))


def money_text(amount: Decimal | int | str | None, currency: str) -> str | None:
    """An amount at its currency's precision, for machines: ``"49.00"``, ``"5000"`` for
    JPY, ``"0.00"`` (never ``"-0.00"``). ``None`` stays ``None``."""
    if amount is None:
        return None
    rounded = quantize(_decimal(amount), currency)
    return format(abs(rounded) if rounded.is_zero() else rounded, "f")


def _grouped(number: Decimal, places: int) -> str:
    """``number`` (already at most ``places`` decimals) with thousands separators and
    exactly ``places`` decimals. Formatting never rounds: the caller has."""
    if number.is_zero():
        number = abs(number)
    return format(number, f",.{places}f")


def _places(number: Decimal) -> int:
    """Significant decimal places: 0 for ``1500.000``, 5 for ``0.000020``."""
    text = _fixed(number)
    return len(text.partition(".")[2])


def format_quantity(value: Decimal | int | str | None, *, max_places: int = 6) -> str:
    """A quantity or a count for people: ``1,234,567``, ``0.5``; no trailing zeros, at
    most ``max_places`` decimals (rounded half up). ``None`` is ``""``."""
    if value is None or value == "":
        return ""
    number = _decimal(value)
    if number.as_tuple().exponent < -max_places:  # type: ignore[operator]
        number = number.quantize(Decimal(1).scaleb(-max_places), rounding=ROUND_HALF_UP)
    return _grouped(number, _places(number))


def _with_currency(number: str, currency: str, *, code: bool) -> str:
    if code:
        return f"{number} {currency}"
    symbol = get_currency_symbol(currency, locale="en")
    sign, number = ("-", number[1:]) if number.startswith("-") else ("", number)
    space = "\u00a0" if symbol[-1:].isalpha() else ""  # KWD 1.500, but $1.50
    return f"{sign}{symbol}{space}{number}"


def format_money(amount: Decimal | int | str | None, currency: str, *, code: bool = False) -> str:
    """An amount for people, rounded half up to the currency's minor unit: ``$1,234.50``,
    ``¥1,235``, ``KWD 1,234.500`` (``code``: ``1,234.50 USD``, for pages that list
    several currencies). An amount the currency does not know is written exactly beside
    its code. ``None`` is ``""``."""
    if amount is None:
        return ""
    number = _decimal(amount)
    try:
        places = minor_unit_places(currency)
    except UnknownCurrency:
        return f"{format_quantity(number, max_places=UNIT_PRICE_PLACES)} {currency}"
    return _with_currency(_grouped(quantize(number, currency), places), currency, code=code)


def format_price(amount: Decimal | int | str | None, currency: str, *, code: bool = False) -> str:
    """A unit price for people: every significant decimal, no padding beyond the
    currency's minor units (``$0.00002``, ``$49.00``, ``$1,250.50``); never rounded,
    since per-unit prices are meant to be read exactly. ``None`` is ``""``."""
    if amount is None or amount == "":
        return ""
    number = _decimal(amount)
    places = max(_places(number), minor_unit_places(currency))
    return _with_currency(_grouped(number, places), currency, code=code)
