"""Credit notes in the admin: read-only, with their PDF."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from billing.admin_base import ReadOnlyPermissions
from billing.documents.pdf import credit_note_pdf_store
from billing.invoicing.admin.forms import money
from billing.models import CREDIT_NOTE_ORDERING, CreditNote


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    list_display = [
        "number",
        "invoice_link",
        "customer",
        "amount_text",
        "reason",
        "issued_at",
        "pdf_link",
    ]
    list_select_related = ["invoice__customer"]
    ordering = CREDIT_NOTE_ORDERING
    search_fields = [
        "number",
        "invoice__number",
        "invoice__customer__key",
        "invoice__customer__name",
    ]
    date_hierarchy = "issued_at"
    fields = [
        "number",
        "invoice_link",
        "customer",
        "amount_text",
        "reason",
        "issued_at",
        "created_by",
        "lines_text",
        "pdf_link",
    ]
    readonly_fields = fields

    def get_urls(self):
        return [
            path(
                "<uuid:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="billing_creditnote_pdf",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_link(self, note: CreditNote):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:billing_invoice_change", args=[note.invoice_id]),
            note.invoice,
        )

    @admin.display(description="customer", ordering="invoice__customer__key")
    def customer(self, note: CreditNote) -> str:
        return note.invoice.customer.key

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, note: CreditNote) -> str:
        return money(note.amount, note.currency)

    @admin.display(description="lines")
    def lines_text(self, note: CreditNote):
        rows = (
            (line.description, money(line.amount, note.currency))
            for line in note.lines.order_by("pk")
        )
        return format_html_join(mark_safe("<br>"), "{}: {}", rows)

    @admin.display(description="PDF")
    def pdf_link(self, note: CreditNote):
        return format_html(
            '<a href="{}">{}.pdf</a>', reverse("admin:billing_creditnote_pdf", args=[note.pk]), note
        )

    def pdf_view(self, request, pk):
        if not self.has_view_permission(request):
            raise PermissionDenied
        note = credit_note_pdf_store(
            credit_note=get_object_or_404(CreditNote, pk=pk), now=timezone.now()
        )
        return FileResponse(
            note.pdf.open("rb"), content_type="application/pdf", filename=f"{note.number}.pdf"
        )
