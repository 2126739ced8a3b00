"""Laws of the ingestion limits (metering.ingest_limits), for any JSON: what is within
the limits passes, a NUL anywhere is refused, and the byte screen of the hot path never
lets through what the exact check refuses, for one ``data`` or a whole batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metering.ingest import events_parse
from metering.ingest_limits import (
    EARLIEST_TIME,
    FUTURE_TOLERANCE,
    MAX_DATA_DEPTH,
    VALUE_DECIMAL_PLACES,
    VALUE_MAX_EXCLUSIVE,
    data_problem,
    number_problem,
    time_problem,
    value_problem,
)
from metering.models import UsageBucket

PROPERTIES = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
encode = msgspec.json.Encoder(decimal_format="number").encode
decode_exact = msgspec.json.Decoder(float_hook=Decimal).decode

# -- strategies -----------------------------------------------------------------------

# Any character JSON and PostgreSQL can hold (no NUL; surrogates are not text).
stored_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))
nul_text = st.builds(lambda a, b: f"{a}\x00{b}", stored_text, stored_text)
# Text that looks like JSON to a byte scan: digits, exponents, brackets, escapes.
tricky_text = st.text(st.sampled_from(list('0123456789eE.-+:,[]{}\\u "')), max_size=40)

summable_ints = st.integers(-VALUE_MAX_EXCLUSIVE + 1, VALUE_MAX_EXCLUSIVE - 1)
summable_decimals = st.decimals(
    min_value=-VALUE_MAX_EXCLUSIVE + 1,
    max_value=VALUE_MAX_EXCLUSIVE - 1,
    places=VALUE_DECIMAL_PLACES,
    allow_nan=False,
    allow_infinity=False,
)
any_numbers = st.one_of(
    st.integers(-(10**30), 10**30),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f))),
)


def json_values(scalars, keys, *, depth: int):
    """JSON values nested at most ``depth`` levels (a scalar is none)."""
    if depth == 0:
        return scalars
    inner = json_values(scalars, keys, depth=depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
    )


within_limits_scalars = st.one_of(
    st.none(), st.booleans(), summable_ints, summable_decimals, stored_text, tricky_text
)
within_limits_data = st.dictionaries(
    st.one_of(stored_text, tricky_text),
    json_values(within_limits_scalars, stored_text, depth=4),
    max_size=5,
)
any_scalars = st.one_of(st.none(), st.booleans(), any_numbers, stored_text, tricky_text, nul_text)
any_data = st.dictionaries(
    st.one_of(stored_text, tricky_text, nul_text),
    json_values(any_scalars, st.one_of(stored_text, nul_text), depth=4),
    max_size=5,
)
layouts = st.sampled_from(
    [{}, {"indent": 2}, {"separators": (",", ":")}, {"separators": (" , ", " : ")}]
)


def as_json(value, layout: dict) -> bytes:
    """``value`` as JSON text, laid out as some client might write it."""
    compact = encode(value)
    if not layout:
        return compact
    # json.dumps cannot write Decimals as numbers: mark them, then put msgspec's text back.
    numbers: list[bytes] = []

    def mark(v):
        if isinstance(v, Decimal):
            numbers.append(encode(v))
            return f"\x01\x02number {len(numbers) - 1} 7f3a9c\x02\x01"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=False, **layout).encode()
    for i, number in enumerate(numbers):
        text = text.replace(json.dumps(f"\x01\x02number {i} 7f3a9c\x02\x01").encode(), number)
    return text


def nest(value, levels: int):
    for _ in range(levels):
        value = [value]
    return value


# -- one data object ------------------------------------------------------------------


@PROPERTIES
@given(data=within_limits_data, layout=layouts)
def test_any_data_within_the_limits_is_accepted(data, layout):
    assert data_problem(as_json(data, layout)) is None


@PROPERTIES
@given(data=within_limits_data, nul=nul_text, choices=st.data())
def test_a_nul_anywhere_in_data_is_refused(data, nul, choices):
    # walk down to a random object or array and put the NUL there, as a key or a value
    node = data
    while True:
        children = [c for c in (node.values() if isinstance(node, dict) else node)]
        containers = [c for c in children if isinstance(c, dict | list)]
        if not containers or choices.draw(st.booleans()):
            break
        node = choices.draw(st.sampled_from(containers))
    if isinstance(node, list):
        node.insert(choices.draw(st.integers(0, len(node))), nul)
    elif choices.draw(st.booleans()):
        node[nul] = 1
    else:
        node[choices.draw(stored_text)] = nul

    reason = data_problem(encode(data))

    assert reason is not None and "NUL" in reason


@PROPERTIES
@given(data=any_data, layout=layouts)
@example(data={"tokens": Decimal("1E+30")}, layout={})
@example(data={"tokens": Decimal("1e30")}, layout={"separators": (" , ", " : ")})
@example(data={"tokens": [Decimal("-1.5e30")]}, layout={})
@example(data={"tokens": Decimal("2.5E-5")}, layout={})
@example(data={"tokens": Decimal("1E-13")}, layout={"indent": 2})
@example(data={"tokens": 10**15}, layout={})
@example(data={"tokens": Decimal("0.1234567890123")}, layout={})
@example(data={"id": "1234567890123456789", "hex": "5e3a9e01"}, layout={})
@example(data={"route": "/items/{id}/[x]" * 20}, layout={})
def test_the_byte_screen_never_passes_what_the_exact_check_refuses(data, layout):
    raw = as_json(data, layout)

    assert data_problem(raw) == value_problem(decode_exact(raw))


@PROPERTIES
@given(levels=st.integers(0, 3 * MAX_DATA_DEPTH), layout=layouts)
def test_data_nested_past_the_limit_is_refused_and_within_it_accepted(levels, layout):
    data = {"a": nest(1, levels)}  # the object is one level, each list one more

    reason = data_problem(as_json(data, layout))

    if 1 + levels <= MAX_DATA_DEPTH:
        assert reason is None
    else:
        assert reason == f"data: nested deeper than {MAX_DATA_DEPTH} levels"


# -- numbers and times ------------------------------------------------------------------


@given(st.integers(-(10**40), 10**40))
def test_an_integer_is_summable_exactly_when_below_ten_to_the_fifteen(n):
    assert (number_problem(n) is None) == (abs(n) < 10**15)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_is_summable_exactly_when_a_bucket_holds_it_unrounded(d):
    fits = abs(d) < 10**15 and d == round(d, VALUE_DECIMAL_PLACES)
    assert (number_problem(d) is None) == fits


def test_a_bucket_holds_a_sum_of_ten_to_the_thirteen_values_at_the_bound():
    column = UsageBucket._meta.get_field("value_sum")
    integer_digits = column.max_digits - column.decimal_places
    assert column.decimal_places == VALUE_DECIMAL_PLACES
    assert 10**integer_digits >= VALUE_MAX_EXCLUSIVE * 10**13


@given(
    time=st.datetimes(timezones=st.just(UTC)),
    received_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_a_time_is_accepted_exactly_inside_the_window(time, received_at):
    received_at = received_at.replace(tzinfo=UTC)
    inside = EARLIEST_TIME <= time <= received_at + FUTURE_TOLERANCE

    assert (time_problem(time, received_at=received_at) is None) == inside


# -- a whole batch: the body's screen and each event's check agree ----------------------


def batch_event(i: int, data) -> dict:
    return {
        "specversion": "1.0",
        "id": str(i),
        "source": "gw",
        "type": "t",
        "subject": "s",
        "time": "2026-11-01T10:00:00Z",
        "data": data,
    }


@PROPERTIES
@given(
    datas=st.lists(st.one_of(within_limits_data, any_data), min_size=1, max_size=8),
    deep=st.lists(st.integers(0, 2 * MAX_DATA_DEPTH), max_size=3),
    layout=layouts,
)
def test_a_batch_names_exactly_the_events_whose_data_break_a_limit(datas, deep, layout):
    datas = [*datas, *({"d": nest(0, levels)} for levels in deep)]
    body = as_json([batch_event(i, d) for i, d in enumerate(datas)], layout)
    received_at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=1)

    parsed = events_parse(body, batch=True, max_events=100, received_at=received_at)

    expected = {
        i for i, d in enumerate(datas) if value_problem(decode_exact(as_json(d, {}))) is not None
    }
    assert {e.index for e in parsed.errors} == expected
    assert len(parsed.events) == (0 if expected else len(datas))
