"""Invoice and credit-note documents: one HTML template for the PDF and the hosted page.

An issued invoice's PDF is rendered once and stored (Django's default storage); it shows
the invoice as issued, never its later payment state, which the hosted page shows live.
Drafts render too (for the operator's preview), under a DRAFT watermark, but are never
stored. Numbers are written by ``core.money`` and dates and periods by ``billing.display``:
amounts (line amounts, and the tier amounts and flat prices of a breakdown, whose exact
values stay in the database and the API) at the currency's minor unit; unit prices with
every significant decimal, without padding; quantities with thousands separators.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal

from babel import Locale
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.template.loader import render_to_string

from billing.display import customer_zone, format_date, format_period
from billing.models import BillingProfile, CreditNote, Invoice, InvoiceStatus, LineKind
from core.money import format_money, format_price, format_quantity
from customers.models import Customer

logger = logging.getLogger(__name__)

#: Defaults of ``settings.BILLING_SELLER``, the company that issues the invoices.
SELLER_DEFAULTS: dict = {
    "name": "Example Cloud Inc.",
    "address_lines": ["100 Example Street", "San Francisco, CA 94105", "United States"],
    "email": "billing@example.com",
    "phone": "",
    "website": "",
    "tax_id": "",
    "logo_text": "",  # the wordmark at the top left; empty: the name
    "page_size": "",  # "A4" or "Letter"; empty: Letter for customers in North America
    "footer_note": "",
    # For customers on the manual rail; only the fields that are set are printed.
    "bank_transfer": dict.fromkeys(
        ("bank_name", "account_name", "account_number", "routing_number", "iban", "swift"), ""
    ),
}
BANK_LABELS = {
    "bank_name": "Bank",
    "account_name": "Account name",
    "account_number": "Account number",
    "routing_number": "Routing number",
    "iban": "IBAN",
    "swift": "SWIFT / BIC",
}
LETTER_COUNTRIES = {"US", "CA", "MX", "PH", "CL", "CO"}
PDFS_PER_RUN = 500


def seller() -> dict:
    """The seller's details: ``settings.BILLING_SELLER`` over ``SELLER_DEFAULTS``."""
    configured = getattr(settings, "BILLING_SELLER", None) or {}
    merged = {**SELLER_DEFAULTS, **configured}
    merged["bank_transfer"] = {
        **SELLER_DEFAULTS["bank_transfer"],
        **(configured.get("bank_transfer") or {}),
    }
    merged["logo_text"] = merged["logo_text"] or merged["name"]
    return merged


# ---------------------------------------------------------------- formatting


def mask_account_number(number: str | None) -> str:
    """Only the last four digits of a bank account number ever leave the database."""
    digits = "".join(ch for ch in str(number or "") if ch.isalnum())
    return digits[-4:] if len(digits) >= 4 else ""


# ---------------------------------------------------------------- the invoice's content


def _party(customer: Customer) -> dict:
    locality = ", ".join(part for part in (customer.city, customer.region) if part)
    city_line = " ".join(part for part in (locality, customer.postal_code) if part)
    country = Locale("en").territories.get((customer.country or "").upper(), customer.country)
    lines = [customer.address_line1, customer.address_line2, city_line, country]
    return {
        "name": customer.name,
        "address_lines": [line for line in lines if line],
        "email": customer.email,
        "tax_id": customer.tax_id,
    }


def _net_terms(invoice: Invoice) -> int:
    profile = BillingProfile.objects.filter(customer_id=invoice.customer_id).first()
    if profile is not None:
        return profile.net_terms_days
    if invoice.issued_at and invoice.due_at:
        return (invoice.due_at - invoice.issued_at).days
    return settings.BILLING_NET_TERMS_DAYS


def payment_instructions(*, invoice: Invoice, zone: tzinfo) -> dict:
    """How this invoice gets paid, per the billing account's rail: a title and lines.
    Bank account numbers are never printed whole: the last four digits at most."""
    rail, rail_settings = invoice.customer.rail, invoice.customer.rail_settings or {}
    due = format_date(invoice.due_at, zone) or "the due date"
    reference = invoice.number or "the invoice number"
    if rail == "stripe":
        return {
            "title": "Card payment",
            "lines": ["Charged to the card on file. No action is needed."],
        }
    if rail == "ach":
        # the rail keeps only the last four digits in clear (the number is encrypted)
        last4 = rail_settings.get("account_last4") or mask_account_number(
            rail_settings.get("account_number")
        )
        source = f"account ending {last4}" if last4 else "your bank account on file"
        lines = [
            f"Debited from {source} on or after {due}.",
            "Under your debit authorization; no action is needed.",
        ]
        return {"title": "ACH direct debit", "lines": lines}
    if rail == "netsuite":
        terms = f"Payable under your NetSuite terms, net {_net_terms(invoice)} days (due {due})."
        return {"title": "Payment terms", "lines": [terms, f"Quote {reference} with your payment."]}
    if rail == "manual":
        bank = seller()["bank_transfer"]
        details = [f"{label}: {bank[key]}" for key, label in BANK_LABELS.items() if bank.get(key)]
        details = details or [f"Ask {seller()['email']} for our bank details."]
        lines = [f"Please pay by bank transfer by {due}.", *details, f"Reference: {reference}"]
        return {"title": "Bank transfer", "lines": lines}
    return {"title": "Payment", "lines": [f"Due {due}."]}


