from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import EntitlementOverride, Grant
from billing.services import PlanVersionSpec, RateCardSpec, plan_save, subscription_create
from customers.models import Customer
from metering.services import feature_create, meter_create
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event

NOV = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def free(db):
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", meter=meter)
    feature_create(key="sso", meter=meter)
    feature_create(key="rate_config", meter=meter)
    version = plan_save(
        key="free",
        name="Free",
        spec=PlanVersionSpec(
            currency="USD",
            cadence="monthly",
            minimum_commitment=Decimal(0),
            rate_cards=(
                RateCardSpec(
                    key="calls", feature=calls, price={"model": "unit", "unit_price": "0"}
                ),
            ),
            entitlements=(
                {
                    "feature": "api_calls",
                    "type": "metered",
                    "limit": 5,
                    "period": "monthly",
                    "hard": True,
                    "thresholds": [80, 100],
                },
                {"feature": "sso", "type": "boolean", "enabled": False},
                {"feature": "rate_config", "type": "static", "config": {"rps": 10}},
            ),
        ),
    )[1]
    parent = CustomerFactory(key="acme")
    child = CustomerFactory(key="acme-dev", parent=parent)
    subscription_create(customer=parent, plan_version=version, start=NOV)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=parent, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="acme-dev-gw", customer=child, valid_from=NOV)
    return calls


def value(api, customer, feature, time=None):
    params = {"time": time} if time else {}
    response = api.get(f"/api/v1/customers/{customer}/entitlements/{feature}/value", params)
    assert response.status_code == 200, response.content
    return response.json()


def send(ingest, n, subject="acme-gw", start=NOV + timedelta(days=1), prefix="e"):
    ingest(
        *[
            cloud_event(
                f"{prefix}{subject}{i}",
                subject=subject,
                time=(start + timedelta(minutes=i)).isoformat(),
            )
            for i in range(n)
        ]
    )


def test_a_hard_limit_cuts_access_at_the_limit_counting_events_not_yet_rolled_up(api, ingest, free):
    at = "2026-11-10T00:00:00Z"
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": True,
        "balance": 5,
        "usage": 0,
        "overage": 0,
    }
    send(ingest, 3)
    send(ingest, 1, subject="acme-dev-gw")  # a subsidiary's usage counts for the account
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": True,
        "balance": 1,
        "usage": 4,
        "overage": 0,
    }
    send(ingest, 3, prefix="x")
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": False,
        "balance": 0,
        "usage": 7,
        "overage": 2,
    }
    assert (
        value(api, "acme-dev", "api_calls", at)["hasAccess"] is False
    )  # checked on the billing account
    assert (
        value(api, "acme", "api_calls", "2026-12-02T00:00:00Z")["usage"] == 0
    )  # next usage period


def test_grants_add_units_and_only_rollover_grants_outlive_their_period(api, ingest, free):
    send(ingest, 7)
    Grant.objects.create(
        customer=Customer.objects.get(key="acme"),
        feature=free,
        amount=Decimal(4),
        effective_at=NOV + timedelta(days=2),
        rollover=True,
    )
    assert value(api, "acme", "api_calls", "2026-11-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 2,
        "usage": 7,
        "overage": 0,
    }
    # December: the rollover grant keeps what November's overage (2) left: 2 units
    assert value(api, "acme", "api_calls", "2026-12-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 7,
        "usage": 0,
        "overage": 0,
    }


def test_soft_limits_keep_access_and_report_overage(api, ingest, free):
    from customers.models import Customer

    EntitlementOverride.objects.create(
        customer=Customer.objects.get(key="acme"), feature=free, limit=Decimal(2), hard=False
    )
    send(ingest, 3)
    assert value(api, "acme", "api_calls", "2026-11-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 0,
        "usage": 3,
        "overage": 1,
    }


def test_boolean_and_static_entitlements(api, free):
    assert value(api, "acme", "sso") == {"hasAccess": False}
    assert value(api, "acme", "rate_config") == {"hasAccess": True, "config": {"rps": 10}}


def test_unknown_customer_or_feature_is_404_and_no_entitlement_is_no_access(api, free):
    assert api.get("/api/v1/customers/nobody/entitlements/api_calls/value").status_code == 404
    assert api.get("/api/v1/customers/acme/entitlements/nothing/value").status_code == 404
    CustomerFactory(key="loner")
    assert value(api, "loner", "api_calls")["hasAccess"] is False
    assert (
        api.get("/api/v1/customers/acme/entitlements/api_calls/value", {"time": "soon"}).status_code
        == 400
    )


def test_bulk_checks_answer_each_pair(api, ingest, free):
    send(ingest, 2)
    response = api.post(
        "/api/v1/entitlements/check",
        {
            "checks": [
                {"customer": "acme", "feature": "api_calls", "time": "2026-11-10T00:00:00Z"},
                {"customer": "acme", "feature": "sso"},
                {"customer": "ghost", "feature": "sso"},
            ]
        },
        format="json",
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["usage"] == 2 and results[1]["hasAccess"] is False and "error" in results[2]
    listing = api.get(
        "/api/v1/customers/acme-dev/entitlements", {"time": "2026-11-10T00:00:00Z"}
    ).json()
    assert listing["billingAccount"] == "acme"
    assert [e["feature"] for e in listing["entitlements"]] == ["api_calls", "rate_config", "sso"]
