"""Customer-facing URLs: hosted invoices by signed link (``/i/...``) and the portal
(``/portal/...``). Included at the site root: ``path("", include("billing.documents.portal_urls"))``."""

from django.urls import path

import billing.documents.portal as views

app_name = "billing_portal"

urlpatterns = [
    path("i/<str:token>/", views.invoice_page, name="invoice"),
    path("i/<str:token>/pdf", views.invoice_pdf, name="invoice-pdf"),
    path(
        "i/<str:token>/credit-notes/<uuid:credit_note_id>/pdf",
        views.invoice_credit_note_pdf,
        name="invoice-credit-note-pdf",
    ),
    path("portal/", views.portal_home, name="home"),
    path("portal/sign-in/<str:token>/", views.portal_sign_in, name="sign-in"),
    path("portal/sign-out/", views.portal_sign_out, name="sign-out"),
    path("portal/invoices/<uuid:invoice_id>/", views.portal_invoice, name="portal-invoice"),
    path(
        "portal/credit-notes/<uuid:credit_note_id>/pdf",
        views.portal_credit_note_pdf,
        name="portal-credit-note-pdf",
    ),
]
