"""The invoice admin: read-only pages, with buttons and list actions that call the
invoicing services, report per invoice and confirm anything that cannot be undone.

This module holds the list, the page's fields, the permissions and the URLs; what the
buttons do is in ``invoice_operations``, the PDF and a line's proofs in
``invoice_documents``."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.display import period_html
from billing.invoicing.admin.forms import (
    UNPAID_ISSUED,
    money,
)
from billing.invoicing.admin.inlines import (
    CreditNoteInline,
    LineInline,
    PeriodFilter,
    TaxInline,
    TimelineInline,
)
from billing.invoicing.admin.invoice_documents import InvoiceDocuments
from billing.invoicing.admin.invoice_operations import InvoiceOperations
from billing.invoicing.receivables import (
    invoice_days_past_due,
    invoices_overdue,
    invoices_with_credited,
)
from billing.models import INVOICE_ORDERING, Invoice, InvoiceStatus


class OverdueFilter(admin.SimpleListFilter):
    """Issued, unpaid invoices with a balance left, past their due instant (as of now)."""

    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request, queryset):
        overdue = invoices_overdue(now=timezone.now()).values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=overdue)
        if self.value() == "no":
            return queryset.exclude(pk__in=overdue)
        return queryset


@admin.register(Invoice)
class InvoiceAdmin(InvoiceOperations, InvoiceDocuments, admin.ModelAdmin):
    list_display = [
        "display_number",
        "customer_link",
        "status_shown",
        "period",
        "total_text",
        "due_text",
        "issued_at",
        "due_at",
        "settlement_state",
    ]
    list_filter = [
        "status",
        OverdueFilter,
        ("customer__rail", admin.ChoicesFieldListFilter),
        PeriodFilter,
    ]
    list_select_related = ["customer"]
    search_fields = ["number", "customer__key", "customer__name"]
    ordering = INVOICE_ORDERING  # drafts first, then by number, newest first
    actions = ["issue_selected", "recompute_selected", "void_selected"]
    inlines = [LineInline, TaxInline, CreditNoteInline, TimelineInline]
    change_form_template = "admin/billing/invoice/change_form.html"
    fieldsets = [
        (None, {"fields": ["display_number", "status", "customer_link", "currency", "period", "memo"]}),
        ("Amounts", {"fields": ["subtotal_text", "tax_text", "total_text", "credits_text", "due_text",
                                "paid_text"]}),
        ("Dates", {"fields": ["grace_until", "rated_at", "issued_at", "due_at", "paid_at", "voided_at",
                              "void_reason"]}),
        ("Settlement and documents", {"fields": ["settlement_link", "pdf_link"]}),
    ]  # fmt: skip
    readonly_fields = [f for _, opts in fieldsets for f in opts["fields"]]

    # Read-only pages: invoices change through the buttons, which call the services.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("billing.change_invoice")

    # Roles (audit.roles): operators recompute drafts and add lines (change_invoice);
    # issuing, voiding and crediting take these permissions of their own.
    def has_issue_permission(self, request) -> bool:
        return request.user.has_perm("billing.issue_invoice")

    def has_void_permission(self, request) -> bool:
        return request.user.has_perm("billing.void_invoice")

    def has_credit_permission(self, request) -> bool:
        return request.user.has_perm("billing.create_creditnote")

    def get_fieldsets(self, request, obj=None):
        # The grace period ("issued automatically after this") is a draft's: on an issued
        # invoice the hint would promise something that already happened or never will.
        if obj is None or obj.is_draft:
            return self.fieldsets
        return [
            (name, {**opts, "fields": [f for f in opts["fields"] if f != "grace_until"]})
            for name, opts in self.fieldsets
        ]

    def _operate(self, request, allowed=None) -> None:
        if not (allowed or self.has_operate_permission)(request):
            raise PermissionDenied

    def _view(self, request) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied

    def get_queryset(self, request):
        # the credit notes' sum beside each row: the overdue column reads no more queries
        return invoices_with_credited(super().get_queryset(request))

    # -------- columns

    @admin.display(description="status", ordering="status")
    def status_shown(self, obj: Invoice):
        """The status, and under it how long an overdue invoice is overdue (in the same
        column, so the list fits a laptop's width)."""
        days = invoice_days_past_due(invoice=obj, now=timezone.now())
        if not days:
            return obj.get_status_display()
        return format_html(
            '{}<br><span class="overdue-badge" style="color:#ba2121;font-weight:bold">'
            "overdue {}&nbsp;day{}</span>",
            obj.get_status_display(),
            days,
            "" if days == 1 else "s",
        )

    @admin.display(description="number", ordering="number")
    def display_number(self, obj: Invoice) -> str:
        return str(obj)

    @admin.display(description="customer", ordering="customer__key")
    def customer_link(self, obj: Invoice):
        url = reverse("admin:customers_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer.key)

    @admin.display(description="period", ordering="period_start")
    def period(self, obj: Invoice) -> str:
        return period_html(obj, none="one-off")

    @admin.display(description="total", ordering="total")
    def total_text(self, obj: Invoice) -> str:
        return money(obj.total, obj.currency)

    @admin.display(description="amount due", ordering="amount_due")
    def due_text(self, obj: Invoice) -> str:
        return money(obj.amount_due, obj.currency)

    @admin.display(description="subtotal")
    def subtotal_text(self, obj: Invoice) -> str:
        return money(obj.subtotal, obj.currency)

    @admin.display(description="tax")
    def tax_text(self, obj: Invoice) -> str:
        exempt = f" (exempt: {obj.tax_exempt_reason})" if obj.tax_exempt_reason else ""
        return money(obj.tax_total, obj.currency) + exempt

    @admin.display(description="credits applied")
    def credits_text(self, obj: Invoice) -> str:
        return money(obj.credits_applied, obj.currency)

    @admin.display(description="paid")
    def paid_text(self, obj: Invoice) -> str:
        return money(obj.amount_paid, obj.currency)

    @admin.display(description="settlement")
    def settlement_link(self, obj: Invoice):
        """The settlement's state, linking to its page (timeline, requests, retry). Billing
        never imports rails: the link goes through the settlement admin's URL by invoice."""
        if not obj.settlement_state:
            return "—"  # a draft (or a void draft): nothing to settle
        state = obj.settlement_state.replace("_", " ").capitalize()
        try:
            url = reverse("admin:rails_settlement_of_invoice", args=[obj.pk])
        except NoReverseMatch:  # no settlement admin installed
            return state
        return format_html('<a href="{}" id="invoice-settlement">{}</a>', url, state)

    @admin.display(description="PDF")
    def pdf_link(self, obj: Invoice):
        url = reverse("admin:billing_invoice_pdf", args=[obj.pk])
        if obj.is_draft:
            return format_html('<a href="{}">Preview (DRAFT watermark, rendered now)</a>', url)
        rendered = (
            f"rendered {obj.pdf_rendered_at:%Y-%m-%d %H:%M}" if obj.pdf else "not rendered yet"
        )
        return format_html('<a href="{}">{}.pdf</a> ({})', url, obj.number, rendered)

    # -------- pages

    def get_urls(self):
        def view(fn, suffix):
            return path(
                f"<uuid:pk>/{suffix}",
                self.admin_site.admin_view(fn),
                name=f"billing_invoice_{suffix.split('/')[0].replace('-', '_').replace('.', '_')}",
            )

        return [
            view(self.issue_view, "issue/"),
            view(self.recompute_view, "recompute/"),
            view(self.add_line_view, "add-line/"),
            view(self.void_view, "void/"),
            view(self.credit_note_view, "credit-note/"),
            view(self.pdf_view, "pdf/"),
            path(
                "<uuid:pk>/lines/<int:line_id>/usage/",
                self.admin_site.admin_view(self.line_usage_view),
                name="billing_invoice_line_usage",
            ),
            path(
                "<uuid:pk>/lines/<int:line_id>/events.csv",
                self.admin_site.admin_view(self.line_events_view),
                name="billing_invoice_line_events",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {
            "can_operate": self.has_operate_permission(request),
            "can_issue": self.has_issue_permission(request),
            "is_draft": obj is not None and obj.is_draft,
            "can_void": obj is not None
            and obj.status in UNPAID_ISSUED
            and self.has_void_permission(request),
            "can_credit": obj is not None
            and obj.status not in (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
            and self.has_credit_permission(request),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def _page(
        self,
        request,
        invoice: Invoice,
        *,
        title: str,
        template: str = "action_form.html",
        **context,
    ):
        base = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "invoice": invoice,
            "title": title,
            "money": money,
        }
        return TemplateResponse(request, f"admin/billing/invoice/{template}", {**base, **context})

    def _back(self, invoice: Invoice):
        return redirect(reverse("admin:billing_invoice_change", args=[invoice.pk]))

    def _confirm(self, request, queryset, *, action: str, title: str, intro: str, form=None):
        return self._page(
            request,
            None,
            title=title,
            intro=intro,
            form=form,
            danger=True,
            invoices=queryset,
            action=action,
            action_checkbox_name=admin.helpers.ACTION_CHECKBOX_NAME,
            submit=title,
        )
