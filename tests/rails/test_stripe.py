"""The Stripe rail end to end: the real ``stripe`` library against a local fake Stripe."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import unquote

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import include, path
from django.utils import timezone

from billing.invoicing.services import (
    credit_note_create,
    invoice_issue,
    invoice_line_add,
    invoice_void,
)
from billing.models import Invoice, InvoiceStatus
from config.urls import urlpatterns as project_urlpatterns
from rails import outbox
from rails.adapters.stripe import StripeRail
from rails.models import InboundWebhook, Settlement, SettlementEvent, SettlementState
from rails.outbox import settlement_drive
from tests.factories import CustomerFactory
from tests.rails.conftest import WEBHOOK_SECRET
from tests.rails.fake_stripe import signed_event

urlpatterns = [*project_urlpatterns, path("webhooks/", include("rails.urls"))]

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
WEBHOOK_URL = "/webhooks/stripe"

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]  # urls: the webhook


def issue(
    customer=None, *amounts: str, currency: str = "USD", now: datetime = NOW, **customer_fields
) -> Invoice:
    """Issue a one-off invoice with a manual line per amount (this opens its settlement)."""
    customer = customer or CustomerFactory(rail="stripe", currency=currency, **customer_fields)
    draft = Invoice.objects.create(customer=customer, currency=currency)
    for i, amount in enumerate(amounts or ("12.34",)):
        invoice_line_add(
            invoice=draft, description=f"Line {i + 1}", amount=Decimal(amount), now=now
        )
    return invoice_issue(invoice=draft, now=now)


def settlement_of(invoice: Invoice) -> Settlement:
    return Settlement.objects.select_related("invoice").get(invoice=invoice)


def drive(invoice: Invoice, now: datetime = NOW) -> str:
    return settlement_drive(settlement_id=settlement_of(invoice).pk, now=now)


def only(values):
    values = list(values)
    assert len(values) == 1, values
    return values[0]


def post_event(client, event_type: str, obj: dict, *, secret: str = WEBHOOK_SECRET, **kwargs):
    payload, header = signed_event(event_type, obj, secret=secret, **kwargs)
    return client.post(
        WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


# ------------------------------------------------------------------ submitting


def test_an_issued_invoice_is_itemised_finalized_and_paid_on_stripe(stripe_live):
    invoice = issue(None, "10.00", "2.34", "-1.00", key="acme")

    assert drive(invoice) == "paid"

    customer = only(stripe_live.customers.values())
    assert customer["metadata"] == {"customer_key": "acme"}
    assert customer["email"] == "billing@acme.example"
    stripe_invoice = only(stripe_live.invoices.values())
    assert stripe_invoice["customer"] == customer["id"]
    assert stripe_invoice["currency"] == "usd"
    assert stripe_invoice["collection_method"] == "charge_automatically"
    assert stripe_invoice["metadata"]["invoice_id"] == str(invoice.pk)
    assert stripe_invoice["metadata"]["invoice_number"] == invoice.number
    assert [line["amount"] for line in stripe_invoice["lines"]["data"]] == [1000, 234, -100]
    assert (stripe_invoice["total"], stripe_invoice["status"]) == (1134, "paid")
    assert len(stripe_live.pays()) == 1
    settlement = settlement_of(invoice)
    assert settlement.state == SettlementState.PAID
    assert settlement.external_ids["stripe_invoice_id"] == stripe_invoice["id"]
    assert settlement.external_ids["stripe_customer_id"] == customer["id"]
    assert settlement.external_ids["stripe_payment_intent_id"].startswith("pi_")
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


def test_yen_are_sent_as_whole_yen_not_hundredths(stripe_live):
    invoice = issue(None, "1500", "250", currency="JPY")

    assert drive(invoice) == "paid"

    stripe_invoice = only(stripe_live.invoices.values())
    assert stripe_invoice["currency"] == "jpy"
    assert [line["amount"] for line in stripe_invoice["lines"]["data"]] == [1500, 250]
    assert stripe_invoice["total"] == 1750


def test_every_exchange_is_recorded_with_the_api_key_redacted(stripe_live):
    invoice = issue()

    drive(invoice)

    exchanges = list(settlement_of(invoice).exchanges.order_by("pk"))
    steps = ["customer-search", "customer", "invoice", "item-0", "finalize", "pay"]
    assert [e.step for e in exchanges] == [f"submit:{step}" for step in steps]
    key_prefix = f"stripe-{invoice.pk}-1-submit-"
    for exchange in exchanges:
        assert exchange.sent and exchange.status_code == 200
        assert exchange.request_headers["Authorization"] == "[redacted]"
        stored = (
            exchange.url,
            exchange.request_headers,
            exchange.request_body,
            exchange.response_body,
        )
        assert stripe_live.api_key not in str(stored)
        if exchange.method == "POST":
            assert exchange.idempotency_key == f"{key_prefix}{exchange.step.split(':')[1]}"
    item = exchanges[3]
    assert item.url == f"{stripe_live.url}/v1/invoiceitems"
    assert "amount=1234" in item.request_body and "currency=usd" in item.request_body


def test_an_operators_stripe_customer_id_is_used_without_a_search(stripe_live):
    existing = stripe_live.handle(
        "POST", "/v1/customers", {"Authorization": f"Bearer {stripe_live.api_key}"}, "name=Acme"
    )[2]
    invoice = issue(None, "5.00", rail_settings={"stripe_customer_id": existing["id"]})

    assert drive(invoice) == "paid"

    assert len(stripe_live.requests(path="/v1/customers")) == 1  # the set-up above: no search
    assert only(stripe_live.invoices.values())["customer"] == existing["id"]


def test_a_customers_next_invoice_finds_its_stripe_customer_by_key(stripe_live):
    first = issue(None, "5.00", key="globex")
    drive(first)

    second = issue(first.customer, "7.00")
    assert drive(second) == "paid"

    assert len(stripe_live.customers) == 1
    assert len(stripe_live.invoices) == 2


def test_sandbox_stores_the_exact_requests_and_sends_nothing(stripe_sandbox):
    invoice = issue(None, "12.34")
    settlement = settlement_of(invoice)
    assert settlement.sandbox

    assert drive(invoice) == "submitted"

    assert stripe_sandbox.seen == []
    exchanges = list(settlement.exchanges.order_by("pk"))
    assert exchanges and not any(e.sent for e in exchanges)
    search = (
        f"GET /v1/customers/search?query=metadata['customer_key']:'{invoice.customer.key}'&limit=10"
    )
    assert [f"{e.method} {unquote(e.url.removeprefix(stripe_sandbox.url))}" for e in exchanges] == [
        search,
        "POST /v1/customers",
        "POST /v1/invoices",
        "POST /v1/invoiceitems",
        "POST /v1/invoices/in_sandbox/finalize",
        "POST /v1/invoices/in_sandbox/pay",
    ]
    item = exchanges[3]
    assert item.request_body == (
        f"customer=cus_sandbox&invoice=in_sandbox&currency=usd&amount=1234&description=Line+1"
        f"&metadata[invoice_id]={invoice.pk}&metadata[line]=0"
    )
    assert item.request_headers["Authorization"] == "[redacted]"
    assert item.idempotency_key == f"stripe-{invoice.pk}-1-submit-item-0"
    assert settlement.events.filter(note__contains="sandbox: nothing sent").exists()


def test_sandbox_credit_notes_and_voids_are_built_not_sent(
    stripe_sandbox, django_capture_on_commit_callbacks
):
    invoice = issue(None, "20.00")
    drive(invoice)

    with django_capture_on_commit_callbacks(execute=True):
        credit_note_create(invoice=invoice, reason="Goodwill", amount=Decimal("5.00"), now=NOW)
        invoice_void(invoice=invoice, reason="Wrong customer", now=NOW, actor="ops")

    assert stripe_sandbox.seen == []
    settlement = settlement_of(invoice)
    credit = settlement.exchanges.get(url__endswith="/v1/credit_notes")
    assert not credit.sent
    assert "amount=500" in credit.request_body and "memo=Goodwill" in credit.request_body
    assert not settlement.exchanges.get(url__endswith="/v1/invoices/in_sandbox/void").sent
    assert settlement.state == SettlementState.VOIDED


def test_a_total_that_differs_stops_before_any_charge(stripe_live):
    stripe_live.total_offset = 1
    invoice = issue(None, "12.34")

    assert drive(invoice) == "failed"

    settlement = settlement_of(invoice)
    assert settlement.last_error == "Stripe total 1235 differs from ours 1234"
    assert settlement.next_action_at is None  # not retried: an operator must look
    assert stripe_live.requests("POST", r"/pay$") == []
    assert settlement.external_ids["stripe_invoice_id"] in stripe_live.invoices


# ------------------------------------------------------------------ failures and retries


def test_a_server_error_is_retried_with_the_same_key_and_charged_once(stripe_live):
    stripe_live.fail_next(1, 500, path="/pay")
    invoice = issue()

    assert drive(invoice) == "paid"

    pays = stripe_live.requests("POST", r"/pay$")
    assert [p.status for p in pays] == [500, 200]
    assert len({p.idempotency_key for p in pays}) == 1
    assert len(stripe_live.pays()) == 1 and len(stripe_live.charges) == 1


def test_a_rate_limit_waits_for_retry_after_then_charges_once(stripe_live):
    stripe_live.fail_next(1, 429, retry_after=7, path="/pay")
    invoice = issue()

    assert drive(invoice) == "failed"
    settlement = settlement_of(invoice)
    assert settlement.state == SettlementState.FAILED
    assert settlement.next_action_at == NOW + timedelta(seconds=7)
    assert "429" in settlement.last_error

    assert drive(invoice, NOW + timedelta(seconds=6)) == "not due"
    assert drive(invoice, NOW + timedelta(seconds=7)) == "paid"

    assert stripe_live.counts() == {"customers": 1, "invoices": 1, "items": 1, "pays": 1}


def test_a_later_attempt_resumes_the_same_stripe_invoice(stripe_live):
    stripe_live.fail_next(3, 503, path="/finalize")  # outlasts the library's two retries
    invoice = issue(None, "1.00", "2.00")

    assert drive(invoice) == "failed"
    settlement = settlement_of(invoice)
    retry_at = settlement.next_action_at
    assert retry_at == NOW + timedelta(seconds=settings.RAILS_RETRY_BASE_SECONDS)

    assert drive(invoice, retry_at) == "paid"

    assert stripe_live.counts() == {"customers": 1, "invoices": 1, "items": 2, "pays": 1}


def test_connection_refused_fails_and_is_retried_later(stripe_live):
    invoice = issue()
    stripe_live.stop()

    with override_settings(STRIPE_MAX_NETWORK_RETRIES=0):
        assert drive(invoice) == "failed"
    settlement = settlement_of(invoice)
    assert settlement.last_error.startswith("Could not reach Stripe")
    assert only(settlement.exchanges.all()).error
    assert settlement.next_action_at == NOW + timedelta(seconds=settings.RAILS_RETRY_BASE_SECONDS)

    stripe_live.start()
    assert drive(invoice, settlement.next_action_at) == "paid"
    assert len(stripe_live.pays()) == 1


@pytest.mark.parametrize(
    "search_visible", [False, True], ids=["replayed-by-key", "found-by-lookup"]
)
def test_a_crash_between_stripes_answer_and_our_commit_never_charges_twice(
    stripe_live, monkeypatch, search_visible
):
    stripe_live.search_visible = search_visible  # False: Stripe's search index lags behind
    invoice = issue()

    def worker_dies(**kwargs):
        raise SystemExit("worker killed after Stripe answered")

    monkeypatch.setattr(outbox, "settlement_apply_result", worker_dies)
    with pytest.raises(SystemExit):
        drive(invoice)
    monkeypatch.undo()
    assert settlement_of(invoice).state == SettlementState.SUBMITTING
    assert len(stripe_live.pays()) == 1
    before = len(stripe_live.seen)

    lease = timedelta(seconds=settings.RAILS_SUBMIT_LEASE_SECONDS)
    assert drive(invoice, NOW + timedelta(seconds=1)) == "not due"
    assert drive(invoice, NOW + lease) == "paid"

    assert stripe_live.counts() == {"customers": 1, "invoices": 1, "items": 1, "pays": 1}
    assert len(stripe_live.charges) == 1
    resumed_posts = [s for s in stripe_live.seen[before:] if s.method == "POST"]
    # Same attempt, same keys: every POST of the resumed attempt got Stripe's stored answer.
    assert all(s.replayed for s in resumed_posts)
    assert bool(resumed_posts) is not search_visible


def test_a_declined_card_is_not_retried_and_stripe_takes_over_collection(stripe_live):
    stripe_live.decline = True
    invoice = issue()

    assert drive(invoice) == "failed"

    settlement = settlement_of(invoice)
    assert "insufficient_funds" in settlement.last_error
    assert settlement.next_action_at is None
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED
    assert only(stripe_live.invoices.values())["auto_advance"] is True  # Stripe's Smart Retries


def test_a_payment_that_clears_later_is_found_by_the_next_check(stripe_live):
    stripe_live.processing = True
    invoice = issue()
    assert drive(invoice) == "submitted"
    settlement = settlement_of(invoice)
    assert settlement.state == SettlementState.SUBMITTED

    assert drive(invoice, settlement.next_action_at) == "pending"
    stripe_live.mark_paid(settlement.external_ids["stripe_invoice_id"])
    assert drive(invoice, settlement.next_action_at + timedelta(hours=2)) == "paid"


# ------------------------------------------------------------------ void and credit notes


def test_voiding_an_unpaid_invoice_voids_it_on_stripe(
    stripe_live, django_capture_on_commit_callbacks
):
    stripe_live.decline = True
    invoice = issue()
    drive(invoice)

    with django_capture_on_commit_callbacks(execute=True):
        invoice_void(invoice=invoice, reason="Billed twice", now=NOW, actor="ops")

    assert only(stripe_live.invoices.values())["status"] == "void"
    assert settlement_of(invoice).state == SettlementState.VOIDED


@pytest.mark.parametrize(
    ("processing", "refunded", "left_to_collect"), [(False, 500, 0), (True, 0, 1500)]
)
def test_a_credit_note_is_mirrored_on_stripe(
    stripe_live, django_capture_on_commit_callbacks, processing, refunded, left_to_collect
):
    """Paid: the credit is refunded. Still open: it comes off what Stripe collects."""
    stripe_live.processing = processing
    invoice = issue(None, "20.00")
    drive(invoice)

    with django_capture_on_commit_callbacks(execute=True):
        note = credit_note_create(
            invoice=invoice, reason="Outage goodwill", amount=Decimal("5.00"), now=NOW
        )

    credit = only(stripe_live.credit_notes.values())
    assert (credit["amount"], credit["refund_amount"]) == (500, refunded)
    assert credit["memo"] == "Outage goodwill"
    assert credit["metadata"]["credit_note_number"] == note.number
    assert only(stripe_live.invoices.values())["amount_remaining"] == left_to_collect
    assert settlement_of(invoice).external_ids[f"stripe_credit_note:{note.number}"] == credit["id"]


# ------------------------------------------------------------------ webhooks


@pytest.fixture
def submitted(stripe_live):
    """An invoice whose Stripe payment is still processing (settlement submitted)."""
    stripe_live.processing = True
    invoice = issue()
    drive(invoice)
    return invoice, stripe_live.invoices[settlement_of(invoice).external_ids["stripe_invoice_id"]]


def test_a_signed_invoice_paid_event_marks_the_invoice_paid(client, submitted):
    invoice, stripe_invoice = submitted

    response = post_event(
        client, "invoice.paid", {**stripe_invoice, "status": "paid"}, event_id="evt_paid"
    )

    assert response.status_code == 200
    assert settlement_of(invoice).state == SettlementState.PAID
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    row = InboundWebhook.objects.get(rail="stripe", event_id="evt_paid")
    assert row.processed_at is not None and row.error == "" and row.event_type == "invoice.paid"


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "altered body", "stale timestamp", "no header"],
)
def test_a_bad_signature_is_refused_and_nothing_changes(client, submitted, tamper):
    invoice, stripe_invoice = submitted
    secret = "whsec_someone_else" if tamper == "wrong secret" else WEBHOOK_SECRET
    stamp = int(time.time()) - 301 if tamper == "stale timestamp" else None
    payload, header = signed_event(
        "invoice.paid", {**stripe_invoice, "status": "paid"}, secret=secret, timestamp=stamp
    )
    if tamper == "altered body":
        payload = payload.replace(b'"livemode": false', b'"livemode": true ')
    extra = {} if tamper == "no header" else {"HTTP_STRIPE_SIGNATURE": header}

    response = client.post(WEBHOOK_URL, data=payload, content_type="application/json", **extra)

    assert response.status_code == 400
    assert not InboundWebhook.objects.exists()
    assert settlement_of(invoice).state == SettlementState.SUBMITTED


def test_a_replayed_event_is_acknowledged_and_processed_once(client, submitted):
    invoice, stripe_invoice = submitted
    settlement = settlement_of(invoice)
    failed = {**stripe_invoice, "attempt_count": 1}

    first = post_event(client, "invoice.payment_failed", failed, event_id="evt_failed")
    events_after_first = SettlementEvent.objects.filter(settlement=settlement).count()
    second = post_event(
        client, "invoice.payment_failed", failed, event_id="evt_failed"
    )  # redelivered

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["detail"] == "Already processed."
    assert InboundWebhook.objects.filter(event_id="evt_failed").count() == 1
    assert SettlementEvent.objects.filter(settlement=settlement).count() == events_after_first
    assert settlement_of(invoice).state == SettlementState.FAILED
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED


def test_a_processing_error_is_recorded_and_the_redelivery_processed(
    client, submitted, monkeypatch
):
    invoice, stripe_invoice = submitted
    paid = {**stripe_invoice, "status": "paid"}
    monkeypatch.setattr("rails.webhooks.settlement_report", lambda **kwargs: 1 / 0)

    failed = post_event(client, "invoice.paid", paid, event_id="evt_flaky")
    monkeypatch.undo()
    row = InboundWebhook.objects.get(event_id="evt_flaky")
    assert failed.status_code == 500  # Stripe will deliver it again
    assert (row.processed_at, row.error) == (None, "ZeroDivisionError: division by zero")

    assert post_event(client, "invoice.paid", paid, event_id="evt_flaky").status_code == 200
    assert settlement_of(invoice).state == SettlementState.PAID


def test_events_out_of_order_never_move_a_settlement_back(client, submitted):
    invoice, stripe_invoice = submitted

    post_event(client, "invoice.paid", {**stripe_invoice, "status": "paid"})
    late = post_event(client, "invoice.payment_failed", {**stripe_invoice, "attempt_count": 1})

    assert late.status_code == 200
    settlement = settlement_of(invoice)
    assert settlement.state == SettlementState.PAID
    assert settlement.events.filter(note__startswith="Ignored report 'failed'").exists()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


@pytest.mark.parametrize(
    ("event_type", "state"),
    [
        ("invoice.voided", SettlementState.VOIDED),
        ("invoice.marked_uncollectible", SettlementState.UNCOLLECTIBLE),
    ],
)
def test_stripe_closing_an_invoice_is_mirrored(client, submitted, event_type, state):
    invoice, stripe_invoice = submitted
    # Found by the recorded Stripe id even without our metadata.
    post_event(client, event_type, {**stripe_invoice, "metadata": {}})

    assert settlement_of(invoice).state == state


def test_a_full_refund_marks_the_settlement_refunded_and_a_partial_one_does_not(
    client, stripe_live
):
    invoice = issue()
    drive(invoice)
    charge = only(stripe_live.charges)

    post_event(client, "charge.refunded", {**charge, "refunded": False, "amount_refunded": 100})
    assert settlement_of(invoice).state == SettlementState.PAID

    post_event(
        client, "charge.refunded", {**charge, "refunded": True, "amount_refunded": charge["amount"]}
    )
    assert settlement_of(invoice).state == SettlementState.REFUNDED


def test_an_event_for_an_invoice_we_did_not_make_is_acknowledged_and_noted(client, stripe_live):
    elsewhere = {"id": "in_elsewhere", "object": "invoice", "metadata": {}}
    response = post_event(client, "invoice.paid", elsewhere, event_id="evt_other")

    assert response.status_code == 200
    row = InboundWebhook.objects.get(event_id="evt_other")
    assert row.processed_at is not None
    assert row.error.startswith("Ignored: no Stripe settlement for invoice in_elsewhere")


def test_webhooks_are_refused_until_a_secret_is_configured(client, stripe_sandbox):
    response = post_event(client, "invoice.paid", {"id": "in_x", "object": "invoice"})

    assert response.status_code == 503
    assert not InboundWebhook.objects.exists()


# ------------------------------------------------------------------ settings and the worker path


def test_rail_settings_take_a_stripe_customer_id_only():
    rail = StripeRail()
    assert rail.clean_settings({"stripe_customer_id": " cus_NffrFeUfNV2Hib "}) == {
        "stripe_customer_id": "cus_NffrFeUfNV2Hib"
    }
    assert rail.clean_settings({"stripe_customer_id": ""}) == {}
    with pytest.raises(ValidationError, match="not a Stripe customer id"):
        rail.clean_settings({"stripe_customer_id": "acct_123"})
    with pytest.raises(ValidationError, match="stripe_customer\\b"):
        rail.clean_settings({"stripe_customer": "cus_123"})


@pytest.mark.django_db(transaction=True)
def test_issuing_an_invoice_drives_its_settlement_after_commit(stripe_live):
    invoice = issue(None, "42.00", now=timezone.now())  # the eager worker reads the real clock

    settlement = settlement_of(invoice)
    assert settlement.state == SettlementState.PAID
    assert settlement.exchanges.filter(step="submit:pay", status_code=200).count() == 1
    assert only(stripe_live.invoices.values())["total"] == 4200
