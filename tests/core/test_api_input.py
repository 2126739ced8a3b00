"""Hostile input at the API's door: every case is a 400 (or a 404 for what cannot exist)
with a problem document naming what is wrong, never a server error, and nothing stored."""

from __future__ import annotations

import json

import pytest

from billing.models import Subscription
from customers.models import ConsumerMapping, Customer
from tests.factories import api_world

pytestmark = pytest.mark.django_db

OFFSET_POSTGRESQL_CANNOT_STORE = "2026-12-23T13:39:39-20:52"
YEAR_ONE = "0001-01-01T00:00:00Z"
YEAR_9999 = "9999-12-31T23:59:59Z"


@pytest.fixture
def world(db):
    return api_world()


def problem(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


# ---------------------------------------------------------------- NUL in the URL


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/customers/a%00b",
        "/api/v1/invoices/INV-%00",
        "/api/v1/customers/acme/entitlements/fl%00ights/value",
        "/api/v1/consumers/gw%00/customer",
    ],
)
def test_a_nul_in_the_path_is_a_bad_request(api, url):
    assert "NUL" in problem(api.get(url))["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/customers?search=a%00b",
        "/api/v1/invoices?customer=acme%00",
        "/api/v1/meters/api_requests/query?subject=a%00",
        "/api/v1/customers/acme/entitlements/flights/value?time=%00",
    ],
)
def test_a_nul_in_the_query_string_is_a_bad_request(api, world, url):
    assert "NUL" in problem(api.get(url))["detail"]


def test_a_nul_anywhere_in_a_body_is_refused_with_its_path(api):
    response = api.post(
        "/api/v1/customers",
        {"key": "globex", "name": "Globex", "rail_settings": {"note": "a\u0000b"}},
        format="json",
    )
    assert "rail_settings.note" in problem(response)["detail"]
    response = api.post(
        "/api/v1/customers",
        {"key": "globex", "name": "Globex", "rail_settings": {"a\u0000": "b"}},
        format="json",
    )
    assert "rail_settings.a" in problem(response)["detail"]
    assert not Customer.objects.exists()


def test_a_lone_surrogate_in_a_body_is_refused(api):
    body = '{"key": "globex", "name": "Glo\\ud800bex"}'
    response = api.generic("POST", "/api/v1/customers", body, content_type="application/json")
    assert "name" in problem(response)["detail"]
    assert not Customer.objects.exists()


# ---------------------------------------------------------------- bodies that are not objects

# Every write that takes a body. (Two actions take none and read none: issuing an invoice
# and voiding a grant; what is sent with them is ignored.)
WRITES = [
    ("post", "/api/v1/customers"),
    ("put", "/api/v1/customers/acme"),
    ("patch", "/api/v1/customers/acme"),
    ("post", "/api/v1/customers/acme/consumers"),
    ("post", "/api/v1/consumer-mappings"),
    ("put", "/api/v1/consumer-mappings/{mapping}"),
    ("patch", "/api/v1/consumer-mappings/{mapping}"),
    ("post", "/api/v1/consumers/acme-gw/move"),
    ("post", "/api/v1/customers/acme/custom-contract"),
    ("put", "/api/v1/customers/acme/entitlements/override"),
    ("post", "/api/v1/customers/acme/grants"),
    ("post", "/api/v1/entitlements/check"),
    ("post", "/api/v1/meters"),
    ("put", "/api/v1/meters/api_requests"),
    ("patch", "/api/v1/meters/api_requests"),
    ("post", "/api/v1/meters/api_requests/query"),
    ("post", "/api/v1/features"),
    ("put", "/api/v1/features/flights"),
    ("patch", "/api/v1/features/flights"),
    ("post", "/api/v1/plans"),
    ("put", "/api/v1/plans/pro"),
    ("post", "/api/v1/tax-rates"),
    ("put", "/api/v1/tax-rates/vat"),
    ("patch", "/api/v1/tax-rates/vat"),
    ("post", "/api/v1/subscriptions"),
    ("post", "/api/v1/subscriptions/{subscription}/cancel"),
    ("post", "/api/v1/subscriptions/{subscription}/change-plan"),
    ("post", "/api/v1/invoices/{draft}/lines"),
    ("post", "/api/v1/invoices/{issued}/void"),
    ("post", "/api/v1/invoices/{issued}/credit-notes"),
]


