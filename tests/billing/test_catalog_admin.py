"""Billing in the admin: every page loads with data, prices change through plan_save,
subscriptions move and end through their forms, and the upcoming invoice reads clearly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from billing.catalog.prices import price_describe, unit_nouns
from billing.catalog.services import (
    PlanVersionSpec,
    RateCardSpec,
    custom_contract_create,
    plan_save,
    subscription_create,
)
from billing.models import (
    BillingProfile,
    Plan,
    PlanVersion,
    Subscription,
    TaxRate,
    WebhookEndpoint,
)
from metering.services import feature_create, meter_create
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db
NOV = datetime(2026, 11, 1, tzinfo=UTC)
GRADUATED = {
    "model": "graduated",
    "tiers": [{"up_to": 10, "unit_price": "1.00"}, {"up_to": None, "unit_price": "0.10"}],
}
BILLING_MODELS = [Plan, PlanVersion, TaxRate, BillingProfile, Subscription, WebhookEndpoint]


@pytest.fixture
def calls(db):
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    return feature_create(key="api_calls", name="API calls", meter=meter)


def pro(calls, key="pro") -> PlanVersion:
    return plan_save(
        key=key,
        name=key.title(),
        spec=PlanVersionSpec(
            currency="USD",
            cadence="monthly",
            minimum_commitment=Decimal(0),
            rate_cards=(
                RateCardSpec(
                    key="platform",
                    name="Platform fee",
                    price={"model": "flat", "amount": "100.00", "timing": "in_arrears"},
                ),
                RateCardSpec(key="calls", name="API calls", feature=calls, price=GRADUATED),
            ),
        ),
    )[1]


@pytest.fixture
def globex(calls):
    """Globex and its subsidiary on Pro since three days ago, with sales tax, a custom
    contract for another customer, and a webhook endpoint."""
    parent = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=parent)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    ConsumerMappingFactory(consumer_key="hq", customer=parent, valid_from=start)
    ConsumerMappingFactory(consumer_key="eu", customer=eu, valid_from=start)
    version = pro(calls)
    subscription_create(customer=parent, plan_version=version, start=start)
    profile = BillingProfile.objects.create(customer=parent)
    profile.tax_rates.add(
        TaxRate.objects.create(key="sales", name="Sales tax", percentage=Decimal("10"))
    )
    acme = CustomerFactory(key="acme")
    custom_contract_create(
        base=version,
        customer=acme,
        changes={"prices": {"calls": {"model": "unit", "unit_price": "0.5"}}},
    )
    WebhookEndpoint.objects.create(
        key="ops",
        url="https://example.com/hooks",
        secret="whsec_abcdefghijklmnop1234",
        events=["invoice.issued"],
    )
    return parent


def prices_post(version: PlanVersion | None = None, **changes) -> dict:
    """The "Edit prices" form as a browser posts it, with the version's cards."""
    cards = [
        {
            "key": c.key,
            "name": c.name,
            "feature": c.feature.key if c.feature else "",
            "price": json.dumps(c.price),
        }
        for c in (version.rate_cards.order_by("position") if version else [])
    ]
    cards += changes.pop("cards", [])
    data = {
        "name": "Pro",
        "description": "",
        "currency": "USD",
        "cadence": "monthly",
        "minimum_commitment": "0",
        "cards-TOTAL_FORMS": str(len(cards)),
        "cards-INITIAL_FORMS": str(len(cards)),
        "cards-MIN_NUM_FORMS": "0",
        "cards-MAX_NUM_FORMS": "1000",
        **changes,
    }
    for i, card in enumerate(cards):
        data.update({f"cards-{i}-{k}": v for k, v in card.items()})
    return data


