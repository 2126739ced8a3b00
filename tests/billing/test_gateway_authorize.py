"""Forward-auth for gateways: GET /api/v1/gateways/authorize answers 204 or a 403 saying why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from billing.models import PlanVersion
from customers.models import ConsumerMapping
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanVersionFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

URL = "/api/v1/gateways/authorize"
LIMIT = 3


@pytest.fixture
def free(db):
    """A Free plan with a hard limit of 3 calls; acme (and its subsidiary acme-dev, billed
    on it) subscribed; the gateway consumers acme-gw and acme-dev-gw mapped to them."""
    meter = MeterFactory()
    calls = FeatureFactory(name="", meter=meter)
    FeatureFactory(key="sso", name="", meter=meter)
    FeatureFactory(key="exports", name="", meter=meter)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    version = PlanVersionFactory(
        free=True,
        feature=calls,
        entitlements=(
            {"feature": "api_calls", "type": "metered", "limit": LIMIT, "hard": True},
            {"feature": "sso", "type": "boolean", "enabled": False},
        ),
    )
    parent = CustomerFactory(key="acme")
    child = CustomerFactory(key="acme-dev", parent=parent, bill_to_parent=True)
    SubscriptionFactory(customer=parent, plan_version=version, start=start)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=parent, valid_from=start)
    ConsumerMappingFactory(consumer_key="acme-dev-gw", customer=child, valid_from=start)
    return calls


def calls_made(ingest, subject: str, n: int) -> None:
    now = timezone.now()
    ingest(
        *(
            cloud_event(
                f"{subject}-{i}", subject=subject, time=(now - timedelta(seconds=i + 1)).isoformat()
            )
            for i in range(n)
        )
    )


def authorize(api, subject=None, feature="api_calls", via="header"):
    params = {"feature": feature} if feature else {}
    headers = {}
    if subject is not None and via == "header":
        headers["HTTP_X_BILLING_SUBJECT"] = subject
    elif subject is not None:
        params["subject"] = subject
    return api.get(URL, params, **headers)


def test_a_customer_under_its_limit_is_let_through(free, api_client_for, ingest):
    calls_made(ingest, "acme-gw", LIMIT - 1)
    response = authorize(api_client_for("read"), "acme-gw")
    assert response.status_code == 204, response.content
    assert response.content == b""


def test_a_customer_at_its_hard_limit_is_refused_saying_so(free, api, ingest):
    calls_made(ingest, "acme-gw", LIMIT)
    response = authorize(api, "acme-gw")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 403
    assert body["reason"] == "limit_reached"
    assert body["customer"] == "acme"
    assert "3" in body["detail"]


def test_a_subsidiary_is_checked_on_its_billing_account(free, api, ingest):
    calls_made(ingest, "acme-gw", LIMIT - 1)
    assert authorize(api, "acme-dev-gw").status_code == 204
    calls_made(ingest, "acme-dev-gw", 1)
    response = authorize(api, "acme-dev-gw")
    assert response.status_code == 403
    assert response.json()["customer"] == "acme-dev"


def test_a_disabled_or_missing_entitlement_is_refused(free, api):
    disabled = authorize(api, "acme-gw", feature="sso")
    assert (disabled.status_code, disabled.json()["reason"]) == (403, "disabled")
    missing = authorize(api, "acme-gw", feature="exports")
    assert (missing.status_code, missing.json()["reason"]) == (403, "no_entitlement")


def test_an_unknown_subject_is_refused(free, api):
    response = authorize(api, "nobody-gw")
    assert response.status_code == 403
    assert response.json()["reason"] == "unknown_subject"


def test_an_unknown_subject_is_let_through_when_the_setting_allows(free, api, settings):
    settings.GATEWAY_AUTHORIZE_UNKNOWN_SUBJECT = "allow"
    assert authorize(api, "nobody-gw").status_code == 204
    assert authorize(api, "nobody-gw", feature="no-such-feature").status_code == 404


def test_a_subject_mapped_later_is_unknown_now(free, api):
    ConsumerMappingFactory(
        consumer_key="future-gw",
        customer=CustomerFactory(key="future"),
        valid_from=timezone.now() + timedelta(days=1),
    )
    assert authorize(api, "future-gw").json()["reason"] == "unknown_subject"


def test_the_subject_may_come_as_a_query_parameter(free, api, ingest):
    assert authorize(api, "acme-gw", via="query").status_code == 204
    assert authorize(api, "nobody-gw", via="query").status_code == 403


def test_the_header_wins_over_the_query_parameter(free, api):
    response = api.get(
        URL,
        {"feature": "api_calls", "subject": "nobody-gw"},
        HTTP_X_BILLING_SUBJECT="acme-gw",
    )
    assert response.status_code == 204


def test_without_a_feature_the_request_is_invalid(free, api):
    response = authorize(api, "acme-gw", feature=None)
    assert response.status_code == 400
    assert "feature" in response.json()["errors"]


def test_without_a_subject_the_request_is_invalid(free, api):
    response = authorize(api, None)
    assert response.status_code == 400
    assert "subject" in response.json()["errors"]


def test_an_unknown_feature_is_not_found(free, api):
    response = authorize(api, "acme-gw", feature="no-such-feature")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_without_an_api_key_the_gateway_is_not_answered(free, client):
    response = client.get(URL, {"feature": "api_calls"}, HTTP_X_BILLING_SUBJECT="acme-gw")
    assert response.status_code == 401


def test_a_key_without_the_read_scope_is_forbidden(free, api_client_for):
    response = authorize(api_client_for("ingest"), "acme-gw")
    assert response.status_code == 403
    assert "reason" not in response.json()


@pytest.mark.django_db(transaction=True)
def test_a_consumer_moved_to_another_customer_is_checked_on_the_new_one_at_once(free, api, ingest):
    # committed, so the checks go through the entitlement cache
    calls_made(ingest, "acme-gw", LIMIT)
    assert authorize(api, "acme-gw").status_code == 403
    assert authorize(api, "newco-gw").json()["reason"] == "unknown_subject"

    mapping = ConsumerMapping.objects.get(consumer_key="acme-gw")
    moved_at = timezone.now()
    mapping.valid_to = moved_at
    mapping.save()
    newco = CustomerFactory(key="newco")
    SubscriptionFactory(
        customer=newco, plan_version=PlanVersion.objects.get(plan__key="free"), start=moved_at
    )
    ConsumerMappingFactory(consumer_key="acme-gw", customer=newco, valid_from=moved_at)
    ConsumerMappingFactory(consumer_key="newco-gw", customer=newco, valid_from=moved_at)

    assert authorize(api, "acme-gw").status_code == 204
    assert authorize(api, "newco-gw").status_code == 204
