from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import (
    UnknownCurrency,
    allocate,
    format_money,
    format_price,
    format_quantity,
    from_minor_units,
    minor_unit_places,
    money_text,
    plain_decimal,
    quantize,
    to_minor_units,
)

# Any finite decimal, from 0E-30 to 9.99…E+30, signed: database values (scale 12 to 20),
# exact products of prices and quantities, and what Decimal arithmetic makes of them.
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False).filter(
    lambda d: abs(d.adjusted()) <= 30
)
# Amounts of money: up to 10^20 (the context's 28 digits hold them at any minor unit).
amounts = finite_decimals.filter(lambda d: d.adjusted() <= 20)


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


# ---------------------------------------------------------------- decimals as text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("115.43902000000000000", "115.43902"),  # a quantity x price from the database
        ("1500.000000000000", "1500"),
        ("0.0000200000000000", "0.00002"),
        ("1E+2", "100"),
        ("1.20E+3", "1200"),
        ("0E-17", "0"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("-12.50", "-12.5"),
        ("1E-20", "0.00000000000000000001"),
    ],
)
def test_plain_decimal_drops_padding_and_never_writes_an_exponent(value, text):
    assert plain_decimal(Decimal(value)) == text


def test_plain_decimal_refuses_floats_and_non_numbers():
    assert plain_decimal(None) is None
    assert plain_decimal(7) == "7" and plain_decimal("2.50") == "2.5"
    with pytest.raises(TypeError):
        plain_decimal(0.1)
    with pytest.raises(ValueError):
        plain_decimal(Decimal("NaN"))


@given(finite_decimals)
def test_plain_decimal_round_trips_exactly_in_plain_digits(value):
    text = plain_decimal(value)
    assert Decimal(text) == value
    assert "e" not in text.lower()
    assert text != "-0" and not text.startswith(("00", "-00"))
    if "." in text:
        assert not text.endswith(("0", "."))


@given(st.booleans(), st.integers(min_value=-30, max_value=30), st.sampled_from(["USD", "JPY"]))
def test_a_zero_never_prints_with_a_sign(negative, exponent, currency):
    zero = Decimal((int(negative), (0,), exponent))  # 0, -0, 0E-17, -0E+3, ...
    assert plain_decimal(zero) == "0"
    assert money_text(zero, currency) == money_text(Decimal(0), currency)


@given(finite_decimals)
def test_a_value_and_its_negation_print_the_same_digits(value):
    text, negated = plain_decimal(value), plain_decimal(value.copy_negate())
    if value.is_zero():
        assert text == negated == "0"
    else:
        assert {text, negated} == {text.lstrip("-"), "-" + text.lstrip("-")}


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("49.000000000000", "USD", "49.00"),
        ("115.43902", "USD", "115.44"),
        ("-0.001", "USD", "0.00"),
        ("1E+3", "USD", "1000.00"),
        ("5000.4", "JPY", "5000"),
        ("1.2", "KWD", "1.200"),
    ],
)
def test_money_text_has_exactly_the_currencys_minor_digits(amount, currency, text):
    assert money_text(Decimal(amount), currency) == text


@given(amounts, st.sampled_from(["USD", "JPY", "KWD"]))
def test_money_text_is_the_rounded_amount_in_plain_digits(amount, currency):
    text = money_text(amount, currency)
    assert Decimal(text) == quantize(amount, currency)
    assert len(text.partition(".")[2]) == minor_unit_places(currency)
    assert "e" not in text.lower()
    assert not (text.startswith("-") and Decimal(text) == 0)  # never "-0.00"


def test_money_prices_and_quantities_read_as_a_person_writes_them():
    assert format_money(Decimal("1234567.5"), "USD") == "$1,234,567.50"
    assert format_money(Decimal("-12"), "EUR") == "-€12.00"
    assert format_money(Decimal("1235"), "JPY") == "¥1,235"
    assert format_money(Decimal("1.5"), "KWD") == "KWD\u00a01.500"
    assert format_money(Decimal("1234.5"), "USD", code=True) == "1,234.50 USD"
    assert format_price(Decimal("0.0000200000000000"), "USD") == "$0.00002"
    assert format_price(Decimal("49.000000000000"), "USD") == "$49.00"
    assert format_price(Decimal("1250.5"), "USD", code=True) == "1,250.50 USD"
    assert format_quantity(Decimal("1250000.000000000000")) == "1,250,000"
    assert format_quantity(Decimal("0.500000000000")) == "0.5"
    assert format_quantity(1234567) == "1,234,567"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0.00001234", "$0.00"),  # a tier of a per-token price: never below a cent
        ("115.43902000000000000", "$115.44"),
        ("0.005", "$0.01"),  # half up, as the lines were rounded
        ("-0.004", "$0.00"),
        ("2.675", "$2.68"),  # not banker's rounding
    ],
)
def test_money_for_people_is_rounded_half_up_to_the_minor_unit(amount, text):
    assert format_money(Decimal(amount), "USD") == text


@given(amounts, st.sampled_from(["USD", "JPY", "KWD"]))
def test_money_for_people_never_shows_digits_below_the_minor_unit(amount, currency):
    text = format_money(amount, currency, code=True)
    number, _, code = text.partition(" ")
    assert code == currency and "e" not in number.lower()
    assert len(number.partition(".")[2]) == minor_unit_places(currency)
    assert Decimal(number.replace(",", "")) == abs(quantize(amount, currency)) * (
        -1 if number.startswith("-") else 1
    )


@given(st.decimals(min_value=0, max_value=10**15, places=16, allow_nan=False))
def test_unit_prices_for_people_are_exact_without_padding(price):
    number = format_price(price, "USD", code=True).removesuffix(" USD")
    assert Decimal(number.replace(",", "")) == price
    decimals = number.partition(".")[2]
    assert len(decimals) == 2 or not decimals.endswith("0")


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_counts_carry_thousands_separators(count):
    text = format_quantity(count)
    assert text == f"{count:,}"
    assert int(text.replace(",", "")) == count