def test_every_billing_admin_page_loads_for_a_superuser(admin_client, admin_user, globex):
    request = RequestFactory().get("/")
    request.user = admin_user
    for model in BILLING_MODELS:
        model_admin = admin.site._registry[model]
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert admin_client.get(changelist).status_code == 200, changelist
        assert admin_client.get(changelist, {"q": "globex"}).status_code == 200, changelist
        if model_admin.has_add_permission(request):
            add = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
            assert admin_client.get(add).status_code == 200, add
        for obj in model.objects.all():
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            assert admin_client.get(change).status_code == 200, change
    sub = Subscription.objects.get()
    plan = Plan.objects.get()
    for url in [
        reverse("admin:billing_plan_prices", args=[plan.pk]),
        reverse("admin:billing_subscription_change_plan", args=[sub.pk]),
        reverse("admin:billing_subscription_cancel") + f"?ids={sub.pk}",
        reverse("admin:billing_upcoming_invoice", args=["globex"]),
        reverse("admin:billing_upcoming_invoice", args=["acme"]),  # no subscription
    ]:
        assert admin_client.get(url).status_code == 200, url


def test_the_plan_page_lists_its_versions_with_subscribers_and_custom_contracts(
    admin_client, globex
):
    page = admin_client.get(
        reverse("admin:billing_plan_change", args=[Plan.objects.get().pk])
    ).content.decode()
    assert "v1" in page and "v2" in page and "acme" in page
    assert reverse("admin:billing_plan_prices", args=[Plan.objects.get().pk]) in page


def test_editing_the_prices_of_a_subscribed_plan_saves_a_new_version(admin_client, globex):
    v1 = PlanVersion.objects.get(version=1)
    data = prices_post(v1, minimum_commitment="250")
    data["cards-1-price"] = '{"model": "unit", "unit_price": 0.02}'  # a bare number, read exactly

    response = admin_client.post(
        reverse("admin:billing_plan_prices", args=[v1.plan_id]), data, follow=True
    )

    assert response.status_code == 200
    assert "saved as version 3" in response.content.decode()  # v2 is acme's custom contract
    v3 = PlanVersion.objects.get(version=3)
    assert v3.minimum_commitment.amount == Decimal("250")
    assert v3.rate_cards.get(key="calls").price == {"model": "unit", "unit_price": "0.02"}
    assert Subscription.objects.get().plan_version == v1


def test_price_errors_from_rate_cards_validate_show_on_their_row(admin_client, globex):
    v1 = PlanVersion.objects.get(version=1)
    data = prices_post(v1)
    data["cards-1-price"] = '{"model": "graduated", "tiers": [{"up_to": "x", "unit_price": "1"}]}'
    data["cards-0-feature"] = "api_calls"

    page = admin_client.post(
        reverse("admin:billing_plan_prices", args=[v1.plan_id]), data
    ).content.decode()

    assert "tiers[0].up_to" in page
    assert "a flat fee is not priced on a feature" in page
    assert PlanVersion.objects.count() == 2


def test_a_plan_is_added_through_the_prices_form(admin_client, calls):
    data = prices_post(
        key="starter",
        name="Starter",
        cards=[
            {
                "key": "",
                "name": "",
                "feature": "api_calls",
                "price": '{"model": "unit", "unit_price": "0.01"}',
            }
        ],
    )
    data["cards-INITIAL_FORMS"] = "0"

    response = admin_client.post(reverse("admin:billing_plan_add"), data)

    assert response.status_code == 302, response.content.decode()
    version = PlanVersion.objects.get(plan__key="starter")
    assert [c.key for c in version.rate_cards.all()] == ["api_calls"]


