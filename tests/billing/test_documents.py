"""Invoice and credit-note documents: the PDF a customer receives and the HTML behind it."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.files.storage import default_storage

from billing.credits.services import credit_grant
from billing.documents.pdf import (
    credit_note_pdf_store,
    invoice_html,
    invoice_pdf_bytes,
    invoice_pdf_store,
    pdfs_render_missing,
)
from billing.invoicing.services import credit_note_create, invoice_issue, invoice_line_add
from billing.models import BillingProfile, Invoice, InvoiceLine, LineKind, TaxRate
from tests.factories import CustomerFactory

SEP = datetime(2026, 9, 1, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
ISSUED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    """Stored PDFs go to a temporary media root; settlement hooks are not what these
    tests are about (documents never depend on a rail's state), so they are off."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_INVOICE_ISSUED_HOOKS = []
    settings.BILLING_CREDIT_NOTE_HOOKS = []
    settings.BILLING_SELLER = {
        "name": "Skyline Cloud Inc.",
        "address_lines": [
            "500 Howard Street, Suite 400",
            "San Francisco, CA 94105",
            "United States",
        ],
        "email": "billing@skyline.example",
        "tax_id": "EIN 94-1234567",
        "logo_text": "skyline",
        "website": "skyline.example",
        "bank_transfer": {
            "bank_name": "First Example Bank",
            "account_name": "Skyline Cloud Inc.",
            "account_number": "4455667788",
            "routing_number": "121000248",
            "swift": "FEXBUS6S",
        },
    }


def tiers(*rows) -> list[dict]:
    """Breakdown entries as rating stores them: (tier, from, to, quantity, unit, flat, amount)."""
    keys = ("tier", "from", "to", "quantity", "unit_price", "flat_price", "amount")
    return [dict(zip(keys, [r[0], *map(str, r[1:])], strict=True)) for r in rows]


def line(
    invoice, customer, position, *, kind=LineKind.USAGE, description, amount, **fields
) -> InvoiceLine:
    # Manual lines survive the re-rating that issuing does (these invoices have no plan).
    return InvoiceLine.objects.create(
        invoice=invoice,
        customer=customer,
        position=position,
        kind=kind,
        description=description,
        amount=Decimal(amount),
        unrounded_amount=Decimal(amount),
        manual=True,
        period_start=fields.pop("period_start", invoice.period_start),
        period_end=fields.pop("period_end", invoice.period_end),
        **fields,
    )


def issue(invoice, now=ISSUED) -> Invoice:
    return invoice_issue(invoice=invoice, now=now)


def consolidated_invoice() -> Invoice:
    """Globex (ACH) and its subsidiary Globex EU: flat fee, graduated usage priced on the
    combined quantity, a package price, unit usage with included units, a late-usage
    adjustment for September, sales tax and a prepaid credit."""
    globex = CustomerFactory(
        key="globex",
        name="Globex Corporation",
        email="ap@globex.example",
        rail="ach",
        address_line1="1 Globex Plaza",
        city="Cypress Creek",
        region="OR",
        postal_code="97000",
        country="US",
        tax_id="US 12-3456789",
        rail_settings={
            "routing_number": "011000015",
            "account_number": "000123456789",
            "account_type": "checking",
            "mandate_date": "2026-01-05",
        },
    )
    eu = CustomerFactory(key="globex-eu", name="Globex EU GmbH", parent=globex, country="DE")
    profile = BillingProfile.objects.create(customer=globex, net_terms_days=30)
    profile.tax_rates.add(
        TaxRate.objects.create(key="ca-sales", name="Sales tax", percentage=Decimal("7.25"))
    )
    september = Invoice.objects.create(
        customer=globex, currency="USD", period_start=SEP, period_end=OCT
    )
    line(september, globex, 0, kind=LineKind.FLAT_FEE, description="Platform fee", amount="499.00")
    september = issue(september, now=OCT + timedelta(days=1))

    draft = Invoice.objects.create(
        customer=globex,
        currency="USD",
        period_start=OCT,
        period_end=NOV,
        memo="Purchase order PO-4500012345",
    )
    # prepaid credit, applied when the invoice is issued
    credit_grant(
        account=globex,
        currency="USD",
        amount=Decimal("100.00"),
        kind="paid",
        expires_at=None,
        reason="Prepaid",
        user=None,
        now=OCT,
    )
    line(
        draft,
        globex,
        0,
        kind=LineKind.FLAT_FEE,
        description="Platform fee",
        amount="499.00",
        quantity=Decimal(1),
        unit_price=Decimal("499"),
    )
    graduated = tiers(
        (0, 0, 1000000, 1000000, "0.00002", 0, "20.00000"),
        (1, 1000000, 3400000, 2400000, "0.00001", 0, "24.00000"),
    )
    shared = dict(
        group_quantity=Decimal(3400000),
        group_amount=Decimal("44.00"),
        tier_breakdown=graduated,
        rate_card_id=None,
    )
    line(
        draft,
        globex,
        1,
        description="LLM output tokens",
        amount="25.88",
        quantity=Decimal(2000000),
        **shared,
    )
    line(
        draft,
        eu,
        2,
        description="LLM output tokens",
        amount="18.12",
        quantity=Decimal(1400000),
        **shared,
    )
    line(
        draft,
        globex,
        3,
        description="LLM input tokens",
        amount="24.00",
        quantity=Decimal(2350000),
        group_quantity=Decimal(2350000),
        tier_breakdown=[
            {
                "tier": None,
                "from": "0",
                "to": "2350000",
                "quantity": "2350000",
                "unit_price": "1.00",
                "flat_price": "0",
                "amount": "24.00",
                "packages": "24",
                "package_size": "100000",
            }
        ],
    )
    line(
        draft,
        eu,
        4,
        description="Flight search API calls",
        amount="360.00",
        quantity=Decimal(181000),
        unit_price=Decimal("0.002"),
        group_quantity=Decimal(181000),
        tier_breakdown=tiers((None, 0, 180000, 180000, "0.002", 0, "360.000")),
    )
    line(
        draft,
        eu,
        5,
        kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
        amount="2.40",
        quantity=Decimal(1200),
        description=f"Flight search API calls: late usage for 2026-09-01 – 2026-10-01 (invoice {september.number})",
        period_start=SEP,
        period_end=OCT,
        adjusts_invoice=september,
        unit_price=Decimal("0.002"),
    )
    return issue(draft)


def readable(html: str) -> str:
    """Dates keep their parts together with no-break spaces; read them as spaces."""
    return html.replace("\u00a0", " ")


def pdf_text(pdf: bytes, tmp_path) -> str:
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) is not installed")
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout.replace("\u00a0", " ")


