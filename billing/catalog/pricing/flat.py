"""Flat fees for a whole or partial period, the share of a period an interval covers,
and the true-up that brings a period's charges up to the plan's minimum commitment.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.catalog.pricing.definitions import FlatPrice, FlatTiming, price_require
from billing.catalog.pricing.exact import DIVISION, EXACT, ONE, ZERO, decimal_require
from core.money import currency_validate, quantize

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


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
    price_require(price)
    currency = currency_validate(currency)
    fraction = decimal_require("fraction", fraction)
    if not ZERO <= fraction <= ONE:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}.")
    with decimal.localcontext(EXACT):
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
    return DIVISION.divide(Decimal(covered), Decimal(p_end - p_start))


def minimum_commitment_true_up(*, charges: Decimal, commitment: Decimal, currency: str) -> Decimal:
    """The true-up that brings a period's ``charges`` up to its ``commitment``.

    ``charges`` are the subscription's flat and usage charges for the period, before
    credits and tax. Returns ``commitment - charges`` rounded to the currency, or zero
    when charges meet the commitment. Raises ``ValueError`` for a negative commitment,
    ``TypeError`` for non-Decimal amounts, ``UnknownCurrency`` for a bad currency code.
    """
    currency = currency_validate(currency)
    charges = decimal_require("charges", charges)
    commitment = decimal_require("commitment", commitment)
    if commitment < 0:
        raise ValueError(f"commitment must not be negative, not {commitment}.")
    with decimal.localcontext(EXACT):
        shortfall = max(commitment - charges, ZERO)
    return quantize(shortfall, currency)