def test_renaming_a_plan_keeps_its_version(admin_client, globex):
    plan = Plan.objects.get()
    data = {
        "name": "Pro 2026",
        "description": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    response = admin_client.post(reverse("admin:billing_plan_change", args=[plan.pk]), data)
    assert response.status_code == 302, response.content.decode()
    plan.refresh_from_db()
    assert plan.name == "Pro 2026" and plan.versions.count() == 2


def test_subscribing_through_the_admin_calls_the_service_and_shows_its_errors(admin_client, globex):
    url = reverse("admin:billing_subscription_add")
    data = {
        "customer": CustomerFactory(key="initech").pk,
        "plan_version": PlanVersion.objects.get(version=1).pk,
        "start": "2026-11-01 00:00:00",
    }
    assert admin_client.post(url, data).status_code == 302
    assert Subscription.objects.get(customer__key="initech").anchor == NOV
    page = admin_client.post(url, data).content.decode()
    assert "already has a subscription" in page
    data["customer"] = globex.subsidiaries.get().pk
    assert "billed on globex" in admin_client.post(url, data).content.decode()


def test_the_change_plan_action_moves_the_subscription(admin_client, calls, globex):
    sub = Subscription.objects.get()
    scale = pro(calls, key="scale")
    response = admin_client.post(
        reverse("admin:billing_subscription_changelist"),
        {"action": "change_plan", "_selected_action": [sub.pk]},
    )
    assert response.status_code == 302
    assert response.url == reverse("admin:billing_subscription_change_plan", args=[sub.pk])
    at = sub.start + timedelta(days=1)

    response = admin_client.post(
        response.url,
        {"plan_version": scale.pk, "at": at.strftime("%Y-%m-%d %H:%M:%S"), "timing": "immediately"},
    )

    assert response.status_code == 302
    sub.refresh_from_db()
    assert sub.end == at
    assert Subscription.objects.get(start=at).plan_version == scale


def test_the_cancel_action_ends_each_selected_subscription_and_reports_it(admin_client, globex):
    sub = Subscription.objects.get()
    response = admin_client.post(
        reverse("admin:billing_subscription_changelist"),
        {"action": "cancel", "_selected_action": [sub.pk]},
    )
    assert response.status_code == 302
    at = sub.start + timedelta(days=1)

    done = admin_client.post(
        response.url, {"at": at.strftime("%Y-%m-%d %H:%M:%S"), "timing": "immediately"}, follow=True
    )

    sub.refresh_from_db()
    assert sub.end == at
    assert f"globex: ends {at:%Y-%m-%d %H:%M} utc" in done.content.decode().lower()


def test_the_upcoming_invoice_page_shows_lines_by_subsidiary_with_tiers_and_totals(
    admin_client, ingest, globex
):
    now = timezone.now()
    ingest(
        *[
            cloud_event(f"hq-{i}", subject="hq", time=(now - timedelta(hours=1)).isoformat())
            for i in range(5)
        ],
        *[
            cloud_event(f"eu-{i}", subject="eu", time=(now - timedelta(hours=1)).isoformat())
            for i in range(15)
        ],
    )

    page = admin_client.get(
        reverse("admin:billing_upcoming_invoice", args=["globex-eu"])
    ).content.decode()

    assert "globex-eu is billed on" in page
    assert "<h2>globex (billing account)</h2>" in page and "<h2>globex-eu</h2>" in page
    assert "2.75" in page and "8.25" in page  # 20 calls = 11.00, shared 5 : 15
    assert "share of 11.00 USD for 20 across the group" in page
    assert "Sales tax (10%)" in page and "11.10" in page
    assert "122.10 USD" in page


def test_the_upcoming_invoice_page_says_when_there_is_no_subscription(admin_client, globex):
    page = admin_client.get(
        reverse("admin:billing_upcoming_invoice", args=["acme"])
    ).content.decode()
    assert "acme has no subscription" in page
    assert (
        admin_client.get(reverse("admin:billing_upcoming_invoice", args=["nobody"])).status_code
        == 404
    )


def test_customers_are_picked_by_autocomplete_on_subscriptions_and_profiles(admin_client, globex):
    for model_name in ("subscription", "billingprofile"):
        found = admin_client.get(
            reverse("admin:autocomplete"),
            {
                "app_label": "billing",
                "model_name": model_name,
                "field_name": "customer",
                "term": "glob",
            },
        ).json()
        assert {r["text"] for r in found["results"]} == {"Globex (globex)", "Globex Eu (globex-eu)"}


def test_the_customer_page_links_to_its_upcoming_invoice(admin_client, globex):
    page = admin_client.get(
        reverse("admin:customers_customer_change", args=[globex.pk])
    ).content.decode()
    assert reverse("admin:billing_upcoming_invoice", args=["globex"]) in page
    assert admin_client.get(reverse("admin:customers_customer_add")).status_code == 200


def test_webhook_secrets_are_masked_in_the_list(admin_client, globex):
    page = admin_client.get(reverse("admin:billing_webhookendpoint_changelist")).content.decode()
    assert "whsec_••••1234" in page and "abcdefghijklmnop" not in page


def test_a_tax_exempt_profile_needs_a_reason(admin_client, globex):
    profile = BillingProfile.objects.get()
    url = reverse("admin:billing_billingprofile_change", args=[profile.pk])
    data = {
        "customer": globex.pk,
        "tax_exempt": "on",
        "tax_exempt_reason": "",
        "net_terms_days": "30",
    }
    assert "Say why the customer is exempt" in admin_client.post(url, data).content.decode()


def words(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def test_the_plan_version_page_reads_its_prices_in_words_with_tiers_as_a_table(
    admin_client, globex
):
    version = PlanVersion.objects.get(customer__isnull=True)
    html = admin_client.get(
        reverse("admin:billing_planversion_change", args=[version.pk])
    ).content.decode()
    text = words(html)
    assert "$100.00 flat fee per period, billed in arrears" in text
    assert (
        "Graduated per API call: each tier prices the API calls that fall in it "
        "API calls Per unit Flat fee 1 – 10 $1.00 — over 10 $0.10 —"
    ) in text
    assert "&quot;model&quot;: &quot;graduated&quot;" in html  # the stored form, for "Edit prices"


@pytest.mark.parametrize(
    ("price", "reads"),
    [
        (
            {"model": "unit", "unit_price": "0.002", "included": 1000},
            "$0.002 per API call, first 1,000 included",
        ),
        ({"model": "unit", "unit_price": "0"}, "Free: no charge per API call"),
        (
            {
                "model": "package",
                "package_size": 100000,
                "package_price": "1.00",
                "included": 2000000,
            },
            "$1.00 per 100,000 API calls (a started package counts in full), first 2,000,000 included",
        ),
        (
            {"model": "unit", "unit_price": "0.0005", "minimum": "10", "maximum": "1000.00"},
            "$0.0005 per API call, at least $10.00 per period, at most $1,000.00 per period",
        ),
        (
            {"model": "flat", "amount": "49", "timing": "in_advance"},
            "$49.00 flat fee per period, billed in advance",
        ),
        (
            {
                "model": "graduated",
                "tiers": [
                    {"up_to": 1000, "unit_price": "0.01", "flat_price": "5"},
                    {"up_to": None, "unit_price": "0.005"},
                ],
                "included": 100,
            },
            "Graduated per API call: each tier prices the API calls that fall in it, "
            "first 100 included, "
            "the first tier's $5.00 flat fee is charged even with no usage",
        ),
    ],
)
def test_a_price_reads_as_a_sentence_with_money_as_the_invoice_prints_it(price, reads):
    assert (
        price_describe(price, currency="USD", unit="API call", units="API calls").summary == reads
    )


def test_volume_tiers_read_as_ranges_of_whole_units():
    price = {
        "model": "volume",
        "tiers": [
            {"up_to": 1000000, "unit_price": "0.0015"},
            {"up_to": 10000000, "unit_price": "0.001", "flat_price": "25"},
            {"up_to": None, "unit_price": "0.0005"},
        ],
    }
    described = price_describe(price, currency="EUR", unit="call", units="calls")
    assert described.summary == "Volume per call: the tier the total reaches prices all calls"
    assert [(t.units, t.unit_price, t.flat_price) for t in described.tiers] == [
        ("1 – 1,000,000", "€0.0015", ""),
        ("1,000,001 – 10,000,000", "€0.001", "€25.00"),
        ("over 10,000,000", "€0.0005", ""),
    ]


def test_a_broken_price_is_shown_as_stored_not_raised():
    described = price_describe({"model": "bogus"}, currency="USD")
    assert not described.valid and '{"model": "bogus"}' in described.summary


@pytest.mark.parametrize(
    ("name", "nouns"),
    [
        ("API calls", ("API call", "API calls")),
        ("LLM input tokens", ("LLM input token", "LLM input tokens")),
        ("Flights API calls", ("flights API call", "flights API calls")),
        ("Queries", ("query", "queries")),
        ("api_calls", ("api call", "api calls")),
        ("Storage", ("unit of storage", "units of storage")),
        ("", ("unit", "units")),
    ],
)
def test_a_features_name_gives_the_words_for_one_unit_and_many(name, nouns):
    assert unit_nouns(name) == nouns