def simple_invoice(**customer) -> Invoice:
    acme = CustomerFactory(key="acme", name="Acme Rockets", **customer)
    draft = Invoice.objects.create(
        customer=acme, currency=acme.currency, period_start=OCT, period_end=NOV
    )
    invoice_line_add(
        invoice=draft, description="Onboarding workshop", amount=Decimal("1500"), now=ISSUED
    )
    return draft


@pytest.mark.django_db
def test_issued_invoice_pdf_shows_number_customer_and_amounts(tmp_path):
    invoice = issue(simple_invoice())
    pdf = invoice_pdf_bytes(invoice=invoice)
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf, tmp_path)
    assert invoice.number in text
    assert "Acme Rockets" in text
    assert "Onboarding workshop" in text
    assert "$1,500.00" in text
    assert "Skyline Cloud Inc." in text
    assert "Page 1 of 1" in text
    assert "DRAFT" not in text


@pytest.mark.django_db
def test_pdf_is_rendered_and_stored_once(tmp_path):
    invoice = issue(simple_invoice())
    stored = invoice_pdf_store(invoice=invoice, now=ISSUED)
    assert stored.pdf.name.endswith(f"{invoice.number}.pdf")
    assert stored.pdf_rendered_at == ISSUED
    assert default_storage.open(stored.pdf.name).read().startswith(b"%PDF")

    again = invoice_pdf_store(invoice=invoice, now=ISSUED + timedelta(hours=1))
    assert (again.pdf.name, again.pdf_rendered_at) == (stored.pdf.name, ISSUED)
    assert pdfs_render_missing(now=ISSUED + timedelta(hours=2)) == 0


@pytest.mark.django_db
def test_issuing_renders_the_pdf_through_the_task(django_capture_on_commit_callbacks):
    draft = simple_invoice()
    with django_capture_on_commit_callbacks(execute=True):
        issue(draft)
    invoice = Invoice.objects.get(pk=draft.pk)
    assert invoice.pdf.name.endswith(f"{invoice.number}.pdf")
    assert invoice.pdf_rendered_at is not None


@pytest.mark.django_db
def test_billing_run_renders_every_missing_invoice_and_credit_note_pdf():
    invoice = issue(simple_invoice())
    note = credit_note_create(
        invoice=invoice, reason="Workshop cut short", amount=Decimal("300"), now=ISSUED
    )
    assert pdfs_render_missing(now=ISSUED) == 2
    assert pdfs_render_missing(now=ISSUED) == 0
    note.refresh_from_db()
    assert default_storage.open(note.pdf.name).read().startswith(b"%PDF")
    assert (
        credit_note_pdf_store(credit_note=note, now=ISSUED + timedelta(days=1)).pdf_rendered_at
        == ISSUED
    )


