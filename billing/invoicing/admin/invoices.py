"""The invoice admin: read-only pages, with buttons and list actions that call the
invoicing services, report per invoice and confirm anything that cannot be undone."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.display import period_html
from billing.documents.pdf import invoice_pdf_bytes, invoice_pdf_store
from billing.invoicing.admin.forms import (
    UNPAID_ISSUED,
    CreditNoteForm,
    ManualLineForm,
    VoidForm,
    error_messages,
    form_add_errors,
    money,
)
from billing.invoicing.admin.inlines import (
    CreditNoteInline,
    LineInline,
    PeriodFilter,
    TaxInline,
    TimelineInline,
)
from billing.invoicing.provenance import (
    bucket_value,
    is_provable,
    line_events_csv,
    line_usage,
    line_usage_buckets,
)
from billing.invoicing.services import (
    credit_note_create,
    invoice_issue,
    invoice_line_add,
    invoice_rate,
    invoice_void,
)
from billing.models import INVOICE_ORDERING, Invoice, InvoiceLine, InvoiceStatus


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = [
        "display_number",
        "customer_link",
        "status",
        "period",
        "total_text",
        "due_text",
        "issued_at",
        "due_at",
        "settlement_state",
    ]
    list_filter = ["status", ("customer__rail", admin.ChoicesFieldListFilter), PeriodFilter]
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

    # -------- columns

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

    def issue_view(self, request, pk):
        self._operate(request, self.has_issue_permission)
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
        if request.method == "POST":
            self._issue(request, invoice)
            return self._back(invoice)
        return self._page(
            request,
            invoice,
            title=f"Issue {invoice} now",
            submit="Issue now",
            danger=True,
            intro="The draft is recomputed from the latest usage, numbered from the gapless sequence, "
            "frozen and sent to its rail. This cannot be undone: an issued invoice can only be "
            "voided or credited.",
        )

    def _issue(self, request, invoice: Invoice) -> None:
        try:
            issued = invoice_issue(
                invoice=invoice, now=timezone.now(), actor=request.user.get_username()
            )
        except ValidationError as exc:
            self.message_user(
                request, f"{invoice}: {' '.join(error_messages(exc))}", messages.ERROR
            )
        else:
            self.message_user(
                request,
                f"Issued {issued.number} ({money(issued.total, issued.currency)}).",
                messages.SUCCESS,
            )

    def recompute_view(self, request, pk):
        self._operate(request)
        invoice = get_object_or_404(Invoice, pk=pk)
        if request.method != "POST":
            return self._back(invoice)
        self._recompute(request, invoice)
        return self._back(invoice)

    def _recompute(self, request, invoice: Invoice) -> None:
        try:
            rated = invoice_rate(invoice=invoice, now=timezone.now())
        except ValidationError as exc:
            self.message_user(
                request, f"{invoice}: {' '.join(error_messages(exc))}", messages.ERROR
            )
        else:
            self.message_user(
                request,
                f"Recomputed {rated}: total {money(rated.total, rated.currency)}.",
                messages.SUCCESS,
            )

    def add_line_view(self, request, pk):
        self._operate(request)
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
        form = ManualLineForm(request.POST or None, invoice=invoice)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                line = invoice_line_add(
                    invoice=invoice,
                    description=data["description"],
                    amount=data["amount"],
                    quantity=data["quantity"],
                    customer=data["customer"],
                    now=timezone.now(),
                    user=request.user,
                )
            except ValidationError as exc:
                form_add_errors(form, exc)
            else:
                self.message_user(
                    request,
                    f"Added “{line.description}” ({money(line.amount, invoice.currency)}) "
                    f"to {invoice}.",
                    messages.SUCCESS,
                )
                return self._back(invoice)
        return self._page(
            request,
            invoice,
            title=f"Add a manual line to {invoice}",
            form=form,
            submit="Add line",
            intro="Manual lines are kept when the draft is recomputed.",
        )

    def void_view(self, request, pk):
        self._operate(request, self.has_void_permission)
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
        form = VoidForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                invoice_void(
                    invoice=invoice,
                    reason=form.cleaned_data["reason"],
                    now=timezone.now(),
                    actor=request.user.get_username(),
                )
            except ValidationError as exc:
                form_add_errors(form, exc)
            else:
                self.message_user(request, f"Voided {invoice}.", messages.SUCCESS)
                return self._back(invoice)
        return self._page(
            request,
            invoice,
            title=f"Void {invoice}",
            form=form,
            submit="Void invoice",
            danger=True,
            intro="The invoice stops being owed; its number stays used and its rail is told. "
            "To bill again, the period needs a new invoice. This cannot be undone.",
        )

    def credit_note_view(self, request, pk):
        self._operate(request, self.has_credit_permission)
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
        form = CreditNoteForm(request.POST or None, invoice=invoice)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            scope = data["scope"]
            try:
                note = credit_note_create(
                    invoice=invoice,
                    reason=data["reason"],
                    now=timezone.now(),
                    user=request.user,
                    amount=data["amount"] if scope == form.AMOUNT else None,
                    line_ids=[line.pk for line in data["lines"]] if scope == form.LINES else None,
                )
            except ValidationError as exc:
                form_add_errors(form, exc)
            else:
                self.message_user(
                    request,
                    f"Credit note {note.number} for {money(note.amount, note.currency)} "
                    f"on {invoice}.",
                    messages.SUCCESS,
                )
                return self._back(invoice)
        credited = sum((n.amount for n in invoice.credit_notes.all()), Decimal(0))
        return self._page(
            request,
            invoice,
            title=f"Credit {invoice}",
            form=form,
            submit="Create credit note",
            danger=True,
            intro=f"Credited so far: {money(credited, invoice.currency)}; left to credit: "
            f"{money(invoice.total - credited, invoice.currency)}. A credit note is numbered, "
            "sent to the invoice's rail, and cannot be undone.",
        )

    def pdf_view(self, request, pk):
        self._view(request)
        invoice = get_object_or_404(Invoice, pk=pk)
        if invoice.is_draft:
            response = HttpResponse(
                invoice_pdf_bytes(invoice=invoice), content_type="application/pdf"
            )
            response["Content-Disposition"] = f'inline; filename="draft-{invoice.pk}.pdf"'
            return response
        if not invoice.pdf:
            invoice = invoice_pdf_store(invoice=invoice, now=timezone.now())
        return FileResponse(
            invoice.pdf.open("rb"), content_type="application/pdf", filename=f"{invoice.number}.pdf"
        )

    def _line(self, request, pk, line_id) -> InvoiceLine:
        self._view(request)
        line = get_object_or_404(
            InvoiceLine.objects.select_related("invoice", "customer", "feature__meter"),
            invoice_id=pk,
            pk=line_id,
        )
        if not is_provable(line):
            raise Http404(f"Line {line.pk} has no usage behind it.")
        return line

    def line_usage_view(self, request, pk, line_id):
        line = self._line(request, pk, line_id)
        usage = line_usage(line=line)
        page = Paginator(line_usage_buckets(line=line), 200).get_page(request.GET.get("page"))
        rows = [(b, bucket_value(b, usage.meter.aggregation)) for b in page]
        return self._page(
            request,
            line.invoice,
            title=f"Usage behind “{line.description}” on {line.invoice}",
            template="line_usage.html",
            line=line,
            usage=usage,
            page=page,
            rows=rows,
        )

    def line_events_view(self, request, pk, line_id):
        line = self._line(request, pk, line_id)
        response = StreamingHttpResponse(
            line_events_csv(line=line), content_type="text/csv; charset=utf-8"
        )
        name = f"{line.invoice.number or 'draft'}-line-{line.pk}-events.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # -------- list actions

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

    @admin.action(description="Issue the selected drafts now…", permissions=["issue"])
    def issue_selected(self, request, queryset):
        if request.POST.get("post") != "yes":
            return self._confirm(
                request,
                queryset.select_related("customer"),
                action="issue_selected",
                title="Issue now",
                intro="The drafts among these are recomputed, numbered, "
                "frozen and sent to their rails; this cannot be undone. Others are skipped.",
            )
        drafts = list(queryset.filter(status=InvoiceStatus.DRAFT))
        skipped = queryset.count() - len(drafts)
        for invoice in drafts:
            self._issue(request, invoice)
        if skipped:
            self.message_user(
                request, f"Skipped {skipped} invoice(s) that are not drafts.", messages.WARNING
            )
        return None

    @admin.action(description="Recompute the selected drafts", permissions=["operate"])
    def recompute_selected(self, request, queryset):
        for invoice in queryset:
            self._recompute(request, invoice)

    @admin.action(description="Void the selected invoices…", permissions=["void"])
    def void_selected(self, request, queryset):
        form = VoidForm(request.POST if request.POST.get("post") == "yes" else None)
        if not form.is_valid():
            return self._confirm(
                request,
                queryset.select_related("customer"),
                action="void_selected",
                title="Void",
                form=form,
                intro="Each invoice stops being owed and its rail is told. This cannot be undone.",
            )
        for invoice in queryset:
            try:
                invoice_void(
                    invoice=invoice,
                    reason=form.cleaned_data["reason"],
                    now=timezone.now(),
                    actor=request.user.get_username(),
                )
            except ValidationError as exc:
                self.message_user(
                    request, f"{invoice}: {' '.join(error_messages(exc))}", messages.ERROR
                )
            else:
                self.message_user(request, f"Voided {invoice}.", messages.SUCCESS)
        return None