def _breakdown_rows(line, currency: str) -> list[dict]:
    rows = []
    for entry in line.tier_breakdown or []:
        low, high = Decimal(entry.get("from") or 0), entry.get("to")
        quantity = entry.get("quantity")
        if entry.get("packages") not in (None, "None"):
            label = f"Packages of {format_quantity(entry.get('package_size'))} units, rounded up"
            quantity = entry["packages"]
        else:
            tier = entry.get("tier")
            label = "All units" if tier is None else f"Tier {int(tier) + 1}"
            whole = low == low.to_integral_value()
            if high not in (None, "None") and Decimal(high) == low:
                span = "no usage"  # the first tier's flat fee, charged at zero usage
            elif high not in (None, "None"):
                span = f"{format_quantity(low + 1 if whole else low)} – {format_quantity(high)}"
            else:
                span = f"over {format_quantity(low)}"
            label = f"{label}: {span}" if tier is not None else label
        flat = Decimal(entry.get("flat_price") or 0)
        rows.append(
            {
                "label": label,
                "quantity": format_quantity(quantity),
                "unit_price": format_price(entry.get("unit_price"), currency),
                # amounts, not prices: the exact product (0.00001234) is the API's to show
                "flat_price": format_money(flat, currency) if flat else "",
                "amount": format_money(entry.get("amount"), currency),
            }
        )
    return rows


def _explains(line) -> bool:
    """A breakdown explains a charge unless it is the unit price the line already shows."""
    entries = line.tier_breakdown or []
    if not entries:
        return False
    if len(entries) > 1 or any(
        e.get("tier") is not None or e.get("packages") not in (None, "None") for e in entries
    ):
        return True
    return any(Decimal(e.get("flat_price") or 0) for e in entries)


def _pricing_key(line) -> tuple:
    """Lines priced together: one rate card's charge over the combined quantity, split
    among the companies it came from."""
    card = line.rate_card_id or line.description
    return (card, line.period_start, line.period_end, line.group_quantity, line.group_amount)


def _included_notes(line, quantity: Decimal | None) -> list[str]:
    """The breakdown prices the billable quantity: what is left of the usage was free."""
    if not line.tier_breakdown or quantity is None:
        return []
    billed = sum((Decimal(e.get("quantity") or 0) for e in line.tier_breakdown), Decimal(0))
    included = quantity - billed
    return [f"First {format_quantity(included)} units included"] if included > 0 else []


def _line_row(line, *, invoice: Invoice, zone: tzinfo, shared: bool) -> dict:
    currency = invoice.currency
    notes = []
    if line.kind == LineKind.PRIOR_PERIOD_ADJUSTMENT:
        original = line.adjusts_invoice.number if line.adjusts_invoice_id else ""
        notes.append(
            f"Usage for {format_period(line.period_start, line.period_end, zone)} that arrived after "
            + (f"invoice {original} was issued." if original else "that period was invoiced.")
        )
    elif (line.period_start, line.period_end) != (invoice.period_start, invoice.period_end):
        period = format_period(line.period_start, line.period_end, zone)
        if period:
            notes.append(f"Service period {period}")
    if shared and line.group_quantity:
        share = Decimal(line.quantity or 0) / line.group_quantity * 100
        share = share.quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )  # a percentage shown, not money
        notes.append(
            f"{format_quantity(share)}% of the combined {format_quantity(line.group_quantity)} "
            f"units, priced together (see Combined usage pricing)"
        )
    breakdown = _breakdown_rows(line, currency) if (not shared and _explains(line)) else []
    if not shared:
        notes += _included_notes(line, line.group_quantity or line.quantity)
    flat = line.kind in (LineKind.FLAT_FEE, LineKind.MINIMUM_TRUE_UP)
    return {
        "description": line.description,
        "kind": line.get_kind_display(),
        "is_adjustment": line.kind == LineKind.PRIOR_PERIOD_ADJUSTMENT,
        "notes": notes,
        "quantity": "" if flat and line.quantity == 1 else format_quantity(line.quantity),
        "unit_price": format_price(line.unit_price, currency),
        "amount": format_money(line.amount, currency),
        "breakdown": breakdown,
    }


