"""Prices as the pricing engine takes them (``UsagePrice`` with its ``Tier``s,
``FlatPrice``), and the one validation that says what is wrong with one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from billing.catalog.pricing.exact import ZERO, decimal_fields_coerce

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
        decimal_fields_coerce(self, "up_to", "unit_price", "flat_price")


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
        decimal_fields_coerce(
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
        decimal_fields_coerce(self, "amount")


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


def price_require(price: UsagePrice | FlatPrice) -> None:
    """Raises ``InvalidPrice`` with every problem ``price_validate`` finds in ``price``."""
    errors = price_validate(price)
    if errors:
        raise InvalidPrice(errors)
