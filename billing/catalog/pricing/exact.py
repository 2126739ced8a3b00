"""The decimal arithmetic pricing's modules share: an exact context for sums and
products, one bounded context for the few divisions, and how inputs become ``Decimal``.
"""

from __future__ import annotations

import contextlib
import decimal
from decimal import Decimal

ZERO = Decimal(0)
ONE = Decimal(1)

# Sums, differences and products are exact here (largest precision and exponent range);
# Inexact is trapped so nothing can round silently. Never divide in it: a repeating
# quotient would try to fill MAX_PREC digits.
EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
# The divisions (proration, tax inside an inclusive price): 50 significant digits, far
# below any minor unit, before the one rounding.
DIVISION = decimal.Context(prec=50, traps=[decimal.InvalidOperation, decimal.DivisionByZero])


def decimal_fields_coerce(obj: object, *names: str) -> None:
    """Turn ints and decimal strings (as config files carry them) into ``Decimal``, on a
    frozen dataclass's fields ``names``.

    Anything else, floats included, is left for ``price_validate`` to refuse.
    """
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, int | str) and not isinstance(value, bool):
            with contextlib.suppress(decimal.InvalidOperation):
                value = Decimal(value.strip() if isinstance(value, str) else value)
        object.__setattr__(obj, name, value)


def decimal_require(name: str, value: object) -> Decimal:
    """``value`` as a finite Decimal (ints accepted); floats and the like are refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {value!r}.")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, not {value}.")
    return value