@pytest.mark.django_db
def test_credit_note_pdf_names_the_invoice_and_reason(tmp_path):
    invoice = issue(simple_invoice())
    note = credit_note_create(
        invoice=invoice, reason="Workshop cut short", amount=Decimal("300"), now=ISSUED
    )
    stored = credit_note_pdf_store(credit_note=note, now=ISSUED)
    text = pdf_text(default_storage.open(stored.pdf.name).read(), tmp_path)
    assert note.number in text and invoice.number in text
    assert "Workshop cut short" in text and "$300.00" in text


@pytest.mark.django_db
def test_drafts_are_previewable_under_a_watermark_but_never_stored(tmp_path):
    draft = simple_invoice()
    with pytest.raises(ValueError, match="draft"):
        invoice_pdf_store(invoice=draft, now=ISSUED)
    assert not Invoice.objects.get(pk=draft.pk).pdf
    text = pdf_text(invoice_pdf_bytes(invoice=draft), tmp_path)
    assert "DRAFT" in text and "Onboarding workshop" in text
    assert pdfs_render_missing(now=ISSUED) == 0


@pytest.mark.django_db
def test_consolidated_invoice_groups_lines_by_company_with_subtotals():
    invoice = consolidated_invoice()
    html = readable(invoice_html(invoice=invoice, for_pdf=False))
    assert "Globex Corporation" in html and "Globex EU GmbH" in html
    assert "Subtotal Globex Corporation" in html and "$548.88" in html  # 499 + 25.88 + 24
    assert "Subtotal Globex EU GmbH" in html and "$380.52" in html  # 18.12 + 360 + 2.40
    # graduated tiers explained once, on the combined quantity
    assert "Combined usage pricing" in html
    assert "Tier 1: 1 – 1,000,000" in html and "Tier 2: 1,000,001 – 3,400,000" in html
    assert "$0.00002" in html and "58.8% of the combined 3,400,000" in html
    assert "Packages of 100,000 units, rounded up" in html
    assert "First 1,000 units included" in html
    # late usage names the original period and invoice
    assert "Sep 1 – Sep 30, 2026" in html and "INV-2026-000001" in html
    # tax, credits and the amount due
    assert "Sales tax" in html and "$67.38" in html  # 7.25% of 929.40
    assert "$996.78" in html and "$896.78" in html  # total, then 100.00 of credit off
    assert invoice.amount_due == Decimal("896.78")


@pytest.mark.django_db
def test_single_company_invoice_is_not_grouped():
    html = readable(invoice_html(invoice=issue(simple_invoice()), for_pdf=True))
    assert "Subtotal Acme Rockets" not in html
    assert "Combined usage pricing" not in html


@pytest.mark.django_db
def test_ach_instructions_show_only_the_last_four_digits(tmp_path):
    invoice = consolidated_invoice()
    html = readable(invoice_html(invoice=invoice, for_pdf=True))
    assert "Debited from account ending 6789 on or after Dec 2, 2026" in html
    assert "000123456789" not in html and "12345678" not in html
    assert "011000015" not in html  # the routing number stays private too
    assert "Debited from account ending 6789" in pdf_text(
        invoice_pdf_bytes(invoice=invoice), tmp_path
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rail", "rail_settings", "expected"),
    [
        ("stripe", {"stripe_customer_id": "cus_123"}, "Charged to the card on file"),
        (
            "netsuite",
            {"netsuite_entity_id": "77"},
            "Payable under your NetSuite terms, net 30 days",
        ),
        ("manual", {}, "Routing number: 121000248"),
    ],
)
def test_payment_instructions_follow_the_customers_rail(rail, rail_settings, expected):
    invoice = issue(simple_invoice(rail=rail, rail_settings=rail_settings))
    html = readable(invoice_html(invoice=invoice, for_pdf=True))
    assert expected in html
    if rail == "manual":
        assert f"Reference: {invoice.number}" in html


@pytest.mark.django_db
def test_tax_exempt_customers_see_the_reason():
    draft = simple_invoice()
    BillingProfile.objects.create(
        customer=draft.customer, tax_exempt=True, tax_exempt_reason="Reseller certificate 123"
    )
    html = readable(invoice_html(invoice=issue(draft), for_pdf=True))
    assert "Tax exempt: Reseller certificate 123" in html
