"""What an operator does to an invoice from its page or the list: issue, recompute, add a
manual line, void, credit. Each calls one invoicing service, reports per invoice, and
asks for confirmation before anything that cannot be undone.

A mixin of ``InvoiceAdmin`` (``billing.invoicing.admin.invoices``), which owns the
permissions, the URLs and the page helpers (``_page``, ``_back``, ``_confirm``) used here.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django.utils import timezone

from billing.invoicing.admin.forms import (
    CreditNoteForm,
    ManualLineForm,
    VoidForm,
    error_messages,
    form_add_errors,
    money,
)
from billing.invoicing.services import (
    credit_note_create,
    invoice_issue,
    invoice_line_add,
    invoice_rate,
    invoice_void,
)
from billing.models import Invoice, InvoiceStatus


class InvoiceOperations:
    """The invoice admin's buttons and list actions."""

    # -------- buttons on the invoice page

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

    # -------- list actions

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
