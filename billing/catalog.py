"""Between stored prices (JSON, as configured) and the pricing engine's dataclasses.

A stored price is the YAML/API price object: ``{"model": "flat", "amount": "49.00",
"timing": "in_arrears"}`` or ``{"model": "graduated", "tiers": [...], "included": 1000}``.
Decimals travel as strings (integers are accepted); floats are refused, since a float
cannot carry a price exactly.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from billing.pricing import FlatPrice, PriceError, Tier, UsagePrice, price_validate

USAGE_KEYS = {
    "model",
    "unit_price",
    "tiers",
    "package_size",
    "package_price",
    "included",
    "minimum",
    "maximum",
}
FLAT_KEYS = {"model", "amount", "timing"}
TIER_KEYS = {"up_to", "unit_price", "flat_price"}


class PriceFormatError(ValueError):
    def __init__(self, errors: list[PriceError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _decimal(
    value: Any, path: str, errors: list[PriceError], *, optional: bool = True
) -> Decimal | None:
    if value is None:
        if not optional:
            errors.append(PriceError(path, "is required."))
        return None
    if isinstance(value, bool | float):
        errors.append(
            PriceError(path, f'write the number as a string ("{value}"), so it stays exact.')
        )
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            errors.append(PriceError(path, f"{value!r} is not a number."))
            return None
        if not number.is_finite():
            errors.append(PriceError(path, f"{value!r} is not a finite number."))
            return None
        return number
    errors.append(PriceError(path, f"expected a number, got {type(value).__name__}."))
    return None


def price_parse(data: Any) -> FlatPrice | UsagePrice:
    """Turn a stored price into a pricing dataclass; raises ``PriceFormatError`` listing
    every problem with its path (``tiers[1].up_to: ...``)."""
    errors: list[PriceError] = []
    if not isinstance(data, dict):
        raise PriceFormatError([PriceError("price", "must be an object with a model.")])
    model = data.get("model")
    if model == "flat":
        unknown = set(data) - FLAT_KEYS
        errors += [PriceError(k, "is not a field of a flat price.") for k in sorted(unknown)]
        amount = _decimal(data.get("amount"), "amount", errors, optional=False)
        timing = data.get("timing", "in_arrears")
        if errors:
            raise PriceFormatError(errors)
        price: FlatPrice | UsagePrice = FlatPrice(amount=amount, timing=timing)
    else:
        unknown = set(data) - USAGE_KEYS
        errors += [PriceError(k, f"is not a field of a {model} price.") for k in sorted(unknown)]
        tiers = []
        raw_tiers = data.get("tiers") or []
        if not isinstance(raw_tiers, list):
            errors.append(PriceError("tiers", "must be a list."))
            raw_tiers = []
        for i, tier in enumerate(raw_tiers):
            if not isinstance(tier, dict):
                errors.append(PriceError(f"tiers[{i}]", "must be an object."))
                continue
            errors += [
                PriceError(f"tiers[{i}].{k}", "is not a field of a tier.")
                for k in sorted(set(tier) - TIER_KEYS)
            ]
            tiers.append(
                Tier(
                    up_to=_decimal(tier.get("up_to"), f"tiers[{i}].up_to", errors),
                    unit_price=_decimal(
                        tier.get("unit_price"), f"tiers[{i}].unit_price", errors, optional=False
                    ),
                    flat_price=_decimal(tier.get("flat_price", 0), f"tiers[{i}].flat_price", errors)
                    or Decimal(0),
                )
            )
        fields = {
            name: _decimal(data.get(name), name, errors)
            for name in ("unit_price", "package_size", "package_price", "minimum", "maximum")
        }
        included = _decimal(data.get("included", 0), "included", errors) or Decimal(0)
        if errors:
            raise PriceFormatError(errors)
        price = UsagePrice(model=model, tiers=tuple(tiers), included=included, **fields)
    problems = price_validate(price)
    if problems:
        raise PriceFormatError(problems)
    return price


def _text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return (
        format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    )


def price_dump(price: FlatPrice | UsagePrice) -> dict:
    """The canonical stored form of a price (what the YAML export writes)."""
    if isinstance(price, FlatPrice):
        return {"model": "flat", "amount": _text(price.amount), "timing": price.timing}
    out: dict[str, Any] = {"model": price.model}
    if price.model == "unit":
        out["unit_price"] = _text(price.unit_price)
    elif price.model == "package":
        out["package_size"] = (
            int(price.package_size)
            if price.package_size == int(price.package_size)
            else _text(price.package_size)
        )
        out["package_price"] = _text(price.package_price)
    else:
        out["tiers"] = [
            {
                "up_to": None
                if t.up_to is None
                else (int(t.up_to) if t.up_to == int(t.up_to) else _text(t.up_to)),
                "unit_price": _text(t.unit_price),
                **({"flat_price": _text(t.flat_price)} if t.flat_price else {}),
            }
            for t in price.tiers
        ]
    if price.included:
        out["included"] = (
            int(price.included) if price.included == int(price.included) else _text(price.included)
        )
    if price.minimum is not None:
        out["minimum"] = _text(price.minimum)
    if price.maximum is not None:
        out["maximum"] = _text(price.maximum)
    return out
