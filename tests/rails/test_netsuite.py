from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.urls import reverse

from billing.invoicing.services import credit_note_create, invoice_issue, invoice_line_add
from billing.models import Invoice, InvoiceStatus
from metering.services import feature_create, meter_create
from rails.models import RailItemMapping, Settlement, SettlementState
from rails.outbox import settlement_drive
from tests.factories import CustomerFactory
from tests.rails import fake_netsuite
from tests.rails.fake_netsuite import FakeNetSuite

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def netsuite():
    with (
        FakeNetSuite() as fake,
        override_settings(
            NETSUITE_ACCOUNT_ID=fake_netsuite.ACCOUNT,
            NETSUITE_CONSUMER_KEY=fake_netsuite.CONSUMER_KEY,
            NETSUITE_CONSUMER_SECRET=fake_netsuite.CONSUMER_SECRET,
            NETSUITE_TOKEN_ID=fake_netsuite.TOKEN_ID,
            NETSUITE_TOKEN_SECRET=fake_netsuite.TOKEN_SECRET,
            NETSUITE_BASE_URL=fake.base_url,
        ),
    ):
        yield fake


def issued(customer, lines=(("Platform fee", "1500.00", None),)):
    draft = Invoice.objects.create(customer=customer, currency=customer.currency)
    for description, amount, feature in lines:
        invoice_line_add(invoice=draft, description=description, amount=Decimal(amount), now=NOW)
        if feature is not None:
            draft.lines.filter(description=description).update(feature=feature)
    return invoice_issue(invoice=draft, now=NOW)


@pytest.mark.django_db
def test_an_invoice_is_upserted_by_external_id_with_mapped_items_and_polled_until_paid(netsuite):
    globex = CustomerFactory(
        key="globex", rail="netsuite", rail_settings={"netsuite_entity_id": "4242"}
    )
    meter = meter_create(key="calls", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", meter=meter)
    RailItemMapping.objects.create(rail="netsuite", feature=calls, external_item_id="77")
    RailItemMapping.objects.create(rail="netsuite", external_item_id="10")
    invoice = issued(globex, [("Platform fee", "1500.00", None), ("API calls", "212.34", calls)])
    settlement = Settlement.objects.get(invoice=invoice)

    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "submitted"
    record = netsuite.records[("invoice", str(invoice.pk))]
    assert record["tranId"] == invoice.number and record["entity"] == {"id": "4242"}
    assert [(i["item"]["id"], i["amount"]) for i in record["item"]["items"]] == [
        ("10", "1500.00"),
        ("77", "212.34"),
    ]
    settlement.refresh_from_db()
    assert settlement.state == SettlementState.SUBMITTED
    assert settlement.external_ids["netsuite_invoice_id"] == record["id"]
    assert settlement.exchanges.get(step="invoice").request_headers["Authorization"] == "[redacted]"

    later = NOW + timedelta(hours=2)
    outcome = settlement_drive(settlement_id=settlement.pk, now=later)
    settlement.refresh_from_db()
    assert outcome == "pending", settlement.last_error
    netsuite.pay(str(invoice.pk))
    assert settlement_drive(settlement_id=settlement.pk, now=later + timedelta(hours=2)) == "paid"
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


@pytest.mark.django_db
def test_a_retry_after_429_or_500_updates_the_same_record(netsuite):
    globex = CustomerFactory(key="globex", rail="netsuite")
    invoice = issued(globex)
    settlement = Settlement.objects.get(invoice=invoice)
    netsuite.fail_next = [429]
    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "failed"
    settlement.refresh_from_db()
    assert settlement.next_action_at == NOW + timedelta(seconds=7)  # NetSuite's Retry-After
    assert "CONCURRENCY_LIMIT_EXCEEDED" in settlement.exchanges.last().response_body
    netsuite.fail_next = [500]
    settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(seconds=7))
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(hours=1)) == "submitted"
    )
    assert len([k for k in netsuite.records if k[0] == "invoice"]) == 1
    assert (
        "customer",
        "globex",
    ) in netsuite.records  # upserted by external id (no entity id given)


