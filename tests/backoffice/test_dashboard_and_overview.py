"""The operator's back office: the admin home's dashboard (revenue by rail and currency,
usage trends, what needs attention, each linked to its rows) and the customer overview."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from backoffice import dashboard
from billing.catalog.periods import Period
from billing.catalog.services import subscription_create
from billing.invoicing.services import invoice_draft_for, invoice_issue, invoice_void
from billing.models import Invoice
from metering.models import UsageBucket
from metering.services import feature_create, meter_create
from rails.models import Settlement, SettlementState
from tests.factories import ConsumerMappingFactory, CustomerFactory, PlanVersionFactory, flat_fee
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db

NOW = timezone.now()
MONTH = dashboard.month_of(now=NOW)
PREV = Period((MONTH.start - timedelta(days=1)).replace(day=1), MONTH.start)
THIS_MONTH_T = MONTH.start + (NOW - MONTH.start) / 2  # in this month, before now
LAST_MONTH_T = PREV.start + timedelta(days=2)


def iso(t) -> str:
    return t.isoformat().replace("+00:00", "Z")


def pro_plan(calls, *, key: str, currency: str, fee: str):
    return PlanVersionFactory(
        key=key,
        name=key.title(),
        currency=currency,
        fee=flat_fee(fee),
        feature=calls,
        entitlements=({"feature": "api_calls", "type": "metered", "limit": 1000, "hard": True},),
    )


@pytest.fixture
def books(db, ingest):
    """Acme (ACH, with a subsidiary) has an invoice issued this month whose settlement
    failed; Globex (NetSuite, EUR) has a draft in its grace period; Zeta (Stripe) had an
    invoice voided; a gateway key nobody mapped sent events."""
    dashboard.cache_clear()
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", name="API calls", meter=meter)
    usd, eur = (
        pro_plan(calls, key="pro", currency="USD", fee="49.00"),
        pro_plan(calls, key="pro-eur", currency="EUR", fee="99.00"),
    )
    acme = CustomerFactory(key="acme", name="Acme Corp", rail="ach")
    acme_eu = CustomerFactory(key="acme-eu", name="Acme EU", parent=acme)
    globex = CustomerFactory(key="globex", rail="netsuite", currency="EUR")
    zeta = CustomerFactory(key="zeta", rail="stripe")
    for account, version in ((acme, usd), (globex, eur), (zeta, usd)):
        subscription_create(customer=account, plan_version=version, start=PREV.start)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=PREV.start)
    ConsumerMappingFactory(consumer_key="acme-eu-gw", customer=acme_eu, valid_from=PREV.start)
    ConsumerMappingFactory(
        consumer_key="old-gw",
        customer=zeta,
        valid_from=PREV.start,
        valid_to=PREV.start + timedelta(days=3),
    )
    ConsumerMappingFactory(
        consumer_key="old-gw", customer=acme, valid_from=PREV.start + timedelta(days=3)
    )
    # What the rollup writes for the mapped keys (its snapshot-safe watermark waits for
    # every open transaction on the server, so a test arranges the buckets itself) ...
    for subject, customer, hour, events in (
        ("acme-gw", acme, LAST_MONTH_T, 5),
        ("acme-eu-gw", acme_eu, LAST_MONTH_T, 1),
        ("acme-gw", acme, MONTH.start, 3),
        ("acme-eu-gw", acme_eu, MONTH.start, 2),
    ):
        UsageBucket.objects.create(
            meter=meter,
            customer=customer,
            subject=subject,
            hour=hour,
            event_count=events,
            first_time=hour,
            last_time=hour,
        )
    # ... and raw events of a key nobody mapped
    ingest(
        *[cloud_event(f"s{i}", subject="stray-gw", time=iso(THIS_MONTH_T)) for i in range(4)],
        received_at=NOW,
    )

    def draft(account):
        return invoice_draft_for(account=account, period=PREV, now=NOW)[0]

    issued = invoice_issue(invoice=draft(acme), now=NOW)
    Settlement.objects.filter(invoice=issued).update(
        state=SettlementState.FAILED, next_action_at=None, last_error="R01 insufficient funds"
    )
    voided = invoice_void(
        invoice=invoice_issue(invoice=draft(zeta), now=NOW),
        reason="Wrong plan",
        now=NOW,
        actor="test",
    )
    in_grace = draft(globex)
    Invoice.objects.filter(pk=in_grace.pk).update(grace_until=NOW + timedelta(hours=6))
    return {
        "acme": acme,
        "acme_eu": acme_eu,
        "globex": globex,
        "zeta": zeta,
        "issued": issued,
        "voided": voided,
        "in_grace": Invoice.objects.get(pk=in_grace.pk),
        "calls": calls,
    }


def dashboard_html(client) -> str:
    response = client.get(reverse("admin:index"), {"refresh": "1"})
    assert response.status_code == 200
    text = response.content.decode()
    assert 'id="operator-dashboard"' in text and 'id="content-main"' in text  # the app list stays
    return text


def row(html: str, css_class: str) -> str:
    match = re.search(rf'<tr class="{css_class}">(.*?)</tr>', html, re.S)
    assert match, css_class
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def card(html: str, key: str) -> tuple[int, str]:
    match = re.search(
        rf'id="attention-{key}">.*?class="count">(?:<a href="([^"]+)">)?([\d,]+)', html, re.S
    )
    assert match, key
    return int(match.group(2).replace(",", "")), unescape(match.group(1) or "")


def test_billed_revenue_is_this_months_issued_invoices_by_rail_and_currency(books):
    billed = dashboard.billed_revenue(period=MONTH)
    assert billed == {
        ("ach", "USD"): dashboard.Amount(books["issued"].total, 1)
    }  # the void one is not
    assert dashboard.draft_revenue() == {
        ("netsuite", "EUR"): dashboard.Amount(books["in_grace"].total, 1)
    }


def test_unbilled_revenue_adds_drafts_and_the_current_periods_so_far(books):
    estimate = dashboard.current_period_estimate(now=NOW)
    assert (estimate.accounts_active, estimate.accounts_rated) == (3, 3)
    assert estimate.by_rail_currency == {
        ("ach", "USD"): dashboard.Amount(Decimal("49.05"), 1),  # the fee and 5 calls of the tree
        ("netsuite", "EUR"): dashboard.Amount(Decimal("99.00"), 1),
        ("stripe", "USD"): dashboard.Amount(Decimal("49.00"), 1),
    }


def test_the_admin_home_shows_revenue_usage_and_attention_above_the_app_list(admin_client, books):
    html = dashboard_html(admin_client)
    assert books["issued"].total == Decimal("49.06")
    assert (
        row(html, "revenue-ach-USD")
        == "ACH USD 49.06 USD (1) 0.00 USD 49.05 USD (1 account) 49.05 USD"
    )
    assert (
        row(html, "revenue-netsuite-EUR")
        == "NetSuite EUR 0.00 EUR 99.00 EUR (1) 99.00 EUR (1 account) 198.00 EUR"
    )
    assert (
        row(html, "revenue-stripe-USD")
        == "Stripe USD 0.00 USD 0.00 USD 49.00 USD (1 account) 49.00 USD"
    )
    assert card(html, "drafts-in-grace")[0] == 1
    assert card(html, "failed-settlements")[0] == 1
    assert card(html, "unattributed")[0] == 4 and "4 events from 1 subject" in html
    start = dashboard.usage_trends(now=NOW).start  # the last 30 days' buckets
    events = (6 if start <= LAST_MONTH_T else 0) + (5 if MONTH.start >= start else 0)
    assert 'id="trend-api_requests"' in html and f"{events} events" in html and "<svg" in html
    assert html.index('id="operator-dashboard"') < html.index('id="content-main"')


def test_every_dashboard_number_links_to_a_changelist_of_exactly_those_rows(admin_client, books):
    html = dashboard_html(admin_client)
    billed = re.search(r'<tr class="revenue-ach-USD">.*?<a href="([^"]+)"', html, re.S).group(1)
    listing = admin_client.get(unescape(billed))
    assert listing.status_code == 200 and list(listing.context["cl"].result_list) == [
        books["issued"]
    ]
    drafts = re.search(
        r'<tr class="revenue-netsuite-EUR">.*?class="num drafts"><a href="([^"]+)"', html, re.S
    )
    listing = admin_client.get(unescape(drafts.group(1)))
    assert list(listing.context["cl"].result_list) == [books["in_grace"]]

    count, url = card(html, "drafts-in-grace")
    assert url.startswith(reverse("admin:billing_invoice_changelist"))
    assert list(admin_client.get(url).context["cl"].result_list) == [books["in_grace"]]
    count, url = card(html, "failed-settlements")
    assert url.startswith(reverse("admin:rails_settlement_changelist"))
    assert [s.invoice_id for s in admin_client.get(url).context["cl"].result_list] == [
        books["issued"].pk
    ]
    count, url = card(html, "unattributed")
    page = admin_client.get(url)
    assert url.startswith(reverse("admin:metering_unattributed_usage"))
    assert [r["item"].subject for r in page.context["rows"]] == ["stray-gw"]


def test_drafts_past_their_grace_show_as_an_alarm(admin_client, books):
    Invoice.objects.filter(pk=books["in_grace"].pk).update(grace_until=NOW - timedelta(hours=1))
    html = dashboard_html(admin_client)
    count, url = card(html, "drafts-past-grace")
    assert count == 1 and card(html, "drafts-in-grace")[0] == 0
    assert list(admin_client.get(url).context["cl"].result_list) == [books["in_grace"]]


def test_failed_webhook_deliveries_need_attention_when_notifications_are_installed(
    admin_client, books
):
    delivery = dashboard.webhook_delivery_model()
    if delivery is None:
        pytest.skip("billing has no WebhookDelivery")
    from billing.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(
        key="ops", url="https://example.com/hooks", secret="whsec_x"
    )
    event = apps.get_model("billing", "NotificationEvent").objects.create(
        type="invoice.issued", payload={}, dedupe_key="x", created_at=NOW
    )
    delivery.objects.create(event=event, endpoint=endpoint, state="given_up", created_at=NOW)
    count, url = card(dashboard_html(admin_client), "webhook-failures")
    assert count == 1
    if url:
        assert admin_client.get(url).status_code == 200


def test_the_cached_parts_say_when_they_were_computed_and_recompute_on_request(admin_client, books):
    dashboard_html(admin_client)
    stale = dashboard.cached("unattributed", lambda: None)
    assert stale.events == 4
    ConsumerMappingFactory(consumer_key="stray-gw", customer=books["zeta"], valid_from=PREV.start)
    assert card(admin_client.get(reverse("admin:index")).content.decode(), "unattributed")[0] == 4
    assert card(dashboard_html(admin_client), "unattributed")[0] == 0


# ------------------------------------------------------------------ customer overview


def maybe_grant_credit(account) -> str | None:
    """25 USD of credit, where billing has credits."""
    try:
        from billing.credits.services import credit_grant
    except ImportError:
        return None
    credit_grant(
        account=account,
        currency="USD",
        amount=Decimal("25"),
        kind="promotional",
        expires_at=None,
        reason="Launch offer",
        user=None,
        now=NOW,
    )
    return "25.00 USD"


def overview(client, customer) -> str:
    response = client.get(reverse("admin:customers_customer_overview", args=[customer.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="overview-{name}">(.*?)</section>', html, re.S)
    assert match, name
    return match.group(1)


def test_the_customer_overview_answers_everything_about_a_parent_account(admin_client, books):
    granted = maybe_grant_credit(books["acme"])
    html = overview(admin_client, books["acme"])
    tree = section(html, "tree")
    assert "<strong>acme</strong> (this customer)" in tree and "billing account" in tree
    assert "acme-eu" in tree and "billed on acme" in tree
    keys = section(html, "keys")
    assert "<svg" in keys and all(k in keys for k in ("acme-gw", "acme-eu-gw", "old-gw"))
    assert 'class="seg other"' in keys  # old-gw belonged to zeta before acme
    assert "pro v1" in section(html, "subscription") and "Platform fee" in section(
        html, "subscription"
    )
    prices = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section(html, "subscription")))
    assert "Platform fee — $49.00 flat fee per period, billed in arrears" in prices
    assert "calls api_calls $0.01 per API call" in prices  # not the stored JSON
    assert '"model"' not in unescape(section(html, "subscription"))
    usage = section(html, "usage")
    assert (
        'id="usage-api_calls"' in usage
        and "total 5" in usage
        and "acme and 1 billed on it" in usage
    )
    assert "49.05 USD" in section(html, "upcoming")
    invoices = section(html, "invoices")
    settlement = Settlement.objects.get(invoice=books["issued"])
    assert books["issued"].number in invoices and "49.06 USD" in invoices
    assert reverse("admin:rails_settlement_change", args=[settlement.pk]) in invoices
    assert "ach: Failed for good: needs an operator" in invoices  # no retry is scheduled
    credits = section(html, "credits")
    assert (
        (f"{granted} on acme" in re.sub(r"</?strong>", "", credits))
        if granted
        else "credit" in credits.lower()
    )
    entitlements = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section(html, "entitlements")))
    assert "api_calls metered (hard) plan 1000 5 995 0 has access" in entitlements
    assert reverse("admin:audit_history", args=["customers", "customer", books["acme"].pk]) in html


def test_a_subsidiarys_overview_points_to_its_billing_account(admin_client, books):
    html = overview(admin_client, books["acme_eu"])
    assert (
        "billed on" in html
        and reverse("admin:customers_customer_overview", args=[books["acme"].pk]) in html
    )
    assert books["issued"].number in section(html, "invoices")  # its usage is on acme's invoice
    assert "total 2" in section(html, "usage")  # its own usage only


def test_the_customer_page_links_to_the_overview_and_keeps_the_upcoming_invoice(
    admin_client, books
):
    page = admin_client.get(reverse("admin:customers_customer_change", args=[books["acme"].pk]))
    text = page.content.decode()
    assert reverse("admin:customers_customer_overview", args=[books["acme"].pk]) in text
    assert reverse("admin:billing_upcoming_invoice", args=["acme"]) in text


def test_a_customer_without_plan_or_usage_still_has_an_overview(admin_client, db):
    lone = CustomerFactory(key="lone")
    html = overview(admin_client, lone)
    assert "No subscription now" in html and "has no subscription" in html
    assert "No invoices yet" in html and "No entitlements" in html
