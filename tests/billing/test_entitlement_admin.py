"""Entitlements in the admin: overrides, grants (made with a reason, voided with one) and
each customer's entitlement status page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

import billing.entitlements.admin  # noqa: F401  registers the admin (as billing.admin does)
from billing.catalog.services import subscription_create
from billing.entitlements.value import entitlement_value_for_key
from billing.models import EntitlementOverride, Grant
from metering.models import Feature
from metering.services import feature_create, meter_create
from tests.factories import ConsumerMappingFactory, CustomerFactory, PlanVersionFactory
from tests.metering.conftest import cloud_event

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=40)


@pytest.fixture(autouse=True)
def _admin_urls():
    """billing.admin imports billing.entitlements.admin, which registers its admin pages
    at autodiscovery. Should the URLs have been built before this module was imported
    anyway (when billing.admin does not import it), build them again."""
    from django.urls import NoReverseMatch, clear_url_caches

    try:
        reverse("admin:billing_entitlement_status", args=["x"])
    except NoReverseMatch:
        import importlib

        import config.urls

        importlib.reload(config.urls)
        clear_url_caches()


@pytest.fixture
def acme(db, ingest):
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", meter=meter)
    feature_create(key="sso", meter=meter)
    feature_create(key="rate_config", meter=meter)
    version = PlanVersionFactory(
        free=True,
        rate_cards=(),
        entitlements=(
            {
                "feature": "api_calls",
                "type": "metered",
                "limit": 5,
                "hard": True,
                "thresholds": [80, 100],
            },
            {"feature": "sso", "type": "boolean", "enabled": False},
            {"feature": "rate_config", "type": "static", "config": {"rps": 10}},
        ),  # fmt: skip
    )
    parent = CustomerFactory(key="acme", timezone="Europe/Berlin")
    CustomerFactory(key="acme-dev", parent=parent)
    subscription_create(customer=parent, plan_version=version, start=START)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=parent, valid_from=START)
    ingest(
        *[
            cloud_event(
                f"e{i}", subject="acme-gw", time=(NOW - timedelta(minutes=i + 1)).isoformat()
            )
            for i in range(3)
        ]
    )
    return parent, calls


def text(response) -> str:
    page = response.content.decode()
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def value(at=None):
    return entitlement_value_for_key(
        customer_key="acme", feature_key="api_calls", at=at or datetime.now(UTC)
    )


def test_the_status_page_lists_every_entitlement_with_its_numbers(admin_client, acme):
    response = admin_client.get(reverse("admin:billing_entitlement_status", args=["acme"]))
    assert response.status_code == 200
    page = text(response)
    assert "api_calls metered (hard) notify at 80%, 100% plan 5 3 0 2 0 has access" in page
    assert "sso boolean plan no access" in page
    assert 'rate_config static plan has access {"rps": 10}' in page
    assert "Europe/Berlin" in page  # the period in the customer's time zone, beside UTC
    assert "No grants." in page


def test_a_subsidiarys_status_is_its_billing_accounts(admin_client, acme):
    response = admin_client.get(reverse("admin:billing_entitlement_status", args=["acme-dev"]))
    assert response.status_code == 200
    assert "acme-dev is billed on acme" in text(response)


def test_the_status_page_answers_at_a_given_time_400s_for_a_bad_one_404s_for_an_unknown_customer(
    admin_client, acme
):
    url = reverse("admin:billing_entitlement_status", args=["acme"])
    before = (START - timedelta(days=1)).isoformat()
    assert "No entitlements at that instant" in text(admin_client.get(url, {"time": before}))
    assert admin_client.get(url, {"time": "whenever"}).status_code == 400
    missing = reverse("admin:billing_entitlement_status", args=["nobody"])
    assert admin_client.get(missing).status_code == 404


def test_the_override_and_grant_pages_load(admin_client, acme):
    customer, calls = acme
    override = EntitlementOverride.objects.create(
        customer=customer, feature=calls, limit=Decimal(9)
    )
    grant = Grant.objects.create(
        customer=customer, feature=calls, amount=Decimal(2), effective_at=NOW, reason="pilot"
    )
    for name, args in [
        ("admin:billing_entitlementoverride_changelist", []),
        ("admin:billing_entitlementoverride_add", []),
        ("admin:billing_entitlementoverride_change", [override.pk]),
        ("admin:billing_grant_changelist", []),
        ("admin:billing_grant_add", []),
        ("admin:billing_grant_change", [grant.pk]),
    ]:
        response = admin_client.get(reverse(name, args=args))
        assert response.status_code == 200, name
    changelist = text(admin_client.get(reverse("admin:billing_grant_changelist")))
    assert "pilot" in changelist and "in effect" in changelist
    status = text(admin_client.get(reverse("admin:billing_entitlement_status", args=["acme"])))
    assert "api_calls metered (soft) override 9 3 2 8 0 has access" in status


def test_an_operator_grants_units_with_a_reason_and_is_recorded_as_its_author(
    admin_client, admin_user, acme
):
    customer, calls = acme
    assert value().balance == 2
    response = admin_client.post(
        reverse("admin:billing_grant_add"),
        {
            "customer": customer.pk,
            "feature": calls.pk,
            "amount": "10",
            "priority": "1",
            "effective_at_0": (NOW - timedelta(days=1)).strftime("%Y-%m-%d"),
            "effective_at_1": "00:00:00",
            "expires_at_0": "",
            "expires_at_1": "",
            "reason": "Sorry for the outage",
        },
    )
    assert response.status_code == 302, text(response)
    grant = Grant.objects.get()
    assert (grant.amount, grant.reason, grant.created_by) == (
        Decimal(10),
        "Sorry for the outage",
        admin_user,
    )
    assert value().balance == 12
    assert LogEntry.objects.filter(object_id=str(grant.pk)).exists()


def test_a_grant_needs_a_reason_a_positive_amount_and_a_billing_account(admin_client, acme):
    customer, calls = acme
    dev = customer.subsidiaries.get()
    response = admin_client.post(
        reverse("admin:billing_grant_add"),
        {
            "customer": dev.pk,
            "feature": calls.pk,
            "amount": "-1",
            "priority": "1",
            "effective_at_0": NOW.strftime("%Y-%m-%d"),
            "effective_at_1": "00:00:00",
            "reason": "",
        },
    )
    assert response.status_code == 200
    page = text(response)
    assert "acme-dev is billed on acme" in page
    assert "positive number of units" in page
    assert "This field is required" in page
    assert not Grant.objects.exists()


def test_voiding_grants_asks_for_a_reason_and_stops_them_counting(admin_client, acme):
    customer, calls = acme
    grants = [
        Grant.objects.create(
            customer=customer,
            feature=calls,
            amount=Decimal(n),
            effective_at=NOW - timedelta(days=1),
            reason="promo",
        )
        for n in (3, 4)
    ]
    assert value().balance == 9
    response = admin_client.post(
        reverse("admin:billing_grant_changelist"),
        {"action": "void_selected", "_selected_action": [g.pk for g in grants]},
    )
    assert response.status_code == 302
    confirm = response["Location"]
    page = admin_client.get(confirm)
    assert page.status_code == 200 and "cannot be undone" in text(page)
    assert admin_client.post(confirm, {"reason": ""}).status_code == 200  # a reason is required
    assert not Grant.objects.filter(voided_at__isnull=False).exists()
    response = admin_client.post(confirm, {"reason": "Promo ended early"})
    assert response.status_code == 302
    for grant in Grant.objects.all():
        assert grant.voided_at is not None
        assert grant.reason == "promo · voided: Promo ended early"
        assert LogEntry.objects.filter(
            object_id=str(grant.pk), change_message="Voided: Promo ended early"
        ).exists()
    assert value().balance == 2
    # voiding again does nothing, and says so
    assert "already voided" in text(admin_client.get(confirm))


def test_a_voided_grant_page_is_read_only_and_offers_no_void(admin_client, acme):
    customer, calls = acme
    grant = Grant.objects.create(
        customer=customer, feature=calls, amount=Decimal(1), effective_at=START, reason="x"
    )
    page = admin_client.get(reverse("admin:billing_grant_change", args=[grant.pk])).content.decode()
    assert 'id="grant-void"' in page and 'name="amount"' not in page
    grant.voided_at = NOW
    grant.save()
    page = admin_client.get(reverse("admin:billing_grant_change", args=[grant.pk])).content.decode()
    assert 'id="grant-void"' not in page and 'id="entitlement-status"' in page


def test_an_override_is_refused_on_a_subsidiary_and_checked_for_its_type(admin_client, acme):
    customer, calls = acme
    dev = customer.subsidiaries.get()
    response = admin_client.post(
        reverse("admin:billing_entitlementoverride_add"),
        {
            "customer": dev.pk,
            "feature": calls.pk,
            "type": "boolean",
            "limit": "5",
            "period": "monthly",
            "enabled": "on",
            "config": "{}",
            "thresholds": "[]",
            "reason": "",
        },
    )
    assert response.status_code == 200
    page = text(response)
    assert "acme-dev is billed on acme" in page and "Only a metered entitlement has a limit" in page
    response = admin_client.post(
        reverse("admin:billing_entitlementoverride_add"),
        {
            "customer": customer.pk,
            "feature": calls.pk,
            "type": "metered",
            "limit": "100",
            "period": "monthly",
            "hard": "on",
            "enabled": "on",
            "config": "{}",
            "thresholds": "[50]",
            "reason": "enterprise pilot",
        },
    )
    assert response.status_code == 302, text(response)
    assert value().balance == 97


def test_a_viewer_sees_the_status_page_but_cannot_void(client, acme):
    from django.contrib.auth.models import Group, User

    from audit.roles import VIEWER, roles_sync

    roles_sync()
    viewer = User.objects.create_user("vera", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWER))
    client.force_login(viewer)
    assert client.get(reverse("admin:billing_entitlement_status", args=["acme"])).status_code == 200
    assert client.get(reverse("admin:billing_grant_void") + "?ids=1").status_code == 403
    assert Feature.objects.filter(key="api_calls").exists()
