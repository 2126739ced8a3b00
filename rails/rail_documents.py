"""Invoices and credit notes as the frozen documents rails receive: integer minor units
per currency, never ×100, and the billing account's details."""

from __future__ import annotations

from billing.models import CreditNote, Invoice
from core.money import plain_decimal, to_minor_units
from customers.models import Customer
from rails.base import CreditNoteDocument, DocumentLine, InvoiceDocument, Party
from rails.models import RailItemMapping


def party_of(customer: Customer) -> Party:
    return Party(
        key=customer.key,
        name=customer.name,
        email=customer.email,
        address_line1=customer.address_line1,
        address_line2=customer.address_line2,
        city=customer.city,
        region=customer.region,
        postal_code=customer.postal_code,
        country=customer.country,
        tax_id=customer.tax_id,
        rail_settings=dict(customer.rail_settings or {}),
    )


def _item_for(rail: str):
    """A function from an invoice line to the rail's item id (feature, then kind, then default)."""
    mappings = {
        (m.feature_id, m.line_kind): m.external_item_id
        for m in RailItemMapping.objects.filter(rail=rail)
    }

    def item(line) -> str | None:
        return (
            mappings.get((line.feature_id, ""))
            or mappings.get((None, line.kind))
            or mappings.get((None, ""))
        )

    return item


def invoice_document(invoice: Invoice, *, rail: str | None = None) -> InvoiceDocument:
    currency = invoice.currency
    item = _item_for(rail or invoice.customer.rail)
    lines = tuple(
        DocumentLine(
            description=line.description,
            amount_minor=to_minor_units(line.amount, currency),
            quantity=plain_decimal(line.quantity),
            feature_key=line.feature.key if line.feature_id else None,
            customer_key=line.customer.key,
            kind=line.kind,
            unit_price=plain_decimal(line.unit_price),
            rail_item=item(line),
        )
        for line in invoice.lines.select_related("feature", "customer").order_by("position", "pk")
    )
    return InvoiceDocument(
        id=str(invoice.pk),
        number=invoice.number or "",
        currency=currency,
        customer=party_of(invoice.customer),
        lines=lines,
        subtotal_minor=to_minor_units(invoice.subtotal, currency),
        tax_minor=to_minor_units(invoice.tax_total, currency),
        total_minor=to_minor_units(invoice.total, currency),
        amount_due_minor=to_minor_units(invoice.amount_due, currency),
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
    )


def credit_note_document(note: CreditNote) -> CreditNoteDocument:
    return CreditNoteDocument(
        id=str(note.pk),
        number=note.number,
        invoice_number=note.invoice.number or "",
        currency=note.currency,
        amount_minor=to_minor_units(note.amount, note.currency),
        reason=note.reason,
        customer=party_of(note.invoice.customer),
        issued_at=note.issued_at,
    )
