import pytest

from customers.models import ConsumerMapping, Customer
from tests.factories import ConsumerMappingFactory, CustomerFactory

pytestmark = pytest.mark.django_db


def test_create_and_read_a_customer_with_a_subsidiary(api):
    response = api.post(
        "/api/v1/customers",
        {
            "key": "globex",
            "name": "Globex Corporation",
            "email": "ap@globex.example",
            "currency": "usd",
            "rail": "netsuite",
            "rail_settings": {"netsuite_entity_id": "1234"},
            "country": "US",
            "timezone": "America/New_York",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["currency"] == "USD"
    response = api.post(
        "/api/v1/customers",
        {"key": "globex-eu", "name": "Globex EU", "parent": "globex"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["billing_account"] == "globex"

    body = api.get("/api/v1/customers/globex").json()
    assert body["subsidiaries"] == ["globex-eu"]
    assert body["rail"] == "netsuite"
    assert body["billing_account"] == "globex"


def test_list_filters_and_paginates(api):
    parent = CustomerFactory(key="globex")
    for i in range(3):
        CustomerFactory(key=f"globex-{i}", parent=parent)
    CustomerFactory(key="acme", rail="stripe")
    ConsumerMappingFactory(consumer_key="kong-consumer-77", customer=parent)

    assert [
        c["key"] for c in api.get("/api/v1/customers", {"parent": "globex"}).json()["results"]
    ] == [
        "globex-0",
        "globex-1",
        "globex-2",
    ]
    assert [c["key"] for c in api.get("/api/v1/customers", {"root": "true"}).json()["results"]] == [
        "acme",
        "globex",
    ]
    assert [
        c["key"] for c in api.get("/api/v1/customers", {"rail": "stripe"}).json()["results"]
    ] == ["acme"]
    assert [
        c["key"] for c in api.get("/api/v1/customers", {"search": "consumer-77"}).json()["results"]
    ] == ["globex"]
    page = api.get("/api/v1/customers", {"page_size": 2}).json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]


def test_bad_input_gets_field_errors_and_changes_nothing(api):
    response = api.post(
        "/api/v1/customers",
        {"key": "", "name": "X", "currency": "ZZZ", "timezone": "Nowhere", "email": "nope"},
        format="json",
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 400
    assert {"key", "currency", "timezone", "email"} <= set(body["errors"])
    assert not Customer.objects.exists()


def test_malformed_json_is_a_400_problem(api):
    response = api.generic(
        "POST", "/api/v1/customers", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_a_cycle_through_the_api_is_a_400_naming_the_parent(api):
    root = CustomerFactory(key="globex")
    CustomerFactory(key="globex-eu", parent=root)
    response = api.patch("/api/v1/customers/globex", {"parent": "globex-eu"}, format="json")
    assert response.status_code == 400
    assert "cycle" in response.json()["errors"]["parent"][0]
    root.refresh_from_db()
    assert root.parent is None


def test_update_by_key_keeps_the_key(api):
    CustomerFactory(key="acme", name="Acme")
    response = api.patch(
        "/api/v1/customers/acme", {"name": "Acme Inc.", "key": "other"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["key"] == "acme" and response.json()["name"] == "Acme Inc."
    assert api.get("/api/v1/customers/nobody").status_code == 404


def test_an_overlapping_mapping_through_the_api_names_the_conflict(api):
    acme = CustomerFactory(key="acme")
    CustomerFactory(key="globex")
    existing = ConsumerMappingFactory(
        consumer_key="gw-1", customer=acme, valid_from="2026-10-01T00:00:00Z"
    )
    response = api.post(
        "/api/v1/consumer-mappings",
        {"consumer_key": "gw-1", "customer": "globex", "valid_from": "2026-10-15T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert f"#{existing.pk}" in response.json()["errors"]["valid_from"][0]
    assert ConsumerMapping.objects.count() == 1


def test_mappings_per_customer_and_closing_one(api):
    CustomerFactory(key="acme")
    created = api.post(
        "/api/v1/customers/acme/consumers",
        {"consumer_key": "gw-1", "valid_from": "2026-10-01T00:00:00Z"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    mapping_id = created.json()["id"]
    assert [
        m["consumer_key"] for m in api.get("/api/v1/customers/acme/consumers").json()["results"]
    ] == ["gw-1"]
    closed = api.patch(
        f"/api/v1/consumer-mappings/{mapping_id}",
        {"valid_to": "2026-11-01T00:00:00Z"},
        format="json",
    )
    assert closed.status_code == 200
    assert closed.json()["valid_to"] == "2026-11-01T00:00:00Z"
    listed = api.get("/api/v1/consumer-mappings", {"at": "2026-11-01T00:00:00Z"}).json()
    assert listed["count"] == 0


def test_move_and_resolve_a_consumer_key(api):
    acme = CustomerFactory(key="acme")
    CustomerFactory(key="globex-eu", parent=CustomerFactory(key="globex"))
    ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from="2026-10-01T00:00:00Z")
    moved = api.post(
        "/api/v1/consumers/gw-1/move",
        {"customer": "globex-eu", "at": "2026-10-15T00:00:00Z"},
        format="json",
    )
    assert moved.status_code == 201
    before = api.get("/api/v1/consumers/gw-1/customer", {"time": "2026-10-14T23:59:59Z"}).json()
    after = api.get("/api/v1/consumers/gw-1/customer", {"time": "2026-10-15T00:00:00Z"}).json()
    assert before["customer"] == "acme"
    assert (after["customer"], after["billing_account"]) == ("globex-eu", "globex")
    assert api.get("/api/v1/consumers/gw-1/customer", {"time": "yesterday"}).status_code == 400


def test_the_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/customers" in schema.content
    assert client.get("/api/docs/").status_code == 200
