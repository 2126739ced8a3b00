"""The pricing engine: worked examples at every tier edge, then the laws it must keep."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from billing.catalog.pricing.definitions import (
    FlatPrice,
    InvalidPrice,
    PriceError,
    Tier,
    UsagePrice,
    price_validate,
)
from billing.catalog.pricing.flat import flat_charge, minimum_commitment_true_up, prorate_fraction
from billing.catalog.pricing.tax import TaxRate, tax_compute
from billing.catalog.pricing.usage import usage_price
from core.money import UnknownCurrency, allocate, minor_unit_places, quantize

D = Decimal

UNIT = UsagePrice(model="unit", unit_price=D("0.002"))
UNIT_WITH_INCLUDED = UsagePrice(model="unit", unit_price=D("0.002"), included=D(1000))
GRADUATED_TIERS = (
    Tier(up_to=D(1000), unit_price=D("0.01")),
    Tier(up_to=D(5000), unit_price=D("0.008")),
    Tier(up_to=None, unit_price=D("0.005")),
)
GRADUATED = UsagePrice(model="graduated", tiers=GRADUATED_TIERS)
GRADUATED_WITH_INCLUDED = UsagePrice(model="graduated", tiers=GRADUATED_TIERS, included=D(100))
GRADUATED_WITH_FLAT = UsagePrice(
    model="graduated",
    tiers=(
        Tier(up_to=D(1000), unit_price=D("0.01"), flat_price=D(5)),
        Tier(up_to=None, unit_price=D("0.005"), flat_price=D(20)),
    ),
)
VOLUME_TIERS = (
    Tier(up_to=D(1000), unit_price=D("0.01")),
    Tier(up_to=D(5000), unit_price=D("0.008"), flat_price=D(3)),
    Tier(up_to=None, unit_price=D("0.005")),
)
VOLUME = UsagePrice(model="volume", tiers=VOLUME_TIERS)
VOLUME_WITH_INCLUDED = UsagePrice(model="volume", tiers=VOLUME_TIERS, included=D(200))
PACKAGE = UsagePrice(model="package", package_size=D(100), package_price=D("2.00"))
PACKAGE_WITH_INCLUDED = UsagePrice(
    model="package", package_size=D(100), package_price=D("2.00"), included=D(50)
)
UNIT_WITH_LIMITS = UsagePrice(model="unit", unit_price=D("0.01"), minimum=D(5), maximum=D(50))


def charge(price: UsagePrice, quantity: str | int | Decimal, currency: str = "USD"):
    return usage_price(price=price, quantity=D(quantity), currency=currency)


# ------------------------------------------------------------------ worked examples


@pytest.mark.parametrize(
    ("quantity", "unrounded", "amount"),
    [
        ("0", "0", "0.00"),
        ("1", "0.002", "0.00"),
        ("3", "0.006", "0.01"),
        ("2.5", "0.005", "0.01"),  # half-up, not half-even
        ("12.5", "0.025", "0.03"),
        ("1000", "2", "2.00"),
    ],
)
def test_unit_price_is_quantity_times_unit_price(quantity, unrounded, amount):
    result = charge(UNIT, quantity)

    assert result.unrounded_amount == D(unrounded)
    assert str(result.amount) == amount


@pytest.mark.parametrize(
    ("quantity", "billable", "amount"),
    [
        ("0", "0", "0.00"),
        ("1", "0", "0.00"),
        ("1000", "0", "0.00"),
        ("1001", "1", "0.00"),
        ("1003", "3", "0.01"),
        ("1500", "500", "1.00"),
    ],
)
def test_included_units_come_off_before_the_unit_price_applies(quantity, billable, amount):
    result = charge(UNIT_WITH_INCLUDED, quantity)

    assert result.billable_quantity == D(billable)
    assert str(result.amount) == amount


@pytest.mark.parametrize(
    ("quantity", "unrounded", "amount", "tier_quantities"),
    [
        ("0", "0", "0.00", []),
        ("1", "0.01", "0.01", ["1"]),
        ("1000", "10", "10.00", ["1000"]),
        ("1001", "10.008", "10.01", ["1000", "1"]),
        ("5000", "42", "42.00", ["1000", "4000"]),
        ("5001", "42.005", "42.01", ["1000", "4000", "1"]),
        ("12.5", "0.125", "0.13", ["12.5"]),
        ("1000.5", "10.004", "10.00", ["1000", "0.5"]),
    ],
)
def test_graduated_prices_each_unit_in_its_own_tier(quantity, unrounded, amount, tier_quantities):
    result = charge(GRADUATED, quantity)

    assert result.unrounded_amount == D(unrounded)
    assert str(result.amount) == amount
    assert [line.quantity for line in result.breakdown] == [D(q) for q in tier_quantities]
    assert [line.tier for line in result.breakdown] == list(range(len(tier_quantities)))


def test_graduated_breakdown_names_each_tiers_slice_of_the_quantity():
    result = charge(GRADUATED, "5001")

    slices = [(line.from_quantity, line.to_quantity) for line in result.breakdown]
    assert slices == [(D(0), D(1000)), (D(1000), D(5000)), (D(5000), D(5001))]
    assert [line.unit_price for line in result.breakdown] == [D("0.01"), D("0.008"), D("0.005")]
    assert [line.amount for line in result.breakdown] == [D(10), D(32), D("0.005")]


@pytest.mark.parametrize(
    ("quantity", "unrounded", "amount"),
    [
        ("0", "5", "5.00"),  # the first tier's flat price, at zero usage too
        ("0.5", "5.005", "5.01"),
        ("1", "5.01", "5.01"),
        ("1000", "15", "15.00"),
        ("1001", "35.005", "35.01"),
    ],
)
def test_graduated_charges_a_tiers_flat_price_once_when_any_unit_falls_in_it(
    quantity, unrounded, amount
):
    result = charge(GRADUATED_WITH_FLAT, quantity)

    assert result.unrounded_amount == D(unrounded)
    assert str(result.amount) == amount


def test_graduated_at_zero_usage_charges_the_first_tiers_flat_price_as_an_empty_slice():
    result = charge(GRADUATED_WITH_FLAT, "0")

    (line,) = result.breakdown
    assert (line.tier, line.from_quantity, line.to_quantity, line.quantity) == (0, 0, 0, 0)
    assert (line.flat_price, line.amount) == (D(5), D(5))
    assert str(result.amount) == "5.00"


@pytest.mark.parametrize("model", ["graduated", "volume"])
@pytest.mark.parametrize(("quantity", "amount"), [("0", "5.00"), ("100", "5.00"), ("101", "5.01")])
def test_usage_within_the_included_units_still_charges_the_first_tiers_flat_price(
    model, quantity, amount
):
    price = dataclasses.replace(GRADUATED_WITH_FLAT, model=model, included=D(100))

    assert str(charge(price, quantity).amount) == amount


@pytest.mark.parametrize("price", [GRADUATED, VOLUME, UNIT, PACKAGE], ids=lambda p: p.model)
def test_zero_usage_charges_nothing_without_a_first_tier_flat_price(price):
    result = charge(price, "0")

    assert result.breakdown == ()
    assert result.amount == D("0.00")


@pytest.mark.parametrize(
    ("quantity", "unrounded"),
    [
        ("0", "0"),
        ("100", "0"),
        ("101", "0.01"),
        ("1100", "10"),
        ("1101", "10.008"),
        ("5100", "42"),
        ("5101", "42.005"),
    ],
)
def test_graduated_tiers_start_counting_after_the_included_units(quantity, unrounded):
    assert charge(GRADUATED_WITH_INCLUDED, quantity).unrounded_amount == D(unrounded)


@pytest.mark.parametrize(
    ("quantity", "unrounded", "amount", "tier"),
    [
        ("0", "0", "0.00", None),
        ("1", "0.01", "0.01", 0),
        ("1000", "10", "10.00", 0),
        ("1000.5", "11.004", "11.00", 1),
        ("1001", "11.008", "11.01", 1),
        ("5000", "43", "43.00", 1),
        ("5001", "25.005", "25.01", 2),
    ],
)
def test_volume_prices_every_unit_at_the_tier_the_total_falls_in(quantity, unrounded, amount, tier):
    result = charge(VOLUME, quantity)

    assert result.unrounded_amount == D(unrounded)
    assert str(result.amount) == amount
    assert [line.tier for line in result.breakdown] == ([] if tier is None else [tier])
    if tier is not None:
        assert result.breakdown[0].quantity == D(quantity)


@pytest.mark.parametrize(
    ("quantity", "unrounded"),
    [("0", "0"), ("200", "0"), ("201", "0.01"), ("1200", "10"), ("1201", "11.008")],
)
def test_volume_with_everything_included_charges_no_flat_price(quantity, unrounded):
    result = charge(VOLUME_WITH_INCLUDED, quantity)

    assert result.unrounded_amount == D(unrounded)


VOLUME_WITH_FIRST_FLAT = UsagePrice(
    model="volume",
    tiers=(
        Tier(up_to=D(1000), unit_price=D("0.01"), flat_price=D(7)),
        Tier(up_to=None, unit_price=D("0.005"), flat_price=D(2)),
    ),
)


@pytest.mark.parametrize(
    ("quantity", "unrounded", "tier"),
    [("0", "7", 0), ("1", "7.01", 0), ("1000", "17", 0), ("1001", "7.005", 1)],
)
def test_volume_at_zero_usage_charges_the_first_tiers_flat_price(quantity, unrounded, tier):
    result = charge(VOLUME_WITH_FIRST_FLAT, quantity)

    assert result.unrounded_amount == D(unrounded)
    assert [line.tier for line in result.breakdown] == [tier]


@pytest.mark.parametrize(
    ("quantity", "packages", "amount"),
    [
        ("0", 0, "0.00"),
        ("1", 1, "2.00"),
        ("12.5", 1, "2.00"),
        ("100", 1, "2.00"),
        ("100.0001", 2, "4.00"),
        ("101", 2, "4.00"),
        ("1000000", 10000, "20000.00"),
    ],
)
def test_package_charges_each_started_package(quantity, packages, amount):
    result = charge(PACKAGE, quantity)

    assert str(result.amount) == amount
    assert sum((line.packages for line in result.breakdown), D(0)) == packages


@pytest.mark.parametrize(
    ("quantity", "amount"), [("50", "0.00"), ("51", "2.00"), ("150", "2.00"), ("151", "4.00")]
)
def test_package_counts_packages_after_the_included_units(quantity, amount):
    assert str(charge(PACKAGE_WITH_INCLUDED, quantity).amount) == amount


def test_package_of_a_hundred_thousand_tokens_charges_a_dollar_per_started_package():
    price = UsagePrice(model="package", package_size=D(100_000), package_price=D("1.00"))

    assert str(charge(price, 250_001).amount) == "3.00"


@pytest.mark.parametrize(
    ("quantity", "amount", "kind", "delta"),
    [
        ("0", "5.00", "minimum", "5"),
        ("1", "5.00", "minimum", "4.99"),
        ("499", "5.00", "minimum", "0.01"),
        ("500", "5.00", None, None),
        ("5000", "50.00", None, None),
        ("5001", "50.00", "maximum", "-0.01"),
        ("1000000", "50.00", "maximum", "-9950"),
    ],
)
def test_minimum_and_maximum_spend_clamp_the_period_amount(quantity, amount, kind, delta):
    result = charge(UNIT_WITH_LIMITS, quantity)

    assert str(result.amount) == amount
    if kind is None:
        assert result.adjustment is None
    else:
        assert result.adjustment.kind == kind
        assert result.adjustment.amount == D(delta)


def test_minimum_spend_applies_even_to_a_period_without_usage():
    result = charge(UNIT_WITH_LIMITS, 0)

    assert result.breakdown == ()
    assert result.rated_amount == 0
    assert result.amount == D("5.00")
    assert result.adjustment.note == (
        "Minimum spend of 5.00 USD per period: usage came to 0.00 USD, 5.00 USD added."
    )


def test_maximum_spend_note_says_the_usage_was_capped():
    result = charge(UNIT_WITH_LIMITS, 6000)

    assert result.adjustment.note == (
        "Maximum spend of 50.00 USD per period: usage came to 60.00 USD, capped."
    )


def test_minimum_applies_when_included_units_cover_all_usage():
    price = UsagePrice(model="unit", unit_price=D("0.01"), included=D(1000), minimum=D(1))

    assert charge(price, 1000).amount == D("1.00")


def test_maximum_caps_a_graduated_price_with_flat_fees():
    price = UsagePrice(model="graduated", tiers=GRADUATED_WITH_FLAT.tiers, maximum=D(30))

    result = charge(price, 1001)

    assert result.rated_amount == D("35.005")
    assert result.amount == D("30.00")


@pytest.mark.parametrize(
    ("price", "quantity", "amount"),
    [
        (UsagePrice(model="unit", unit_price=D("1.5")), "1", "2"),
        (UsagePrice(model="unit", unit_price=D("1.5")), "2", "3"),
        (UsagePrice(model="unit", unit_price=D("1.5")), "3", "5"),
        (
            UsagePrice(
                model="graduated",
                tiers=(Tier(up_to=D(1000), unit_price=D("0.3")), Tier(None, D("0.25"))),
            ),
            "1001",
            "300",
        ),
        (
            UsagePrice(
                model="graduated",
                tiers=(Tier(up_to=D(1000), unit_price=D("0.3")), Tier(None, D("0.25"))),
            ),
            "1002",
            "301",
        ),
    ],
)
def test_yen_amounts_round_half_up_to_whole_yen(price, quantity, amount):
    assert str(charge(price, quantity, "JPY").amount) == amount


@pytest.mark.parametrize(
    ("price", "quantity", "amount"),
    [
        (UsagePrice(model="unit", unit_price=D("0.0005")), "1", "0.001"),
        (UsagePrice(model="unit", unit_price=D("0.0005")), "2", "0.001"),
        (UsagePrice(model="unit", unit_price=D("0.0005")), "3", "0.002"),
        (
            UsagePrice(model="package", package_size=D(1000), package_price=D("0.250")),
            "1001",
            "0.500",
        ),
    ],
)
def test_kuwaiti_dinar_amounts_round_half_up_to_three_places(price, quantity, amount):
    assert str(charge(price, quantity, "KWD").amount) == amount


@pytest.mark.parametrize(("currency", "amount"), [("USD", "0.94"), ("KWD", "0.945"), ("JPY", "1")])
def test_twelve_decimal_token_prices_stay_exact_until_the_line_is_rounded(currency, amount):
    price = UsagePrice(model="unit", unit_price=D("0.000000123456"))

    result = charge(price, 7_654_321, currency)

    assert result.unrounded_amount == D("0.944971853376")
    assert str(result.amount) == amount


def test_fractional_gpu_minutes_are_priced_exactly():
    price = UsagePrice(model="unit", unit_price=D("0.0375"))

    result = charge(price, "12.5")

    assert result.unrounded_amount == D("0.46875")
    assert result.amount == D("0.47")


def test_decimal_strings_and_ints_in_prices_are_read_as_decimals():
    price = UsagePrice(model="graduated", tiers=[Tier(1000, "0.01"), Tier(None, "0.005")])

    assert price_validate(price) == []
    assert charge(price, 1001).unrounded_amount == D("10.005")


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "price",
    [UNIT, GRADUATED, GRADUATED_WITH_FLAT, VOLUME, PACKAGE, UNIT_WITH_LIMITS, VOLUME_WITH_INCLUDED],
)
def test_well_formed_prices_have_no_errors(price):
    assert price_validate(price) == []


@pytest.mark.parametrize(
    ("price", "path", "fragment"),
    [
        (UsagePrice(model="tiered"), "model", "must be one of unit, graduated, volume, package"),
        (UsagePrice(model="unit"), "unit_price", "is required"),
        (UsagePrice(model="unit", unit_price=D("-0.01")), "unit_price", "must not be negative"),
        (UsagePrice(model="unit", unit_price=0.002), "unit_price", "write it as a string"),
        (UsagePrice(model="unit", unit_price=D("NaN")), "unit_price", "finite"),
        (UsagePrice(model="unit", unit_price=D(1), tiers=GRADUATED_TIERS), "tiers", "does not"),
        (UsagePrice(model="graduated"), "tiers", "at least one tier"),
        (UsagePrice(model="volume", tiers=(Tier(D(10), D(1)),)), "tiers[0].up_to", "open-ended"),
        (
            UsagePrice(model="graduated", tiers=(Tier(None, D(1)), Tier(None, D(1)))),
            "tiers[0].up_to",
            "only the last tier",
        ),
        (
            UsagePrice(
                model="graduated", tiers=(Tier(D(10), D(1)), Tier(D(10), D(1)), Tier(None, D(1)))
            ),
            "tiers[1].up_to",
            "greater than the previous tier's up_to (10)",
        ),
        (
            UsagePrice(model="graduated", tiers=(Tier(D(0), D(1)), Tier(None, D(1)))),
            "tiers[0].up_to",
            "greater than zero",
        ),
        (
            UsagePrice(model="volume", tiers=(Tier(None, D(1), flat_price=D(-1)),)),
            "tiers[0].flat_price",
            "must not be negative",
        ),
        (UsagePrice(model="graduated", unit_price=D(1), tiers=GRADUATED_TIERS), "unit_price", ""),
        (UsagePrice(model="package", package_price=D(1)), "package_size", "is required"),
        (
            UsagePrice(model="package", package_size=D(0), package_price=D(1)),
            "package_size",
            "greater than zero",
        ),
        (UsagePrice(model="package", package_size=D(10)), "package_price", "is required"),
        (UsagePrice(model="unit", unit_price=D(1), included=D(-1)), "included", "negative"),
        (
            UsagePrice(model="unit", unit_price=D(1), minimum=D(10), maximum=D(5)),
            "minimum",
            "must not exceed the maximum (5)",
        ),
        (UsagePrice(model="unit", unit_price=D(1), maximum=D(-5)), "maximum", "negative"),
        (FlatPrice(amount=D("-1"), timing="in_arrears"), "amount", "must not be negative"),
        (FlatPrice(amount=D("49.00"), timing="monthly"), "timing", "in_advance or in_arrears"),
    ],
)
def test_price_validate_points_at_the_field_and_says_what_is_wrong(price, path, fragment):
    errors = price_validate(price)

    assert path in [error.path for error in errors]
    assert fragment in next(error.message for error in errors if error.path == path)


def test_price_validate_reports_every_problem_at_once():
    price = UsagePrice(
        model="graduated",
        tiers=(Tier(D(1000), D("-0.01")), Tier(D(500), D(1)), Tier(D(7), D(1))),
        minimum=D(9),
        maximum=D(1),
    )

    paths = [error.path for error in price_validate(price)]

    assert paths == ["tiers[0].unit_price", "tiers[1].up_to", "tiers[2].up_to", "minimum"]


def test_pricing_an_invalid_price_raises_with_its_errors():
    with pytest.raises(InvalidPrice) as raised:
        charge(UsagePrice(model="graduated"), 10)

    assert raised.value.errors == (PriceError("tiers", "graduated prices need at least one tier."),)
    assert "tiers: graduated prices need at least one tier." in str(raised.value)


def test_negative_quantities_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        charge(UNIT, -1)


def test_float_quantities_are_refused():
    with pytest.raises(TypeError, match="must be a Decimal"):
        usage_price(price=UNIT, quantity=1.5, currency="USD")


def test_unknown_currencies_are_refused():
    with pytest.raises(UnknownCurrency):
        charge(UNIT, 1, "XYZ")


# ----------------------------------------------------------- flat fees and proration

PERIOD_START = datetime(2026, 4, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 5, 1, tzinfo=UTC)  # 30 days


def fraction_of_april(start: datetime, end: datetime) -> Decimal:
    return prorate_fraction(period_start=PERIOD_START, period_end=PERIOD_END, start=start, end=end)


def test_a_flat_fee_for_a_whole_period_is_its_amount():
    result = flat_charge(price=FlatPrice(amount=D("49.00"), timing="in_arrears"), currency="USD")

    assert result.amount == D("49.00")
    assert result.timing == "in_arrears"


def test_a_flat_fee_for_half_a_period_is_half_its_amount():
    fraction = fraction_of_april(datetime(2026, 4, 16, tzinfo=UTC), PERIOD_END)

    result = flat_charge(
        price=FlatPrice(amount=D("49.00"), timing="in_advance"), currency="USD", fraction=fraction
    )

    assert fraction == D("0.5")
    assert result.amount == D("24.50")


@pytest.mark.parametrize(
    ("currency", "amount"), [("USD", "3.33"), ("JPY", "333"), ("KWD", "3.333")]
)
def test_a_third_of_a_flat_fee_is_rounded_once_in_the_currency(currency, amount):
    fraction = fraction_of_april(PERIOD_START, datetime(2026, 4, 11, tzinfo=UTC))
    fee = D(1000) if currency == "JPY" else D(10)

    result = flat_charge(
        price=FlatPrice(amount=fee, timing="in_advance"), currency=currency, fraction=fraction
    )

    assert str(result.amount) == amount


@pytest.mark.parametrize("fraction", [D("-0.1"), D("1.0001")])
def test_flat_fee_fractions_outside_zero_to_one_are_refused(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        flat_charge(price=FlatPrice(D(1), "in_advance"), currency="USD", fraction=fraction)


def test_proration_is_exactly_one_for_the_whole_period():
    assert fraction_of_april(PERIOD_START, PERIOD_END) == 1


def test_proration_clips_the_range_to_the_period():
    before = datetime(2026, 3, 1, tzinfo=UTC)

    assert fraction_of_april(before, datetime(2026, 4, 4, tzinfo=UTC)) == D("0.1")
    assert fraction_of_april(before, PERIOD_START) == 0


def test_proration_counts_whole_seconds():
    start = datetime(2026, 4, 1, tzinfo=UTC)
    end = start + timedelta(seconds=1000)

    fraction = prorate_fraction(
        period_start=start,
        period_end=end,
        start=start + timedelta(seconds=10, microseconds=999_999),
        end=end,
    )

    assert fraction == D("0.99")


def test_proration_counts_elapsed_seconds_across_a_dst_change():
    march_start = datetime(2026, 3, 1, 5, tzinfo=UTC)  # midnight in New York, EST
    march_end = datetime(2026, 4, 1, 4, tzinfo=UTC)  # midnight in New York, EDT

    fraction = prorate_fraction(
        period_start=march_start,
        period_end=march_end,
        start=march_start,
        end=march_start + timedelta(hours=1),
    )

    assert abs(fraction * (31 * 24 - 1) - 1) < D("1e-45")


def test_proration_refuses_naive_datetimes_and_inverted_ranges():
    with pytest.raises(ValueError, match="timezone-aware"):
        fraction_of_april(datetime(2026, 4, 2), PERIOD_END)
    with pytest.raises(ValueError, match="end must not be before start"):
        fraction_of_april(PERIOD_END, PERIOD_START)
    with pytest.raises(ValueError, match="period_end must be after period_start"):
        prorate_fraction(
            period_start=PERIOD_END, period_end=PERIOD_START, start=PERIOD_START, end=PERIOD_END
        )


# ------------------------------------------------------ commitments and taxes


@pytest.mark.parametrize(
    ("charges", "commitment", "currency", "true_up"),
    [
        ("80.00", "100", "USD", "20.00"),
        ("100.00", "100", "USD", "0.00"),
        ("120.00", "100", "USD", "0.00"),
        ("99.995", "100", "USD", "0.01"),
        ("0", "0", "USD", "0.00"),
        ("9500", "10000", "JPY", "500"),
    ],
)
def test_minimum_commitment_true_up_adds_the_shortfall(charges, commitment, currency, true_up):
    result = minimum_commitment_true_up(
        charges=D(charges), commitment=D(commitment), currency=currency
    )

    assert str(result) == true_up


def test_negative_commitments_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        minimum_commitment_true_up(charges=D(0), commitment=D(-1), currency="USD")


def test_exclusive_tax_is_the_sum_times_the_percentage():
    vat = TaxRate(name="VAT", percentage=D(20), inclusive=False)

    (line,) = tax_compute(amounts_by_rate={vat: [D("10.00"), D("5.55")]}, currency="USD")

    assert line.base == D("15.55")
    assert line.amount == D("3.11")


def test_tax_is_rounded_once_per_rate_on_the_sum():
    rate = TaxRate(name="Sales tax", percentage=D(10), inclusive=False)

    (line,) = tax_compute(amounts_by_rate={rate: [D("0.05"), D("0.05")]}, currency="USD")

    assert line.amount == D("0.01")  # per line it would have been 0.01 + 0.01


@pytest.mark.parametrize(
    ("percentage", "base", "tax"), [("21", "121.00", "21.00"), ("19", "100.00", "15.97")]
)
def test_inclusive_tax_reports_the_tax_contained_in_the_sum(percentage, base, tax):
    rate = TaxRate(name="VAT", percentage=D(percentage), inclusive=True)

    (line,) = tax_compute(amounts_by_rate={rate: [D(base)]}, currency="EUR")

    assert line.amount == D(tax)


def test_tax_lines_come_one_per_rate_in_order_and_in_the_currency():
    state = TaxRate(name="State", percentage=D("6.25"), inclusive=False)
    city = TaxRate(name="City", percentage=D(10), inclusive=False)

    lines = tax_compute(amounts_by_rate={state: [D(1000)], city: [D(1005)]}, currency="JPY")

    assert [(line.rate.name, str(line.amount)) for line in lines] == [
        ("State", "63"),
        ("City", "101"),
    ]


def test_negative_tax_percentages_are_refused():
    with pytest.raises(ValueError, match="must not be negative"):
        tax_compute(amounts_by_rate={TaxRate("Bad", D(-1), False): [D(1)]}, currency="USD")


# -------------------------------------------------------------------------- laws

quantities = st.one_of(
    st.integers(min_value=0, max_value=10**9).map(D),
    st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False),
)
unit_prices = st.integers(min_value=0, max_value=10**13).map(lambda n: D(n).scaleb(-12))
money = st.integers(min_value=0, max_value=10**6).map(lambda n: D(n).scaleb(-2))
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD"])


@st.composite
def tier_lists(
    draw, *, flat_prices=True, descending=False, whole_bounds=False, max_bound=10**7, max_tiers=5
):
    scale = 0 if whole_bounds else draw(st.sampled_from([0, -1, -3]))
    bounds = sorted(draw(st.sets(st.integers(1, max_bound), max_size=max_tiers - 1)))
    prices = draw(st.lists(unit_prices, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if descending:
        prices.sort(reverse=True)
    flats = [draw(money) if flat_prices else D(0) for _ in prices]
    up_tos = [D(b).scaleb(scale) for b in bounds] + [None]
    return tuple(
        Tier(up_to, price, flat) for up_to, price, flat in zip(up_tos, prices, flats, strict=True)
    )


@st.composite
def usage_prices(draw):
    model = draw(st.sampled_from(["unit", "graduated", "volume", "package"]))
    limits = draw(st.lists(st.one_of(st.none(), money), min_size=2, max_size=2))
    if None not in limits:
        limits.sort()
    common = {"included": draw(quantities), "minimum": limits[0], "maximum": limits[1]}
    if model == "unit":
        return UsagePrice(model=model, unit_price=draw(unit_prices), **common)
    if model == "package":
        size = draw(st.integers(1, 10**6).map(D))
        return UsagePrice(model=model, package_size=size, package_price=draw(money), **common)
    return UsagePrice(model=model, tiers=draw(tier_lists()), **common)


@given(price=usage_prices(), quantity=quantities, currency=currencies)
def test_a_charge_is_exactly_the_sum_of_its_lines_and_rounded_once(price, quantity, currency):
    result = usage_price(price=price, quantity=quantity, currency=currency)

    lines_total = sum((line.amount for line in result.breakdown), D(0))
    adjustment = result.adjustment.amount if result.adjustment else 0
    assert result.rated_amount == lines_total
    assert result.unrounded_amount == lines_total + adjustment
    assert result.amount == quantize(result.unrounded_amount, currency)


@given(price=usage_prices(), quantity=quantities)
def test_minimum_and_maximum_bound_every_charge(price, quantity):
    result = usage_price(price=price, quantity=quantity, currency="USD")

    if price.minimum is not None:
        assert result.unrounded_amount >= price.minimum
    if price.maximum is not None:
        assert result.unrounded_amount <= price.maximum


@given(tiers=tier_lists(flat_prices=False, descending=True), quantity=quantities)
def test_graduated_never_exceeds_the_quantity_at_the_first_tiers_price(tiers, quantity):
    result = usage_price(
        price=UsagePrice("graduated", tiers=tiers), quantity=quantity, currency="USD"
    )

    assert result.unrounded_amount <= quantity * tiers[0].unit_price


@given(tiers=tier_lists(descending=True), quantity=quantities)
def test_graduated_never_exceeds_the_first_tiers_price_plus_the_flat_prices_it_reaches(
    tiers, quantity
):
    # With flat prices the law holds with them added: the first tier's always (it is
    # charged at zero usage too), and every other tier's that a unit reaches.
    floors = [D(0), *(t.up_to for t in tiers[:-1])]
    reached = [t.flat_price for i, t in enumerate(tiers) if i == 0 or quantity > floors[i]]

    result = usage_price(
        price=UsagePrice("graduated", tiers=tiers), quantity=quantity, currency="USD"
    )

    assert result.unrounded_amount <= quantity * tiers[0].unit_price + sum(reached, D(0))


@given(
    tiers=tier_lists(whole_bounds=True, max_bound=300),
    quantity=st.integers(min_value=0, max_value=300),
)
def test_graduated_agrees_with_pricing_whole_units_one_by_one(tiers, quantity):
    expected = Fraction(0)
    touched = {0}  # the first tier's flat price is charged at zero usage too
    for unit in range(1, quantity + 1):
        index = next(i for i, t in enumerate(tiers) if t.up_to is None or unit <= t.up_to)
        expected += Fraction(tiers[index].unit_price)
        touched.add(index)
    expected += sum(Fraction(tiers[i].flat_price) for i in touched)

    result = usage_price(
        price=UsagePrice("graduated", tiers=tiers), quantity=D(quantity), currency="USD"
    )

    assert Fraction(result.unrounded_amount) == expected


@given(tiers=tier_lists(), smaller=quantities, larger=quantities)
def test_graduated_never_charges_less_for_more_usage(tiers, smaller, larger):
    smaller, larger = sorted([smaller, larger])
    price = UsagePrice("graduated", tiers=tiers)

    low = usage_price(price=price, quantity=smaller, currency="USD")
    high = usage_price(price=price, quantity=larger, currency="USD")

    assert low.unrounded_amount <= high.unrounded_amount


@given(
    size=st.decimals(min_value="0.001", max_value=10**6, places=3),
    package_price=money,
    quantity=quantities,
)
def test_package_total_is_started_packages_times_the_package_price(size, package_price, quantity):
    price = UsagePrice("package", package_size=size, package_price=package_price)

    result = usage_price(price=price, quantity=quantity, currency="USD")

    packages = math.ceil(Fraction(quantity) / Fraction(size))
    assert result.unrounded_amount == packages * package_price


@given(price=usage_prices(), quantity=quantities, included=quantities)
def test_included_units_never_make_a_charge_negative(price, quantity, included):
    price = dataclasses.replace(price, included=included)

    result = usage_price(price=price, quantity=quantity, currency="USD")

    assert result.billable_quantity == max(quantity - included, 0)
    assert result.unrounded_amount >= 0
    assert all(line.amount >= 0 for line in result.breakdown)
    if result.billable_quantity:
        assert all(line.quantity > 0 for line in result.breakdown)
    else:  # at most the first tier's flat price, charged on an empty slice
        assert all(
            (line.tier, line.quantity, line.amount) == (0, 0, line.flat_price)
            for line in result.breakdown
        )


@given(tiers=tier_lists(), data=st.data())
def test_volume_never_charges_less_for_more_usage_inside_a_tier(tiers, data):
    index = data.draw(st.integers(0, len(tiers) - 1))
    floor = D(0) if index == 0 else tiers[index - 1].up_to
    ceiling = tiers[index].up_to if tiers[index].up_to is not None else floor + 10**6
    offsets = st.decimals(min_value=0, max_value=ceiling - floor, places=3)
    low, high = sorted([floor + data.draw(offsets), floor + data.draw(offsets)])
    assume(low > floor or index == 0)  # zero usage is in the first tier (its flat price)
    assume(high > floor)
    price = UsagePrice("volume", tiers=tiers)

    low_charge = usage_price(price=price, quantity=low, currency="USD")
    high_charge = usage_price(price=price, quantity=high, currency="USD")

    assert {line.tier for line in low_charge.breakdown + high_charge.breakdown} == {index}
    assert low_charge.unrounded_amount <= high_charge.unrounded_amount


@given(unit_price=unit_prices, first=quantities, second=quantities)
def test_splitting_unit_priced_usage_never_changes_the_total(unit_price, first, second):
    price = UsagePrice("unit", unit_price=unit_price)

    def total(quantity):
        return usage_price(price=price, quantity=quantity, currency="USD").unrounded_amount

    assert total(first) + total(second) == total(first + second)


@given(
    price=usage_prices(),
    shares=st.lists(quantities, min_size=1, max_size=6),
    currency=currencies,
)
def test_splitting_a_groups_usage_among_subsidiaries_never_changes_its_total(
    price, shares, currency
):
    # A consolidated invoice prices the group's combined quantity once and allocates the
    # charge by each subsidiary's quantity: whatever the split (all zero included, where
    # a first tier's flat price is still charged once, never once per subsidiary), the
    # shares add up to the group's charge.
    group = usage_price(price=price, quantity=sum(shares, D(0)), currency=currency)
    weights = [share for share in shares if share]

    parts = allocate(group.amount, weights, currency) if weights else [group.amount]

    assert sum(parts, D(0)) == group.amount
    if not weights and price.model in ("graduated", "volume") and price.included == 0:
        once = max(price.tiers[0].flat_price, price.minimum or D(0))
        once = once if price.maximum is None else min(once, price.maximum)
        assert group.amount == quantize(once, currency)


@given(
    total=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(st.integers(0, 10**6).map(D), min_size=1, max_size=12),
    currency=currencies,
)
def test_allocated_parts_add_up_exactly_to_the_total(total, weights, currency):
    amount = D(total).scaleb(-minor_unit_places(currency))

    parts = allocate(amount, weights, currency)

    assert len(parts) == len(weights)
    assert sum(parts, D(0)) == amount
    assert all(part == quantize(part, currency) for part in parts)


DOCS_EXAMPLE_TIERS = (
    Tier(up_to=D(1000), unit_price=D("0.01"), flat_price=D("25.00")),
    Tier(up_to=None, unit_price=D("0.005"), flat_price=D("10.00")),
)


@pytest.mark.parametrize(
    ("model", "quantity", "amount"),
    [
        ("graduated", "0", "25.00"),
        ("graduated", "500", "25.00"),
        ("graduated", "800", "28.00"),
        ("graduated", "2000", "47.50"),
        ("volume", "0", "25.00"),
        ("volume", "2000", "17.50"),
    ],
)
def test_the_worked_example_in_the_configuration_docs(model, quantity, amount):
    price = UsagePrice(model=model, tiers=DOCS_EXAMPLE_TIERS, included=D(500))

    assert str(charge(price, quantity).amount) == amount
