"""Hostile input at the events endpoint: every malformed body is a 400 problem document
naming the bad event and field, and nothing is stored (no event, no partition)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from metering.ingest_limits import MAX_DATA_DEPTH, MAX_NEW_PARTITIONS
from metering.models import Event
from metering.partitions import existing_partitions, month_start, next_month
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"
BATCH = "application/cloudevents-batch+json"
ONE = "application/cloudevents+json"


@pytest.fixture
def gateway(api_client_for):
    return api_client_for("ingest")


@pytest.fixture
def nothing_stored():
    """Asserts, after the test, that no event and no partition was added."""
    partitions = existing_partitions()
    yield
    assert Event.objects.count() == 0
    assert existing_partitions() == partitions


def post(client, body, content_type=BATCH):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic("POST", URL, raw, content_type=content_type)


def refused(response) -> dict[int, str]:
    """The reasons of a 400 problem document, by event index."""
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert "nothing was stored" in problem["detail"]
    return {e["index"]: e["reason"] for e in problem["errors"]}


def with_bytes(events, placeholder: str, raw: bytes) -> bytes:
    """The JSON of ``events`` with the string ``placeholder`` (quotes included) replaced
    by ``raw``: bytes json.dumps cannot write."""
    return json.dumps(events).encode().replace(json.dumps(placeholder).encode(), raw)


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# -- 1. bytes that are not UTF-8 ------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_bytes_that_are_not_utf8_are_named_by_event_and_field(gateway):
    events = [
        cloud_event("ok"),
        {**cloud_event("subject"), "subject": "BAD"},
        cloud_event("value", model="BAD"),
        cloud_event("key", BAD=1),
    ]
    body = json.dumps(events).encode().replace(b"BAD", b"caf\xe9")  # Latin-1, not UTF-8

    assert refused(post(gateway, body)) == {
        1: "subject: not valid UTF-8",
        2: "data.model: not valid UTF-8",
        3: "data: an object key is not valid UTF-8",
    }


@pytest.mark.usefixtures("nothing_stored")
def test_bytes_that_are_not_utf8_deep_in_data_are_named_by_their_path(gateway):
    body = with_bytes([cloud_event("a", tags=["x", "BAD"])], "BAD", b'"\xff\xfe"')

    assert refused(post(gateway, body)) == {0: "data.tags[1]: not valid UTF-8"}


@pytest.mark.usefixtures("nothing_stored")
def test_one_event_that_is_not_utf8_is_named(gateway):
    body = with_bytes(cloud_event("a", model="BAD"), "BAD", b'"\xc3"')

    assert refused(post(gateway, body, content_type=ONE)) == {0: "data.model: not valid UTF-8"}


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("content_type", [BATCH, ONE, "application/json"])
def test_a_body_that_is_not_utf8_json_is_a_400_saying_so(gateway, content_type):
    utf16 = json.dumps([cloud_event("a")]).encode("utf-16")

    response = post(gateway, utf16, content_type=content_type)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not UTF-8 JSON")


@pytest.mark.usefixtures("nothing_stored")
def test_malformed_json_that_is_also_not_utf8_is_a_400_saying_so(gateway):
    response = post(gateway, b'[{"id": "\xff', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not UTF-8 JSON")


# -- 2. nesting -----------------------------------------------------------------------


def test_data_may_nest_as_deep_as_the_limit(gateway):
    # data is one level; MAX_DATA_DEPTH - 1 arrays inside it make the limit
    body = with_bytes([cloud_event("a", deep="HERE")], "HERE", nested(MAX_DATA_DEPTH - 1))

    assert post(gateway, body).status_code == 204
    assert Event.objects.count() == 1


@pytest.mark.usefixtures("nothing_stored")
def test_data_one_level_past_the_limit_is_refused(gateway):
    body = with_bytes([cloud_event("a", deep="HERE")], "HERE", nested(MAX_DATA_DEPTH))

    assert refused(post(gateway, body)) == {0: "data: nested deeper than 32 levels"}


@pytest.mark.usefixtures("nothing_stored")
def test_data_ten_thousand_levels_deep_is_a_400_naming_the_event_not_a_500(gateway):
    body = with_bytes([cloud_event("ok"), cloud_event("deep", deep="HERE")], "HERE", nested(10_000))

    assert refused(post(gateway, body)) == {1: "data: nested deeper than 32 levels"}


@pytest.mark.usefixtures("nothing_stored")
def test_a_deep_extension_attribute_is_named(gateway):
    body = with_bytes(
        [cloud_event("ok"), {**cloud_event("x"), "ext": "HERE"}], "HERE", nested(5000)
    )

    assert refused(post(gateway, body)) == {1: "ext: nested deeper than 32 levels"}


@pytest.mark.usefixtures("nothing_stored")
def test_one_event_ten_thousand_levels_deep_is_a_400(gateway):
    body = with_bytes(cloud_event("deep", deep="HERE"), "HERE", nested(10_000))

    assert refused(post(gateway, body, content_type=ONE)) == {
        0: "data: nested deeper than 32 levels"
    }


@pytest.mark.usefixtures("nothing_stored")
def test_a_body_that_is_only_brackets_is_a_400(gateway):
    assert post(gateway, nested(100_000)).status_code == 400
    assert post(gateway, b"{" * 100_000, content_type="application/json").status_code == 400


def test_brackets_inside_strings_are_text_not_nesting(gateway):
    events = [cloud_event(i, route="/items/{id}/[x]" * 20) for i in range(50)]

    assert post(gateway, events).status_code == 204
    assert Event.objects.count() == 50


# -- 3. NUL characters ----------------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_nul_characters_are_named_wherever_they_are(gateway):
    nul = "a\u0000b"
    events = [
        cloud_event("ok"),
        {**cloud_event("s"), "subject": nul},
        {**cloud_event("i"), "id": nul},
        {**cloud_event("o"), "source": nul},
        {**cloud_event("t"), "type": nul},
        cloud_event("v", model=nul),
        cloud_event("k", **{nul: 1}),
        cloud_event("n", usage={"items": [{"name": "x"}, {"name": nul}]}),
        cloud_event("nk", usage={"by": {nul: 1}}),
    ]

    reasons = refused(post(gateway, events))

    nul_reason = "contains a NUL character (\\u0000), which cannot be stored"
    assert reasons == {
        1: f"subject: {nul_reason}",
        2: f"id: {nul_reason}",
        3: f"source: {nul_reason}",
        4: f"type: {nul_reason}",
        5: f"data.model: {nul_reason}",
        6: f"data: a key {nul_reason}",
        7: f"data.usage.items[1].name: {nul_reason}",
        8: f"data.usage.by: a key {nul_reason}",
    }


def test_an_escaped_backslash_before_u0000_is_text_and_is_stored(gateway):
    assert post(gateway, [cloud_event("a", note="C:\\u0000")]).status_code == 204
    assert Event.objects.get().data == {"note": "C:\\u0000"}


# -- 4. event times -------------------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_times_outside_the_window_are_refused_and_open_no_partition(gateway):
    now = timezone.now()
    times = [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+05:00",
        "1999-12-31T23:59:59Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",
        "2300-06-01T00:00:00Z",
        (now + timedelta(hours=25)).isoformat(),
    ]
    events = [cloud_event(i, time=t) for i, t in enumerate(times)]

    reasons = refused(post(gateway, events))

    early = "time: before 2000-01-01, the earliest event time accepted"
    late = "time: more than 24 hours after the request was received"
    assert reasons == {0: early, 1: early, 2: early, 3: late, 4: late, 5: late, 6: late}


@pytest.mark.usefixtures("nothing_stored")
def test_a_batch_spread_over_centuries_ahead_opens_no_partition(gateway):
    events = [
        cloud_event(i, time=f"{2300 + i // 12}-{i % 12 + 1:02d}-01T00:00:00Z") for i in range(100)
    ]

    reasons = refused(post(gateway, events))

    assert sorted(reasons) == list(range(100))


def test_the_window_edges_are_accepted(gateway):
    soon = (timezone.now() + timedelta(hours=23)).isoformat()
    events = [cloud_event("first", time="2000-01-01T00:00:00Z"), cloud_event("soon", time=soon)]

    assert post(gateway, events).status_code == 204
    assert Event.objects.count() == 2


def _months_without_partition(count: int) -> list[datetime]:
    """``count`` consecutive months in the 2000s that have no partition yet."""
    existing = existing_partitions()
    month = month_start(datetime(2001, 1, 1, tzinfo=UTC))
    months: list = []
    while len(months) < count:
        months = [] if month in existing else [*months, month]
        month = next_month(month)
    return [datetime(m.year, m.month, 15, tzinfo=UTC) for m in months]


@pytest.mark.usefixtures("nothing_stored")
def test_a_request_that_would_open_too_many_partitions_is_refused(gateway):
    times = _months_without_partition(MAX_NEW_PARTITIONS + 1)
    events = [cloud_event(i, time=t.isoformat()) for i, t in enumerate(times)]

    response = post(gateway, events)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert f"{MAX_NEW_PARTITIONS + 1} months without a partition" in detail
    assert f"at most {MAX_NEW_PARTITIONS}" in detail


def test_a_request_may_open_as_many_partitions_as_the_limit(gateway):
    times = _months_without_partition(MAX_NEW_PARTITIONS)
    events = [cloud_event(i, time=t.isoformat()) for i, t in enumerate(times)]
    before = existing_partitions()

    assert post(gateway, events).status_code == 204
    assert len(existing_partitions() - before) == MAX_NEW_PARTITIONS


# -- 5. numbers a meter must sum --------------------------------------------------------


@pytest.mark.usefixtures("nothing_stored")
def test_numbers_a_bucket_cannot_sum_exactly_are_refused(gateway):
    body = (
        b"["
        + b",".join(
            json.dumps(cloud_event(i, tokens="N")).encode().replace(b'"N"', number)
            for i, number in enumerate(
                [
                    b"1e30",
                    b"1000000000000000",
                    b"-1000000000000000",
                    b"1e15",
                    b"1e400",
                    b"-1e400",
                    b"1" + b"0" * 5000,
                    b"0.1234567890123",
                    b"1e-13",
                    b"0.1000000000000000000001",
                    b"12",
                ]
            )
        )
        + b"]"
    )

    reasons = refused(post(gateway, body))

    assert sorted(reasons) == list(range(10))
    for index in range(7):
        assert "out of range" in reasons[index] and "10^15" in reasons[index], reasons[index]
    assert reasons[0].startswith("data.tokens: ")
    for index in (7, 8, 9):
        assert reasons[index].startswith("data.tokens: ")
        assert "more than 12 decimal places" in reasons[index]


def test_the_bounds_of_a_metered_number_are_accepted(gateway):
    body = json.dumps(
        [
            cloud_event(
                "a",
                big=999_999_999_999_999,
                small=-999_999_999_999_999,
                fine=0.123456789012,
                zeros="Z",
                small_exponent="E",
                huge_text="123456789012345678901234567890",
                looks_like_a_number="x:1e99",
            )
        ]
    ).encode()
    body = body.replace(b'"Z"', b"1.500000000000000000").replace(b'"E"', b"2.5e-5")

    assert post(gateway, body).status_code == 204
    data = Event.objects.get().data
    assert data["big"] == 999_999_999_999_999
    assert data["huge_text"] == "123456789012345678901234567890"


@pytest.mark.usefixtures("nothing_stored")
def test_a_number_deep_in_data_is_named_by_its_path(gateway):
    events = [cloud_event("a", usage={"lines": [{"tokens": 1}, {"tokens": 10**20}]})]

    assert refused(post(gateway, events)) == {
        0: "data.usage.lines[1].tokens: out of range: a number must be less than 10^15 in "
        "magnitude (send identifiers and other large numbers as strings)"
    }


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(gateway, token):
    body = json.dumps([cloud_event("a", tokens="N")]).encode().replace(b'"N"', token)

    response = post(gateway, body)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON")


# -- 7. bodies that are not an object or an array ----------------------------------------


@pytest.mark.usefixtures("nothing_stored")
@pytest.mark.parametrize("body", [b'"an event"', b"42", b"-1.5", b"null", b"true", b"  false "])
@pytest.mark.parametrize("content_type", [BATCH, ONE, "application/json"])
def test_a_json_scalar_is_a_400(gateway, body, content_type):
    response = post(gateway, body, content_type=content_type)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"]


@pytest.mark.usefixtures("nothing_stored")
def test_scalars_inside_a_batch_are_named(gateway):
    reasons = refused(post(gateway, [cloud_event("ok"), None, 42, "x", [1]]))

    assert sorted(reasons) == [1, 2, 3, 4]
