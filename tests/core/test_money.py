from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import (
    UnknownCurrency,
    allocate,
    from_minor_units,
    minor_unit_places,
    quantize,
    to_minor_units,
)


@pytest.mark.parametrize(
    ("currency", "places"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("usd", 2)]
)
def test_minor_units_follow_the_currency(currency, places):
    assert minor_unit_places(currency) == places


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),
        ("1.004999", "USD", "1.00"),
        ("-1.005", "USD", "-1.01"),
        ("2.5", "JPY", "3"),
        ("0.0005", "KWD", "0.001"),
    ],
)
def test_quantize_rounds_half_up_to_the_minor_unit(amount, currency, expected):
    assert quantize(Decimal(amount), currency) == Decimal(expected)
    assert str(quantize(Decimal(amount), currency)) == expected


def test_minor_unit_conversion_is_per_currency_not_times_100():
    assert to_minor_units(Decimal("12.34"), "USD") == 1234
    assert to_minor_units(Decimal("1234"), "JPY") == 1234
    assert to_minor_units(Decimal("1.234"), "KWD") == 1234
    assert from_minor_units(1234, "KWD") == Decimal("1.234")


def test_unknown_currency_is_refused():
    with pytest.raises(UnknownCurrency):
        quantize(Decimal(1), "XXXX")


def test_allocation_uses_largest_remainder():
    assert allocate(Decimal("10.00"), [Decimal(1)] * 3, "USD") == [
        Decimal("3.34"),
        Decimal("3.33"),
        Decimal("3.33"),
    ]
    assert allocate(Decimal("1.00"), [Decimal(0), Decimal(0)], "USD") == [
        Decimal("1.00"),
        Decimal("0.00"),
    ]


@given(
    total=st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    weights=st.lists(st.decimals(min_value=0, max_value=10**6, places=3), min_size=1, max_size=12),
)
def test_allocated_parts_always_add_up_to_the_total(total, weights):
    parts = allocate(total, weights, "USD")
    assert sum(parts) == total
    assert all(abs(p) <= abs(total) for p in parts)