def _tax_row(tax, currency: str) -> dict:
    return {
        "name": tax.name,
        "percentage": format_quantity(tax.percentage),
        "inclusive": tax.inclusive,
        "base": format_money(tax.base, currency),
        "amount": format_money(tax.amount, currency),
    }


def invoice_context(*, invoice: Invoice) -> dict:
    """Everything the invoice template shows, already formatted."""
    invoice = Invoice.objects.select_related("customer").get(pk=invoice.pk)
    account, currency = invoice.customer, invoice.currency
    zone = customer_zone(account)
    lines = list(
        invoice.lines.select_related("customer", "adjusts_invoice").order_by("position", "pk")
    )
    customers = {line.customer_id: line.customer for line in lines}
    consolidated = len(customers) > 1
    usage_keys = defaultdict(list)
    for line in lines:
        if line.kind == LineKind.USAGE and line.group_quantity is not None:
            usage_keys[_pricing_key(line)].append(line)
    shared = {key for key, group in usage_keys.items() if consolidated and len(group) > 1}
    groups: dict[int, dict] = {}
    order = sorted(customers.values(), key=lambda c: (c.pk != account.pk, c.name.lower(), c.pk))
    for c in order:
        groups[c.pk] = {
            "name": c.name,
            "is_account": c.pk == account.pk,
            "rows": [],
            "subtotal": Decimal(0),
        }
    for line in lines:
        is_shared = line.kind == LineKind.USAGE and _pricing_key(line) in shared
        groups[line.customer_id]["rows"].append(
            _line_row(line, invoice=invoice, zone=zone, shared=is_shared)
        )
        groups[line.customer_id]["subtotal"] += line.amount
    for group in groups.values():
        group["subtotal"] = format_money(group["subtotal"], currency)
    combined = []
    for key in sorted(shared, key=lambda k: min(line.position for line in usage_keys[k])):
        first = usage_keys[key][0]
        combined.append(
            {
                "description": first.description,
                "period": format_period(first.period_start, first.period_end, zone),
                "quantity": format_quantity(first.group_quantity),
                "amount": format_money(first.group_amount, currency),
                "companies": len(usage_keys[key]),
                "breakdown": _breakdown_rows(first, currency) if _explains(first) else [],
                "unit_price": format_price(first.unit_price, currency),
                "notes": _included_notes(first, first.group_quantity),
            }
        )
    taxes = [_tax_row(tax, currency) for tax in invoice.taxes.order_by("pk")]
    return {
        "invoice": invoice,
        "seller": seller(),
        "bill_to": _party(account),
        "draft": invoice.is_draft,
        "number": invoice.number or "DRAFT",
        "currency": currency,
        "issue_date": format_date(invoice.issued_at, zone) or "Not issued",
        "due_date": format_date(invoice.due_at, zone),
        "consolidated": consolidated,
        "groups": list(groups.values()),
        "combined": combined,
        "taxes": taxes,
        "tax_exempt_reason": invoice.tax_exempt_reason,
        "subtotal": format_money(invoice.subtotal, currency),
        "total": format_money(invoice.total, currency),
        "credits_applied": format_money(invoice.credits_applied, currency)
        if invoice.credits_applied
        else "",
        "amount_due": format_money(invoice.amount_due, currency),
        "amount_paid": format_money(invoice.amount_paid, currency) if invoice.amount_paid else "",
        "paid_date": format_date(invoice.paid_at, zone),
        "payment": payment_instructions(invoice=invoice, zone=zone),
        "memo": invoice.memo,
        "page_size": _page_size(account),
        "status": invoice.status,
        "status_label": invoice.get_status_display(),
    }


def _page_size(customer: Customer) -> str:
    configured = (seller().get("page_size") or "").strip()
    if configured:
        return configured
    return "Letter" if (customer.country or "").upper() in LETTER_COUNTRIES else "A4"


# ---------------------------------------------------------------- rendering


def invoice_html(
    *, invoice: Invoice, for_pdf: bool, pdf_url: str = "", live: dict | None = None
) -> str:
    """The invoice as HTML: for the PDF (``for_pdf``: page boxes and footer) or for the
    hosted page (a sheet on screen with a "Download PDF" link to ``pdf_url``). ``live``
    (hosted page only) adds what happened since issue: ``amount_due_shown`` (the
    balance), ``credit_notes`` and the payment state, which the stored PDF never shows."""
    context = invoice_context(invoice=invoice)
    context.update(
        for_pdf=for_pdf, pdf_url=pdf_url, credit_notes=[], amount_due_shown=context["amount_due"]
    )
    context["live_status"] = bool(live) and not for_pdf
    if context["live_status"]:
        context.update(live)
    return render_to_string("billing/invoice.html", context)


