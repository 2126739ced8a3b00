"""A meter's JSONPaths are checked where meters are made or changed (API, admin; the
configuration file in tests/backoffice/test_configuration.py), by the grammar the rollup's SQL
uses; and a meter saved before that check, whose paths cannot be evaluated, can still be
read, fixed and deleted: none of its pages is a server error."""

from __future__ import annotations

import pytest
from django.urls import reverse

from metering.models import Meter
from metering.services import meter_create
from metering.sql import path_problem
from tests.metering.conftest import cloud_event
from tests.metering.test_admin import meter_form

pytestmark = pytest.mark.django_db

TOKENS = {
    "key": "llm_tokens",
    "event_type": "llm",
    "aggregation": "SUM",
    "value": "$.tokens",
    "group_by": {"model": "$.model"},
}


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


@pytest.fixture
def broken(db, ingest) -> Meter:
    """A meter an older version stored without checking its paths, with events of its type."""
    meter = Meter.objects.create(
        key="broken",
        event_type="llm",
        aggregation="SUM",
        value_property="$.a b",
        group_by={"model": "$.model"},
    )
    ingest(cloud_event(1, type="llm", tokens=5, model="a"))
    return meter


@pytest.mark.parametrize(
    "path", ["$.tokens", "$.usage.output_tokens", '$."a b"', "$.items[0].n", "$.a ? (@ > 2)"]
)
def test_paths_postgresql_evaluates_are_accepted(path):
    assert path_problem(path) is None


@pytest.mark.parametrize("path", ["$.a b", "$.", "$[", "$x", '$.a ? (@ like_regex "(")'])
def test_paths_postgresql_cannot_evaluate_are_named(path):
    assert path_problem(path).startswith(f"{path!r} is not a JSONPath PostgreSQL can evaluate")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"value": "$.a b"}, "value", "'$.a b' is not a JSONPath"),
        ({"group_by": {"model": "$.model", "route": "$.a b"}}, "group_by", "route: '$.a b'"),
        ({"group_by": {"user": "$u"}}, "group_by", 'could not find jsonpath variable "u"'),
    ],
)
def test_the_api_refuses_a_path_it_could_not_evaluate_naming_the_field(api, change, field, message):
    body = problem(api.post("/api/v1/meters", {**TOKENS, **change}, format="json"), 400)

    assert message in body["errors"][field][0], body
    assert not Meter.objects.exists()


def test_the_api_refuses_a_change_to_a_path_it_could_not_evaluate(api):
    meter_create(**{**{k: v for k, v in TOKENS.items() if k != "value"}, "value_property": "$.t"})

    body = problem(
        api.patch("/api/v1/meters/llm_tokens", {"group_by": {"m": "$.m["}}, format="json"), 400
    )

    assert "m: '$.m[' is not a JSONPath" in body["errors"]["group_by"][0]
    assert Meter.objects.get().group_by == {"model": "$.model"}


def test_the_admin_form_shows_a_bad_path_on_its_field(admin_client):
    response = admin_client.post(
        reverse("admin:metering_meter_add"),
        meter_form(
            Meter(key="tokens", event_type="llm", aggregation="SUM", value_property="$.a b"),
            group_by='{"model": "$.model", "route": "$.r["}',
        ),
    )

    errors = response.context["adminform"].form.errors
    assert "'$.a b' is not a JSONPath PostgreSQL can evaluate" in errors["value_property"][0]
    assert "route: '$.r[' is not a JSONPath" in errors["group_by"][0]
    assert not Meter.objects.filter(key="tokens").exists()


def test_a_broken_meter_is_read_and_its_query_is_a_conflict_not_a_server_error(api, broken):
    assert api.get("/api/v1/meters/broken").json()["value"] == "$.a b"

    body = problem(api.get("/api/v1/meters/broken/query"), 409)

    assert "cannot be queried until it is fixed" in body["detail"]
    assert "'$.a b' is not a JSONPath" in body["detail"]


def test_a_broken_meter_with_events_is_fixed_through_the_api(api, broken):
    response = api.patch("/api/v1/meters/broken", {"value": "$.tokens"}, format="json")

    assert response.status_code == 200, response.content
    broken.refresh_from_db()
    assert broken.value_property == "$.tokens"
    # fixed, it counts the events: what it counts is now fixed too
    body = problem(api.patch("/api/v1/meters/broken", {"value": "$.t"}, format="json"), 400)
    assert "cannot change once the meter has data" in body["errors"]["value"][0]


def test_a_broken_meter_with_events_is_deleted_through_the_api(api, broken):
    assert api.delete("/api/v1/meters/broken").status_code == 204
    assert not Meter.objects.exists()


def test_a_broken_meter_is_fixed_and_deleted_in_the_admin(admin_client, broken):
    change_url = reverse("admin:metering_meter_change", args=[broken.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert "Fixed: this meter has data" not in page.content.decode()
    assert admin_client.get(reverse("admin:metering_meter_changelist")).status_code == 200

    response = admin_client.post(
        change_url,
        meter_form(broken, value_property="$.tokens", group_by='{"model": "$.model"}'),
    )
    assert response.status_code == 302
    broken.refresh_from_db()
    assert broken.value_property == "$.tokens"

    Meter.objects.filter(pk=broken.pk).update(value_property="$.a b")  # broken again
    delete_url = reverse("admin:metering_meter_delete", args=[broken.pk])
    assert admin_client.get(delete_url).status_code == 200
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not Meter.objects.exists()
