"""Invoices and credit notes, mounted under ``/api/v1/``:
``path("api/v1/", include("billing.invoicing.api.urls"))``."""

from django.urls import path

import billing.invoicing.api.views as views

urlpatterns = [
    path("invoices", views.InvoiceList.as_view(), name="invoice-list"),
    path("invoices/<str:invoice_id>", views.InvoiceDetail.as_view(), name="invoice-detail"),
    path("invoices/<str:invoice_id>/pdf", views.InvoicePdf.as_view(), name="invoice-pdf"),
    path("invoices/<str:invoice_id>/issue", views.InvoiceIssue.as_view(), name="invoice-issue"),
    path("invoices/<str:invoice_id>/void", views.InvoiceVoid.as_view(), name="invoice-void"),
    path(
        "invoices/<str:invoice_id>/lines", views.InvoiceLineAdd.as_view(), name="invoice-line-add"
    ),
    path(
        "invoices/<str:invoice_id>/credit-notes",
        views.InvoiceCreditNotes.as_view(),
        name="invoice-credit-notes",
    ),
    path(
        "invoices/<str:invoice_id>/lines/<int:line_id>/usage",
        views.InvoiceLineUsage.as_view(),
        name="invoice-line-usage",
    ),
    path(
        "invoices/<str:invoice_id>/lines/<int:line_id>/events.csv",
        views.InvoiceLineEventsCsv.as_view(),
        name="invoice-line-events",
    ),
    path("credit-notes", views.CreditNoteList.as_view(), name="credit-note-list"),
    path(
        "credit-notes/<str:credit_note_id>",
        views.CreditNoteDetail.as_view(),
        name="credit-note-detail",
    ),
    path(
        "credit-notes/<str:credit_note_id>/pdf",
        views.CreditNotePdf.as_view(),
        name="credit-note-pdf",
    ),
]
