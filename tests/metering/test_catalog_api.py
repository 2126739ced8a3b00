"""The catalog API: meters and features by key, and unattributed usage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from customers.services import consumer_mapping_create
from metering.models import Feature, Meter
from metering.services import feature_create, meter_create
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.metering.catalog_urls")]

TOKENS = {
    "key": "llm_tokens",
    "name": "LLM tokens",
    "event_type": "llm",
    "aggregation": "SUM",
    "value": "$.tokens",
    "group_by": {"model": "$.model", "direction": "$.direction"},
}


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


@pytest.fixture
def tokens(db) -> Meter:
    fields = {**TOKENS, "value_property": TOKENS["value"]}
    del fields["value"]
    return meter_create(**fields)


# ------------------------------------------------------------------ meters


def test_a_meter_is_created_and_read_back_by_key(api):
    created = api.post("/api/v1/meters", TOKENS, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in TOKENS} == TOKENS
    assert body["features"] == [] and body["description"] == ""
    assert api.get("/api/v1/meters/llm_tokens").json() == body
    assert [m["key"] for m in api.get("/api/v1/meters").json()["results"]] == ["llm_tokens"]


def test_a_count_meter_needs_no_value(api):
    response = api.post(
        "/api/v1/meters",
        {"key": "calls", "event_type": "request", "aggregation": "COUNT"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["value"] == "" and response.json()["group_by"] == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"value": ""}, "value"),  # SUM needs a value (the service's rule)
        ({"value": "tokens"}, "value"),  # not a JSONPath
        ({"group_by": {"model": "model"}}, "group_by"),
        ({"group_by": ["$.model"]}, "group_by"),
        ({"aggregation": "MEDIAN"}, "aggregation"),
        ({"key": "has space"}, "key"),
        ({"event_type": ""}, "event_type"),
    ],
)
def test_an_invalid_meter_is_refused_with_field_errors_and_nothing_stored(api, change, field):
    body = problem(api.post("/api/v1/meters", {**TOKENS, **change}, format="json"), 400)

    assert field in body["errors"], body
    assert not Meter.objects.exists()


def test_a_meter_key_is_unique(api, tokens):
    body = problem(api.post("/api/v1/meters", TOKENS, format="json"), 400)
    assert "key" in body["errors"]
    assert Meter.objects.count() == 1


def test_a_meter_takes_new_names_and_dimensions_but_not_a_new_key(api, tokens):
    response = api.patch(
        "/api/v1/meters/llm_tokens",
        {"name": "Tokens", "key": "renamed", "group_by": {"model": "$.model"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["key"] == "llm_tokens"
    tokens.refresh_from_db()
    assert (tokens.key, tokens.name, tokens.group_by) == (
        "llm_tokens",
        "Tokens",
        {"model": "$.model"},
    )


def test_a_meter_without_data_may_change_what_it_counts(api, tokens):
    response = api.put(
        "/api/v1/meters/llm_tokens",
        {**TOKENS, "aggregation": "MAX", "value": "$.output_tokens"},
        format="json",
    )
    assert response.status_code == 200, response.content
    tokens.refresh_from_db()
    assert (tokens.aggregation, tokens.value_property) == ("MAX", "$.output_tokens")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"aggregation": "MAX"}, "aggregation"),
        ({"value": "$.output_tokens"}, "value"),
        ({"event_type": "llm2"}, "event_type"),
    ],
)
def test_a_meter_with_data_keeps_what_it_counts(api, tokens, ingest, change, field):
    ingest(cloud_event(1, type="llm", tokens=5))

    body = problem(api.patch("/api/v1/meters/llm_tokens", change, format="json"), 400)

    assert "cannot change once the meter has data" in body["errors"][field][0]
    tokens.refresh_from_db()
    assert (tokens.event_type, tokens.aggregation, tokens.value_property) == (
        "llm",
        "SUM",
        "$.tokens",
    )


def test_meters_filter_by_event_type_aggregation_and_search(api, tokens):
    meter_create(key="api_calls", name="API calls", event_type="request", aggregation="COUNT")

    def keys(**params) -> list[str]:
        return [m["key"] for m in api.get("/api/v1/meters", params).json()["results"]]

    assert keys(event_type="request") == ["api_calls"]
    assert keys(aggregation="SUM") == ["llm_tokens"]
    assert keys(search="calls") == ["api_calls"]
    assert keys() == ["api_calls", "llm_tokens"]


def test_an_unused_meter_is_deleted(api):
    meter_create(key="unused", event_type="nothing", aggregation="COUNT")

    assert api.delete("/api/v1/meters/unused").status_code == 204
    assert not Meter.objects.exists()


def test_a_meter_with_features_or_data_is_not_deleted(api, tokens, ingest):
    feature_create(key="all_tokens", meter=tokens)
    body = problem(api.delete("/api/v1/meters/llm_tokens"), 409)
    assert "all_tokens" in body["detail"]

    calls = meter_create(key="calls", event_type="request", aggregation="COUNT")
    ingest(cloud_event(1))
    body = problem(api.delete("/api/v1/meters/calls"), 409)
    assert "has data" in body["detail"]
    assert Meter.objects.filter(pk=calls.pk).exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/meters/nope"),
        ("patch", "/api/v1/meters/nope"),
        ("put", "/api/v1/meters/nope"),
        ("delete", "/api/v1/meters/nope"),
        ("get", "/api/v1/features/nope"),
        ("patch", "/api/v1/features/nope"),
        ("put", "/api/v1/features/nope"),
    ],
)
def test_an_unknown_key_is_a_404_problem(api, method, url):
    body = problem(getattr(api, method)(url, {}, format="json"), 404)
    assert body["status"] == 404


# ------------------------------------------------------------------ features


def test_a_feature_is_created_on_a_meter_by_key(api, tokens):
    response = api.post(
        "/api/v1/features",
        {"key": "output_tokens", "meter": "llm_tokens", "filters": {"direction": ["output"]}},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["key"], body["meter"], body["filters"]) == (
        "output_tokens",
        "llm_tokens",
        {"direction": ["output"]},
    )
    assert api.get("/api/v1/meters/llm_tokens").json()["features"] == ["output_tokens"]
    assert api.get("/api/v1/features/output_tokens").json() == body


def test_filter_values_are_kept_as_text(api, tokens):
    meter_create(
        key="calls", event_type="request", aggregation="COUNT", group_by={"status": "$.status"}
    )
    response = api.post(
        "/api/v1/features",
        {"key": "ok_calls", "meter": "calls", "filters": {"status": [200, 204]}},
        format="json",
    )
    assert response.json()["filters"] == {"status": ["200", "204"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"meter": "nope"}, "meter"),
        ({"filters": {"route": ["/x"]}}, "filters"),  # not a dimension of the meter
        ({"filters": {"model": []}}, "filters"),
        ({"filters": ["model"]}, "filters"),
        ({"key": ""}, "key"),
    ],
)
def test_an_invalid_feature_is_refused_with_field_errors(api, tokens, change, field):
    data = {"key": "f", "meter": "llm_tokens", "filters": {}, **change}
    body = problem(api.post("/api/v1/features", data, format="json"), 400)

    assert field in body["errors"], body
    assert not Feature.objects.exists()


def test_a_feature_changes_its_filters_but_not_its_key(api, tokens):
    feature_create(key="gpt", meter=tokens, filters={"model": ["gpt-4o"]})

    response = api.patch(
        "/api/v1/features/gpt",
        {"key": "other", "filters": {"model": ["gpt-4o", "gpt-5"]}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["key"] == "gpt"
    assert Feature.objects.get().filters == {"model": ["gpt-4o", "gpt-5"]}

    put = api.put("/api/v1/features/gpt", {"meter": "llm_tokens", "name": "GPT"}, format="json")
    assert put.status_code == 200, put.content
    assert Feature.objects.get().name == "GPT"

    bad = problem(
        api.patch("/api/v1/features/gpt", {"filters": {"region": ["eu"]}}, format="json"), 400
    )
    assert "filters" in bad["errors"]
    assert Feature.objects.get().filters == {"model": ["gpt-4o", "gpt-5"]}


def test_features_filter_by_meter(api, tokens):
    calls = meter_create(key="calls", event_type="request", aggregation="COUNT")
    feature_create(key="all_tokens", meter=tokens)
    feature_create(key="all_calls", meter=calls)

    listed = api.get("/api/v1/features", {"meter": "calls"}).json()["results"]

    assert [f["key"] for f in listed] == ["all_calls"]


# ------------------------------------------------------------------ scopes


def test_reading_needs_the_read_scope_and_changing_the_write_scope(api_client_for, tokens):
    reader, writer = api_client_for("read"), api_client_for("write")
    calls = {"key": "calls", "event_type": "request", "aggregation": "COUNT"}

    assert reader.get("/api/v1/meters").status_code == 200
    assert reader.get("/api/v1/features").status_code == 200
    assert reader.get("/api/v1/usage/unattributed").status_code == 200
    assert problem(reader.post("/api/v1/meters", calls, format="json"), 403)["detail"].endswith(
        "lacks the 'write' scope."
    )
    problem(reader.patch("/api/v1/meters/llm_tokens", {"name": "x"}, format="json"), 403)
    problem(reader.delete("/api/v1/meters/llm_tokens"), 403)
    problem(
        reader.post("/api/v1/features", {"key": "f", "meter": "llm_tokens"}, format="json"), 403
    )
    problem(writer.get("/api/v1/meters"), 403)
    assert writer.post("/api/v1/meters", calls, format="json").status_code == 201
    assert (
        writer.post("/api/v1/features", {"key": "f", "meter": "calls"}, format="json").status_code
        == 201
    )


def test_the_catalog_needs_an_api_key(client):
    problem(client.get("/api/v1/meters"), 401)
    problem(client.post("/api/v1/features", {}), 401)


# ------------------------------------------------------------------ unattributed usage


def test_unattributed_usage_lists_subjects_with_counts_paginated(api, ingest):
    consumer_mapping_create(
        consumer_key="acme-gw",
        customer=CustomerFactory(key="acme"),
        valid_from=datetime(2026, 11, 2, tzinfo=UTC),
    )
    ingest(
        cloud_event(1, subject="acme-gw", time="2026-11-01T10:00:00Z"),  # before its mapping
        cloud_event(2, subject="acme-gw", time="2026-11-02T10:00:00Z"),
        cloud_event(3, subject="stray", time="2026-11-01T09:00:00Z"),
        cloud_event(4, subject="stray", time="2026-11-03T09:00:00Z", type="llm"),
    )

    body = api.get("/api/v1/usage/unattributed").json()

    assert body["count"] == 2
    assert body["results"] == [
        {
            "subject": "stray",
            "events": 2,
            "first_time": "2026-11-01T09:00:00Z",
            "last_time": "2026-11-03T09:00:00Z",
        },
        {
            "subject": "acme-gw",
            "events": 1,
            "first_time": "2026-11-01T10:00:00Z",
            "last_time": "2026-11-01T10:00:00Z",
        },
    ]
    first = api.get("/api/v1/usage/unattributed", {"page_size": 1}).json()
    assert [r["subject"] for r in first["results"]] == ["stray"] and first["next"]
    since = api.get("/api/v1/usage/unattributed", {"since": "2026-11-02T00:00:00Z"}).json()
    assert [(r["subject"], r["events"]) for r in since["results"]] == [("stray", 1)]
    until = api.get("/api/v1/usage/unattributed", {"until": "2026-11-01T09:30:00Z"}).json()
    assert [(r["subject"], r["events"]) for r in until["results"]] == [("stray", 1)]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-11-01T00:00:00"},  # no offset
        {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
    ],
)
def test_unattributed_usage_refuses_bad_bounds(api, params):
    body = problem(api.get("/api/v1/usage/unattributed", params), 400)
    assert set(body["errors"]) & {"since", "until"}


def test_the_schema_describes_the_catalog(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"] if response["Content-Type"].endswith("json") else None
    text = response.content.decode()
    for path in ("/api/v1/meters", "/api/v1/meters/{key}", "/api/v1/features/{key}"):
        assert path in (paths or text)
    assert "/api/v1/usage/unattributed" in text