@pytest.mark.django_db
def test_netsuites_error_document_is_kept_and_shown(netsuite):
    globex = CustomerFactory(key="globex", rail="netsuite")
    draft = Invoice.objects.create(customer=globex, currency="USD")
    invoice = invoice_issue(invoice=draft, now=NOW)  # no lines: NetSuite refuses it
    settlement = Settlement.objects.get(invoice=invoice)
    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "failed"
    settlement.refresh_from_db()
    assert "USER_ERROR: You must enter at least one line item" in settlement.last_error
    assert settlement.next_action_at is None  # a 4xx is not retried blindly
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED


@pytest.mark.django_db
def test_a_wrong_token_secret_is_refused_by_the_server(netsuite):
    globex = CustomerFactory(key="globex", rail="netsuite")
    invoice = issued(globex)
    with override_settings(NETSUITE_TOKEN_SECRET="wrong"):
        assert (
            settlement_drive(settlement_id=Settlement.objects.get(invoice=invoice).pk, now=NOW)
            == "failed"
        )
    assert "INVALID_LOGIN" in Settlement.objects.get(invoice=invoice).last_error


@pytest.mark.django_db
def test_credit_notes_become_credit_memos(netsuite, django_capture_on_commit_callbacks):
    globex = CustomerFactory(
        key="globex", rail="netsuite", rail_settings={"netsuite_entity_id": "4242"}
    )
    invoice = issued(globex)
    settlement_drive(settlement_id=Settlement.objects.get(invoice=invoice).pk, now=NOW)
    with django_capture_on_commit_callbacks(execute=True):
        note = credit_note_create(
            invoice=invoice, reason="SLA credit", amount=Decimal("100"), now=NOW
        )
    memo = netsuite.records[("creditMemo", str(note.pk))]
    assert memo["tranId"] == note.number and memo["createdFrom"] == {"externalId": str(invoice.pk)}
    assert memo["item"]["items"][0]["amount"] == "100.00"


@pytest.mark.django_db
def test_without_credentials_the_rail_builds_requests_and_sends_nothing():
    globex = CustomerFactory(
        key="globex", rail="netsuite", rail_settings={"netsuite_entity_id": "4242"}
    )
    with override_settings(NETSUITE_ACCOUNT_ID=""):
        invoice = issued(globex)
        settlement = Settlement.objects.get(invoice=invoice)
        assert settlement.sandbox
        assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "submitted"
    exchange = settlement.exchanges.get()
    assert (exchange.sent, exchange.method) == (False, "PUT")
    assert exchange.url.endswith(f"/record/v1/invoice/eid:{invoice.pk}")
    assert '"tranId": "' + invoice.number + '"' in exchange.request_body


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("account", "host"),
    [("1234567", "1234567"), ("1234567_SB1", "1234567-sb1"), ("", "your-account-id")],
)
def test_a_sandbox_request_names_the_url_it_would_go_to_for_the_account(account, host):
    globex = CustomerFactory(key="globex", rail="netsuite")
    with override_settings(NETSUITE_ACCOUNT_ID=account, NETSUITE_BASE_URL=""):
        invoice = issued(globex)
        settlement = Settlement.objects.get(invoice=invoice)
        assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "submitted"
    exchange = settlement.exchanges.get(step="invoice")
    assert exchange.url == (
        f"https://{host}.suitetalk.api.netsuite.com/services/rest"
        f"/record/v1/invoice/eid:{invoice.pk}"
    )
    note = settlement.events.get(to_state=SettlementState.SUBMITTED).note
    assert note.startswith("Sandbox: NetSuite credentials are not set")
    assert ("placeholder account (your-account-id)" in note) == (not account)


@pytest.mark.django_db
def test_the_settlements_list_spells_the_rail_netsuite(admin_client):
    globex = CustomerFactory(key="globex", rail="netsuite")
    with override_settings(NETSUITE_ACCOUNT_ID=""):
        issued(globex)
    page = admin_client.get(reverse("admin:rails_settlement_changelist")).content.decode()
    assert '<td class="field-rail">NetSuite</td>' in page
    assert ">netsuite<" not in page and "Netsuite" not in page
