"""What the admin says about a failed settlement: when it will be retried, or that it
failed for good and needs an operator, the same words in the settlement list, its page
and timeline, the dashboard and the customer overview."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from backoffice import dashboard
from billing.models import Invoice, InvoiceStatus
from rails.models import Settlement, SettlementState
from rails.outbox import settlement_drive, settlements_drive_due
from rails.outcomes import settlement_report
from rails.registry import rail_cache_clear
from rails.states import state_text
from tests.rails.pigeon import PigeonRail
from tests.rails.test_settlement import NOW, RAILS, issued_invoice

pytestmark = pytest.mark.django_db

# The worker's clock: after the invoices are issued (at NOW) and ahead of the pages' real
# clock, so a retry it schedules is still to come when the page shows it.
SOON = max(NOW, timezone.now()) + timedelta(hours=1)


@pytest.fixture(autouse=True)
def pigeon_rail():
    PigeonRail.calls, PigeonRail.script, PigeonRail.charges = [], [], {}
    dashboard.cache_clear()
    with override_settings(BILLING_RAILS=RAILS):
        rail_cache_clear()
        yield
    rail_cache_clear()


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def retrying() -> Settlement:
    """A settlement the rail answered 429: retried 30 seconds later."""
    settlement = Settlement.objects.get(invoice=issued_invoice())
    PigeonRail.script = ["429"]
    settlement_drive(settlement_id=settlement.pk, now=SOON)
    return Settlement.objects.get(pk=settlement.pk)


def failed_for_good() -> Settlement:
    """A settlement the rail reported failed (a final answer: nothing retries it)."""
    settlement = Settlement.objects.get(invoice=issued_invoice())
    settlement_drive(settlement_id=settlement.pk, now=SOON)
    settlement_report(
        settlement=settlement, outcome="failed", now=SOON, actor="webhook", note="card declined"
    )
    return Settlement.objects.get(pk=settlement.pk)


def list_row(client, settlement: Settlement) -> str:
    html = client.get(reverse("admin:rails_settlement_changelist")).content.decode()
    invoice = settlement.invoice.number
    match = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{invoice}(?:(?!</tr>).)*</tr>", html, re.S)
    assert match, invoice
    return text_of(match.group(0))


def detail(client, settlement: Settlement) -> tuple[str, str]:
    """The settlement page's State field and its timeline, as text."""
    html = client.get(reverse("admin:rails_settlement_change", args=[settlement.pk])).content
    html = html.decode()
    state = re.search(r'<div class="form-row field-state_text">(.*?)</div>\s*</div>', html, re.S)
    timeline = re.search(r'id="events-group"(.*?)</fieldset>', html, re.S)
    assert state and timeline
    return text_of(state.group(1)), text_of(timeline.group(1))


def test_a_failed_settlement_with_a_retry_says_when_it_is_retried(admin_client):
    settlement = retrying()
    at = f"{timezone.localtime(settlement.next_action_at):%Y-%m-%d %H:%M} UTC"
    label = f"Failed: retry scheduled at {at}"

    assert label in list_row(admin_client, settlement)
    state, timeline = detail(admin_client, settlement)
    assert state == f"State: {label}"
    # the move into the failed state says what happens next; the moves before it do not
    assert timeline.endswith(f"Submitting {label} worker 429 Too Many Requests")
    assert "Pending Submitting worker" in timeline

    html = admin_client.get(reverse("admin:index"), {"refresh": "1"}).content.decode()
    card = text_of(
        re.search(r'id="attention-failed-settlements">(.*?)</div>\s*</div>', html, re.S)[1]
    )
    assert card == f"Failed settlements 1 1 with a retry scheduled at {at}."
    assert 'class="card alarm" id="attention-failed-settlements"' not in html  # nobody must act


