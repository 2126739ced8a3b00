"""OpenMeter v3's paths for Kong's plugins: events answered 202, and the entitlement
access query over customer and consumer keys."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import EntitlementOverride
from metering.models import Event
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanVersionFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db

EVENTS = "/api/v3/openmeter/events"
QUERY = "/api/v3/openmeter/entitlement-access/query"
BATCH = "application/cloudevents-batch+json"


def post_events(client, body, content_type=BATCH):
    return client.generic("POST", EVENTS, json.dumps(body), content_type=content_type)


def query(client, keys, **extra):
    response = client.post(QUERY, {"customer": {"keys": keys}, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def by_key(body):
    return {r["customer"]["key"]: r for r in body["data"]}


# -- events -----------------------------------------------------------------------------


def test_v3_events_answer_202_with_an_empty_body_and_store_each_event_once(api_client_for):
    gateway = api_client_for("ingest")
    one = post_events(gateway, cloud_event("a"), content_type="application/cloudevents+json")
    assert (one.status_code, one.content) == (202, b"")
    batch = post_events(gateway, [cloud_event("a"), cloud_event("b"), cloud_event("b")])
    assert (batch.status_code, batch.content) == (202, b"")
    # the same (source, id) through v1 is the same event
    v1 = gateway.generic(
        "POST", "/api/v1/events", json.dumps([cloud_event("b")]), content_type=BATCH
    )
    assert v1.status_code == 204
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["a", "b"]


def test_a_bad_v3_batch_is_a_400_problem_and_stores_nothing(api_client_for):
    response = post_events(
        api_client_for("ingest"), [cloud_event("ok"), {**cloud_event("x"), "subject": ""}]
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert [e["index"] for e in response.json()["errors"]] == [1]
    assert Event.objects.count() == 0


def test_v3_events_need_a_key_with_the_ingest_scope(api_client_for):
    assert post_events(APIClient(), [cloud_event("a")]).status_code == 401
    assert post_events(api_client_for("read"), [cloud_event("a")]).status_code == 403


# -- the access query -----------------------------------------------------------------


@pytest.fixture
def world(db):
    """acme on a plan with a hard limit of 3 calls, sso off and a static config; its
    subsidiary acme-dev billed to it; globex on the same plan; consumer keys mapped now,
    and one whose mapping ended yesterday."""
    now = timezone.now()
    meter = MeterFactory()
    calls = FeatureFactory(name="", meter=meter)
    FeatureFactory(key="sso", name="", meter=meter)
    FeatureFactory(key="rate_config", name="", meter=meter)
    version = PlanVersionFactory(
        free=True,
        feature=calls,
        entitlements=(
            {
                "feature": "api_calls",
                "type": "metered",
                "limit": 3,
                "period": "monthly",
                "hard": True,
            },
            {"feature": "sso", "type": "boolean", "enabled": False},
            {"feature": "rate_config", "type": "static", "config": {"rps": 10}},
        ),
    )
    start = now - timedelta(hours=2)
    acme = CustomerFactory(key="acme", name="Acme")
    dev = CustomerFactory(key="acme-dev", parent=acme)
    globex = CustomerFactory(key="globex")
    for customer in (acme, globex):
        SubscriptionFactory(customer=customer, plan_version=version, start=start)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=start)
    ConsumerMappingFactory(consumer_key="acme-dev-gw", customer=dev, valid_from=start)
    ConsumerMappingFactory(
        consumer_key="old-gw", customer=globex, valid_from=start - timedelta(days=9), valid_to=start
    )
    return now


def use(ingest, subject, n, now, prefix="e"):
    ingest(
        *[
            cloud_event(
                f"{prefix}{subject}{i}",
                subject=subject,
                time=(now - timedelta(minutes=30 - i)).isoformat(),
            )
            for i in range(n)
        ],
        received_at=now,
    )


def test_a_customer_key_answers_every_feature_of_its_entitlements(api_client_for, world):
    body = query(api_client_for("read"), ["globex"])
    assert body["errors"] == []
    [result] = body["data"]
    assert result["matched"] == ["globex"]
    assert result["customer"]["key"] == "globex"
    assert {"id", "name", "created_at", "updated_at"} <= set(result["customer"])
    assert result["features"] == {
        "api_calls": {"has_access": True},
        "sso": {
            "has_access": False,
            "reason": {"code": "feature_unavailable", "message": "The feature is turned off."},
        },
        "rate_config": {"has_access": True},
    }
    assert result["updated_at"]
    assert body["meta"]["page"]["size"] == 1


def test_a_consumer_key_mapped_now_answers_for_its_customer(api_client_for, world):
    body = query(api_client_for("read"), ["acme-gw", "acme"])
    [result] = body["data"]  # two keys of one customer: one result naming both
    assert result["matched"] == ["acme-gw", "acme"]
    assert result["customer"]["key"] == "acme"


def test_unknown_keys_and_ended_mappings_are_errors_not_a_failed_request(api_client_for, world):
    body = query(api_client_for("read"), ["old-gw", "nobody", "globex"])
    assert [r["customer"]["key"] for r in body["data"]] == ["globex"]
    assert [(e["customer"], e["code"]) for e in body["errors"]] == [
        ("old-gw", "customer_not_found"),
        ("nobody", "customer_not_found"),
    ]


def test_a_customer_over_its_hard_limit_has_no_access_with_a_reason(api_client_for, ingest, world):
    use(ingest, "acme-gw", 2, world)
    use(ingest, "acme-dev-gw", 1, world)  # the subsidiary's usage counts on the account
    use(ingest, "globex", 2, world)  # an unmapped subject: nobody's usage
    body = by_key(query(api_client_for("read"), ["acme-gw", "acme-dev", "globex"]))
    for key in ("acme", "acme-dev"):
        access = body[key]["features"]["api_calls"]
        assert access["has_access"] is False
        assert access["reason"]["code"] == "usage_limit_reached"
    assert body["globex"]["features"]["api_calls"] == {"has_access": True}
    # the same answer as the v1 value check
    value = api_client_for("read").get("/api/v1/customers/acme-dev/entitlements/api_calls/value")
    assert value.json()["hasAccess"] is False


def test_a_subsidiary_billed_to_its_parent_has_the_parents_entitlements(api_client_for, world):
    body = by_key(query(api_client_for("read"), ["acme-dev-gw"]))
    assert set(body) == {"acme-dev"}
    assert body["acme-dev"]["matched"] == ["acme-dev-gw"]
    assert body["acme-dev"]["features"]["rate_config"] == {"has_access": True}
    assert body["acme-dev"]["features"]["api_calls"] == {"has_access": True}


def test_an_override_turning_a_boolean_on_gives_access(api_client_for, world):
    from customers.models import Customer
    from metering.models import Feature

    EntitlementOverride.objects.create(
        customer=Customer.objects.get(key="globex"),
        feature=Feature.objects.get(key="sso"),
        type="boolean",
        enabled=True,
    )
    body = by_key(query(api_client_for("read"), ["globex", "acme"]))
    assert body["globex"]["features"]["sso"] == {"has_access": True}
    assert body["acme"]["features"]["sso"]["has_access"] is False


def test_a_feature_filter_answers_those_features_only(api_client_for, world):
    body = query(api_client_for("read"), ["globex"], feature={"keys": ["sso", "nope"]})
    features = body["data"][0]["features"]
    assert set(features) == {"sso", "nope"}
    assert features["nope"]["reason"]["code"] == "feature_not_found"


def test_a_customer_without_a_subscription_has_no_entitlements(api_client_for, world):
    CustomerFactory(key="lonely")
    features = query(api_client_for("read"), ["lonely"])["data"][0]["features"]
    assert {k: v["has_access"] for k, v in features.items()} == {
        "api_calls": False,
        "sso": False,
        "rate_config": False,
    }


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"customer": {}},
        {"customer": {"keys": []}},
        {"customer": {"keys": "acme"}},
        {"customer": {"keys": [1]}},
        {"customer": {"keys": ["k"] * 1001}},
    ],
)
def test_a_query_without_a_list_of_keys_is_a_400_problem(api_client_for, world, body):
    response = api_client_for("read").post(QUERY, body, format="json")
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"


def test_the_access_query_needs_a_key_with_the_read_scope(api_client_for, world):
    body = {"customer": {"keys": ["acme"]}}
    assert APIClient().post(QUERY, body, format="json").status_code == 401
    assert api_client_for("ingest").post(QUERY, body, format="json").status_code == 403


@pytest.mark.django_db(transaction=True)  # committed, as in production: contexts are cached
def test_a_thousand_keys_are_answered_in_a_fixed_number_of_queries_and_fast(
    api_client_for, ingest, world
):
    """200 customers × 5 keys (its own and four consumer keys), every one on the plan
    with a hard limit: the poll Kong's plugin makes, batched."""
    from billing.models import PlanVersion

    version = PlanVersion.objects.get(plan__key="free")
    start = world - timedelta(hours=2)
    keys = []
    for n in range(200):
        customer = CustomerFactory(key=f"c{n}")
        SubscriptionFactory(customer=customer, plan_version=version, start=start)
        keys.append(customer.key)
        for m in range(4):
            ConsumerMappingFactory(consumer_key=f"c{n}-gw{m}", customer=customer, valid_from=start)
            keys.append(f"c{n}-gw{m}")
    use(ingest, "c0-gw0", 3, world)
    client = api_client_for("read")
    query(client, keys)  # warm: contexts cached, as for a gateway polling
    timings = []
    for _ in range(3):  # the best of three polls: what the work costs, not the machine's noise
        started = time.perf_counter()
        body = query(client, keys)
        timings.append(time.perf_counter() - started)
    elapsed = min(timings)
    print(f"\n1,000 keys answered in {', '.join(f'{t * 1000:.0f}' for t in timings)} ms")
    assert len(body["data"]) == 200 and body["errors"] == []
    assert body["data"][0]["features"]["api_calls"]["has_access"] is False
    assert all(len(r["matched"]) == 5 for r in body["data"])
    assert elapsed < 1.0  # the target is 200 ms; the bound leaves room for a busy machine


@pytest.mark.parametrize("key", ["nul\u0000key", "lone\ud800surrogate", "k" * 256])
def test_a_key_the_database_cannot_hold_is_a_400_not_a_server_error(api_client_for, world, key):
    raw = json.dumps({"customer": {"keys": [key]}})
    response = api_client_for("read").generic("POST", QUERY, raw, content_type="application/json")
    assert response.status_code == 400, response.content
