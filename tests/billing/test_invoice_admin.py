"""The invoice admin: every page loads, the operator's buttons change invoices through the
services, destructive ones confirm first, and issued invoices are read-only."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import include, path, reverse

import billing.invoicing.admin  # noqa: F401  (registers the invoice and credit note admins)
from billing.catalog.periods import Period
from billing.invoicing.services import (
    credit_note_create,
    invoice_draft_for,
    invoice_issue,
    invoice_line_add,
)
from billing.models import CreditNote, Invoice, InvoiceStatus, LineKind
from config.urls import urlpatterns as project_urlpatterns
from metering.services import usage_rollup
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

# The admin as it is once this module is imported, ahead of the project's URLs.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("billing.documents.portal_urls")),
    *project_urlpatterns,
]
pytestmark = pytest.mark.urls(__name__)

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


@pytest.fixture
def acme(db):
    account = CustomerFactory(key="acme", name="Acme Corp", rail="ach")
    CustomerFactory(key="acme-eu", name="Acme EU", parent=account)
    SubscriptionFactory(customer=account, plan_version__feature=FeatureFactory(), start=OCT)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=account, valid_from=OCT)
    return account


def draft_for(account, start=OCT, end=NOV) -> Invoice:
    return invoice_draft_for(account=account, period=Period(start, end), now=end)[0]


@pytest.fixture
def issued(acme) -> Invoice:
    draft = draft_for(acme)
    invoice_line_add(invoice=draft, description="Workshop", amount=Decimal("100"), now=NOV)
    return invoice_issue(invoice=draft, now=NOV + timedelta(days=1))


def url(name: str, *args) -> str:
    return reverse(f"admin:billing_{name}", args=args)


def page(response) -> str:
    assert response.status_code == 200, response.content[:2000]
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_every_invoice_admin_page_loads_for_a_superuser(admin_client, acme, issued):
    draft = draft_for(acme, NOV, DEC)
    note = credit_note_create(invoice=issued, reason="Goodwill", amount=Decimal("5"), now=NOV)
    usage_line = draft.lines.get(kind=LineKind.USAGE)
    listing = url("invoice_changelist")
    text = page(admin_client.get(listing))
    assert issued.number in text and "acme" in text and "49.00 USD" in text
    for params in ({"q": "acme"}, {"q": issued.number}, {"status__exact": "draft"},
                   {"customer__rail": "ach"}, {"period": "2026-10"}):  # fmt: skip
        page(admin_client.get(listing, params))
    assert issued.number not in page(admin_client.get(listing, {"period": "2026-11"}))
    for target in (
        url("invoice_change", draft.pk),
        url("invoice_change", issued.pk),
        url("invoice_issue", draft.pk),
        url("invoice_add_line", draft.pk),
        url("invoice_void", issued.pk),
        url("invoice_credit_note", issued.pk),
        url("invoice_line_usage", draft.pk, usage_line.pk),
        url("creditnote_changelist"),
        url("creditnote_change", note.pk),
        url("invoice_history", issued.pk),
    ):
        page(admin_client.get(target))
    for target in (
        url("invoice_pdf", draft.pk),
        url("invoice_pdf", issued.pk),
        url("creditnote_pdf", note.pk),
    ):
        response = admin_client.get(target)
        assert response.status_code == 200 and response["Content-Type"] == "application/pdf", target
    events = admin_client.get(url("invoice_line_events", draft.pk, usage_line.pk))
    assert events.status_code == 200 and b"".join(events.streaming_content).startswith(
        b'"time","source","id"'  # every cell quoted (CSV injection)
    )
    fee = draft.lines.get(kind=LineKind.FLAT_FEE)
    assert admin_client.get(url("invoice_line_usage", draft.pk, fee.pk)).status_code == 404


def test_a_draft_shows_its_buttons_and_an_issued_invoice_its_own(admin_client, acme, issued):
    draft = draft_for(acme, NOV, DEC)
    text = page(admin_client.get(url("invoice_change", draft.pk)))
    assert all(f'id="invoice-{b}"' in text for b in ("issue", "recompute", "add-line", "pdf"))
    assert 'id="invoice-void"' not in text and 'id="invoice-credit"' not in text
    text = page(admin_client.get(url("invoice_change", issued.pk)))
    assert all(f'id="invoice-{b}"' in text for b in ("void", "credit", "pdf"))
    assert 'id="invoice-issue"' not in text and 'id="invoice-add-line"' not in text
    assert "Workshop" in text and "Numbered " + issued.number in text  # lines and the timeline


def test_only_a_draft_shows_when_its_grace_period_ends(admin_client, acme, issued):
    draft = draft_for(acme, NOV, DEC)
    text = page(admin_client.get(url("invoice_change", draft.pk)))
    assert "field-grace_until" in text and "Issued automatically after this." in text
    text = page(admin_client.get(url("invoice_change", issued.pk)))
    assert "field-grace_until" not in text and "Issued automatically" not in text
    assert "field-issued_at" in text


def test_the_list_shows_drafts_first_then_invoices_by_number_newest_first(
    admin_client, acme, issued
):
    november = invoice_issue(invoice=draft_for(acme, NOV, DEC), now=DEC + timedelta(days=1))
    december = draft_for(acme, DEC, DEC + timedelta(days=31))
    listing = admin_client.get(url("invoice_changelist")).context["cl"].result_list
    assert [i.pk for i in listing] == [december.pk, november.pk, issued.pk]
    assert issued.number < november.number


def test_credit_notes_are_listed_by_number_newest_first(admin_client, issued):
    notes = [
        credit_note_create(invoice=issued, reason=f"Goodwill {n}", amount=Decimal("1"), now=NOV)
        for n in range(3)
    ]
    listing = admin_client.get(url("creditnote_changelist")).context["cl"].result_list
    assert [n.number for n in listing] == [n.number for n in reversed(notes)]


def test_an_issued_invoice_is_read_only(admin_client, issued, rf, admin_user):
    model_admin = admin.site._registry[Invoice]
    request = rf.get("/")
    request.user = admin_user
    assert not model_admin.has_change_permission(request, issued)
    assert not model_admin.has_delete_permission(request, issued)
    assert not model_admin.has_add_permission(request)
    text = page(admin_client.get(url("invoice_change", issued.pk)))
    assert 'name="_save"' not in text and "deletelink" not in text
    response = admin_client.post(url("invoice_change", issued.pk), {"memo": "changed"})
    assert response.status_code == 403
    assert admin_client.get(url("invoice_delete", issued.pk)).status_code == 403
    assert Invoice.objects.get(pk=issued.pk).memo == ""


def test_issue_now_asks_first_then_numbers_the_draft(admin_client, acme):
    draft = draft_for(acme)
    confirm = page(admin_client.get(url("invoice_issue", draft.pk)))
    assert "cannot be undone" in confirm
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT

    response = admin_client.post(url("invoice_issue", draft.pk), follow=True)
    invoice = Invoice.objects.get(pk=draft.pk)
    number = f"INV-{invoice.issued_at:%Y}-000001"  # numbered in the year it is issued
    assert (invoice.status, invoice.number) == (InvoiceStatus.ISSUED, number)
    assert messages_of(response) == [f"Issued {number} (49.00 USD)."]
    assert invoice.events.last().actor == "admin"

    again = admin_client.post(url("invoice_issue", draft.pk), follow=True)
    assert "already issued" in messages_of(again)[0]


def test_the_issue_action_confirms_then_reports_each_invoice(admin_client, acme, issued):
    draft = draft_for(acme, NOV, DEC)
    data = {"action": "issue_selected", ACTION_CHECKBOX_NAME: [str(draft.pk), str(issued.pk)]}
    confirm = page(admin_client.post(url("invoice_changelist"), data))
    assert "cannot be undone" in confirm and str(draft) in confirm
    assert Invoice.objects.get(pk=draft.pk).is_draft

    response = admin_client.post(url("invoice_changelist"), {**data, "post": "yes"}, follow=True)
    invoice = Invoice.objects.get(pk=draft.pk)
    # numbered in the year it is issued: after ``issued``'s number when that is the same year
    sequence = 2 if invoice.issued_at.year == issued.issued_at.year else 1
    assert invoice.number == f"INV-{invoice.issued_at:%Y}-{sequence:06d}"
    assert messages_of(response) == [
        f"Issued {invoice.number} (49.00 USD).",
        "Skipped 1 invoice(s) that are not drafts.",
    ]


def test_recompute_and_a_manual_line_change_the_draft(admin_client, acme):
    draft = draft_for(acme)
    response = admin_client.post(url("invoice_recompute", draft.pk), follow=True)
    assert messages_of(response) == [f"Recomputed {draft}: total 49.00 USD."]

    form = page(
        admin_client.post(
            url("invoice_add_line", draft.pk), {"description": "Setup", "amount": "ten"}
        )
    )
    assert "Enter a number" in form and draft.lines.filter(manual=True).count() == 0

    eu = acme.subsidiaries.get()
    response = admin_client.post(
        url("invoice_add_line", draft.pk),
        {"description": "EU setup", "amount": "250.005", "quantity": "1", "customer": eu.pk},
        follow=True,
    )
    line = draft.lines.get(manual=True)
    assert (line.description, line.amount, line.customer, line.created_by.username) == (
        "EU setup",
        Decimal("250.01"),
        eu,
        "admin",
    )
    assert Invoice.objects.get(pk=draft.pk).total == Decimal("299.01")
    assert "Added “EU setup” (250.01 USD)" in messages_of(response)[0]
    admin_client.post(url("invoice_recompute", draft.pk))
    assert draft.lines.filter(manual=True).count() == 1  # manual lines survive a recompute


def test_void_needs_a_reason_and_then_voids(admin_client, issued):
    form = page(admin_client.post(url("invoice_void", issued.pk), {"reason": ""}))
    assert "This field is required" in form
    assert Invoice.objects.get(pk=issued.pk).status == InvoiceStatus.ISSUED

    response = admin_client.post(
        url("invoice_void", issued.pk), {"reason": "Billed twice"}, follow=True
    )
    invoice = Invoice.objects.get(pk=issued.pk)
    assert (invoice.status, invoice.void_reason) == (InvoiceStatus.VOID, "Billed twice")
    assert messages_of(response) == [f"Voided {issued.number}."]
    text = page(admin_client.get(url("invoice_change", issued.pk)))
    assert 'id="invoice-void"' not in text and 'id="invoice-credit"' not in text


def test_the_void_action_confirms_with_a_reason(admin_client, issued):
    data = {"action": "void_selected", ACTION_CHECKBOX_NAME: [str(issued.pk)]}
    assert "reason" in page(admin_client.post(url("invoice_changelist"), data))
    assert Invoice.objects.get(pk=issued.pk).status == InvoiceStatus.ISSUED
    admin_client.post(
        url("invoice_changelist"), {**data, "post": "yes", "reason": "Wrong customer"}
    )
    assert Invoice.objects.get(pk=issued.pk).status == InvoiceStatus.VOID


def test_credit_notes_by_lines_amount_and_the_rest(admin_client, issued):
    target = url("invoice_credit_note", issued.pk)
    workshop = issued.lines.get(kind=LineKind.MANUAL)

    too_much = page(admin_client.post(target, {"scope": "amount", "amount": "500", "reason": "x"}))
    assert "left to credit" in too_much and not CreditNote.objects.exists()
    assert "Choose the lines" in page(admin_client.post(target, {"scope": "lines", "reason": "x"}))

    response = admin_client.post(
        target, {"scope": "lines", "lines": [workshop.pk], "reason": "Cancelled"}, follow=True
    )
    year = CreditNote.objects.get().issued_at.year  # numbered in the year it is issued
    assert messages_of(response) == [
        f"Credit note CN-{year}-000001 for 100.00 USD on {issued.number}."
    ]
    admin_client.post(target, {"scope": "amount", "amount": "9", "reason": "Goodwill"})
    admin_client.post(target, {"scope": "whole", "reason": "Closing"})
    assert [(n.number, n.amount) for n in CreditNote.objects.order_by("number")] == [
        (f"CN-{year}-000001", Decimal("100.00")),
        (f"CN-{year}-000002", Decimal("9.00")),
        (f"CN-{year}-000003", Decimal("40.00")),
    ]
    text = page(admin_client.get(url("invoice_change", issued.pk)))
    assert all(
        number in text for number in (f"CN-{year}-000001", f"CN-{year}-000002", f"CN-{year}-000003")
    )
    note = page(
        admin_client.get(
            url("creditnote_change", CreditNote.objects.get(number=f"CN-{year}-000001").pk)
        )
    )
    assert "Credit: Workshop: 100.00 USD" in note and f"CN-{year}-000001.pdf" in note


def test_a_draft_cannot_be_credited_or_voided(admin_client, acme):
    draft = draft_for(acme)
    response = admin_client.post(url("invoice_void", draft.pk), {"reason": "x"})
    assert "only unpaid issued invoices" in page(response)
    response = admin_client.post(
        url("invoice_credit_note", draft.pk), {"scope": "whole", "reason": "x"}
    )
    assert "only issued invoices can be credited" in page(response)
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT


@pytest.mark.django_db(transaction=True)
def test_a_usage_line_links_to_its_buckets_and_raw_events(admin_client, ingest, acme):
    ingest(
        *[
            cloud_event(f"c{i}", subject="acme-gw", time=(OCT + timedelta(hours=i)).isoformat())
            for i in range(7)
        ]
    )
    usage_rollup(now=NOV)
    draft = draft_for(acme)
    line = draft.lines.get(kind=LineKind.USAGE)
    assert line.quantity == 7

    change = page(admin_client.get(url("invoice_change", draft.pk)))
    assert url("invoice_line_usage", draft.pk, line.pk) in change
    usage = page(admin_client.get(url("invoice_line_usage", draft.pk, line.pk)))
    assert 'id="usage-quantity">7<' in usage and 'id="line-quantity">7<' in usage
    assert "adds up to the line" in usage
    response = admin_client.get(url("invoice_line_events", draft.pk, line.pk))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 7 and {row["customer"] for row in rows} == {"acme"}


def test_line_numbers_read_as_on_the_pdf(admin_client, acme):
    """Quantities with thousands separators and no trailing zeros, unit prices exact,
    money at the currency's precision."""
    draft = draft_for(acme)
    line = invoice_line_add(
        invoice=draft,
        description="Bulk export",
        amount=Decimal("2469.135"),
        quantity=Decimal("1234567.500000"),
        now=NOV,
    )
    type(line).objects.filter(pk=line.pk).update(
        unit_price=Decimal("0.0020000000000000"), group_quantity=Decimal("2500000.000000")
    )
    html = page(admin_client.get(url("invoice_change", draft.pk)))
    rows = re.findall(r'<tr[^>]*id="lines-\d+"[^>]*>.*?</tr>', html, re.S)
    bulk = next(r for r in rows if "Bulk export" in r)
    platform = next(r for r in rows if "Platform fee" in r)

    def cell(row: str, field: str) -> str:
        found = re.search(rf'<td class="field-{field}">\s*<p>(.*?)</p>', row, re.S)
        assert found, field
        return found.group(1).strip()

    assert cell(bulk, "quantity_text") == "1,234,567.5 of 2,500,000"
    assert cell(bulk, "unit_price_text") == "0.002 USD"
    assert cell(bulk, "amount_text") == "2,469.14 USD"
    assert (cell(platform, "quantity_text"), cell(platform, "amount_text")) == ("1", "49.00 USD")


def test_the_usage_page_writes_quantities_with_separators(admin_client, acme):
    draft = draft_for(acme)
    calls = draft.lines.get(feature__key="api_calls")
    type(calls).objects.filter(pk=calls.pk).update(quantity=Decimal("13897800.000000"))
    html = page(admin_client.get(url("invoice_line_usage", draft.pk, calls.pk)))
    assert 'id="line-quantity">13,897,800<' in html  # never 1.38978E+7