def _pdf(html: str) -> bytes:
    # heavy: imported when a PDF is made, not at startup
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # Documents load nothing (styles are inline, no image or font is referenced), so the
    # renderer may fetch nothing: no scheme is allowed. A URL that found its way into a
    # document (customer text is escaped; this is the second line) never makes the
    # server call an address, follow a redirect or read a local file while rendering.
    fetch_nothing = URLFetcher(allowed_protocols=(), allow_redirects=False, timeout=1)
    return HTML(string=html, base_url=str(settings.BASE_DIR), url_fetcher=fetch_nothing).write_pdf()


def invoice_pdf_bytes(*, invoice: Invoice) -> bytes:
    """The invoice as a PDF; a draft renders under a DRAFT watermark (admin preview)."""
    return _pdf(invoice_html(invoice=invoice, for_pdf=True))


def _store(model, pk, *, now: datetime, render: Callable[[object], bytes]):
    """Render outside the row lock (it takes a second), then store under it unless
    another worker stored one meanwhile. Returns ``(document, rendered)``."""
    current = model.objects.get(pk=pk)
    if current.pdf:
        return current, False
    content = render(current)
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=pk)
        if locked.pdf:
            return locked, False
        locked.pdf.save(f"{locked.number}.pdf", ContentFile(content), save=False)
        try:
            locked.pdf_rendered_at = now
            locked.save(update_fields=["pdf", "pdf_rendered_at"])
        except Exception:
            locked.pdf.storage.delete(locked.pdf.name)
            raise
    return locked, True


def _render_issued(invoice: Invoice) -> bytes:
    if invoice.is_draft:
        raise ValueError(f"{invoice} is a draft: only issued invoices get a stored PDF.")
    return invoice_pdf_bytes(invoice=invoice)


def invoice_pdf_store(*, invoice: Invoice, now: datetime) -> Invoice:
    """Render an issued invoice's PDF once and store it (``invoice.pdf``, with
    ``pdf_rendered_at = now``). An invoice already rendered is returned as it is.
    Raises ``ValueError`` for a draft."""
    return _store(Invoice, invoice.pk, now=now, render=_render_issued)[0]


# ---------------------------------------------------------------- credit notes


def credit_note_context(*, credit_note: CreditNote) -> dict:
    note = CreditNote.objects.select_related("invoice__customer").get(pk=credit_note.pk)
    invoice, currency = note.invoice, note.currency
    zone = customer_zone(invoice.customer)
    return {
        "note": note,
        "invoice": invoice,
        "seller": seller(),
        "bill_to": _party(invoice.customer),
        "number": note.number,
        "issue_date": format_date(note.issued_at, zone),
        "invoice_number": invoice.number,
        "invoice_date": format_date(invoice.issued_at, zone),
        "reason": note.reason,
        "rows": [
            {"description": line.description, "amount": format_money(line.amount, currency)}
            for line in note.lines.order_by("pk")
        ],
        "total": format_money(note.amount, currency),
        "currency": currency,
        "page_size": _page_size(invoice.customer),
    }


def credit_note_html(*, credit_note: CreditNote, for_pdf: bool) -> str:
    context = credit_note_context(credit_note=credit_note)
    context["for_pdf"] = for_pdf
    return render_to_string("billing/credit_note.html", context)


def credit_note_pdf_bytes(*, credit_note: CreditNote) -> bytes:
    return _pdf(credit_note_html(credit_note=credit_note, for_pdf=True))


def _render_credit_note(note: CreditNote) -> bytes:
    return credit_note_pdf_bytes(credit_note=note)


def credit_note_pdf_store(*, credit_note: CreditNote, now: datetime) -> CreditNote:
    """Render a credit note's PDF once and store it; already rendered: returned as is."""
    return _store(CreditNote, credit_note.pk, now=now, render=_render_credit_note)[0]


def pdfs_render_missing(*, now: datetime, limit: int = PDFS_PER_RUN) -> int:
    """Render and store the PDF of every issued invoice and credit note without one, at
    most ``limit`` per call (the next run takes the rest). A document that fails to
    render is logged and skipped, so one bad document never blocks the others.
    Returns how many were rendered."""
    rendered = 0
    invoices = (
        Invoice.objects.exclude(status=InvoiceStatus.DRAFT)
        .filter(pdf="")
        .order_by("issued_at")
        .values_list("pk", flat=True)[:limit]
    )
    notes = CreditNote.objects.filter(pdf="").order_by("issued_at").values_list("pk", flat=True)
    todo = [(Invoice, _render_issued, pk) for pk in invoices]
    todo += [(CreditNote, _render_credit_note, pk) for pk in notes[: max(limit - len(todo), 0)]]
    for model, render, pk in todo:
        try:
            rendered += _store(model, pk, now=now, render=render)[1]
        except Exception:  # logged with its traceback; the next run tries again
            logger.exception("Rendering the PDF of %s %s failed", model.__name__, pk)
    return rendered