def test_a_settlement_that_failed_for_good_says_it_needs_an_operator(admin_client):
    settlement = failed_for_good()
    label = "Failed for good: needs an operator"

    row = list_row(admin_client, settlement)
    assert label in row and "will retry" not in row
    state, timeline = detail(admin_client, settlement)
    assert state == f"State: {label}"
    assert timeline.endswith(f"Submitted {label} webhook card declined")

    html = admin_client.get(reverse("admin:index"), {"refresh": "1"}).content.decode()
    card = text_of(
        re.search(r'id="attention-failed-settlements">(.*?)</div>\s*</div>', html, re.S)[1]
    )
    assert card == "Failed settlements 1 1 failed for good: needs an operator."
    assert 'class="card alarm" id="attention-failed-settlements"' in html

    customer = settlement.invoice.customer
    overview = admin_client.get(
        reverse("admin:customers_customer_overview", args=[customer.pk])
    ).content.decode()
    assert f"pigeon: {label}" in text_of(overview)


def test_the_list_filters_failed_settlements_by_what_happens_next(admin_client):
    waiting, stuck = retrying(), failed_for_good()
    url = reverse("admin:rails_settlement_changelist")
    needs_operator = admin_client.get(url, {"failed": "operator"}).content.decode()
    retry_scheduled = admin_client.get(url, {"failed": "retry"}).content.decode()
    assert stuck.invoice.number in needs_operator and waiting.invoice.number not in needs_operator
    assert waiting.invoice.number in retry_scheduled and stuck.invoice.number not in retry_scheduled


@override_settings(RAILS_MAX_ATTEMPTS=3)
def test_a_settlement_out_of_attempts_says_how_many_it_made():
    now = timezone.now()
    common = {"state": SettlementState.FAILED, "now": now}
    assert (
        state_text(next_action_at=None, attempts=3, **common)
        == "Failed for good after 3 attempts: needs an operator"
    )
    assert state_text(next_action_at=now, attempts=1, **common) == "Failed: retrying now"
    assert (
        state_text(state=SettlementState.PAID, next_action_at=None, attempts=1, now=now) == "Paid"
    )


# ------------------------------------------------------------------ the list, the pages


def row_html(client, settlement: Settlement) -> str:
    html = client.get(reverse("admin:rails_settlement_changelist")).content.decode()
    invoice = settlement.invoice.number
    match = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{invoice}(?:(?!</tr>).)*</tr>", html, re.S)
    assert match, invoice
    return match.group(0)


def field(html: str, name: str) -> str:
    """A read-only field of an admin change page, as text (``Amount due: 1,234.50 USD``)."""
    match = re.search(rf'<div class="form-row field-{name}">(.*?)</div>\s*</div>', html, re.S)
    assert match, name
    return text_of(match.group(1))


def test_each_row_of_the_settlement_list_opens_its_settlement(admin_client):
    settlement = Settlement.objects.get(invoice=issued_invoice())

    row = row_html(admin_client, settlement)

    # the first link of the row is the settlement's, and it has the invoice number to click
    first = re.search(r'<a href="([^"]+)">([^<]*)</a>', row)
    assert first and first.groups() == (
        reverse("admin:rails_settlement_change", args=[settlement.pk]),
        settlement.invoice.number,
    )
    assert not re.search(r"<a [^>]*>\s*<a ", row)  # no link nested in another (an empty one)
    page = admin_client.get(first.group(1))
    assert page.status_code == 200 and settlement.invoice.number in page.content.decode()


def test_the_settlement_list_and_page_show_the_amount_due(admin_client):
    settlement = Settlement.objects.get(invoice=issued_invoice(amount="1234.5"))

    assert "1,234.50 USD" in list_row(admin_client, settlement)
    html = admin_client.get(
        reverse("admin:rails_settlement_change", args=[settlement.pk])
    ).content.decode()
    assert field(html, "amount") == "Amount due: 1,234.50 USD"


