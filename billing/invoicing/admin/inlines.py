"""Read-only inlines of the invoice page, and the period filter of the list."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from billing.admin_base import ReadOnlyInline
from billing.display import period_html
from billing.invoicing.provenance import is_provable
from billing.models import CreditNote, Invoice, InvoiceEvent, InvoiceLine, InvoiceTax
from core.templatetags.numbers import money, price, quantity

# ---------------------------------------------------------------- inlines


class _ReadOnlyInline(ReadOnlyInline):
    show_change_link = False


class LineInline(_ReadOnlyInline):
    model = InvoiceLine
    fk_name = "invoice"  # not adjusts_invoice
    # The kind rides under the description instead of taking a column: the lines fit a
    # laptop's page without scrolling sideways.
    fields = [
        "description_text",
        "customer",
        "feature",
        "service_period",
        "quantity_text",
        "unit_price_text",
        "amount_text",
        "usage",
    ]
    readonly_fields = fields
    verbose_name_plural = "lines"

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("customer", "feature", "invoice__customer")
        )

    @admin.display(description="description")
    def description_text(self, line: InvoiceLine):
        return format_html(
            '{}<span class="help line-kind">{}</span>', line.description, line.get_kind_display()
        )

    @admin.display(description="service period")
    def service_period(self, line: InvoiceLine) -> str:
        return period_html(line)

    @admin.display(description="quantity")
    def quantity_text(self, line: InvoiceLine) -> str:
        shared = (
            f" of {quantity(line.group_quantity)}"
            if line.group_quantity not in (None, line.quantity)
            else ""
        )
        return quantity(line.quantity) + shared

    @admin.display(description="unit price")
    def unit_price_text(self, line: InvoiceLine) -> str:
        return price(line.unit_price, line.invoice.currency)

    @admin.display(description="amount")
    def amount_text(self, line: InvoiceLine) -> str:
        return money(line.amount, line.invoice.currency)

    @admin.display(description="usage")
    def usage(self, line: InvoiceLine):
        if not is_provable(line):
            return "—"
        args = [line.invoice_id, line.pk]
        return format_html(
            '<a href="{}">buckets</a> · <a href="{}">events.csv</a>',
            reverse("admin:billing_invoice_line_usage", args=args),
            reverse("admin:billing_invoice_line_events", args=args),
        )


class TaxInline(_ReadOnlyInline):
    model = InvoiceTax
    fields = ["name", "percentage_text", "inclusive", "base_text", "amount_text"]
    readonly_fields = fields
    verbose_name_plural = "taxes"

    @admin.display(description="percentage")
    def percentage_text(self, tax: InvoiceTax) -> str:
        return f"{quantity(tax.percentage)}%"

    @admin.display(description="base")
    def base_text(self, tax: InvoiceTax) -> str:
        return money(tax.base, tax.invoice.currency)

    @admin.display(description="amount")
    def amount_text(self, tax: InvoiceTax) -> str:
        return money(tax.amount, tax.invoice.currency)


class CreditNoteInline(_ReadOnlyInline):
    model = CreditNote
    fields = ["link", "reason", "amount_text", "issued_at", "created_by"]
    readonly_fields = fields

    @admin.display(description="amount")
    def amount_text(self, note: CreditNote) -> str:
        return money(note.amount, note.currency)

    @admin.display(description="number")
    def link(self, note: CreditNote):
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:billing_creditnote_change", args=[note.pk]), note
        )


class TimelineInline(_ReadOnlyInline):
    model = InvoiceEvent
    fields = ["at", "from_status", "to_status", "actor", "note"]
    readonly_fields = fields
    verbose_name_plural = "timeline"


# ---------------------------------------------------------------- the invoice admin


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request, model_admin):
        months = Invoice.objects.filter(period_start__isnull=False).dates(
            "period_start", "month", order="DESC"
        )
        return [(f"{m:%Y-%m}", f"{m:%B %Y}") for m in months[:24]]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            year, month = (int(part) for part in self.value().split("-"))
        except ValueError:
            return queryset.none()
        return queryset.filter(period_start__year=year, period_start__month=month)