@pytest.mark.parametrize("method, url", WRITES)
@pytest.mark.parametrize("body", [[], ["acme"], "acme", None, 42, True])
def test_a_body_that_is_not_a_json_object_is_a_bad_request_on_every_write(
    api, world, method, url, body
):
    url = url.format(
        mapping=world["consumer-mappings"][0],
        grant=world["grants"][0],
        subscription=world["subscriptions"][0],
        draft=world["invoices"][2],
        issued=world["invoices"][0],
    )
    response = getattr(api, method)(url, json.dumps(body), content_type="application/json")
    assert "must be a JSON object" in problem(response)["detail"]


# ---------------------------------------------------------------- instants


@pytest.mark.parametrize("value", [OFFSET_POSTGRESQL_CANNOT_STORE, YEAR_ONE, YEAR_9999])
def test_a_time_the_database_cannot_store_is_refused_in_a_body(api, world, value):
    response = api.post(
        "/api/v1/consumer-mappings",
        {"consumer_key": "new-gw", "customer": "acme", "valid_from": value},
        format="json",
    )
    assert "valid_from" in problem(response)["errors"]
    response = api.post(
        "/api/v1/consumers/acme-gw/move", {"customer": "acme-eu", "at": value}, format="json"
    )
    assert "at" in problem(response)["errors"]
    assert ConsumerMapping.objects.count() == 1


def test_an_offset_postgresql_can_store_is_taken_and_kept_as_its_instant(api, world):
    response = api.post(
        "/api/v1/consumer-mappings",
        {"consumer_key": "new-gw", "customer": "acme", "valid_from": "2026-12-23T13:39:39-15:59"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["valid_from"] == "2026-12-24T05:38:39Z"


@pytest.mark.parametrize(
    "url, parameter",
    [
        ("/api/v1/customers/acme/entitlements/flights/value", "time"),
        ("/api/v1/customers/acme/entitlements", "time"),
        ("/api/v1/consumers/acme-gw/customer", "time"),
        ("/api/v1/consumer-mappings", "at"),
        ("/api/v1/subscriptions", "active_at"),
        ("/api/v1/invoices", "period_after"),
        ("/api/v1/invoices", "issued_before"),
        ("/api/v1/meters/api_requests/query", "from"),
        ("/api/v1/usage/unattributed", "until"),
    ],
)
@pytest.mark.parametrize("value", [OFFSET_POSTGRESQL_CANNOT_STORE, YEAR_ONE, YEAR_9999])
def test_a_time_the_database_cannot_store_is_refused_in_a_query(api, world, url, parameter, value):
    assert parameter in problem(api.get(url, {parameter: value}))["errors"]


def test_the_bulk_check_names_the_check_whose_time_is_refused(api, world):
    response = api.post(
        "/api/v1/entitlements/check",
        {
            "checks": [
                {"customer": "acme", "feature": "flights"},
                {"customer": "acme", "feature": "flights", "time": YEAR_ONE},
            ]
        },
        format="json",
    )
    assert "checks[1].time" in problem(response)["errors"]


# ---------------------------------------------------------------- subscriptions


def test_a_subscription_ending_before_it_starts_is_refused(api, world):
    Subscription.objects.all().delete()
    response = api.post(
        "/api/v1/subscriptions",
        {
            "customer": "acme",
            "plan": "pro",
            "start": "2026-10-01T00:00:00Z",
            "end": "2026-09-01T00:00:00Z",
        },
        format="json",
    )
    assert "end" in problem(response)["errors"]
    assert not Subscription.objects.exists()


@pytest.mark.parametrize("timing", ["period_end", "immediately"])
def test_a_cancellation_dated_before_the_anchor_is_refused(api, world, timing):
    pk = world["subscriptions"][0]
    response = api.post(
        f"/api/v1/subscriptions/{pk}/cancel",
        {"at": "2026-09-15T00:00:00Z", "timing": timing},
        format="json",
    )
    assert "at" in problem(response)["errors"]
    assert Subscription.objects.get(pk=pk).end is None


@pytest.mark.parametrize("timing", ["next_period", "immediately"])
def test_a_plan_change_dated_before_the_anchor_is_refused(api, world, timing):
    pk = world["subscriptions"][0]
    response = api.post(
        f"/api/v1/subscriptions/{pk}/change-plan",
        {"plan": "pro", "at": "2026-09-15T00:00:00Z", "timing": timing},
        format="json",
    )
    assert "at" in problem(response)["errors"]
    assert Subscription.objects.count() == 1


# ---------------------------------------------------------------- URLs no route matches


def test_an_api_url_no_route_matches_is_a_problem_document(api):
    problem(api.get("/api/v1/subscriptions/-1"), 404)
    problem(api.get("/api/v1/no-such-resource"), 404)
