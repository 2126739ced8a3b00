"""The billing catalog API: plans by key (versioned), tax rates, subscriptions, custom
contracts and the upcoming invoice.

(Named apart from tests/metering/test_catalog_api.py: test modules share one namespace.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import include, path
from django.utils import timezone

from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_save, subscription_create
from billing.models import BillingProfile, PlanVersion, Subscription, TaxRate
from config.urls import urlpatterns as project_urlpatterns
from metering.services import feature_create, meter_create, usage_rollup
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event


def _mounted(module: str) -> bool:
    return any(
        getattr(getattr(p, "urlconf_name", None), "__name__", None) == module
        for p in project_urlpatterns
    )


# The project's URLs plus the billing catalog API where config/urls.py mounts it, until it does.
urlpatterns = [
    *(
        []
        if _mounted("billing.catalog.api.urls")
        else [path("api/v1/", include("billing.catalog.api.urls"))]
    ),
    *project_urlpatterns,
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
GRADUATED = {
    "model": "graduated",
    "tiers": [{"up_to": 10, "unit_price": "1.00"}, {"up_to": None, "unit_price": "0.10"}],
}


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


@pytest.fixture
def calls(db):
    meter = meter_create(
        key="api_requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"status": "$.status"},
    )
    return feature_create(
        key="api_calls", name="API calls", meter=meter, filters={"status": ["200"]}
    )


def plan_body(unit_price="0.002", **changes) -> dict:
    return {
        "key": "pro",
        "name": "Pro",
        "currency": "usd",
        "cadence": "monthly",
        "minimum_commitment": "100.00",
        "rate_cards": [
            {
                "key": "platform",
                "name": "Platform fee",
                "price": {"model": "flat", "amount": "49.00", "timing": "in_arrears"},
            },
            {"feature": "api_calls", "price": {"model": "unit", "unit_price": unit_price}},
        ],
        **changes,
    }


def pro(calls, unit_price="0.01", key="pro") -> PlanVersion:
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
                RateCardSpec(key="calls", feature=calls, price=GRADUATED),
            ),
        ),
    )[1]


# ------------------------------------------------------------------------ plans


def test_a_plan_is_created_and_read_back_by_key_with_money_as_strings(api, calls):
    created = api.post("/api/v1/plans", plan_body(), format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["version"] == 1 and body["change"] == "created" and body["new_version"] is True
    assert body["currency"] == "USD" and body["minimum_commitment"] == "100.00"
    assert body["rate_cards"] == [
        {
            "key": "platform",
            "name": "Platform fee",
            "feature": None,
            "price": {"model": "flat", "amount": "49", "timing": "in_arrears"},
        },
        {
            "key": "api_calls",  # a usage card's key defaults to its feature's
            "name": "",
            "feature": "api_calls",
            "price": {"model": "unit", "unit_price": "0.002"},
        },
    ]
    read = api.get("/api/v1/plans/pro").json()
    assert read["version"] == 1 and read["rate_cards"] == body["rate_cards"]
    assert "change" not in read
    assert [p["key"] for p in api.get("/api/v1/plans").json()["results"]] == ["pro"]


def test_creating_a_plan_whose_key_exists_is_refused(api, calls):
    api.post("/api/v1/plans", plan_body(), format="json")
    body = problem(api.post("/api/v1/plans", plan_body(), format="json"), 400)
    assert "PUT /api/v1/plans/pro" in body["errors"]["key"][0]


def test_changing_a_plan_without_subscribers_changes_its_version_in_place(api, calls):
    api.post("/api/v1/plans", plan_body(), format="json")

    body = api.put("/api/v1/plans/pro", plan_body("0.003"), format="json").json()

    assert (body["version"], body["change"], body["new_version"]) == (1, "updated", False)
    assert body["rate_cards"][1]["price"]["unit_price"] == "0.003"
    assert PlanVersion.objects.count() == 1


def test_changing_a_subscribed_plan_makes_a_new_version_and_subscribers_stay(api, calls):
    api.post("/api/v1/plans", plan_body(), format="json")
    acme = CustomerFactory(key="acme")
    api.post(
        "/api/v1/subscriptions",
        {"customer": "acme", "plan": "pro", "start": "2026-11-01T00:00:00Z"},
        format="json",
    )

    body = api.put("/api/v1/plans/pro", plan_body("0.003"), format="json").json()

    assert (body["version"], body["change"], body["new_version"]) == (2, "new_version", True)
    assert Subscription.objects.get(customer=acme).plan_version.version == 1
    versions = api.get("/api/v1/plans/pro/versions").json()["results"]
    assert [(v["version"], v["subscribers"], v["current"]) for v in versions] == [
        (1, 1, False),
        (2, 0, True),
    ]
    assert versions[0]["rate_cards"][1]["price"]["unit_price"] == "0.002"
    assert api.get("/api/v1/plans/pro/versions/2").json()["current"] is True


def test_an_identical_put_changes_nothing(api, calls):
    api.post("/api/v1/plans", plan_body(), format="json")
    body = api.put("/api/v1/plans/pro", plan_body(), format="json").json()
    assert (body["version"], body["change"], body["new_version"]) == (1, "unchanged", False)


def test_put_on_an_unknown_plan_creates_it(api, calls):
    response = api.put("/api/v1/plans/pro", plan_body(), format="json")
    assert response.status_code == 201 and response.json()["change"] == "created"


def test_invalid_rate_cards_are_refused_with_errors_by_path_and_nothing_stored(api, calls):
    body = plan_body()
    body["minimum_commitment"] = 100.5
    body["rate_cards"][1]["price"] = {
        "model": "graduated",
        "tiers": [{"up_to": 10.5, "unit_price": "1"}, {"up_to": None, "unit_price": "x"}],
    }
    body["rate_cards"].append({"feature": "nope", "price": {"model": "unit", "unit_price": "1"}})

    errors = problem(api.post("/api/v1/plans", body, format="json"), 400)["errors"]

    assert set(errors) == {"minimum_commitment", "rate_cards[2].feature"}
    assert "string" in errors["minimum_commitment"][0]
    del body["rate_cards"][2]
    body["minimum_commitment"] = "100"

    errors = problem(api.post("/api/v1/plans", body, format="json"), 400)["errors"]

    assert set(errors) == {
        "rate_cards[1].price.tiers[0].up_to",
        "rate_cards[1].price.tiers[1].unit_price",
    }, errors
    assert "string" in errors["rate_cards[1].price.tiers[0].up_to"][0]
    assert not PlanVersion.objects.exists()


def test_a_flat_fee_on_a_feature_and_a_usage_price_without_one_are_refused(api, calls):
    body = plan_body()
    body["rate_cards"][0]["feature"] = "api_calls"
    body["rate_cards"][1] = {"key": "calls", "price": {"model": "unit", "unit_price": "1"}}
    errors = problem(api.post("/api/v1/plans", body, format="json"), 400)["errors"]
    assert set(errors) == {"rate_cards[0].feature", "rate_cards[1].feature"}, errors


def test_reads_need_the_read_scope_and_writes_the_write_scope(api_client_for, client, calls):
    reader = api_client_for("read")
    assert reader.get("/api/v1/plans").status_code == 200
    assert problem(reader.post("/api/v1/plans", plan_body(), format="json"), 403)
    assert problem(api_client_for("ingest").get("/api/v1/plans"), 403)
    assert problem(client.get("/api/v1/plans"), 401)
    writer = api_client_for("write")
    assert writer.post("/api/v1/plans", plan_body(), format="json").status_code == 201


# ------------------------------------------------------------------------ tax rates


def test_tax_rates_are_created_listed_and_changed_by_key(api):
    created = api.post(
        "/api/v1/tax-rates",
        {"key": "de-vat", "name": "VAT 19%", "percentage": "19", "inclusive": True},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json() == {
        "key": "de-vat",
        "name": "VAT 19%",
        "percentage": "19",
        "inclusive": True,
    }

    changed = api.patch("/api/v1/tax-rates/de-vat", {"percentage": "7.5"}, format="json").json()

    assert changed["percentage"] == "7.5"
    assert TaxRate.objects.get().percentage == Decimal("7.5")
    assert [r["key"] for r in api.get("/api/v1/tax-rates").json()["results"]] == ["de-vat"]
    refused = api.post(
        "/api/v1/tax-rates", {"key": "x", "name": "X", "percentage": 7.5}, format="json"
    )
    assert "percentage" in problem(refused, 400)["errors"]


# ------------------------------------------------------------------------ subscriptions


def test_a_subscription_is_created_listed_and_filtered(api, calls):
    pro(calls)
    CustomerFactory(key="acme")
    CustomerFactory(key="globex")
    start = timezone.now().replace(microsecond=0) - timedelta(days=3)

    created = api.post(
        "/api/v1/subscriptions",
        {"customer": "acme", "plan": "pro", "start": start.isoformat()},
        format="json",
    )
    api.post(
        "/api/v1/subscriptions",
        {"customer": "globex", "plan": "pro", "start": "2030-01-01T00:00:00Z"},
        format="json",
    )

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["customer"], body["plan"], body["version"], body["status"]) == (
        "acme",
        "pro",
        1,
        "active",
    )
    assert body["current_period"]["start"] == start.astimezone(UTC).isoformat().replace(
        "+00:00", "Z"
    )
    listed = api.get("/api/v1/subscriptions").json()["results"]
    assert [(s["customer"], s["status"]) for s in listed] == [
        ("acme", "active"),
        ("globex", "scheduled"),
    ]
    assert [
        s["customer"] for s in api.get("/api/v1/subscriptions?customer=globex").json()["results"]
    ] == ["globex"]
    now = timezone.now().isoformat().replace("+00:00", "Z")
    active = api.get("/api/v1/subscriptions", {"active_at": now}).json()["results"]
    assert [s["customer"] for s in active] == ["acme"]
    assert api.get("/api/v1/subscriptions?plan=nope").json()["results"] == []
    assert api.get(f"/api/v1/subscriptions/{body['id']}").json() == body


def test_an_overlapping_subscription_is_refused(api, calls):
    subscription_create(customer=CustomerFactory(key="acme"), plan_version=pro(calls), start=NOV)
    response = api.post(
        "/api/v1/subscriptions",
        {"customer": "acme", "plan": "pro", "start": "2026-11-15T00:00:00Z"},
        format="json",
    )
    assert "already has a subscription" in problem(response, 400)["errors"]["start"][0]


def test_a_subsidiary_billed_to_its_parent_cannot_subscribe(api, calls):
    pro(calls)
    CustomerFactory(key="globex-eu", parent=CustomerFactory(key="globex"))
    response = api.post(
        "/api/v1/subscriptions",
        {"customer": "globex-eu", "plan": "pro", "version": 7, "start": "2026-11-01T00:00:00Z"},
        format="json",
    )
    assert problem(response, 400)["errors"] == {"version": ["Plan pro has no version 7."]}
    response = api.post(
        "/api/v1/subscriptions",
        {"customer": "globex-eu", "plan": "pro", "start": "2026-11-01T00:00:00Z"},
        format="json",
    )
    assert "billed on globex" in problem(response, 400)["errors"]["customer"][0]


def test_a_plan_change_immediately_splits_at_the_instant(api, calls):
    sub = subscription_create(
        customer=CustomerFactory(key="acme"), plan_version=pro(calls), start=NOV
    )
    pro(calls, key="scale")

    response = api.post(
        f"/api/v1/subscriptions/{sub.pk}/change-plan",
        {"plan": "scale", "at": "2026-11-10T00:00:00Z", "timing": "immediately"},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["plan"], body["start"], body["end"]) == ("scale", "2026-11-10T00:00:00Z", None)
    assert body["anchor"] == "2026-11-01T00:00:00Z"
    sub.refresh_from_db()
    assert sub.end == datetime(2026, 11, 10, tzinfo=UTC)


def test_a_plan_change_at_the_next_period_waits_for_the_period_end(api, calls):
    sub = subscription_create(
        customer=CustomerFactory(key="acme"), plan_version=pro(calls), start=NOV
    )
    pro(calls, key="scale")
    body = api.post(
        f"/api/v1/subscriptions/{sub.pk}/change-plan",
        {"plan": "scale", "at": "2026-11-10T00:00:00Z", "timing": "next_period"},
        format="json",
    ).json()
    assert body["start"] == "2026-12-01T00:00:00Z"
    bad = api.post(
        f"/api/v1/subscriptions/{sub.pk}/change-plan",
        {"plan": "scale", "timing": "tomorrow"},
        format="json",
    )
    assert "timing" in problem(bad, 400)["errors"]


def test_cancel_ends_at_the_period_end_or_immediately(api, calls):
    sub = subscription_create(
        customer=CustomerFactory(key="acme"), plan_version=pro(calls), start=NOV
    )
    url = f"/api/v1/subscriptions/{sub.pk}/cancel"

    body = api.post(url, {"at": "2026-11-10T00:00:00Z"}, format="json").json()
    assert body["end"] == "2026-12-01T00:00:00Z"

    body = api.post(
        url, {"at": "2026-11-20T12:00:00Z", "timing": "immediately"}, format="json"
    ).json()
    assert body["end"] == "2026-11-20T12:00:00Z"
    refused = api.post(url, {"at": "2026-10-01T00:00:00Z", "timing": "immediately"}, format="json")
    assert "at" in problem(refused, 400)["errors"]
    assert problem(api.post("/api/v1/subscriptions/999999/cancel", {}, format="json"), 404)


# ------------------------------------------------------------------------ custom contracts


def test_a_custom_contract_moves_its_customer_and_leaves_other_subscribers_untouched(api, calls):
    public = pro(calls)
    acme_sub = subscription_create(
        customer=CustomerFactory(key="acme"), plan_version=public, start=NOV
    )
    globex_sub = subscription_create(
        customer=CustomerFactory(key="globex"), plan_version=public, start=NOV
    )

    response = api.post(
        "/api/v1/customers/acme/custom-contract",
        {
            "plan": "pro",
            "minimum_commitment": "500",
            "prices": {"calls": {"model": "unit", "unit_price": "0.005"}},
            "at": "2026-11-15T00:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["version"], body["customer"], body["derived_from"]) == (2, "acme", 1)
    assert body["minimum_commitment"] == "500.00"
    prices = {c["key"]: c["price"] for c in body["rate_cards"]}
    assert prices["calls"] == {"model": "unit", "unit_price": "0.005"}
    assert prices["platform"]["amount"] == "100"
    assert body["subscription"]["version"] == 2 and body["subscription"]["custom_contract"] is True
    assert body["subscription"]["start"] == "2026-11-15T00:00:00Z"
    acme_sub.refresh_from_db()
    globex_sub.refresh_from_db()
    assert acme_sub.end == datetime(2026, 11, 15, tzinfo=UTC)
    assert globex_sub.end is None and globex_sub.plan_version_id == public.pk
    assert api.get("/api/v1/plans/pro").json()["version"] == 1  # the public plan is unchanged


def test_a_custom_contract_reports_price_errors_by_rate_card_key_and_stores_nothing(api, calls):
    pro(calls)
    CustomerFactory(key="acme")
    url = "/api/v1/customers/acme/custom-contract"

    errors = problem(
        api.post(
            url,
            {"plan": "pro", "prices": {"calls": {"model": "unit", "unit_price": 0.5}}},
            format="json",
        ),
        400,
    )["errors"]
    assert list(errors) == ["prices.calls.unit_price"], errors

    errors = problem(api.post(url, {"plan": "pro", "prices": {"nope": {}}}, format="json"), 400)[
        "errors"
    ]
    assert "nope" in errors["prices"][0]

    moved = api.post(url, {"plan": "pro", "at": "2026-11-15T00:00:00Z"}, format="json")
    assert "no subscription" in problem(moved, 400)["errors"]["at"][0]
    assert PlanVersion.objects.count() == 1
    assert problem(
        api.post("/api/v1/customers/nobody/custom-contract", {"plan": "pro"}, format="json"), 404
    )


# ------------------------------------------------------------------------ upcoming invoice


@pytest.fixture
def globex(calls):
    """Globex (billed in USD, 10% sales tax) with a subsidiary billed on it, on a plan
    with a 100.00 fee and calls at 1.00 each for the first 10, then 0.10."""
    parent = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=parent)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    ConsumerMappingFactory(consumer_key="hq", customer=parent, valid_from=start)
    ConsumerMappingFactory(consumer_key="eu", customer=eu, valid_from=start)
    subscription_create(customer=parent, plan_version=pro(calls), start=start)
    profile = BillingProfile.objects.create(customer=parent)
    profile.tax_rates.add(
        TaxRate.objects.create(key="sales", name="Sales tax", percentage=Decimal("10"))
    )
    return parent


def requests(ingest, subject, n, *, status="200", prefix=""):
    now = timezone.now()
    ingest(
        *[
            cloud_event(
                f"{prefix}{subject}-{i}",
                subject=subject,
                time=(now - timedelta(minutes=90) + timedelta(seconds=i)).isoformat(),
                status=status,
            )
            for i in range(n)
        ]
    )


def test_the_upcoming_invoice_prices_the_group_and_shows_each_subsidiarys_share(
    api, ingest, globex
):
    requests(ingest, "hq", 5)
    requests(ingest, "eu", 15)
    requests(ingest, "hq", 4, status="500", prefix="err-")  # not on the feature

    response = api.get("/api/v1/customers/globex/upcoming-invoice")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["customer"], body["billing_account"], body["currency"]) == (
        "globex",
        "globex",
        "USD",
    )
    # 20 calls: 10 × 1.00 + 10 × 0.10 = 11.00; with the fee 111.00; 10% tax 11.10
    assert (body["subtotal"], body["total"]) == ("111.00", "122.10")
    assert body["taxes"] == [
        {
            "name": "Sales tax",
            "percentage": "10",
            "inclusive": False,
            "base": "111.00",
            "amount": "11.10",
        }
    ]
    assert body["plans"] == [{"plan": "pro", "version": 1, "custom_contract": False}]
    lines = {(line["kind"], line["customer"]): line for line in body["lines"]}
    assert set(lines) == {("flat_fee", "globex"), ("usage", "globex"), ("usage", "globex-eu")}
    assert lines["flat_fee", "globex"]["amount"] == "100.00"
    hq, eu = lines["usage", "globex"], lines["usage", "globex-eu"]
    assert (hq["feature"], hq["quantity"], hq["amount"]) == ("api_calls", "5", "2.75")
    assert (eu["feature"], eu["quantity"], eu["amount"]) == ("api_calls", "15", "8.25")
    assert (eu["group_quantity"], eu["group_amount"]) == ("20", "11.00")
    assert [(t["quantity"], t["unit_price"], t["amount"]) for t in eu["tier_breakdown"]] == [
        ("10", "1", "10"),
        ("10", "0.1", "1"),
    ]
    money = [body["subtotal"], body["total"], *(line["amount"] for line in body["lines"])]
    assert all(isinstance(value, str) for value in money)
    assert body["period_start"] < body["as_of"] < body["period_end"]


def test_a_subsidiarys_upcoming_invoice_is_its_parents(api, ingest, globex):
    requests(ingest, "eu", 3)
    parent = api.get("/api/v1/customers/globex/upcoming-invoice").json()

    body = api.get("/api/v1/customers/globex-eu/upcoming-invoice").json()

    assert (body["customer"], body["billing_account"]) == ("globex-eu", "globex")
    assert body["lines"] == parent["lines"] and body["total"] == parent["total"]


def test_the_upcoming_invoice_is_a_clear_404_without_customer_or_subscription(api, calls):
    assert problem(api.get("/api/v1/customers/nobody/upcoming-invoice"), 404)
    CustomerFactory(key="idle")
    body = problem(api.get("/api/v1/customers/idle/upcoming-invoice"), 404)
    assert body["code"] == "no_subscription" and body["billing_account"] == "idle"
    assert "no subscription" in body["detail"]


@pytest.mark.django_db(transaction=True)
def test_the_upcoming_invoice_counts_rolled_up_and_fresh_usage_alike(api, ingest, globex):
    requests(ingest, "hq", 4)
    usage_rollup(now=timezone.now())
    requests(ingest, "eu", 2, prefix="late-")  # not rolled up yet

    body = api.get("/api/v1/customers/globex/upcoming-invoice").json()

    usage = [line for line in body["lines"] if line["kind"] == "usage"]
    assert {line["group_quantity"] for line in usage} == {"6"}
    assert {line["customer"]: line["quantity"] for line in usage} == {
        "globex": "4",
        "globex-eu": "2",
    }