def test_a_manual_settlement_waits_for_an_operator_with_nothing_scheduled(admin_client):
    settlement = Settlement.objects.get(invoice=issued_invoice(rail="manual"))
    assert settlement_drive(settlement_id=settlement.pk, now=SOON) == "submitted"
    settlement.refresh_from_db()
    label = "Submitted: waiting for an operator to mark it paid"

    assert settlement.next_action_at is None  # no made-up date years out
    # nothing ever comes due for it, however far the clock moves
    assert settlements_drive_due(now=SOON.replace(year=SOON.year + 20)) == {}
    assert label in list_row(admin_client, settlement)
    html = admin_client.get(
        reverse("admin:rails_settlement_change", args=[settlement.pk])
    ).content.decode()
    assert field(html, "state_text") == f"State: {label}"
    assert field(html, "next_action") == "Next action: —"
    assert f"{SOON.year + 10}" not in html
    assert 'id="settlement-mark-paid"' in html  # the operator's way forward, on the page
    # the rail named as the product spells it, in the title and the timeline
    assert f"Settlement of {settlement.invoice.number} on Manual" in html
    assert "Opened on Manual" in html


def test_an_operator_marks_a_manual_settlement_paid_from_its_page(admin_client):
    invoice = issued_invoice(rail="manual")
    settlement = Settlement.objects.get(invoice=invoice)
    settlement_drive(settlement_id=settlement.pk, now=SOON)
    url = reverse("admin:rails_settlement_mark_paid", args=[settlement.pk])

    confirm = admin_client.get(url).content.decode()
    assert "120.50 USD" in text_of(confirm) and "cannot be undone" in confirm
    done = admin_client.post(url, {"note": "Wire received"}, follow=True).content.decode()

    assert f"{invoice.number} marked paid." in text_of(done)
    assert field(done, "state_text") == "State: Paid"
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.PAID


def test_a_retry_the_rail_accepts_takes_the_invoice_out_of_payment_failed(
    admin_client, django_capture_on_commit_callbacks
):
    settlement = failed_for_good()
    invoice = Invoice.objects.get(pk=settlement.invoice_id)
    assert invoice.status == InvoiceStatus.PAYMENT_FAILED

    with django_capture_on_commit_callbacks(execute=True):  # the drive task, run eagerly
        response = admin_client.post(
            reverse("admin:rails_settlement_changelist"),
            {"action": "retry_now", "_selected_action": [settlement.pk]},
            follow=True,
        )

    assert f"{invoice.number}: retry queued." in text_of(response.content.decode())
    assert "Submitted" in list_row(admin_client, settlement)
    page = admin_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    html = page.content.decode()
    assert field(html, "status") == "Status: Issued"  # open again, no longer "Payment failed"
    assert field(html, "settlement_link") == "Settlement: Submitted"
    timeline = text_of(re.search(r'id="events-group"(.*?)</fieldset>', html, re.S)[1])
    assert "payment_failed issued worker" in timeline  # the move is on the invoice's timeline


def test_an_invoice_page_links_to_its_settlement(admin_client):
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)

    html = admin_client.get(
        reverse("admin:billing_invoice_change", args=[invoice.pk])
    ).content.decode()
    link = re.search(r'<a href="([^"]+)" id="invoice-settlement">([^<]+)</a>', html)

    assert link and link[2] == "Pending"
    opened = admin_client.get(link[1])
    assert opened.status_code == 302
    assert opened["Location"] == reverse("admin:rails_settlement_change", args=[settlement.pk])
    assert admin_client.get(link[1], follow=True).status_code == 200


def test_a_draft_invoice_has_no_settlement_to_link(admin_client):
    draft = Invoice.objects.create(
        customer=Settlement.objects.get(invoice=issued_invoice()).invoice.customer, currency="USD"
    )

    html = admin_client.get(
        reverse("admin:billing_invoice_change", args=[draft.pk])
    ).content.decode()

    assert field(html, "settlement_link") == "Settlement: —"
    assert 'id="invoice-settlement"' not in html
