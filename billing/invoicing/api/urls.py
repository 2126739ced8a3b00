"""Invoices and credit notes, mounted under ``/api/v1/``:
``path("api/v1/", include("billing.invoicing.api.urls"))``."""

from django.urls import path

import billing.invoicing.api.credit_notes as credit_notes
import billing.invoicing.api.invoices as invoices
import billing.invoicing.api.provenance as provenance
import billing.invoicing.api.receivables as receivables

urlpatterns = [
    path("invoices", invoices.InvoiceList.as_view(), name="invoice-list"),
    path("invoices/<str:invoice_id>", invoices.InvoiceDetail.as_view(), name="invoice-detail"),
    path("invoices/<str:invoice_id>/pdf", invoices.InvoicePdf.as_view(), name="invoice-pdf"),
    path("invoices/<str:invoice_id>/issue", invoices.InvoiceIssue.as_view(), name="invoice-issue"),
    path("invoices/<str:invoice_id>/void", invoices.InvoiceVoid.as_view(), name="invoice-void"),
    path(
        "invoices/<str:invoice_id>/lines",
        invoices.InvoiceLineAdd.as_view(),
        name="invoice-line-add",
    ),
    path(
        "invoices/<str:invoice_id>/credit-notes",
        credit_notes.InvoiceCreditNotes.as_view(),
        name="invoice-credit-notes",
    ),
    path(
        "invoices/<str:invoice_id>/lines/<int:line_id>/usage",
        provenance.InvoiceLineUsage.as_view(),
        name="invoice-line-usage",
    ),
    path(
        "invoices/<str:invoice_id>/lines/<int:line_id>/events.csv",
        provenance.InvoiceLineEventsCsv.as_view(),
        name="invoice-line-events",
    ),
    path("receivables/aging", receivables.ReceivablesAging.as_view(), name="receivables-aging"),
    path("credit-notes", credit_notes.CreditNoteList.as_view(), name="credit-note-list"),
    path(
        "credit-notes/<str:credit_note_id>",
        credit_notes.CreditNoteDetail.as_view(),
        name="credit-note-detail",
    ),
    path(
        "credit-notes/<str:credit_note_id>/pdf",
        credit_notes.CreditNotePdf.as_view(),
        name="credit-note-pdf",
    ),
]
