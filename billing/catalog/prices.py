"""Between stored prices (JSON, as configured) and the pricing engine's dataclasses.

A stored price is the YAML/API price object: ``{"model": "flat", "amount": "49.00",
"timing": "in_arrears"}`` or ``{"model": "graduated", "tiers": [...], "included": 1000}``.
Decimals travel as strings (integers are accepted); floats are refused, since a float
cannot carry a price exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.catalog.pricing.definitions import (
    FlatPrice,
    PriceError,
    Tier,
    UsagePrice,
    price_validate,
)
from core.money import format_price, format_quantity

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


# ---------------------------------------------------------------- for people


@dataclass(frozen=True)
class TierText:
    """One tier of a graduated or volume price, as people read it."""

    units: str  # "1 – 1,000,000", "over 10,000,000"
    unit_price: str  # "$0.0015"
    flat_price: str  # "$100.00", or "" for none


@dataclass(frozen=True)
class PriceText:
    """A stored price in words: ``summary`` ("$0.002 per API call, first 1,000
    included"), and for graduated and volume prices their ``tiers``, one row each."""

    summary: str
    tiers: tuple[TierText, ...] = ()
    valid: bool = True


def unit_nouns(name: str) -> tuple[str, str]:
    """What one unit and many units of a feature are called, from its (plural) name:
    ``"API calls"`` → ``("API call", "API calls")``; a name that does not read as a
    plural counts "units of" it."""
    words = name.replace("_", " ").split()  # a feature without a name: its key
    if not words:
        return "unit", "units"
    if len(words[0]) > 1 and words[0][0].isupper() and words[0][1:].islower():
        words[0] = words[0].lower()  # "Flights API calls" → "flights API calls"
    *head, last = words
    lower = last.lower()
    if lower.endswith("ies") and len(last) > 3:
        single = last[:-3] + "y"
    elif lower.endswith(("sses", "xes", "zes", "ches", "shes")):
        single = last[:-2]
    elif lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        single = last[:-1]
    else:
        plural = " ".join(words)
        return f"unit of {plural}", f"units of {plural}"
    return " ".join([*head, single]), " ".join(words)


def _tier_units(low: Decimal, high: Decimal | None) -> str:
    """The units a tier holds: ``(low, high]``, whole units ``low + 1`` to ``high``."""
    if high is None:
        return f"over {format_quantity(low)}"
    if low == low.to_integral_value():
        return f"{format_quantity(low + 1)} – {format_quantity(high)}"
    return f"over {format_quantity(low)}, up to {format_quantity(high)}"


def price_describe(
    price: Any, *, currency: str, unit: str = "unit", units: str = "units"
) -> PriceText:
    """A stored price in words, money as the invoice prints it: ``unit`` and ``units``
    name what is counted (see ``unit_nouns``). A price that does not parse is shown as
    stored, with ``valid`` false, never raised: this is for reading, not rating."""
    try:
        parsed = price_parse(price)
    except PriceFormatError as exc:
        return PriceText(
            summary=f"{json.dumps(price, sort_keys=True)} (not valid: {exc})", valid=False
        )

    def money(amount: Decimal | None) -> str:
        return format_price(amount, currency)

    if isinstance(parsed, FlatPrice):
        when = "in advance" if parsed.timing == "in_advance" else "in arrears"
        return PriceText(summary=f"{money(parsed.amount)} flat fee per period, billed {when}")
    tiers: tuple[TierText, ...] = ()
    if parsed.model == "unit":
        summary = (
            f"Free: no charge per {unit}"
            if parsed.unit_price == 0
            else f"{money(parsed.unit_price)} per {unit}"
        )
    elif parsed.model == "package":
        size = parsed.package_size
        what = unit if size == 1 else f"{format_quantity(size)} {units}"
        summary = f"{money(parsed.package_price)} per {what}"
        if size != 1:
            summary += " (a started package counts in full)"
    else:
        how = (
            f"each tier prices the {units} that fall in it"
            if parsed.model == "graduated"
            else f"the tier the total reaches prices all {units}"
        )
        summary = f"{parsed.model.capitalize()} per {unit}: {how}"
        low = Decimal(0)
        rows = []
        for tier in parsed.tiers:
            rows.append(
                TierText(
                    units=_tier_units(low, tier.up_to),
                    unit_price=money(tier.unit_price),
                    flat_price=money(tier.flat_price) if tier.flat_price else "",
                )
            )
            low = tier.up_to if tier.up_to is not None else low
        tiers = tuple(rows)
    extras = []
    if parsed.included:
        extras.append(f"first {format_quantity(parsed.included)} included")
    if tiers and parsed.tiers[0].flat_price:
        # As Stripe, OpenMeter and Lago bill it: see billing.catalog.pricing.usage.usage_price.
        extras.append(
            f"the first tier's {tiers[0].flat_price} flat fee is charged even with no usage"
        )
    if parsed.minimum is not None:
        extras.append(f"at least {money(parsed.minimum)} per period")
    if parsed.maximum is not None:
        extras.append(f"at most {money(parsed.maximum)} per period")
    return PriceText(summary=", ".join([summary, *extras]), tiers=tiers)
